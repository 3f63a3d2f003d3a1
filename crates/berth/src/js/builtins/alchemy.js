// berth's `alchemy`: the app (its name is the app's name) and secrets.
const berth = globalThis.__berth;

export default async function alchemy(name, options) {
  if (typeof name !== "string") {
    throw new TypeError("alchemy(name): the app's name must be a string");
  }
  if (berth.declared.app !== null) {
    throw new Error(`alchemy() is called twice (first as ${berth.declared.app.name}); call it once`);
  }
  berth.declared.app = { name, site: berth.site() };
  return {
    name,
    stage: options?.stage ?? "dev",
    phase: "up",
    local: true,
    async finalize() {},
  };
}

export class Secret {
  constructor(value) {
    this.unencrypted = value;
  }
  toJSON() {
    return { $resource: "secret", value: this.unencrypted };
  }
}

// A variable of berth's environment; one that is not set is an error, as in alchemy.
const variable = (name) => {
  const value = globalThis.process.env[name];
  if (value === undefined) {
    const error = new Error(`the environment variable ${String(name)} is not set`);
    // What the program wrote, for berth to find its line: QuickJS places a throw from a
    // property read at the call before it.
    error.site = `env.${String(name)}`;
    throw error;
  }
  return value;
};

// alchemy.secret(value), as in alchemy; alchemy.secret.env.NAME reads the environment.
alchemy.secret = (value) => {
  if (value === undefined || value === null) {
    throw new TypeError("alchemy.secret(value): the value is undefined (is its environment variable set?)");
  }
  return new Secret(String(value));
};
alchemy.secret.env = new Proxy({}, { get: (_, name) => new Secret(variable(name)) });
alchemy.env = new Proxy({}, { get: (_, name) => variable(name) });

export { alchemy };
