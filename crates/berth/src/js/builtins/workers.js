// berth's `cloudflare:workers`: the base classes a worker's module extends. The worker
// is not served yet, so `env` is empty while the app is read.
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

export const env = {};
