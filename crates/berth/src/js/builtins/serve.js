// Runs in a worker's runtime after the prelude: the worker's `env` (container bindings as
// Durable Object namespaces, and its vars), and `__berth.serve`, which berth calls with each
// request. Requests and responses cross to Rust as plain parts (method, url, headers as
// [name, value] pairs, bytes), so only these few lines know the shape of both sides.
// `__berth.native` is set by berth before this runs (see js/bindings.rs).
(() => {
  const berth = globalThis.__berth;
  const native = berth.native;
  const NULL_BODY = [101, 204, 205, 304];

  class DurableObjectId {
    constructor(hex, name) {
      this.hex = hex;
      this.name = name;
    }
    toString() {
      return this.hex;
    }
    equals(other) {
      return other instanceof DurableObjectId && other.hex === this.hex;
    }
  }

  const bytes = async (request) => {
    if (request.method === "GET" || request.method === "HEAD") return null;
    const buffer = await request.arrayBuffer();
    return buffer.byteLength === 0 ? null : new Uint8Array(buffer);
  };

  const response = (reply) =>
    new Response(NULL_BODY.includes(reply.status) ? null : reply.body, {
      status: reply.status,
      headers: reply.headers,
    });

  berth.DurableObjectId = DurableObjectId;

  // A stub of one container object: what `namespace.get(id)` gives.
  class ContainerStub {
    #target;
    constructor(binding, id, direct = false) {
      this.id = id;
      this.name = id.name;
      this.#target = { binding, id: id.hex, name: id.name ?? null, direct };
    }
    // Sends the request to the container's default port (or the one `switchPort` set).
    async fetch(input, init) {
      // A Request passed on as it is (`container.fetch(request)`) is sent as it is:
      // copying it would give the same method, url, headers and body.
      const request = input instanceof Request && init === undefined ? input : new Request(input, init);
      return response(await native.fetch(this.#target, request.method, request.url, [...request.headers], await bytes(request), null));
    }
    // Cloudflare's containerFetch(request | url, init | port?, port?).
    async containerFetch(input, initOrPort, port) {
      const init = typeof initOrPort === "object" ? initOrPort : undefined;
      const to = typeof initOrPort === "number" ? initOrPort : port;
      const request = new Request(input, init);
      return response(await native.fetch(this.#target, request.method, request.url, [...request.headers], await bytes(request), to ?? null));
    }
    async start(options) {
      await native.start(this.#target, false, [], options?.envVars ?? {});
    }
    async startAndWaitForPorts(ports, options) {
      const list = ports === undefined ? [] : Array.isArray(ports) ? ports : [ports];
      await native.start(this.#target, true, list, options?.startOptions?.envVars ?? {});
    }
    async stop(signal) {
      await native.stop(this.#target, signal === "SIGKILL" || signal === 9);
    }
    async destroy() {
      await native.stop(this.#target, true);
    }
    async getState() {
      return { status: await native.state(this.#target), lastChange: Date.now() };
    }
  }

  // The Durable Object namespace a container binding stands for.
  const namespace = (binding) => {
    const idFromName = (name) => new DurableObjectId(native.idFromName(binding, String(name)), String(name));
    return {
      idFromName,
      idFromString: (hex) => new DurableObjectId(native.idFromString(binding, String(hex)), undefined),
      newUniqueId: () => new DurableObjectId(native.newUniqueId(binding), undefined),
      get: (id) => {
        if (!(id instanceof DurableObjectId)) throw new TypeError(`${binding}.get takes an id from ${binding}.idFromName, idFromString or newUniqueId`);
        return new ContainerStub(binding, id);
      },
      getByName: (name) => new ContainerStub(binding, idFromName(name)),
    };
  };
  // The stub a class's own code reaches its container through (hooks.js).
  berth.directStub = (binding, id) => new ContainerStub(binding, id, true);

  // The exported container classes with a `fetch` of their own, which requests for
  // their objects go through (Container's own fetch goes straight to the container).
  const ownFetch = (exports) =>
    Object.entries(exports)
      .filter(([, value]) => typeof value === "function" && berth.Container && value.prototype instanceof berth.Container)
      .filter(([, value]) => value.prototype.fetch !== berth.Container.prototype.fetch)
      .map(([name]) => name);

  // LLRT's timer loop ends for good on the first callback that throws, so callbacks
  // never throw: what they throw is logged, as an uncaught error would be.
  const guarded = (set) => (callback, delay, ...args) =>
    set(() => {
      try {
        if (typeof callback === "function") callback(...args);
      } catch (error) {
        console.error("uncaught in a timer's callback:", error instanceof Error ? `${error}\n${error.stack}` : error);
      }
    }, delay);
  globalThis.setTimeout = guarded(globalThis.setTimeout);
  globalThis.setInterval = guarded(globalThis.setInterval);
  const setImmediate = globalThis.setImmediate;
  globalThis.setImmediate = (callback, ...args) => guarded((f) => setImmediate(f))(callback, 0, ...args);

    const context = { waitUntil() {}, passThroughOnException() {}, props: {} };

  // Sets up the worker from its entrypoint's exports; fails with what is missing.
  berth.startWorker = (exports, path, bindings, vars) => {
    const env = { ...vars };
    for (const name of bindings) env[name] = namespace(name);
    Object.assign((berth.workersEnv ??= {}), env);
    // For the container classes' hooks (hooks.js).
    berth.exports = exports;
    berth.env = env;
    const entry = exports.default;
    if (typeof entry === "function" && typeof entry.prototype?.fetch === "function") {
      berth.handler = (request) => new entry(context, env).fetch(request);
    } else if (entry !== null && typeof entry === "object" && typeof entry.fetch === "function") {
      berth.handler = (request) => entry.fetch(request, env, context);
    } else {
      throw new TypeError(`${path}: the default export has no fetch; export default { async fetch(request, env, ctx) { … } }, or a class extending WorkerEntrypoint`);
    }
    return ownFetch(exports);
  };

  berth.serve = async (method, url, headers, body, object) => {
    const request = new Request(url, { method, headers, body: body ?? undefined });
    const answer = object ? await berth.classFetch(object, request) : await berth.handler(request);
    if (!(answer instanceof Response)) {
      throw new TypeError(`the worker's fetch returned ${answer === null ? "null" : typeof answer}, not a Response`);
    }
    const buffer = await answer.arrayBuffer();
    return { status: answer.status, headers: [...answer.headers], body: new Uint8Array(buffer) };
  };
})();
