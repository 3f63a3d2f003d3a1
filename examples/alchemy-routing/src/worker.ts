import { getContainer, getRandom } from "@cloudflare/containers";
import type { worker } from "../alchemy.run.ts";

export { RoutedContainer } from "./container.ts";

const POOL = 3;
let next = 0;

/** The round-robin of the documentation, over a pool of `instances` named instance-N. */
function roundRobin(binding: DurableObjectNamespace, request: Request, instances = POOL) {
  // Fixed: the documentation's snippet used an undefined `request` and `rand`; the
  // request is passed in, and the instance is the next one in turn.
  const containerId = binding.idFromName(`instance-${next++ % instances}`);
  const container = binding.get(containerId);
  return container.fetch(request);
}

/** The user's own container, named by the `user` cookie. */
function userName(request: Request): string | undefined {
  const cookies = request.headers.get("cookie") ?? "";
  for (const part of cookies.split(";")) {
    const [name, ...value] = part.trim().split("=");
    if (name === "user" && value.length > 0) return decodeURIComponent(value.join("="));
  }
  return undefined;
}

export default {
  async fetch(request: Request, env: typeof worker.Env): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname.startsWith("/random")) {
      const container = await getRandom(env.ROUTED, POOL);
      return container.fetch(request);
    }
    if (url.pathname.startsWith("/rr")) {
      return roundRobin(env.ROUTED, request);
    }
    const user = userName(request);
    if (!user) {
      return new Response("set a user cookie (user=NAME) to get a container of your own\n", {
        status: 400,
      });
    }
    return getContainer(env.ROUTED, `user-${user}`).fetch(request);
  },
};
