// Runs in a worker's runtime after the prelude: the worker's `env` (container bindings as
// Durable Object namespaces, and its vars), and `__berth.serve`, which berth calls with each
// request. A client's request and a container's answer are made in Rust (js/messages.rs)
// as instances of the classes below; what crosses back is the status, the `Headers` and a
// body.
// `__berth.native` is set by berth before this runs (see js/bindings.rs).
//
// Bodies (see js/bodies.rs): the client's request body and a container's response body
// stay in Rust behind a handle. Passed on unread, the handle goes back to Rust and the body
// flows from Rust to Rust; read, it comes in chunks through a ReadableStream, or whole for
// text(), json(), arrayBuffer(). LLRT's Request and Response hold neither handles nor
// streams (its Response.body is always undefined), so the global classes are subclasses
// that keep such a body beside the native object, in `held`.
(() => {
  const berth = globalThis.__berth;
  const native = berth.native;
  const NULL_BODY = [101, 204, 205, 304];
  // On a WebSocketPair's client end, and on the Response that answers with it: the Rust
  // side of the pair (js/sockets.rs).
  const PEER = Symbol("peer");
  const NativeRequest = globalThis.Request;
  const NativeResponse = globalThis.Response;

  // The binding whose namespace made an id (not a field of its own, as on Cloudflare).
  const MADE_BY = Symbol("made by");
  class DurableObjectId {
    constructor(hex, name, binding) {
      this.hex = hex;
      this.name = name;
      this[MADE_BY] = binding;
    }
    toString() {
      return this.hex;
    }
    equals(other) {
      return other instanceof DurableObjectId && other.hex === this.hex;
    }
  }

  // Request or Response → its body when native code does not hold it:
  // { handle (a Rust body, or null), stream (made on first use of .body), used, pulled }.
  const held = new WeakMap();
  // A ReadableStream made from a handle → its record, so that `new Response(r.body, r)`
  // and `new Request(request, init)` still pass the Rust body on unread.
  const streams = new WeakMap();

  const record = (handle, stream) => ({ handle, stream, used: false, pulled: false });
  const recordOf = (stream) => streams.get(stream) ?? record(null, stream);

  // The record's body as a ReadableStream. No chunk is pulled before one is read
  // (highWaterMark 0), so the stream can still be passed on as the handle.
  const streamOf = (body) => {
    if (body.stream === null) {
      const handle = body.handle;
      // The next chunk, or undefined at the end: from the Rust body, unless the record
      // reads otherwise (see nativeRecord).
      const read = body.read ?? (() => native.read(handle));
      body.stream = new ReadableStream(
        {
          async pull(controller) {
            body.pulled = true;
            const chunk = await read();
            if (chunk === undefined) controller.close();
            else controller.enqueue(chunk);
          },
        },
        { highWaterMark: 0 },
      );
      streams.set(body.stream, body);
    }
    return body.stream;
  };

  // The handle to send on, if the body was never read.
  const passable = (body) =>
    body.handle !== null && !body.used && !body.pulled && !(body.stream?.locked ?? false);

  const alreadyUsed = () => new TypeError("the body was already read or sent; clone() the request or response to use its body twice");

  // A stream's chunk as bytes: text is encoded, an ArrayBuffer or a view of one is
  // viewed as bytes; anything else is an error, as on Cloudflare.
  // An ArrayBuffer, or a view of one, as bytes; null for anything else.
  const viewOf = (value) => {
    if (value instanceof ArrayBuffer) return new Uint8Array(value);
    if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    return null;
  };
  const bytesOfChunk = (value) => {
    if (typeof value === "string") return new TextEncoder().encode(value);
    const view = viewOf(value);
    if (view !== null) return view;
    throw new TypeError(`a body's stream gave ${value === null ? "null" : typeof value}; its chunks must be text, an ArrayBuffer or a view of one (a Uint8Array)`);
  };

  // All of the record's bytes, as one Uint8Array.
  const bytesOf = async (body) => {
    if (body.used || (body.stream?.locked ?? false)) throw alreadyUsed();
    body.used = true;
    if (body.stream === null) return native.readAll(body.handle);
    const reader = body.stream.getReader();
    const chunks = [];
    let length = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const chunk = bytesOfChunk(value);
      chunks.push(chunk);
      length += chunk.byteLength;
    }
    const all = new Uint8Array(length);
    let at = 0;
    for (const chunk of chunks) {
      all.set(chunk, at);
      at += chunk.byteLength;
    }
    return all;
  };

  // A body LLRT keeps itself (one given as text or bytes, or a `fetch()`'s answer), as a
  // record whose stream reads it whole on its first pull: LLRT gives no stream of it.
  const nativeRecord = (message, arrayBuffer) => {
    const body = record(null, null);
    let read = false;
    body.read = async () => {
      if (read) return undefined;
      read = true;
      const bytes = new Uint8Array(await arrayBuffer.call(message));
      return bytes.byteLength > 0 ? bytes : undefined;
    };
    streamOf(body);
    held.set(message, body);
    return body;
  };

  // Messages made with no body: their `body` is null.
  const bodiless = new WeakSet();

  // What the subclasses add to LLRT's body methods, for a body in `held`.
  // LLRT's `Response.body` is always undefined, and its `Request.body` is the text or
  // bytes given: here both are a ReadableStream (null for none), so that
  // `new Response(answer.body, answer)` passes the body on.
  const bodyMethods = (Native, none) =>
    class extends Native {
      get body() {
        const body = held.get(this);
        if (body !== undefined) return streamOf(body);
        if (bodiless.has(this) || none(this, () => super.body)) return null;
        return streamOf(nativeRecord(this, super.arrayBuffer));
      }
      get bodyUsed() {
        const body = held.get(this);
        return body === undefined ? super.bodyUsed : body.used || body.pulled || (body.stream?.locked ?? false);
      }
      async arrayBuffer() {
        const body = held.get(this);
        if (body === undefined) return super.arrayBuffer();
        const bytes = await bytesOf(body);
        return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      }
      async bytes() {
        const body = held.get(this);
        return body === undefined ? super.bytes() : bytesOf(body);
      }
      async text() {
        const body = held.get(this);
        return body === undefined ? super.text() : new TextDecoder().decode(await bytesOf(body));
      }
      async json() {
        const body = held.get(this);
        return body === undefined ? super.json() : JSON.parse(new TextDecoder().decode(await bytesOf(body)));
      }
      async blob() {
        const body = held.get(this);
        if (body === undefined) return super.blob();
        return new Blob([await bytesOf(body)], { type: this.headers.get("content-type") ?? "" });
      }
      static [Symbol.hasInstance](value) {
        return value instanceof Native;
      }
    };

  // For clone(): a held body is split in two (a tee); the message keeps one half and
  // the other is returned, for the copy. Undefined when native code holds the body.
  const split = (message) => {
    const body = held.get(message);
    if (body === undefined) return undefined;
    if (body.used || (body.stream?.locked ?? false)) throw alreadyUsed();
    const [mine, theirs] = streamOf(body).tee();
    held.set(message, record(null, mine));
    return theirs;
  };

  // What JavaScript passes as a body that native code cannot hold: a ReadableStream.
  const streamed = (body) => body instanceof ReadableStream;

  // A Request's fields are getters, which `{ ...request }` would not copy.
  const REQUEST_FIELDS = ["method", "headers", "redirect", "signal", "keepalive", "mode"];
  const REDIRECT = Symbol("redirect");
  const fields = (init) => {
    if (!(init instanceof NativeRequest)) return { ...init };
    const copy = {};
    for (const name of REQUEST_FIELDS) {
      const value = init[name];
      if (value !== undefined && value !== null) copy[name] = value;
    }
    return copy;
  };

  // An instance LLRT made itself (clone(), Response.json(), fetch()'s answer), made one
  // of `Class`, for the body above; `none`: it has no body.
  const ours = (native, Class, none = false) => {
    Object.setPrototypeOf(native, Class.prototype);
    if (none) bodiless.add(native);
    return native;
  };

  // LLRT's constructors take a missing argument, not an undefined one: arguments are
  // passed on as given.
  class Request extends bodyMethods(NativeRequest, (_, own) => own() == null) {
    // LLRT's Request has no `redirect`; fetch() reads it from here (see `fields`). A
    // client's request has "manual", as on Cloudflare: `fetch(request)` hands a redirect
    // back to the client instead of following it.
    get redirect() {
      return this[REDIRECT] ?? "follow";
    }
    constructor(...args) {
      const [input, init] = args;
      const redirect = (init !== null && typeof init === "object" ? init.redirect : undefined) ?? (input instanceof NativeRequest ? input.redirect : undefined);
      const given = init !== null && typeof init === "object" && "body" in init;
      const body = given ? init.body : input instanceof NativeRequest ? input.body : undefined;
      if (streamed(body)) {
        super(input, given ? { ...fields(init), body: undefined } : init ?? {});
        held.set(this, recordOf(body));
      } else if (init instanceof NativeRequest) {
        // A Request as the init (`new Request(url, request)`), without a body: its
        // fields, not the Request itself, which LLRT would take the url of too.
        super(input, fields(init));
      } else {
        // `new Request(request, undefined)` is `new Request(request)`, as in browsers.
        super(...(args.length > 1 && init === undefined ? [input] : args));
      }
      if (redirect !== undefined) {
        if (!["follow", "manual", "error"].includes(redirect)) throw new TypeError(`Request: redirect is "follow", "manual" or "error"; got ${String(redirect)}`);
        this[REDIRECT] = redirect;
      }
    }
    clone() {
      const theirs = split(this);
      let copy;
      if (theirs !== undefined) {
        copy = new Request(this, { body: theirs });
      } else if (bodiless.has(this) || ["GET", "HEAD"].includes(this.method)) {
        // LLRT's clone() gives its copy the url as method: one without a body is made anew.
        copy = new Request(this.url, fields(this));
        bodiless.add(copy);
      } else {
        copy = ours(super.clone(), Request, false);
      }
      if (this[REDIRECT] !== undefined) copy[REDIRECT] = this[REDIRECT];
      return copy;
    }
  }

  class Response extends bodyMethods(NativeResponse, (response) => NULL_BODY.includes(response.status)) {
    constructor(...args) {
      const socket = args[1]?.webSocket;
      if (socket !== undefined && socket !== null) {
        // Cloudflare's answer to a client's WebSocket: new Response(null, { status: 101,
        // webSocket: client }), the client end of a WebSocketPair.
        const peer = socket[PEER];
        if (peer === undefined) throw new TypeError("new Response(null, { status: 101, webSocket }): webSocket is the client end of a WebSocketPair (Object.values(new WebSocketPair())[0])");
        if (args[1].status !== 101) throw new TypeError("new Response(null, { status: 101, webSocket }): a WebSocket answers with status 101");
        super(null, { status: 200, statusText: args[1].statusText, headers: args[1].headers });
        Object.defineProperty(this, "status", { value: 101 });
        Object.defineProperty(this, "webSocket", { value: socket });
        this[PEER] = peer;
        bodiless.add(this);
        return;
      }
      if (streamed(args[0])) {
        super(null, ...args.slice(1));
        held.set(this, recordOf(args[0]));
      } else {
        super(...args);
        if (args[0] === undefined || args[0] === null) bodiless.add(this);
      }
    }
    clone() {
      const theirs = split(this);
      return theirs === undefined ? ours(super.clone(), Response, bodiless.has(this)) : new Response(theirs, this);
    }
    static json(...args) {
      return ours(NativeResponse.json(...args), Response);
    }
    static redirect(...args) {
      return ours(NativeResponse.redirect(...args), Response, true);
    }
    static error() {
      return ours(NativeResponse.error(), Response, true);
    }
  }
  globalThis.Request = Request;
  globalThis.Response = Response;
  // `fetch()` is LLRT's, which sends only a body of bytes it was given, and answers with
  // its own Responses: a body held here (a client's, or a stream) is read and given to it
  // whole, and its answer is made ours.
  const nativeFetch = globalThis.fetch;
  globalThis.fetch = async (input, init) => {
    // `"body" in init` holds for a Request given as `init`, whose body is a getter.
    const given = init !== undefined && init !== null && "body" in init;
    if (given && init.body instanceof ReadableStream) {
      init = { ...fields(init), body: await new Response(init.body).arrayBuffer() };
    } else if (input instanceof NativeRequest && !given) {
      // LLRT would read the Request's body as a property: now a stream, which it cannot send.
      const none = ["GET", "HEAD"].includes(input.method) || input.body === null;
      init = { ...fields(input), ...fields(init), body: none ? undefined : await input.arrayBuffer() };
      input = input.url;
    }
    return ours(await (init === undefined ? nativeFetch(input) : nativeFetch(input, init)), Response);
  };

  // A message's body on its way to Rust: the handle when it was never read; a pipe's
  // handle for a stream, which goes on chunk by chunk as it is made; else bytes; null
  // for none.
  const outgoing = async (message) => {
    const body = held.get(message);
    if (body !== undefined && passable(body)) {
      body.used = true;
      return body.handle;
    }
    if (body !== undefined) return pipe(body);
    const bytes = new Uint8Array(await message.arrayBuffer());
    return bytes.byteLength === 0 ? null : bytes;
  };

  // The record's stream, written into a new pipe as it gives chunks (see js/bodies.rs);
  // gives the pipe's body handle at once. The writing goes on after the response has
  // left: it ends with the stream, or breaks the body off when the stream fails, and
  // stops (cancelling the stream) when the client goes away.
  const pipe = (body) => {
    if (body.used || (body.stream?.locked ?? false)) throw alreadyUsed();
    body.used = true;
    const reader = streamOf(body).getReader();
    const { body: handle, sink } = native.pipe();
    (async () => {
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          await native.write(sink, bytesOfChunk(value));
        }
        native.close(sink);
      } catch (error) {
        native.fail(sink, `the worker's stream failed: ${error}`);
        reader.cancel(error).catch(() => {});
      }
    })();
    return handle;
  };


  const passOn = async (target, request, port) => {
    const body = request.method === "GET" || request.method === "HEAD" ? null : await outgoing(request);
    return response(await native.fetch(target, request.method, request.url, request.headers, body, port));
  };

  // A WebSocket the worker opened to its container (see js/sockets.rs), as Cloudflare's:
  // accept(), then send() and close(), and "message" and "close" events (listeners, or
  // onmessage/onclose). Messages that come before accept() wait for it.
  const SOCKET = Symbol("socket");
  class WebSocket {
    #handle;
    #listeners = new Map();
    #accepted = false;
    constructor(handle, key) {
      if (key !== SOCKET) {
        throw new TypeError("new WebSocket(url) is not supported; open one to a container with stub.fetch(new Request(url, { headers: { Upgrade: \"websocket\" } })) and take the answer's webSocket");
      }
      this.#handle = handle;
      this.readyState = WebSocket.OPEN;
    }
    accept() {
      if (this.#handle === null) throw new TypeError("WebSocket.accept: this is the client end of a WebSocketPair, which goes in the Response; accept the other end");
      if (this.#accepted) return;
      this.#accepted = true;
      (async () => {
        for (;;) {
          // Null: the Rust side is gone (the answer it was for never went out).
          const event = (await native.wsNext(this.#handle)) ?? { type: "close", code: 1006, reason: "the WebSocket was never connected" };
          if (event.type === "close") {
            this.readyState = WebSocket.CLOSED;
            this.#dispatch("close", { code: event.code, reason: event.reason, wasClean: event.code !== 1006 });
            return;
          }
          this.#dispatch("message", { data: event.type === "text" ? event.data : event.data.buffer });
        }
      })().catch((error) => {
        // A listener cut off for its CPU time: the socket cannot be read on.
        console.error("a WebSocket stopped reading:", berth.withStack(error));
        this.readyState = WebSocket.CLOSED;
        native.wsClose(this.#handle, 1011, "the worker failed");
      });
    }
    send(data) {
      if (!this.#accepted) throw new TypeError("WebSocket.send: call accept() first");
      if (this.readyState !== WebSocket.OPEN) throw new TypeError("WebSocket.send: the WebSocket is closed");
      native.wsSend(this.#handle, viewOf(data) ?? String(data));
    }
    close(code = 1000, reason = "") {
      if (code !== 1000 && !(Number.isInteger(code) && code >= 3000 && code <= 4999)) {
        throw new TypeError(`WebSocket.close: the code is 1000 or from 3000 to 4999, got ${code}`);
      }
      if (new TextEncoder().encode(String(reason)).length > 123) {
        throw new TypeError("WebSocket.close: the reason is at most 123 bytes of UTF-8");
      }
      if (this.#handle === null || this.readyState >= WebSocket.CLOSING) return;
      this.readyState = this.#accepted ? WebSocket.CLOSING : WebSocket.CLOSED;
      native.wsClose(this.#handle, code, String(reason));
    }
    addEventListener(type, listener) {
      if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
      this.#listeners.get(type).add(listener);
    }
    removeEventListener(type, listener) {
      this.#listeners.get(type)?.delete(listener);
    }
    #dispatch(type, fields) {
      const event = { type, target: this, ...fields };
      const handlers = [...(this.#listeners.get(type) ?? []), this[`on${type}`]];
      for (const handler of handlers) {
        if (typeof handler !== "function") continue;
        try {
          handler.call(this, event);
        } catch (error) {
          console.error(`a WebSocket ${type} listener failed:`, berth.withStack(error));
        }
      }
    }
  }
  // readyState's values, on the class and on each socket, as in browsers.
  for (const [name, value] of Object.entries({ CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 })) {
    Object.defineProperty(WebSocket, name, { value });
    Object.defineProperty(WebSocket.prototype, name, { value });
  }
  globalThis.WebSocket = WebSocket;
  // Cloudflare's WebSocketPair: [client, server]. The client end goes in the answer,
  // new Response(null, { status: 101, webSocket: client }); the worker talks through the
  // server end, which berth connects to the client once the 101 is out.
  class WebSocketPair {
    constructor() {
      const { socket, peer } = native.wsPair();
      const client = new WebSocket(null, SOCKET);
      client[PEER] = peer;
      this[0] = client;
      this[1] = new WebSocket(socket, SOCKET);
    }
  }
  globalThis.WebSocketPair = WebSocketPair;
  // Cloudflare's Response.webSocket: null but for a container's answer to a WebSocket.
  Object.defineProperty(NativeResponse.prototype, "webSocket", { get: () => null, configurable: true });

  // The container's answer: a Response made in Rust (js/messages.rs), its body held here.
  const response = (reply) => {
    const answer = reply.response;
    if (reply.socket !== undefined) {
      Object.defineProperty(answer, "webSocket", { value: new WebSocket(reply.socket, SOCKET) });
    }
    if (reply.body !== null && !NULL_BODY.includes(reply.status)) held.set(answer, record(reply.body, null));
    else bodiless.add(answer);
    return answer;
  };

  berth.DurableObjectId = DurableObjectId;

  // The object a stub stands for, as native calls name it; a symbol, which the Proxy
  // among the stub's prototypes (below) reads as any other name.
  const TARGET = Symbol("target");
  const CALL = Symbol("call");

  // Cloudflare's startAndWaitForPorts arguments, in either form, as { ports, startOptions }.
  berth.waitArgs = (args) => {
    const [first, cancellationOptions, startOptions] = args;
    const one = first !== null && typeof first === "object" && !Array.isArray(first);
    const { ports, startOptions: options } = one ? first : { ports: first, startOptions };
    return { ports: ports === undefined ? [] : Array.isArray(ports) ? ports : [ports], startOptions: options };
  };
  // Start options ({ envVars, entrypoint, enableInternet, labels }) checked and passed on;
  // labels are Cloudflare's metrics' own, and berth's containers take the class's.
  const startOn = (target, wait, ports, options, what) => {
    if (options !== undefined && options !== null && typeof options !== "object") {
      throw new TypeError(`${what}: the start options are an object ({ envVars, entrypoint, enableInternet }), got ${typeof options}`);
    }
    const { envVars = {}, entrypoint, enableInternet } = options ?? {};
    if (envVars === null || typeof envVars !== "object" || Object.values(envVars).some((v) => typeof v !== "string")) {
      throw new TypeError(`${what}: envVars is an object of strings, as { KEY: "value" }`);
    }
    if (entrypoint !== undefined && !(Array.isArray(entrypoint) && entrypoint.every((a) => typeof a === "string"))) {
      throw new TypeError(`${what}: entrypoint is an array of strings, as ["node", "server.js"]`);
    }
    if (enableInternet !== undefined && typeof enableInternet !== "boolean") {
      throw new TypeError(`${what}: enableInternet is true or false, got ${typeof enableInternet}`);
    }
    return native.start(target, wait, ports, envVars, entrypoint ?? null, enableInternet ?? null);
  };
  const STOP_SIGNALS = { SIGTERM: 15, SIGINT: 2, SIGKILL: 9 };
  const stopSignal = (signal) => {
    if (typeof signal === "string" && signal in STOP_SIGNALS) return signal;
    const named = Object.keys(STOP_SIGNALS).find((name) => STOP_SIGNALS[name] === signal);
    if (named) return named;
    throw new TypeError(`stop(signal): a container stops with SIGTERM, SIGINT or SIGKILL (15, 2 or 9), got ${String(signal)}`);
  };

  // A stub of one container object: what `namespace.get(id)` gives.
  class ContainerStub {
    constructor(binding, id, direct = false) {
      this.id = id;
      this.name = id.name;
      this[TARGET] = { binding, id: id.hex, name: id.name ?? null, direct };
    }
    // Sends the request to the container's default port (or the one `switchPort` set).
    async fetch(input, init) {
      // A Request passed on as it is (`container.fetch(request)`) is sent as it is:
      // copying it would give the same method, url, headers and body.
      const request = input instanceof Request && init === undefined ? input : new Request(input, init);
      return passOn(this[TARGET], request, null);
    }
    // Cloudflare's containerFetch(request | url, init | port?, port?).
    async containerFetch(input, initOrPort, port) {
      const init = typeof initOrPort === "object" ? initOrPort : undefined;
      const to = typeof initOrPort === "number" ? initOrPort : port;
      // As in fetch: a Request passed on as it is goes as it is, its body unread.
      // A URL may be relative (as "/api"): Cloudflare's library resolves it against
      // http://container.
      const url = input instanceof Request ? input : new URL(input, "http://container").href;
      const request = input instanceof Request && init === undefined ? input : init === undefined ? new Request(url) : new Request(url, init);
      // Straight to the container, as Cloudflare's containerFetch, not through the
      // class's own fetch.
      return passOn({ ...this[TARGET], direct: true }, request, to ?? null);
    }
    async start(options) {
      await startOn(this[TARGET], false, [], options, "start");
    }
    // Cloudflare's two forms: ({ ports, startOptions, cancellationOptions }), and
    // (ports, cancellationOptions, startOptions). The cancellation options are not
    // berth's: a start is bounded by the class's readiness timeout.
    async startAndWaitForPorts(...args) {
      const { ports, startOptions } = berth.waitArgs(args);
      await startOn(this[TARGET], true, ports, startOptions, "startAndWaitForPorts");
    }
    // Cloudflare's stop(signal): SIGTERM, SIGINT or SIGKILL, by name or number; berth
    // kills the container if it has not exited at the class's stop grace.
    async stop(signal = "SIGTERM") {
      await native.stop(this[TARGET], stopSignal(signal));
    }
    async destroy() {
      await native.destroy(this[TARGET]);
    }
    // Pushes the container's sleep (sleepAfter) back, from now.
    async renewActivityTimeout() {
      await native.renew(this[TARGET]);
    }
    async getState() {
      // Cloudflare's State: `exitCode` when the container exited by itself, and when it
      // last changed (ms since the epoch).
      return JSON.parse(await native.state(this[TARGET]));
    }
    // A method of the object's class, called in the object's one instance of it (RPC, as
    // on Cloudflare): its arguments and answer go as JSON; what it throws is thrown here
    // with its name and message.
    async [CALL](method, args) {
      const answer = JSON.parse(await native.call(this[TARGET], method, JSON.stringify(args)));
      if (answer.error !== undefined) {
        const Thrown = typeof globalThis[answer.error.name] === "function" ? globalThis[answer.error.name] : Error;
        const error = new Thrown(answer.error.message);
        if (error.name !== answer.error.name) error.name = answer.error.name;
        throw error;
      }
      return answer.response === undefined ? answer.value : responseIn(answer.response);
    }
  }

  // A Response a class's method answers, as JSON for RPC: its body read whole, in
  // base64; and the Response again on the caller's side.
  const RPC_BODY_LIMIT = 16 << 20;
  berth.responseOut = async (response) => {
    const whole = "a Response that a method answers through a stub is read whole";
    if (response.status === 101) throw new TypeError(`${whole}, so it cannot be an upgrade (101); pass the upgrade on with stub.fetch(request)`);
    const over = () => new RangeError(`${whole}, and this one's body is over ${RPC_BODY_LIMIT >> 20} MiB; send it with stub.fetch or containerFetch from the worker instead`);
    if (Number(response.headers.get("content-length")) > RPC_BODY_LIMIT) throw over();
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (bytes.length > RPC_BODY_LIMIT) throw over();
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return { status: response.status, statusText: response.statusText, headers: [...response.headers], body: btoa(binary) };
  };
  const responseIn = ({ status, statusText, headers, body }) => {
    const binary = atob(body);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return new Response(NULL_BODY.includes(status) ? null : bytes, { status, statusText, headers });
  };

  // A stub's every name it does not have itself calls that method of the class: the
  // last prototype of stubs is a Proxy that makes those calls, so that the stub's own
  // methods are found without it. `then` is not one: a stub is not a promise, so
  // `await stub` gives the stub. The stub of a class's own code has none (a name it
  // does not have is undefined, as on any object).
  Object.setPrototypeOf(
    ContainerStub.prototype,
    // Its target is a plain object, so that stubs are still objects (`instanceof Object`).
    new Proxy({}, {
      get(target, name, stub) {
        const of = stub[TARGET];
        if (typeof name === "symbol" || name in target || name === "then" || name === "toJSON" || of === undefined || of.direct) {
          return Reflect.get(target, name, stub);
        }
        return (...args) => stub[CALL](name, args);
      },
    }),
  );

  // The Durable Object namespace a container binding stands for.
  const namespace = (binding) => {
    // Ids by name, as most workers ask for the same few on every request; bounded, as
    // some name one object per user.
    const ids = new Map();
    const idFromName = (name) => {
      const key = String(name);
      let id = ids.get(key);
      if (id === undefined) {
        if (ids.size >= 1024) ids.clear();
        id = new DurableObjectId(native.idFromName(binding, key), key, binding);
        ids.set(key, id);
      }
      return id;
    };
    return {
      idFromName,
      idFromString: (hex) => new DurableObjectId(native.idFromString(binding, String(hex)), undefined, binding),
      newUniqueId: () => new DurableObjectId(native.newUniqueId(binding), undefined, binding),
      get: (id) => {
        if (!(id instanceof DurableObjectId)) throw new TypeError(`${binding}.get takes an id from ${binding}.idFromName, idFromString or newUniqueId`);
        if (id[MADE_BY] !== binding) ownId(binding, id);
        return stubOf(binding, id);
      },
      getByName: (name) => stubOf(binding, idFromName(name)),
    };
  };
  // An id another binding made is one of this binding's only when both stand for the
  // same namespace: else `get` throws at once, as on Cloudflare, not the stub's first call.
  const ownId = (binding, id) => {
    try {
      native.idFromString(binding, id.hex);
    } catch (error) {
      throw new TypeError(`${binding}.get: ${error?.message ?? error}; take the id from ${binding}.idFromName, idFromString or newUniqueId`);
    }
  };
  // A stub holds nothing but its target, so one made for an id is given again for it
  // (ids by name are kept, above): most requests ask for the same stub.
  const STUB = Symbol("stub");
  const stubOf = (binding, id) => {
    const kept = id[STUB];
    if (kept !== undefined && kept.binding === binding) return kept.stub;
    const stub = new ContainerStub(binding, id);
    id[STUB] = { binding, stub };
    return stub;
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
        console.error("uncaught in a timer's callback:", berth.withStack(error));
      }
    }, delay);
  // As on Cloudflare, where libraries look for this user agent to know where they run.
  globalThis.navigator ??= { userAgent: "Cloudflare-Workers", hardwareConcurrency: 1 };

  globalThis.setTimeout = guarded(globalThis.setTimeout);
  globalThis.setInterval = guarded(globalThis.setInterval);
  const setImmediate = globalThis.setImmediate;
  globalThis.setImmediate = (callback, ...args) => guarded((f) => setImmediate(f))(callback, 0, ...args);

  // A promise rejected with no handler, still without one once the jobs of the moment
  // have run (a `waitUntil`'s work that failed, a promise nobody awaited), is logged, as
  // Cloudflare and Node log it, instead of failing unseen. berth's rejection tracker
  // (js/host.rs) calls this as QuickJS rejects such a promise, and again when a handler
  // comes later (an `await` of a promise that was already rejected).
  const unhandled = new Map();
  // The promises Rust awaits itself (a request's answer, a hook's, a tick's), and whose
  // failure it reports: QuickJS does not count Rust's wait as a handler.
  const awaited = new WeakSet();
  berth.awaitedByRust = (run) => (...args) => {
    const promise = run(...args);
    awaited.add(promise);
    return promise;
  };
  berth.rejected = (promise, reason, handled) => {
    if (handled) {
      unhandled.delete(promise);
      return;
    }
    if (unhandled.size === 0) globalThis.setTimeout(reportUnhandled, 0);
    if (unhandled.size < 100) unhandled.set(promise, reason);
  };
  const reportUnhandled = () => {
    for (const [promise, reason] of unhandled) {
      if (awaited.has(promise)) continue;
      console.error("Uncaught (in promise)", berth.withStack(reason));
    }
    unhandled.clear();
  };

  const context = {
    // Its promise runs on as any other: the runtime outlives the request.
    waitUntil() {},
    passThroughOnException() {},
    props: {},
  };

  // Sets up the worker from its entrypoint's exports; fails with what is missing.
  berth.startWorker = (exports, path, bindings, vars, crons, json) => {
    const env = { ...vars };
    // Wrangler's vars that are not text: their value, as on Cloudflare.
    for (const name of json) env[name] = JSON.parse(env[name]);
    for (const name of bindings) env[name] = namespace(name);
    // `cloudflare:workers`'s env: the same object whether the worker imports it or not.
    Object.assign((berth.workersEnv ??= {}), env);
    // For the container classes' hooks (hooks.js).
    berth.exports = exports;
    berth.env = env;
    const entry = exports.default;
    // A handler of the default export, called as Cloudflare calls it: a method of a
    // class extending WorkerEntrypoint, or a function of an object.
    const handler = (method) => {
      if (typeof entry === "function" && typeof entry.prototype?.[method] === "function") {
        return (arg) => new entry(context, env)[method](arg);
      }
      if (entry !== null && typeof entry === "object" && typeof entry[method] === "function") {
        return (arg) => entry[method](arg, env, context);
      }
      return undefined;
    };
    const fetch = handler("fetch");
    // Cron triggers: each tick calls `scheduled(controller, env, ctx)`.
    const scheduled = handler("scheduled");
    if (fetch !== undefined) {
      berth.handler = fetch;
    } else if (crons && scheduled !== undefined) {
      // A worker of cron triggers only: requests get an error, as on Cloudflare.
      berth.handler = () => {
        throw new TypeError(`${path}: the worker has no fetch handler, only scheduled`);
      };
    } else {
      throw new TypeError(`${path}: the default export has no fetch; export default { async fetch(request, env, ctx) { … } }, or a class extending WorkerEntrypoint`);
    }
    if (scheduled !== undefined) {
      berth.onTick = scheduled;
    } else if (crons) {
      throw new TypeError(`${path}: the worker has crons, but its default export has no scheduled handler; add async scheduled(controller, env, ctx) { … } beside fetch`);
    }
    return ownFetch(exports);
  };

  // A tick whose handler throws is tried again, unless the handler called noRetry().
  berth.scheduled = berth.awaitedByRust(async (cron, scheduledTime) => {
    let retry = true;
    const controller = { cron, scheduledTime, type: "scheduled", noRetry: () => void (retry = false) };
    try {
      await berth.onTick(controller);
    } catch (error) {
      if (retry) throw error;
      console.error(`the scheduled handler of ${cron} failed, and is not tried again (it called noRetry()):`, berth.withStack(error));
    }
  });

  // A client's request's `cf`, which Cloudflare fills from its edge (country, colo…):
  // berth has none of it, so code that reads `request.cf.country` gets undefined.
  const CF = Object.freeze({});
  // A client's request, made in Rust (js/messages.rs) with its body's handle, if any.
  berth.serve = berth.awaitedByRust(async (request, handle, object) => {
    request.cf = CF;
    request[REDIRECT] = "manual";
    // `handle` is undefined, not null, for a request without a body (GET, HEAD).
    if (handle != null) held.set(request, record(handle, null));
    else bodiless.add(request);
    const answer = object ? await berth.classFetch(object, request) : await berth.handler(request);
    if (!(answer instanceof NativeResponse)) {
      throw new TypeError(`the worker's fetch returned ${answer === null ? "null" : typeof answer}, not a Response`);
    }
    return { status: answer.status, headers: answer.headers, body: await outgoing(answer), peer: answer[PEER] ?? null };
  });
  // For js/messages.rs, which makes requests and responses as `ours` does.
  berth.Request = Request;
  berth.Response = Response;
})();
