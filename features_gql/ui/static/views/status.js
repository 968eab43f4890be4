// Service status: the store's health and the latest revision.
import { formatTime, h, replace } from "../elements.js";

export const id = "status";
export const title = "Status";

const STATUS = `query Status {
  health { status store { name up latencyMs reason } }
  revision
}`;

async function fetchStatus(client) {
  return client.request(STATUS);
}

/** The one-line status in the page's footer; quiet when it cannot be read. */
export async function refreshFooter(context, footer) {
  if (!context.session.viewer) {
    footer.replaceChildren();
    return;
  }
  try {
    const data = await fetchStatus(context.client);
    replace(
      footer,
      h("dt", {}, "Health"),
      h("dd", { class: `health ${data.health.status}` }, data.health.status),
      h("dt", {}, "Store"),
      h("dd", {}, `${data.health.store.name}${data.health.store.up ? "" : ` (${data.health.store.reason ?? "down"})`}`),
      h("dt", {}, "Revision"),
      h("dd", { id: "revision" }, String(data.revision ?? 0)),
    );
  } catch {
    replace(footer, h("dt", {}, "Health"), h("dd", { class: "health degraded" }, "unknown"));
  }
}

const SYNC = `query Sync {
  syncStatus { upstream revision upstreamRevision lagSeconds connected lastSyncedAt }
}`;

/** An edge's sync status; null on a service that follows no upstream (or has no field). */
async function fetchSync(client) {
  try {
    return (await client.request(SYNC)).syncStatus;
  } catch (error) {
    if (error.code === "GRAPHQL_VALIDATION_FAILED") return null;
    throw error;
  }
}

export function render(container, context) {
  const table = h("dl", { class: "status-table" });
  const sync = h("section", { "aria-label": "Sync status" });
  const refresh = h("button", { type: "button", onclick: () => load() }, "Refresh");
  container.append(h("h2", {}, "Status"), table, sync, refresh);

  async function load() {
    try {
      const data = await fetchStatus(context.client);
      const store = data.health.store;
      replace(
        table,
        h("dt", {}, "Health"),
        h("dd", { class: `health ${data.health.status}` }, data.health.status),
        h("dt", {}, "Store"),
        h("dd", {}, store.name),
        h("dt", {}, "Store up"),
        h("dd", {}, store.up ? "yes" : `no (${store.reason ?? "unknown"})`),
        h("dt", {}, "Store latency"),
        h("dd", {}, `${store.latencyMs.toFixed(1)} ms`),
        h("dt", {}, "Revision"),
        h("dd", {}, String(data.revision ?? 0)),
      );
      const edge = await fetchSync(context.client);
      if (edge) {
        replace(
          sync,
          h("h3", {}, "Sync with the upstream"),
          h(
            "dl",
            { class: "status-table" },
            h("dt", {}, "Upstream"), h("dd", {}, edge.upstream),
            h("dt", {}, "Connected"), h("dd", {}, edge.connected ? "yes" : "no"),
            h("dt", {}, "Copy at revision"), h("dd", {}, String(edge.revision ?? "not synced yet")),
            h("dt", {}, "Upstream revision"), h("dd", {}, String(edge.upstreamRevision ?? "unknown")),
            h("dt", {}, "Lag"), h("dd", {}, edge.lagSeconds == null ? "unknown" : `${edge.lagSeconds.toFixed(1)} s`),
            h("dt", {}, "Last synced"), h("dd", {}, edge.lastSyncedAt ? formatTime(edge.lastSyncedAt) : "never"),
          ),
        );
      } else {
        replace(sync);
      }
    } catch (error) {
      context.fail(error);
    }
  }
  load();
}
