// Who the panel acts as. The token lives in sessionStorage: it is gone when the tab
// closes, is never sent as a cookie, and never appears in a URL.

const KEY = "features-gql.token";

export class Session extends EventTarget {
  constructor() {
    super();
    /** `{name, scopes, anonymous}` from the viewer query, or null before it answered. */
    this.viewer = null;
  }

  get token() {
    return sessionStorage.getItem(KEY) ?? "";
  }

  setToken(token) {
    if (token) sessionStorage.setItem(KEY, token);
    else sessionStorage.removeItem(KEY);
  }

  setViewer(viewer) {
    this.viewer = viewer;
    this.dispatchEvent(new Event("change"));
  }

  can(scope) {
    return Boolean(this.viewer?.scopes.includes(scope));
  }
}
