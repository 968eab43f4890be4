// Find a resource by type and id; its features as switches for a token that may write.
import { field, formatTime, h, replace, uniqueId } from "../elements.js";

export const id = "resource";
export const title = "Resources";

const RESOURCE = `query Resource($type: String!, $id: String!) {
  resource(type: $type, id: $id) { type id features }
}`;

const CHANGE = (mutation) => `mutation Change($resource: ResourceInput!, $feature: String!) {
  change: ${mutation}(resource: $resource, feature: $feature) {
    __typename
    ... on FeatureChange { changed revision }
    ... on InvalidInput { field rule message }
  }
}`;

const EVENT = `query Event($after: Revision!) {
  changes(after: $after, first: 1) { revision op feature actor at resource { type id } }
}`;

/** Turn a feature on or off; the answer, with the change event that recorded it. */
export async function setFeature(client, resource, feature, on) {
  const data = await client.request(CHANGE(on ? "addFeature" : "removeFeature"), {
    resource,
    feature,
  });
  const result = data.change;
  if (result.__typename === "InvalidInput") return { invalid: result };
  let event = null;
  if (result.changed) {
    // The actor and time come from the change log, exactly as any auditor sees them.
    const log = await client.request(EVENT, { after: result.revision - 1 });
    event = log.changes.find((change) => change.revision === result.revision) ?? null;
  }
  return { changed: result.changed, revision: result.revision, event };
}

export function describeChange(feature, on, outcome) {
  if (!outcome.changed) {
    return `${feature} was already ${on ? "on" : "off"}; nothing changed (revision ${outcome.revision}).`;
  }
  const event = outcome.event;
  const by = event?.actor ? ` by ${event.actor}` : "";
  const at = event?.at ? ` at ${formatTime(event.at)}` : "";
  return `${feature} turned ${on ? "on" : "off"}: revision ${outcome.revision}${by}${at}.`;
}

export function render(container, context, params) {
  const type = params.get("type") ?? "";
  const resourceId = params.get("id") ?? "";
  const form = h(
    "form",
    {
      class: "lookup",
      onsubmit: (event) => {
        event.preventDefault();
        const values = new FormData(form);
        context.navigate(id, { type: values.get("resource-type").trim(), id: values.get("resource-id") });
      },
    },
    h("div", { class: "field" }, field("resource-type", "Type", { value: type, required: true, autocapitalize: "off", spellcheck: "false" })),
    h("div", { class: "field grow" }, field("resource-id", "Id", { value: resourceId, required: true, autocapitalize: "off", spellcheck: "false" })),
    h("button", { type: "submit" }, "Find"),
  );
  const result = h("section", { class: "resource", "aria-live": "polite" });
  container.append(h("h2", {}, "Find a resource"), form, result);
  if (type && resourceId) load(context, result, type, resourceId);
  else container.querySelector("#resource-type").focus();
  // Changes by anyone else arrive through the subscription and move the switches.
  const onChange = (event) => result.dispatchEvent(new CustomEvent("live", { detail: event.detail }));
  context.live.addEventListener("change", onChange);
  return () => context.live.removeEventListener("change", onChange);
}

async function load(context, region, type, resourceId) {
  let resource;
  try {
    resource = (await context.client.request(RESOURCE, { type, id: resourceId })).resource;
  } catch (error) {
    context.fail(error);
    return;
  }
  context.clearAlert();
  showResource(context, region, resource);
}

function showResource(context, region, resource) {
  const writable = context.session.can("write");
  const key = { type: resource.type, id: resource.id };
  const features = [...resource.features];
  const outcome = h("p", { class: "outcome", role: "status" });
  const list = h("ul", { class: writable ? "switches" : "features" });

  const addSwitch = (name, on) => {
    const inputId = uniqueId("feature");
    const input = h("input", {
      type: "checkbox",
      role: "switch",
      id: inputId,
      checked: on,
      "aria-checked": String(on),
      onchange: async () => {
        const wanted = input.checked;
        input.disabled = true;
        try {
          const answer = await setFeature(context.client, key, name, wanted);
          if (answer.invalid) {
            input.checked = !wanted;
            outcome.textContent = answer.invalid.message;
          } else {
            outcome.textContent = describeChange(name, wanted, answer);
            context.refreshStatus();
          }
        } catch (error) {
          input.checked = !wanted;
          context.fail(error);
        } finally {
          input.disabled = false;
          input.setAttribute("aria-checked", String(input.checked));
        }
      },
    });
    list.append(h("li", {}, input, h("label", { for: inputId }, name)));
    return input;
  };

  const liveLine = h("p", { class: "live-change note", "aria-live": "polite" });
  region.addEventListener("live", (event) => {
    const change = event.detail;
    if (!change.resource || change.resource.type !== key.type || change.resource.id !== key.id) return;
    const on = change.op === "ADD";
    const label = [...list.querySelectorAll("label")].find((item) => item.textContent === change.feature);
    if (writable) {
      if (label) {
        const input = document.getElementById(label.htmlFor);
        input.checked = on;
        input.setAttribute("aria-checked", String(on));
      } else if (on) {
        addSwitch(change.feature, true);
      }
    } else if (on && ![...list.children].some((item) => item.textContent === change.feature)) {
      list.append(h("li", {}, change.feature));
      region.querySelector(".empty")?.remove();
    } else if (!on) {
      for (const item of [...list.children]) if (item.textContent === change.feature) item.remove();
    }
    liveLine.textContent = `Live: ${change.feature} turned ${on ? "on" : "off"} by ${change.actor ?? "unknown"} (revision ${change.revision}).`;
  });

  const children = [h("h2", {}, h("span", { class: "type" }, resource.type), " ", h("span", { class: "id" }, resource.id))];
  if (writable) {
    for (const name of features) addSwitch(name, true);
    const addForm = h(
      "form",
      {
        class: "add-feature inline",
        onsubmit: async (event) => {
          event.preventDefault();
          const name = addForm.querySelector("input").value.trim();
          if (!name) return;
          const existing = [...list.querySelectorAll("label")].find((label) => label.textContent === name);
          if (existing) {
            const input = document.getElementById(existing.htmlFor);
            if (!input.checked) input.click();
            return;
          }
          try {
            const answer = await setFeature(context.client, key, name, true);
            if (answer.invalid) {
              outcome.textContent = answer.invalid.message;
              return;
            }
            // The change may have come back through the live feed already.
            const arrived = [...list.querySelectorAll("label")].some((label) => label.textContent === name);
            if (!arrived) addSwitch(name, true);
            outcome.textContent = describeChange(name, true, answer);
            addForm.reset();
            context.refreshStatus();
          } catch (error) {
            context.fail(error);
          }
        },
      },
      h("div", { class: "field" }, field("add-feature", "Feature", { required: true, autocapitalize: "off", spellcheck: "false" })),
      h("button", { type: "submit" }, "Add feature"),
    );
    children.push(
      features.length ? null : h("p", { class: "empty" }, "This resource has no features yet."),
      list,
      addForm,
      outcome,
      liveLine,
    );
  } else {
    for (const name of features) list.append(h("li", {}, name));
    children.push(
      features.length ? null : h("p", { class: "empty" }, "This resource has no features."),
      list,
      h("p", { class: "note" }, "This token may only read: sign in with a write token to change features."),
      liveLine,
    );
  }
  replace(region, children);
}
