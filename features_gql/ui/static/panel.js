// The control panel's entry point: sign-in, navigation between views, and status.
import { Client, GraphQLError } from "./graphql.js";
import { h, replace } from "./elements.js";
import { LiveFeed } from "./live.js";
import { Session } from "./session.js";
import * as bulkView from "./views/bulk.js";
import * as featuresView from "./views/features.js";
import * as historyView from "./views/history.js";
import * as resourceView from "./views/resource.js";
import * as statusView from "./views/status.js";

const VIEWS = [resourceView, featuresView, historyView, bulkView, statusView];
const VIEWER = "query Viewer { viewer { name scopes anonymous } }";

const session = new Session();
const endpoint = new URL("../graphql", location.href).href;
const client = new Client(endpoint, () => session.token);
/** Every change as it happens (subscription featureChanges), for whichever view is open. */
const live = new LiveFeed(endpoint, () => session.token);
const $ = (id) => document.getElementById(id);

/** Everything a view may use. */
const context = {
  client,
  session,
  live,
  /** Show an error (a GraphQLError or any Error) to the person, in the alert region. */
  fail(error) {
    const alert = $("alert");
    alert.textContent = error instanceof GraphQLError && error.code !== "ERROR"
      ? `${error.message} (${error.code})`
      : String(error.message ?? error);
    alert.hidden = false;
  },
  clearAlert() {
    $("alert").hidden = true;
    $("alert").textContent = "";
  },
  /** Go to a view, with parameters that are shown in the address (never the token). */
  navigate(view, params = {}) {
    const query = new URLSearchParams(params).toString();
    location.hash = query ? `${view}?${query}` : view;
  },
  refreshStatus: () => statusView.refreshFooter(context, $("status")),
};

let cleanup = null;

function currentRoute() {
  const [name, query = ""] = location.hash.replace(/^#/, "").split("?", 2);
  const view = VIEWS.find((candidate) => candidate.id === name) ?? VIEWS[0];
  return { view, params: new URLSearchParams(query) };
}

function renderNav(active) {
  replace(
    $("nav"),
    VIEWS.map((view) =>
      h(
        "li",
        {},
        h("a", { href: `#${view.id}`, "aria-current": view === active ? "page" : null }, view.title),
      ),
    ),
  );
}

function render() {
  const { view, params } = currentRoute();
  renderNav(view);
  if (typeof cleanup === "function") cleanup();
  cleanup = null;
  const main = $("view");
  main.replaceChildren();
  if (!session.viewer) {
    main.append(h("p", {}, "Sign in with a token to continue."));
    return;
  }
  cleanup = view.render(main, context, params);
}

function showViewer() {
  const viewer = session.viewer;
  const signedIn = Boolean(session.token) && viewer !== null;
  $("sign-in").hidden = signedIn;
  $("sign-out").hidden = !session.token;
  if (viewer === null) {
    $("viewer").textContent = "Not signed in.";
  } else {
    const scopes = viewer.scopes.length ? viewer.scopes.join(", ") : "no scopes";
    const who = viewer.anonymous ? "Anonymous (no token)" : `Signed in as ${viewer.name}`;
    replace($("viewer"), who, " · ", h("span", { class: "scopes" }, scopes));
  }
}

/** Whether a request without a token may read: the service says so in the page. */
function anonymousMayRead() {
  return document.querySelector('meta[name="anonymous-access"]')?.content === "read";
}

async function loadViewer() {
  if (!session.token && !anonymousMayRead()) {
    // Asking would only be refused: the person signs in first.
    session.setViewer(null);
    return false;
  }
  try {
    const data = await client.request(VIEWER);
    session.setViewer(data.viewer);
    context.clearAlert();
    return true;
  } catch (error) {
    session.setViewer(null);
    if (error.code === "UNAUTHENTICATED" && session.token) {
      session.setToken("");
      context.fail(new Error("That token is not known to the service; nothing was kept."));
    } else if (error.code !== "UNAUTHENTICATED") {
      context.fail(error);
    }
    return false;
  }
}

/** Whether the service serves subscriptions; when introspection is off, assume it does. */
async function servesSubscriptions() {
  try {
    const data = await client.request("query Roots { __schema { subscriptionType { name } } }");
    return data.__schema.subscriptionType !== null;
  } catch {
    return true;
  }
}

async function follow() {
  if (session.can("read") && (await servesSubscriptions())) live.start();
  else live.stop();
}

live.addEventListener("change", (event) => {
  const revision = document.getElementById("revision");
  if (revision) revision.textContent = String(event.detail.revision);
});
live.addEventListener("state", (event) => {
  const indicator = $("live");
  indicator.classList.toggle("on", event.detail.connected);
  indicator.textContent = event.detail.connected ? "Live" : "Not live";
});

async function start() {
  $("sign-in").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("token");
    session.setToken(input.value.trim());
    input.value = "";
    await loadViewer();
    follow();
    render();
    context.refreshStatus();
  });
  $("sign-out").addEventListener("click", async () => {
    session.setToken("");
    await loadViewer();
    follow();
    render();
    $("token").focus();
  });
  session.addEventListener("change", showViewer);
  window.addEventListener("hashchange", render);
  await loadViewer();
  showViewer();
  follow();
  render();
  context.refreshStatus();
}

start();
