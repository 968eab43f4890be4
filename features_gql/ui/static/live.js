// The change feed: `subscription featureChanges` over graphql-transport-ws on /graphql.
// The token goes in connection_init (browsers cannot set headers on a WebSocket). After a
// drop it reconnects and resumes after the last revision it saw, so no change is missed.

const FEED = `subscription Feed($after: Revision) {
  featureChanges(after: $after) { revision op feature actor at resource { type id } }
}`;

export class LiveFeed extends EventTarget {
  constructor(endpoint, tokenOf) {
    super();
    const url = new URL(endpoint);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    this.url = url.href;
    this.tokenOf = tokenOf;
    this.socket = null;
    this.after = null;
    this.retry = 0;
    this.stopped = true;
    this.connected = false;
  }

  /** Start following from now on (or after `after`). */
  start(after = null) {
    this.stop();
    this.stopped = false;
    this.after = after;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close(1000);
    }
    this.setConnected(false);
  }

  setConnected(connected) {
    if (this.connected === connected) return;
    this.connected = connected;
    this.dispatchEvent(new CustomEvent("state", { detail: { connected } }));
  }

  connect() {
    const socket = new WebSocket(this.url, "graphql-transport-ws");
    this.socket = socket;
    socket.addEventListener("open", () => {
      const token = this.tokenOf();
      socket.send(
        JSON.stringify({
          type: "connection_init",
          payload: token ? { Authorization: `Bearer ${token}` } : {},
        }),
      );
    });
    socket.addEventListener("message", (event) => this.receive(socket, event.data));
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.setConnected(false);
      if (this.stopped) return;
      // Back off up to 30 s; resume after the last revision seen.
      this.retry = Math.min(this.retry + 1, 5);
      this.timer = setTimeout(() => this.connect(), 1000 * 2 ** (this.retry - 1));
    });
  }

  receive(socket, data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    switch (message.type) {
      case "connection_ack":
        this.retry = 0;
        this.setConnected(true);
        socket.send(
          JSON.stringify({
            id: "feed",
            type: "subscribe",
            payload: { query: FEED, variables: { after: this.after } },
          }),
        );
        break;
      case "ping":
        socket.send(JSON.stringify({ type: "pong" }));
        break;
      case "next": {
        const change = message.payload?.data?.featureChanges;
        if (change) {
          this.after = change.revision;
          this.dispatchEvent(new CustomEvent("change", { detail: change }));
        }
        break;
      }
      case "error":
        this.dispatchEvent(new CustomEvent("failure", { detail: message.payload }));
        break;
      default:
        break;
    }
  }
}
