// The catalog: features with their definitions, searchable, with expiry warnings; one
// feature's definition (editable with a write token) and the resources that have it.
import { field, formatTime, h, replace } from "../elements.js";

export const id = "features";
export const title = "Features";

/** A feature due within this many days is flagged as expiring soon. */
const SOON_DAYS = 14;
const KINDS = ["RELEASE", "OPS", "EXPERIMENT", "PERMISSION"];

const CATALOG = `query Catalog($search: String, $kind: FeatureKind, $after: String) {
  features(search: $search, kind: $kind, first: 50, after: $after) {
    edges { node { name kind owner description expiresAt expired archived resourceCount } }
    pageInfo { hasNextPage endCursor }
  }
}`;

const FEATURE = `query Feature($name: String!, $after: String) {
  feature(name: $name) {
    name defined description owner kind expiresAt expired archived resourceCount
    resources(first: 25, after: $after) {
      edges { node { type id } }
      pageInfo { hasNextPage endCursor }
      totalCount
    }
  }
}`;

const DEFINE = `mutation Define($input: FeatureDefinitionInput!) {
  defineFeature(input: $input) {
    __typename
    ... on FeatureDefinitionChange { changed revision feature { name } }
    ... on InvalidInput { field rule message }
  }
}`;

/** "expired", "expires in N days" (soon), or null. */
export function expiry(feature, now = Date.now()) {
  if (!feature.expiresAt) return null;
  if (feature.expired) return { level: "expired", text: `expired ${formatTime(feature.expiresAt)}` };
  const days = Math.ceil((Date.parse(feature.expiresAt) - now) / 86400000);
  if (days <= SOON_DAYS) return { level: "warning", text: `expires in ${days} day${days === 1 ? "" : "s"}` };
  return { level: "", text: `expires ${formatTime(feature.expiresAt)}` };
}

export function render(container, context, params) {
  const name = params.get("name");
  if (name || params.has("new")) renderFeature(container, context, name ?? "");
  else renderCatalog(container, context, params);
}

function renderCatalog(container, context, params) {
  const search = h("input", { id: "catalog-search", type: "search", value: params.get("search") ?? "", autocapitalize: "off" });
  const kind = h(
    "select",
    { id: "catalog-kind" },
    h("option", { value: "" }, "Any"),
    KINDS.map((value) => h("option", { value, selected: params.get("kind") === value }, value.toLowerCase())),
  );
  const form = h(
    "form",
    {
      class: "lookup",
      role: "search",
      onsubmit: (event) => {
        event.preventDefault();
        const filters = {};
        if (search.value.trim()) filters.search = search.value.trim();
        if (kind.value) filters.kind = kind.value;
        context.navigate(id, filters);
      },
    },
    h("div", { class: "field grow" }, h("label", { for: "catalog-search" }, "Search"), search),
    h("div", { class: "field" }, h("label", { for: "catalog-kind" }, "Kind"), kind),
    h("button", { type: "submit" }, "Search"),
  );
  const body = h("tbody");
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "More");
  const empty = h("p", { class: "empty" });
  container.append(
    h("h2", {}, "Features"),
    form,
    context.session.can("write") ? h("p", {}, h("a", { href: "#features?new=1" }, "Define a feature")) : null,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, ["Feature", "Kind", "Owner", "Resources", "Expiry"].map((text) => h("th", { scope: "col" }, text)))),
        body,
      ),
    ),
    empty,
    more,
  );
  const variables = { search: params.get("search") || null, kind: params.get("kind") || null, after: null };

  async function page() {
    let data;
    try {
      data = await context.client.request(CATALOG, variables);
    } catch (error) {
      context.fail(error);
      return;
    }
    context.clearAlert();
    for (const { node } of data.features.edges) {
      const due = expiry(node);
      body.append(
        h(
          "tr",
          {},
          h("td", {}, h("a", { href: `#features?${new URLSearchParams({ name: node.name })}` }, node.name)),
          h("td", {}, node.kind ? node.kind.toLowerCase() : "—"),
          h("td", {}, node.owner ?? "—"),
          h("td", {}, String(node.resourceCount)),
          h("td", { class: due?.level ?? "" }, due?.text ?? "—"),
        ),
      );
    }
    empty.textContent = body.children.length ? "" : "No features match.";
    variables.after = data.features.pageInfo.endCursor;
    more.hidden = !data.features.pageInfo.hasNextPage;
  }
  more.addEventListener("click", page);
  page();
}

function renderFeature(container, context, name) {
  const writable = context.session.can("write");
  const heading = h("h2", {}, name || "Define a feature");
  const details = h("section", { "aria-label": "Definition" });
  const outcome = h("p", { class: "outcome", role: "status" });
  const resources = h("ul", { class: "features" });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "More resources");
  const count = h("p", { class: "note" });
  container.append(
    h("p", {}, h("a", { href: "#features" }, "All features")),
    heading,
    details,
    outcome,
  );
  if (name) {
    container.append(
      h("p", {}, h("a", { href: `#history?${new URLSearchParams({ feature: name })}` }, "History of this feature")),
      h("h3", {}, "Resources with this feature"),
      count,
      resources,
      more,
    );
  }
  let after = null;

  async function load(first) {
    let feature = null;
    if (name) {
      try {
        feature = (await context.client.request(FEATURE, { name, after })).feature;
      } catch (error) {
        context.fail(error);
        return;
      }
    }
    if (first) showDefinition(feature);
    if (!feature) return;
    for (const { node } of feature.resources.edges) {
      const link = new URLSearchParams({ type: node.type, id: node.id });
      resources.append(h("li", {}, h("a", { href: `#resource?${link}` }, `${node.type} ${node.id}`)));
    }
    const total = feature.resources.totalCount ?? feature.resourceCount;
    count.textContent = `${total} resource${total === 1 ? "" : "s"}.`;
    after = feature.resources.pageInfo.endCursor;
    more.hidden = !feature.resources.pageInfo.hasNextPage;
  }
  more.addEventListener("click", () => load(false));

  function showDefinition(feature) {
    const due = feature ? expiry(feature) : null;
    if (!writable) {
      replace(
        details,
        h(
          "dl",
          { class: "status-table" },
          h("dt", {}, "Description"), h("dd", {}, feature?.description ?? "—"),
          h("dt", {}, "Owner"), h("dd", {}, feature?.owner ?? "—"),
          h("dt", {}, "Kind"), h("dd", {}, feature?.kind?.toLowerCase() ?? "—"),
          h("dt", {}, "Expiry"), h("dd", { class: due?.level ?? "" }, due?.text ?? "—"),
          h("dt", {}, "Archived"), h("dd", {}, feature?.archived ? "yes" : "no"),
        ),
      );
      return;
    }
    const expires = feature?.expiresAt ? feature.expiresAt.slice(0, 10) : "";
    const form = h(
      "form",
      { class: "definition bulk" },
      name ? null : h("div", { class: "field" }, field("define-name", "Name", { required: true, autocapitalize: "off", spellcheck: "false" })),
      h("div", { class: "field" }, h("label", { for: "define-description" }, "Description"), h("textarea", { id: "define-description" }, feature?.description ?? "")),
      h(
        "div",
        { class: "row" },
        h("div", { class: "field" }, field("define-owner", "Owner", { value: feature?.owner ?? "" })),
        h(
          "div",
          { class: "field" },
          h("label", { for: "define-kind" }, "Kind"),
          h("select", { id: "define-kind" }, h("option", { value: "" }, "—"), KINDS.map((value) => h("option", { value, selected: feature?.kind === value }, value.toLowerCase()))),
        ),
        h("div", { class: "field" }, field("define-expires", "Expires on", { type: "date", value: expires })),
      ),
      due ? h("p", { class: due.level }, due.text) : null,
      h("div", { class: "row" }, h("button", { type: "submit" }, name ? "Save definition" : "Define")),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const value = (selector) => form.querySelector(selector).value.trim();
      const input = {
        name: name || value("#define-name"),
        description: value("#define-description") || null,
        owner: value("#define-owner") || null,
        kind: value("#define-kind") || null,
        expiresAt: value("#define-expires") ? `${value("#define-expires")}T00:00:00Z` : null,
      };
      try {
        const result = (await context.client.request(DEFINE, { input })).defineFeature;
        if (result.__typename === "InvalidInput") {
          outcome.textContent = result.message;
          return;
        }
        context.clearAlert();
        if (!name) {
          context.navigate(id, { name: result.feature.name });
          return;
        }
        outcome.textContent = result.changed
          ? `Saved: revision ${result.revision}.`
          : `Nothing changed (revision ${result.revision}).`;
        context.refreshStatus();
      } catch (error) {
        context.fail(error);
      }
    });
    replace(details, form);
  }
  load(true);
}
