// The change history of a resource, a feature or an actor, newest first, paged.
import { field, formatTime, h } from "../elements.js";

export const id = "history";
export const title = "History";

const HISTORY = `query History($resource: ResourceInput, $feature: String, $actor: String, $after: String) {
  history(resource: $resource, feature: $feature, actor: $actor, first: 50, after: $after) {
    edges { node { revision op feature actor at resource { type id } } }
    pageInfo { hasNextPage endCursor }
  }
}`;

export function render(container, context, params) {
  const initial = (name) => params.get(name) ?? "";
  const form = h(
    "form",
    {
      class: "lookup",
      onsubmit: (event) => {
        event.preventDefault();
        const filters = {};
        for (const name of ["type", "id", "feature", "actor"]) {
          const value = form.querySelector(`#history-${name}`).value.trim();
          if (value) filters[name] = value;
        }
        context.navigate(id, filters);
      },
    },
    h("div", { class: "field" }, field("history-type", "Type", { value: initial("type"), autocapitalize: "off" })),
    h("div", { class: "field grow" }, field("history-id", "Id", { value: initial("id"), autocapitalize: "off" })),
    h("div", { class: "field" }, field("history-feature", "Feature", { value: initial("feature"), autocapitalize: "off" })),
    h("div", { class: "field" }, field("history-actor", "Actor", { value: initial("actor"), autocapitalize: "off" })),
    h("button", { type: "submit" }, "Show"),
  );
  const body = h("tbody");
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "More");
  const empty = h("p", { class: "empty" });
  container.append(
    h("h2", {}, "History"),
    form,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, ["Revision", "When", "Change", "Resource", "Feature", "Actor"].map((text) => h("th", { scope: "col" }, text)))),
        body,
      ),
    ),
    empty,
    more,
  );

  const variables = {
    resource: initial("type") && initial("id") ? { type: initial("type"), id: initial("id") } : null,
    feature: initial("feature") || null,
    actor: initial("actor") || null,
    after: null,
  };

  async function page() {
    let data;
    try {
      data = await context.client.request(HISTORY, variables);
    } catch (error) {
      context.fail(error);
      return;
    }
    context.clearAlert();
    for (const { node } of data.history.edges) {
      body.append(
        h(
          "tr",
          {},
          h("td", {}, String(node.revision)),
          h("td", {}, formatTime(node.at)),
          h("td", {}, node.op.toLowerCase()),
          h("td", {}, node.resource ? `${node.resource.type} ${node.resource.id}` : "—"),
          h("td", {}, node.feature),
          h("td", {}, node.actor ?? "—"),
        ),
      );
    }
    empty.textContent = body.children.length ? "" : "No changes match.";
    variables.after = data.history.pageInfo.endCursor;
    more.hidden = !data.history.pageInfo.hasNextPage;
  }
  more.addEventListener("click", page);
  page();
}
