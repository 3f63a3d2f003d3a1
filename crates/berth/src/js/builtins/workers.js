// berth's `cloudflare:workers`: the base classes a worker's module extends, and `env`,
// which holds the worker's bindings once berth serves it (empty while the app is read).
export class DurableObject {
  constructor(ctx, env) {
    this.ctx = ctx;
    this.env = env;
  }
}

export class WorkerEntrypoint {
  constructor(ctx, env) {
    this.ctx = ctx;
    this.env = env;
  }
}

export class RpcTarget {}

// The same object whether the worker imports this module or not, before or after berth
// fills it (serve.js).
export const env = (globalThis.__berth.workersEnv ??= {});
