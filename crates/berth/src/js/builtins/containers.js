// berth's `@cloudflare/containers`: the Container class with the defaults of Cloudflare's
// library, so that berth can read a subclass's options by instantiating it. Its methods,
// and the helpers that reach containers, work only in a worker's fetch.
import { DurableObject } from "cloudflare:workers";

const onlyInFetch = (what) =>
  new Error(`${what} works only in a worker's fetch, and berth does not serve JS workers yet`);

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
  async stop() { throw onlyInFetch("Container.stop"); }
  async destroy() { throw onlyInFetch("Container.destroy"); }
  renewActivityTimeout() {}
  onStart() {}
  onStop() {}
  onError(error) { throw error; }
}
globalThis.__berth.Container = Container;

export function getContainer() { throw onlyInFetch("getContainer"); }
export function getRandom() { throw onlyInFetch("getRandom"); }
export function loadBalance() { throw onlyInFetch("loadBalance"); }
export function switchPort() { throw onlyInFetch("switchPort"); }
