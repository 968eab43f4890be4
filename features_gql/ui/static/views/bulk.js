// Bulk change: one feature added to or removed from many resources of a type, with a
// preview (checkMatrix) and per-item results (addFeatures / removeFeatures).
import { field, h, replace } from "../elements.js";

export const id = "bulk";
export const title = "Bulk change";

/** Items per request: well inside the service's per-request cost limit. */
const CHUNK = 500;

const MATRIX = `query Preview($type: String!, $ids: [String!]!, $features: [String!]!) {
  checkMatrix(type: $type, ids: $ids, features: $features)
}`;

const BULK = (mutation) => `mutation Bulk($items: [CheckInput!]!) {
  result: ${mutation}(items: $items) {
    __typename
    ... on BulkChange { changedCount revision changes { resource { type id } changed revision } }
    ... on InvalidInput { field rule message }
  }
}`;

function chunks(list, size) {
  const out = [];
  for (let start = 0; start < list.length; start += size) out.push(list.slice(start, start + size));
  return out;
}

/** The pasted ids: one a line (or separated by commas), trimmed, blanks and repeats dropped. */
export function parseIds(text) {
  const seen = new Set();
  for (const raw of text.split(/[\n,]/)) {
    const value = raw.trim();
    if (value) seen.add(value);
  }
  return [...seen];
}

export function render(container, context) {
  const writable = context.session.can("write");
  const form = h(
    "form",
    { class: "bulk", onsubmit: (event) => event.preventDefault() },
    h(
      "div",
      { class: "row" },
      h(
        "div",
        { class: "field" },
        h("label", { for: "bulk-op" }, "Change"),
        h("select", { id: "bulk-op" }, h("option", { value: "add" }, "Add"), h("option", { value: "remove" }, "Remove")),
      ),
      h("div", { class: "field" }, field("bulk-feature", "Feature", { required: true, autocapitalize: "off", spellcheck: "false" })),
      h("div", { class: "field" }, field("bulk-type", "Type", { required: true, autocapitalize: "off", spellcheck: "false" })),
    ),
    h("div", { class: "field" }, h("label", { for: "bulk-ids" }, "Ids, one a line"), h("textarea", { id: "bulk-ids", spellcheck: "false", required: true })),
    h(
      "div",
      { class: "row" },
      h("button", { type: "button", class: "secondary", onclick: () => preview() }, "Preview"),
      writable ? h("button", { type: "button", id: "bulk-apply", disabled: true, onclick: () => apply() }, "Apply") : null,
    ),
  );
  const summary = h("p", { class: "outcome", role: "status" });
  const results = h("div", { class: "table-wrap" });
  container.append(
    h("h2", {}, "Bulk change"),
    writable ? null : h("p", { class: "note" }, "This token may only read: the preview shows what a write token would change."),
    form,
    summary,
    results,
  );

  let planned = null;

  function values() {
    return {
      op: form.querySelector("#bulk-op").value,
      feature: form.querySelector("#bulk-feature").value.trim(),
      type: form.querySelector("#bulk-type").value.trim(),
      ids: parseIds(form.querySelector("#bulk-ids").value),
    };
  }

  form.addEventListener("input", () => {
    planned = null;
    const button = form.querySelector("#bulk-apply");
    if (button) button.disabled = true;
  });

  async function preview() {
    const { op, feature, type, ids } = values();
    if (!feature || !type || ids.length === 0) {
      summary.textContent = "Give a feature, a type and at least one id.";
      return;
    }
    const has = [];
    try {
      for (const part of chunks(ids, CHUNK)) {
        const data = await context.client.request(MATRIX, { type, ids: part, features: [feature] });
        for (const row of data.checkMatrix) has.push(row[0]);
      }
    } catch (error) {
      context.fail(error);
      return;
    }
    context.clearAlert();
    const changes = ids.filter((_, index) => (op === "add" ? !has[index] : has[index]));
    planned = { op, feature, type, ids };
    summary.textContent = `${op === "add" ? "Adding" : "Removing"} ${feature} would change ${changes.length} of ${ids.length} ${type} resources; ${ids.length - changes.length} already ${op === "add" ? "have" : "lack"} it.`;
    replace(
      results,
      table(
        ["Id", "Has it now", "Would change"],
        ids.map((resourceId, index) => [resourceId, has[index] ? "yes" : "no", changes.includes(resourceId) ? "yes" : "no"]),
      ),
    );
    const button = form.querySelector("#bulk-apply");
    if (button) button.disabled = false;
  }

  async function apply() {
    if (!planned) return;
    const { op, feature, type, ids } = planned;
    const button = form.querySelector("#bulk-apply");
    button.disabled = true;
    const rows = [];
    let changed = 0;
    let revision = null;
    try {
      for (const part of chunks(ids, CHUNK)) {
        const items = part.map((resourceId) => ({ resource: { type, id: resourceId }, feature }));
        const data = await context.client.request(BULK(op === "add" ? "addFeatures" : "removeFeatures"), { items });
        const result = data.result;
        if (result.__typename === "InvalidInput") {
          summary.textContent = `Refused, nothing in this part was changed: ${result.message}`;
          break;
        }
        changed += result.changedCount;
        revision = result.revision;
        for (const change of result.changes) {
          rows.push([change.resource.id, change.changed ? "changed" : "unchanged", String(change.revision)]);
        }
      }
    } catch (error) {
      context.fail(error);
    }
    if (revision !== null) {
      summary.textContent = `${op === "add" ? "Added" : "Removed"} ${feature}: ${changed} of ${ids.length} changed; revision ${revision}.`;
    }
    replace(results, table(["Id", "Result", "Revision"], rows));
    planned = null;
    context.refreshStatus();
  }
}

function table(headings, rows) {
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, headings.map((text) => h("th", { scope: "col" }, text)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((text) => h("td", {}, text))))),
  );
}
