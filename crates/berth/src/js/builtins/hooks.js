// Runs in a worker's runtime after serve.js: `__berth.hook`, which berth calls when the
// lifecycle of an object of a container class reaches a hook (see js/class_hooks.rs).
// One instance of the class per object, from its first hook to the end of its onStop:
// fields set in onStart are there in onStop, and a stopped object holds no memory.
(() => {
  const berth = globalThis.__berth;
  const instances = new Map();

  // `ctx.storage`: the object's durable storage in berth, values as JSON.
  const storageOf = (target) => {
    const call = (op, key, value) => berth.native.storage(target, op, String(key), value ?? null);
    const one = async (key) => {
      const text = await call("get", key);
      return text == null ? undefined : JSON.parse(text);
    };
    return {
      async get(keys) {
        if (!Array.isArray(keys)) return one(keys);
        const found = new Map();
        for (const key of keys) {
          const value = await one(key);
          if (value !== undefined) found.set(key, value);
        }
        return found;
      },
      async put(keyOrEntries, value) {
        const entries = typeof keyOrEntries === "object" && keyOrEntries !== null ? Object.entries(keyOrEntries) : [[keyOrEntries, value]];
        for (const [key, item] of entries) await call("put", key, JSON.stringify(item));
      },
      async delete(keys) {
        if (!Array.isArray(keys)) return (await call("delete", keys)) === "true";
        let deleted = 0;
        for (const key of keys) if ((await call("delete", key)) === "true") deleted++;
        return deleted;
      },
      async list({ prefix, start, end, reverse, limit } = {}) {
        let keys = JSON.parse(await call("keys", "")).filter(
          (key) => (prefix === undefined || key.startsWith(prefix)) && (start === undefined || key >= start) && (end === undefined || key < end),
        );
        if (reverse) keys.reverse();
        if (limit !== undefined) keys = keys.slice(0, limit);
        return this.get(keys);
      },
      async deleteAll() {
        await this.delete(JSON.parse(await call("keys", "")));
      },
      // Each call goes to berth's store as it is made: there is no transaction to group
      // them, and nothing to flush.
      async transaction(closure) {
        return closure(this);
      },
      async sync() {},
      // Cloudflare's SQLite API of a Durable Object: berth's storage is keys and values.
      get sql() {
        throw new Error("this.ctx.storage.sql: berth keeps an object's storage as keys and values, without SQL; use get, put, delete and list");
      },
      // The Durable Object alarm: one per object, kept with its schedules; when due, the
      // class's alarm() runs (see runAlarm), and is retried if it throws, as on Cloudflare.
      async getAlarm() {
        // The alarm whose alarm() runs now is not set any more, as on Cloudflare.
        const found = (await alarmsOf(target)).find((alarm) => isAlarm(alarm) && !ringing.has(alarm.id));
        return found === undefined ? null : JSON.parse(found.payload).dueMs;
      },
      async setAlarm(when) {
        const dueMs = when instanceof Date ? when.getTime() : Number(when);
        if (!Number.isFinite(dueMs)) throw new TypeError(`setAlarm(time): time is a Date or milliseconds since the epoch; got ${String(when)}`);
        await this.deleteAlarm();
        await berth.native.schedule(target, dueMs, JSON.stringify({ type: "alarm", dueMs }));
      },
      async deleteAlarm() {
        for (const alarm of await alarmsOf(target)) {
          if (isAlarm(alarm)) await berth.native.unschedule(target, alarm.id);
        }
      },
    };
  };

  // The object's alarms in berth's store: its schedules and its Durable Object alarm.
  const alarmsOf = async (target) => JSON.parse(await berth.native.schedules(target));
  // Whether an alarm of the store is the Durable Object alarm, not a schedule.
  const isAlarm = (alarm) => JSON.parse(alarm.payload).type === "alarm";
  // The ids of the Durable Object alarms whose alarm() runs now.
  const ringing = new Set();

  // blockConcurrencyWhile, as on Cloudflare: its callback runs at once, and nothing else
  // reaches the instance (a request, a call, a hook, a schedule) until it has settled. A
  // callback that throws, or that has not settled after 30 s, resets the object: its next
  // event gets a new instance. By instance: its holder, whose gate is what it waits for.
  const gates = new WeakMap();
  const BLOCK_LIMIT_MS = 30_000;
  const TIMED_OUT = Symbol("timed out");
  const blockWhile = (holder, callback) => {
    const run = (async () => callback())();
    let timer;
    const limit = new Promise((resolve) => {
      timer = setTimeout(() => resolve(TIMED_OUT), BLOCK_LIMIT_MS);
    });
    const settled = run.then(() => undefined, (error) => error);
    const done = Promise.race([settled, limit]).then((failure) => {
      clearTimeout(timer);
      if (failure === undefined) return;
      const why = failure === TIMED_OUT ? `had not settled after ${BLOCK_LIMIT_MS / 1000} s` : `failed: ${berth.withStack(failure)}`;
      console.error(`blockConcurrencyWhile's callback ${why}; the object starts afresh at its next event`);
      holder.reset();
    });
    holder.gate = Promise.all([holder.gate, done]);
    return run;
  };
  // The instance, once what its blockConcurrencyWhile runs has settled.
  const ready = async (instance) => {
    await gates.get(instance)?.gate;
    return instance;
  };

  const instanceOf = (className, binding, hex, name) => {
    const known = instances.get(hex);
    if (known) return known;
    const Class = berth.exports?.[className];
    if (typeof Class !== "function") {
      throw new TypeError(`the worker's entrypoint does not export class ${className}, so its hooks cannot run; export it (export { ${className} } from "./container.ts")`);
    }
    const ctx = {
      id: new berth.DurableObjectId(hex, name ?? undefined, binding),
      storage: storageOf({ binding, id: hex, name: name ?? null }),
      waitUntil() {},
      blockConcurrencyWhile: (callback) => blockWhile(holder, callback),
    };
    const holder = {
      gate: undefined,
      reset: () => {
        if (instances.get(hex) === instance) instances.delete(hex);
      },
    };
    // Container's constructor takes these, so that the subclass's constructor (and the
    // callback of its blockConcurrencyWhile) can reach its container already.
    const own = {
      self: berth.directStub(binding, ctx.id),
      scheduler: schedulerOf({ className, binding, hex, name }),
    };
    berth.constructing = own;
    let instance;
    try {
      instance = new Class(ctx, berth.env);
    } finally {
      berth.constructing = null;
    }
    gates.set(instance, holder);
    instance[berth.SELF] = own.self;
    instance[berth.SCHEDULER] = own.scheduler;
    instances.set(hex, instance);
    return instance;
  };

  // Schedules: the object's alarms in berth's store (see js/schedules.rs), so they
  // outlive this runtime. Each stores the method to call and its payload; when due,
  // berth runs the "onAlarm" hook below, in the runtime that runs the object's hooks then.
  // An alarm ({ id, dueMs, payload }) as Cloudflare's Schedule. Its time is when it was
  // set to run, kept in the payload: while a delivery runs (or waits for a retry), the
  // store's due time is the delivery's lease (or the retry's time).
  const taskOf = (alarm) => {
    const stored = JSON.parse(alarm.payload);
    const task = { taskId: alarm.id, type: stored.type, callback: stored.callback, payload: stored.payload, time: Math.floor((stored.dueMs ?? alarm.dueMs) / 1000) };
    if (stored.type === "delayed") task.delayInSeconds = stored.delayInSeconds;
    return task;
  };
  const schedulerOf = (object) => {
    const target = { binding: object.binding, id: object.hex, name: object.name ?? null };
    // The schedules, not the Durable Object alarm (storage.getAlarm() gives that).
    const list = async () =>
      (await alarmsOf(target)).filter((alarm) => !isAlarm(alarm)).map(taskOf);
    // Each operation reaches the store after the one called before it, as Cloudflare's
    // SQL does: deleteSchedules("tick") then schedule(60, "tick"), unawaited, keeps the new one.
    let last = Promise.resolve();
    const inOrder = (op) => {
      const run = last.then(op);
      last = run.catch(() => {});
      return run;
    };
    return {
      async schedule(instance, when, callback, payload) {
        // A method, or a field that holds a function (an arrow function), as on Cloudflare.
        if (typeof callback !== "string" || typeof instance[callback] !== "function") {
          throw new TypeError(`schedule(when, callback, payload): callback is the name of a method of ${object.className}, as a string; got ${typeof callback === "string" ? JSON.stringify(callback) : typeof callback}`);
        }
        let stored;
        let dueMs;
        if (when instanceof Date && !Number.isNaN(when.getTime())) {
          stored = { type: "scheduled", callback, payload };
          dueMs = when.getTime();
        } else if (typeof when === "number" && Number.isFinite(when)) {
          // A delay that is not ahead (0 or less) is due at once.
          stored = { type: "delayed", delayInSeconds: when, callback, payload };
          dueMs = Date.now() + Math.max(0, when) * 1000;
        } else {
          throw new TypeError(`schedule(when, callback, payload): when is a Date or a delay in seconds (cron schedules are not supported by berth); got ${String(when)}`);
        }
        stored.dueMs = dueMs;
        // What JSON cannot carry (a function, a cycle) fails here, not when it is due.
        const text = JSON.stringify(stored);
        return inOrder(async () => taskOf(JSON.parse(await berth.native.schedule(target, dueMs, text))));
      },
      get: (taskId) => inOrder(async () => (await list()).find((task) => task.taskId === String(taskId))),
      list: () => inOrder(list),
      delete: (taskId) => inOrder(() => berth.native.unschedule(target, String(taskId))),
      // Every schedule that calls `callback`, in one step of the order.
      deleteCalling: (callback) =>
        inOrder(async () => {
          for (const task of await list()) {
            if (task.callback === callback) await berth.native.unschedule(target, task.taskId);
          }
        }),
    };
  };

  // An object's schedules run one at a time, in the order they come due, as on
  // Cloudflare; a delivery that berth gave up waiting for (and delivers again) is waited
  // for too, so one schedule never runs twice at once. By object id: its last turn.
  const turns = new Map();
  const inTurn = (hex, run) => {
    const turn = (turns.get(hex) ?? Promise.resolve()).then(run);
    const settled = turn.then(
      () => {},
      () => {},
    );
    turns.set(hex, settled);
    settled.then(() => {
      if (turns.get(hex) === settled) turns.delete(hex);
    });
    return turn;
  };

  // Runs a due schedule's method on the object's instance, with its payload and task.
  // As on Cloudflare, a method that throws (or that the class no longer has) is logged
  // and the schedule is done: it is not run again.
  const runAlarm = async (instance, className, arg) => {
    const alarm = JSON.parse(arg);
    if (isAlarm(alarm)) {
      // The Durable Object alarm: what alarm() throws goes back to berth, which tries
      // it again after 1 s, then twice as long, six times at most, as Cloudflare does.
      if (typeof instance.alarm !== "function" || instance.alarm === berth.Container?.prototype.alarm) {
        console.error(`${className} set a Durable Object alarm (ctx.storage.setAlarm), but has no alarm() method to run; it is dropped`);
        return;
      }
      ringing.add(alarm.id);
      try {
        await instance.alarm({ retryCount: alarm.attempts, isRetry: alarm.attempts > 0 });
      } finally {
        ringing.delete(alarm.id);
      }
      return;
    }
    const task = taskOf(alarm);
    const method = instance[task.callback];
    if (typeof method !== "function") {
      console.error(`schedule ${task.taskId} calls ${className}.${task.callback}(), which the class no longer has; it is dropped`);
      return;
    }
    try {
      await method.call(instance, task.payload, task);
    } catch (error) {
      console.error(`${className}.${task.callback}() of schedule ${task.taskId} failed:`, berth.withStack(error));
    }
  };

  // Drops the instance of an object whose container does not run, so that one made for
  // a schedule or a request (of any client-chosen name) does not stay: onStop, which
  // drops the others, never comes for it. Not while a request, call or schedule still
  // uses it (see `withInstance`).
  const dropUnlessRunning = async (hex) => {
    const kept = instances.get(hex);
    if (!kept) return;
    const status = await kept.getState().then((s) => s.status, () => "stopped");
    if (!["running", "healthy", "paused", "stopping"].includes(status) && !inUse.has(hex)) instances.delete(hex);
  };

  // By object id: the requests, calls and schedules using its instance now.
  const inUse = new Map();
  // Runs `run` with the object's instance; once nothing uses it, it is dropped unless
  // its container runs.
  const withInstance = async (className, binding, hex, name, run) => {
    inUse.set(hex, (inUse.get(hex) ?? 0) + 1);
    try {
      return await run(await ready(instanceOf(className, binding, hex, name)));
    } finally {
      const left = inUse.get(hex) - 1;
      if (left > 0) {
        inUse.set(hex, left);
      } else {
        inUse.delete(hex);
        await dropUnlessRunning(hex);
      }
    }
  };

  // Names a stub cannot call: the constructor, berth's hooks (berth calls them), and
  // what Cloudflare keeps for itself.
  const NOT_CALLABLE = new Set(["constructor", "fetch", "alarm", "connect", "dup", "webSocketMessage", "webSocketClose", "webSocketError", "onStart", "onStop", "onError", "onPause", "onActivityExpired"]);

  // A request for an object whose class has a `fetch` of its own (serve.js).
  berth.classFetch = async ({ className, binding, id, name }, request) =>
    withInstance(className, binding, id, name, (instance) => instance.fetch(request));

  // Runs `hook` with `arg` (JSON); gives "" or, for onActivityExpired, whether the
  // container sleeps ("sleep": the hook called this.stop(), or is Container's own) or
  // stays awake ("awake").
  berth.hook = berth.awaitedByRust(async (className, binding, hex, name, hook, arg) => {
    if (hook === "onAlarm") {
      return inTurn(hex, async () => {
        // An instance made only for it (the object was not running) is dropped after it.
        await withInstance(className, binding, hex, name, (instance) => runAlarm(instance, className, arg));
        return "";
      });
    }
    if (hook === "call") {
      // What the method throws goes back as its name and message, for the caller to
      // throw: it is the app's answer, not a failure of berth's.
      const { method, args } = JSON.parse(arg);
      return withInstance(className, binding, hex, name, async (instance) => {
        try {
          if (NOT_CALLABLE.has(method) || typeof instance[method] !== "function") {
            throw new TypeError(`${className} has no method ${method}() to call on a stub`);
          }
          const value = await instance[method](...JSON.parse(args));
          // A Response (as this.containerFetch gives) goes whole, its body read.
          if (value instanceof Response) return JSON.stringify({ response: await berth.responseOut(value) });
          return JSON.stringify({ value });
        } catch (error) {
          const thrown = error instanceof Error ? { name: error.name, message: error.message } : { name: "Error", message: String(error) };
          return JSON.stringify({ error: thrown });
        }
      });
    }
    const instance = await ready(instanceOf(className, binding, hex, name));
    switch (hook) {
      case "onStart":
        await instance.onStart();
        return "";
      case "onStop":
        try {
          await instance.onStop(JSON.parse(arg));
        } finally {
          instances.delete(hex);
        }
        return "";
      case "onPause":
        await instance.onPause();
        return "";
      case "onError": {
        // Container's own onError rethrows what it is given, for Cloudflare's callers;
        // here berth has logged the error already, so that is no failure of the hook.
        const error = new Error(JSON.parse(arg));
        try {
          await instance.onError(error);
        } catch (thrown) {
          if (thrown !== error) throw thrown;
        }
        return "";
      }
      case "onActivityExpired": {
        if (instance.onActivityExpired === berth.Container?.prototype.onActivityExpired) return "sleep";
        const expiry = { stop: false };
        instance[berth.EXPIRY] = expiry;
        try {
          await instance.onActivityExpired();
        } finally {
          delete instance[berth.EXPIRY];
        }
        return expiry.stop ? "sleep" : "awake";
      }
      default:
        throw new TypeError(`berth has no hook ${hook}`);
    }
  });
})();
