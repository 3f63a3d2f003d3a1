// Routing written as code: a pool picked at random, round-robin over a fixed pool, and a
// container of its own for each user, named by a cookie.
import alchemy from "alchemy";
import { Container, Worker } from "alchemy/cloudflare";
import type { RoutedContainer } from "./src/container.ts";

const app = await alchemy("routing");

const container = await Container<RoutedContainer>("routed-container", {
  className: "RoutedContainer",
  maxInstances: 10,
});

export const worker = await Worker("router", {
  name: "router",
  entrypoint: "./src/worker.ts",
  bindings: {
    ROUTED: container,
  },
});

await app.finalize();
