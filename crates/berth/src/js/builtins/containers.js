// berth's `@cloudflare/containers`: the Container class with the defaults of Cloudflare's
// library, so that berth can read a subclass's options by instantiating it, and the
// helpers that reach containers through a binding (see serve.js). berth runs the
// container itself; the class's hooks (onStart, onStop, onPause, onError, onActivityExpired) run
// in the worker's runtime (see hooks.js), and a worker reaches the container through a
// stub.
import { DurableObject } from "cloudflare:workers";

// The stub of the instance's own object, which hooks.js sets on each instance it makes:
// through it the class's methods reach their container. An instance made only to read
// the class's options (at load) has none.
const SELF = Symbol("berth self");
globalThis.__berth.SELF = SELF;
// hooks.js's scheduler for the instance's object (see `schedule`).
const SCHEDULER = Symbol("berth scheduler");
globalThis.__berth.SCHEDULER = SCHEDULER;

const own = (instance, what) => {
  const found = instance[SELF];
  if (!found) {
    throw new Error(`${what}: this instance stands for no object; berth runs the class's code for an object in its hooks and schedules, and a worker reaches a container through a stub, as in getContainer(env.MY_CONTAINER).fetch(request)`);
  }
  return found;
};

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
  allowedHosts = [];
  deniedHosts = [];
  pingEndpoint = "ping";

  constructor(ctx, env, options) {
    super(ctx, env);
    // Made by berth for an object (see hooks.js): its stub and scheduler, from the start.
    // Taken once: another Container made while this constructor runs is not this object.
    const made = globalThis.__berth.constructing;
    if (made) {
      globalThis.__berth.constructing = null;
      this[SELF] = made.self;
      this[SCHEDULER] = made.scheduler;
    }
    if (options?.defaultPort !== undefined) this.defaultPort = options.defaultPort;
    if (options?.sleepAfter !== undefined) this.sleepAfter = options.sleepAfter;
    if (options?.explicitContainerStart !== undefined) this.manualStart = options.explicitContainerStart;
    if (options?.envVars !== undefined) this.envVars = options.envVars;
    if (options?.entrypoint !== undefined) this.entrypoint = options.entrypoint;
    if (options?.enableInternet !== undefined) this.enableInternet = options.enableInternet;
  }

  // What Cloudflare's Container does by default: to the container, started if need be.
  async fetch(request) { return own(this, "Container.fetch").fetch(request); }
  async containerFetch(input, initOrPort, port) { return own(this, "Container.containerFetch").containerFetch(input, initOrPort, port); }
  // As Cloudflare's, a start from the class's code takes the instance's fields as they
  // are now (under what `options` sets): a method may change this.envVars before it.
  async start(options) { return own(this, "Container.start").start(withFields(this, options)); }
  async startAndWaitForPorts(...args) {
    const self = own(this, "Container.startAndWaitForPorts");
    const { ports, startOptions } = globalThis.__berth.waitArgs(args);
    return self.startAndWaitForPorts({ ports, startOptions: withFields(this, startOptions) });
  }
  // Cloudflare's waitForPort({ portToCheck }): until that port of the running container
  // answers. Its retries and interval are not berth's: the class's readiness timeout is.
  async waitForPort(options) {
    const port = options?.portToCheck;
    if (!Number.isInteger(port)) throw new TypeError("waitForPort({ portToCheck }): portToCheck is the port to wait for, a number");
    const self = own(this, "Container.waitForPort");
    const { status } = await self.getState();
    if (!["running", "healthy"].includes(status)) {
      throw new Error(`waitForPort: the container is ${status}, not running; start it first (start() or startAndWaitForPorts())`);
    }
    await self.startAndWaitForPorts([port]);
  }
  async stop(signal = "SIGTERM") {
    // From onActivityExpired, a stop is the hook's answer (berth stops the container
    // when the hook returns), not a second stop racing the lifecycle.
    if (this[EXPIRY]) {
      this[EXPIRY].stop = true;
      return;
    }
    return own(this, "Container.stop").stop(signal);
  }
  async destroy() { return own(this, "Container.destroy").destroy(); }
  async getState() { return own(this, "Container.getState").getState(); }
  // Calls method `callback` of this object's instance with `payload` at `when` (a Date,
  // or a delay in seconds). Kept in berth's store: it outlives a restart of berth and a
  // new version of the app.
  async schedule(when, callback, payload) {
    own(this, "Container.schedule");
    return this[SCHEDULER].schedule(this, when, callback, payload);
  }
  async getSchedule(id) { own(this, "Container.getSchedule"); return this[SCHEDULER].get(id); }
  async getSchedules() { own(this, "Container.getSchedules"); return this[SCHEDULER].list(); }
  async deleteSchedule(id) { own(this, "Container.deleteSchedule"); return this[SCHEDULER].delete(id); }
  // Cloudflare's: the schedules that call method `name`, and their removal.
  async listSchedules(name) {
    own(this, "Container.listSchedules");
    return (await this[SCHEDULER].list()).filter((task) => task.callback === name);
  }
  async deleteSchedules(name) {
    own(this, "Container.deleteSchedules");
    return this[SCHEDULER].deleteCalling(name);
  }
  // Without an object (the instance berth makes to read the class's fields), nothing.
  // A failure (a cluster's home that does not answer) is logged as an unhandled rejection.
  renewActivityTimeout() { return this[SELF]?.renewActivityTimeout(); }
  onStart() {}
  onStop() {}
  // berth's own: the container was paused (sleepMode = "pause"); onStop comes when it stops.
  onPause() {}
  onError(error) { throw error; }
  async onActivityExpired() { await this.stop(); }
  // Cloudflare's Container runs its schedules from alarm(), so a class that overrides
  // alarm() calls super.alarm(); berth runs schedules apart, so here it does nothing.
  async alarm() {}
}
globalThis.__berth.Container = Container;

// The start options of a start from the class's own code: the instance's fields, under
// `options`. berth sends only what differs from the class's fields as it read them.
const withFields = (instance, options) => ({
  ...options,
  // A var whose value is undefined (an unset secret) is left out, as at load.
  envVars: Object.fromEntries(Object.entries({ ...instance.envVars, ...options?.envVars }).filter(([, v]) => v !== undefined)),
  entrypoint: options?.entrypoint ?? instance.entrypoint,
  enableInternet: options?.enableInternet ?? instance.enableInternet,
});

// Cloudflare's outbound interception runs through this entrypoint, which a worker
// exports. berth controls a container's egress itself (enableInternet, allowedHosts,
// deniedHosts), so it only needs to exist: the export then loads as it does on
// Cloudflare. A class's outbound handlers are refused when berth reads the class.
export class ContainerProxy {
  async fetch() {
    return new Response("berth does not route a container's outbound requests through ContainerProxy; use the class's enableInternet, allowedHosts and deniedHosts", { status: 501 });
  }
}

// Cloudflare's typed helper for an outbound handler's parameters: they as they are.
export function outboundParams(_handler, params) {
  return params;
}

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
