// Runs a real Apollo Client cache against a running features-gql and prints what it read.
//
//   node tools/cache-check.mjs http://127.0.0.1:8080/graphql
//
// Asks for two resources with the same id under two types, through three caches: Apollo's
// default (keys objects by __typename and id), and the two recipes the README gives
// (keyFields ["type", "id"], or ["nodeId"]). Prints one JSON object: per cache, the
// features each resource came back with, as read from the cache after both were written.
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";

const url = process.argv[2];
const recipes = {
  default: undefined,
  typeAndId: {
    Resource: { keyFields: ["type", "id"] },
    Feature: { keyFields: ["name"] },
  },
  nodeId: {
    Resource: { keyFields: ["nodeId"] },
    Feature: { keyFields: ["nodeId"] },
  },
};
const one = (withNodeId) => gql`
  query One($type: String!, $id: String!) {
    resource(type: $type, id: $id) { ${withNodeId ? "nodeId" : ""} type id features }
  }
`;

const result = {};
for (const [name, typePolicies] of Object.entries(recipes)) {
  const cache = new InMemoryCache(typePolicies ? { typePolicies } : {});
  const client = new ApolloClient({ link: new HttpLink({ uri: url }), cache });
  const query = one(name === "nodeId");
  // Two separate requests, as two components of an application would make them.
  for (const type of ["repo", "pipeline"]) {
    await client.query({ query, variables: { type, id: "same" } });
  }
  result[name] = {};
  for (const type of ["repo", "pipeline"]) {
    const read = cache.readQuery({ query, variables: { type, id: "same" } });
    result[name][type] = read.resource.features;
  }
}
process.stdout.write(JSON.stringify(result));
