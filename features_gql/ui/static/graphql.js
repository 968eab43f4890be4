// The panel's only way to the service: GraphQL over HTTP, the same API scripts use.

export class GraphQLError extends Error {
  constructor(message, code, status = 0) {
    super(message);
    this.name = "GraphQLError";
    this.code = code;
    this.status = status;
  }
}

export class Client {
  /** `endpoint` is the /graphql URL; `tokenOf()` gives the token to send, or "". */
  constructor(endpoint, tokenOf) {
    this.endpoint = endpoint;
    this.tokenOf = tokenOf;
  }

  /** The operation's data; a GraphQLError for an error anywhere in the answer. */
  async request(query, variables = {}) {
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    const token = this.tokenOf();
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(this.endpoint, {
        method: "POST",
        headers,
        body: JSON.stringify({ query, variables }),
        // The token travels in the Authorization header only: no cookies, no cache.
        credentials: "omit",
        cache: "no-store",
      });
    } catch (error) {
      throw new GraphQLError(`The service did not answer (${error.message}).`, "NETWORK");
    }
    let body;
    try {
      body = await response.json();
    } catch {
      throw new GraphQLError(`The service answered HTTP ${response.status}.`, "HTTP", response.status);
    }
    const errors = Array.isArray(body.errors) ? body.errors : [];
    if (errors.length > 0) {
      const first = errors[0];
      const code = first.extensions?.code ?? "ERROR";
      throw new GraphQLError(first.message ?? code, code, response.status);
    }
    if (!response.ok || body.data == null) {
      throw new GraphQLError(`The service answered HTTP ${response.status}.`, "HTTP", response.status);
    }
    return body.data;
  }
}
