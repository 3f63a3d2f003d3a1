// Runs before an app's program: what the built-in modules record, and the globals a
// program expects (console, process.env). berth reads `__berth` once the program is done.
(() => {
  const declared = { app: null, containers: [], workers: [] };

  // The options berth reads from a container class, as Cloudflare's Container names them,
  // then berth's own (`ready`, `logMax`, `volumes`).
  const OPTIONS = [
    "defaultPort",
    "requiredPorts",
    "sleepAfter",
    "sleepMode",
    "pauseFor",
    "maxPaused",
    "envVars",
    "entrypoint",
    "enableInternet",
    "allowedHosts",
    "deniedHosts",
    "pingEndpoint",
    "labels",
    "ready",
    "logMax",
    "volumes",
  ];

  // What a Durable Object's constructor gets as `ctx`, enough for a constructor to run.
  const state = () => ({
    id: { name: "berth", toString: () => "berth", equals: () => false },
    storage: {
      get: async () => undefined,
      put: async () => {},
      delete: async () => false,
      list: async () => new Map(),
      setAlarm: async () => {},
      getAlarm: async () => null,
      deleteAlarm: async () => {},
      sql: { exec: () => ({ toArray: () => [], one: () => undefined }) },
    },
    blockConcurrencyWhile: async (fn) => fn(),
    waitUntil: () => {},
    container: undefined,
  });

  // The program's `process.env` (berth's environment), while a worker's is set instead.
  let programEnv;
  const berth = {
    declared,
    // Set by berth: print(level, text).
    print: null,
    // Set by @cloudflare/containers once it loads.
    Container: null,
    // The stack where a resource is declared, for berth to name the line.
    site: () => new Error().stack ?? "",
    // What was thrown, for the log: an Error with its stack.
    withStack: (thrown) => (thrown instanceof Error ? `${thrown}\n${thrown.stack}` : thrown),
    // A copy of `props` as JSON sees it: resources turn into their `toJSON` descriptions.
    snapshot: (props) => JSON.parse(JSON.stringify(props ?? {})),
    describe: () => JSON.stringify(declared),
    // A worker's vars and secrets, as `env` (of `cloudflare:workers`, and a class's
    // constructor's) and `process.env` hold them when the worker runs, while berth loads
    // its module and reads its classes' fields; null puts the program's `process.env` back.
    workerVars(vars) {
      const env = (berth.workersEnv ??= {});
      for (const key of Object.keys(env)) delete env[key];
      programEnv ??= globalThis.process.env;
      globalThis.process.env = vars === null ? programEnv : { ...vars };
      if (vars !== null) Object.assign(env, vars);
    },
    // The option fields of `className` as exported by `namespace`, as JSON; null when
    // the module does not export it.
    classOptions(namespace, className) {
      if (!(className in namespace)) return null;
      const cls = namespace[className];
      if (typeof cls !== "function") return JSON.stringify({ $notClass: typeof cls });
      // Its `env` holds the worker's vars and secrets, as it will when berth serves it:
      // a field set from one (`envVars = { KEY: env.KEY }`) gets its value.
      const instance = new cls(state(), { ...berth.workersEnv });
      const fields = {
        $extendsContainer: berth.Container !== null && instance instanceof berth.Container,
      };
      // Cloudflare's outbound handlers (static fields), which berth refuses by name.
      const outbound = ["outbound", "outboundByHost", "outboundHandlers", "outboundProxies", "outboundProxy"].filter((k) => cls[k] !== undefined);
      if (outbound.length > 0) fields.$outbound = outbound.join(", ");
      for (const field of OPTIONS) {
        const value = instance[field];
        if (value === undefined) continue;
        const plain = !["function", "symbol", "bigint"].includes(typeof value);
        fields[field] = plain ? value : { $unsupported: typeof value };
      }
      return JSON.stringify(fields);
    },
  };
  Object.defineProperty(globalThis, "__berth", { value: berth, enumerable: false });

  const text = (value) => {
    if (typeof value === "string") return value;
    if (value instanceof Error) return String(value);
    try {
      return JSON.stringify(value) ?? String(value);
    } catch {
      return String(value);
    }
  };
  const log = (level) => (...args) => berth.print(level, args.map(text).join(" "));
  globalThis.console = {
    log: log("info"),
    info: log("info"),
    debug: log("info"),
    warn: log("warn"),
    error: log("error"),
  };
  globalThis.process = { env: {} };
})();
