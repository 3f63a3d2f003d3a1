// berth's `@cloudflare/containers`: the Container class with the defaults of Cloudflare's
// library, so that berth can read a subclass's options by instantiating it, and the
// helpers that reach containers through a binding (see serve.js). berth runs the
// container itself; the class's hooks (onStart, onStop, onError, onActivityExpired) run
// in the worker's runtime (see hooks.js), and a worker reaches the container through a
// stub.
import { DurableObject } from "cloudflare:workers";

const onlyInFetch = (what) =>
  new Error(`${what}: berth runs the container, and the class's code only in its hooks; reach the container through a stub, as in getContainer(env.MY_CONTAINER).fetch(request)`);

// While onActivityExpired runs, what its this.stop() sets (see hooks.js).
const EXPIRY = Symbol("berth expiry");
globalThis.__berth.EXPIRY = EXPIRY;

// The same singleton name as berth's Namespace::get_container.
const SINGLETON = "berth-singleton-container";
const TARGET_PORT = "berth-container-target-port";

const namespaceOf = (binding, what) => {
  if (binding === null || typeof binding !== "object" || typeof binding.idFromName !== "function") {
    throw new TypeError(`${what} takes a container binding (env.MY_CONTAINER), got ${binding === null ? "null" : typeof binding}`);
  }
  return binding;
};

export class Container extends DurableObject {
  defaultPort = undefined;
  requiredPorts = undefined;
  sleepAfter = "10m";
  manualStart = false;
  envVars = {};
  entrypoint = undefined;
  enableInternet = true;
  pingEndpoint = "ping";

  constructor(ctx, env, options) {
    super(ctx, env);
    if (options?.defaultPort !== undefined) this.defaultPort = options.defaultPort;
    if (options?.sleepAfter !== undefined) this.sleepAfter = options.sleepAfter;
    if (options?.explicitContainerStart !== undefined) this.manualStart = options.explicitContainerStart;
  }

  async fetch() { throw onlyInFetch("Container.fetch"); }
  async containerFetch() { throw onlyInFetch("Container.containerFetch"); }
  async start() { throw onlyInFetch("Container.start"); }
  async startAndWaitForPorts() { throw onlyInFetch("Container.startAndWaitForPorts"); }
  async stop() {
    if (this[EXPIRY]) {
      this[EXPIRY].stop = true;
      return;
    }
    throw onlyInFetch("Container.stop");
  }
  async destroy() { throw onlyInFetch("Container.destroy"); }
  renewActivityTimeout() {}
  onStart() {}
  onStop() {}
  onError(error) { throw error; }
  async onActivityExpired() { await this.stop(); }
}
globalThis.__berth.Container = Container;

export function getContainer(binding, name) {
  const namespace = namespaceOf(binding, "getContainer");
  return namespace.get(namespace.idFromName(name ?? SINGLETON));
}

export async function getRandom(binding, instances = 3) {
  const namespace = namespaceOf(binding, "getRandom");
  const k = Math.floor(Math.random() * Math.max(1, instances));
  return namespace.get(namespace.idFromName(`instance-${k}`));
}

export const loadBalance = getRandom;

// A copy of `request` that a stub's fetch sends to `port` instead of the default port.
export function switchPort(request, port) {
  const headers = new Headers(request.headers);
  headers.set(TARGET_PORT, String(port));
  return new Request(request, { headers });
}
