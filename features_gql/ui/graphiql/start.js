// GraphiQL for this service: its API is this page's own address (the GraphQL endpoint
// serves the page to browsers), subscriptions the same address over WebSocket.
//
// A token goes in the Headers tab as {"Authorization": "Bearer <token>"}, and must not
// outlive the tab (as the control panel's). shouldPersistHeaders: false keeps headers out
// of GraphiQL's saved tabs and hides its setting to persist them; but its history still
// records each query's headers. So everything GraphiQL saves (tabs, history, settings)
// goes to this tab's sessionStorage, never localStorage.

"use strict";

(() => {
  const endpoint = new URL(window.location.href);
  endpoint.search = "";
  endpoint.hash = "";
  const subscriptions = new URL(endpoint);
  subscriptions.protocol = endpoint.protocol === "https:" ? "wss:" : "ws:";

  const anonymousReads =
    document.querySelector('meta[name="anonymous-access"]')?.content === "read";

  const DEFAULT_QUERY = `# Ask features-gql anything its schema offers (the Docs and
# Explorer buttons on the left show it). Run with Ctrl-Enter.
#
# With tokens configured, put yours in the Headers tab below:
#   {"Authorization": "Bearer <token>"}
# then re-fetch the schema (the ⟳ button, or Shift-Ctrl-R).

{
  viewer {
    name
    scopes
  }
  revision
}
`;

  const NEEDS_TOKEN = {
    errors: [
      {
        message:
          'This service needs a token: add {"Authorization": "Bearer <token>"} in the ' +
          "Headers tab, then re-fetch the schema (the ⟳ button, or Shift-Ctrl-R).",
      },
    ],
  };

  const storage = {
    getItem: (key) => sessionStorage.getItem(key),
    setItem: (key, value) => sessionStorage.setItem(key, value),
    removeItem: (key) => sessionStorage.removeItem(key),
    // GraphiQL's "Clear data": its own keys only, as it does with localStorage.
    clear() {
      for (const key of Object.keys(sessionStorage)) {
        if (key.startsWith("graphiql:")) sessionStorage.removeItem(key);
      }
    },
    get length() {
      return sessionStorage.length;
    },
  };

  const base = GraphiQL.createFetcher({ url: endpoint.href, subscriptionUrl: subscriptions.href });

  function hasAuthorization(headers) {
    return Object.keys(headers ?? {}).some((name) => name.toLowerCase() === "authorization");
  }

  // Where a request without a token is refused, GraphiQL's schema request on load would
  // be a 401 (and an error in the console) before anyone had a chance to add a token:
  // it is answered here instead, with what to do.
  function fetcher(params, options) {
    if (
      !anonymousReads &&
      params.operationName === "IntrospectionQuery" &&
      !hasAuthorization(options?.headers)
    ) {
      return Promise.resolve(NEEDS_TOKEN);
    }
    return base(params, options);
  }

  const root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher,
      defaultQuery: DEFAULT_QUERY,
      plugins: [GraphiQLPluginExplorer.explorerPlugin()],
      defaultEditorToolsVisibility: anonymousReads ? false : "headers",
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: false,
      storage,
      inputValueDeprecation: true,
    }),
  );
})();
