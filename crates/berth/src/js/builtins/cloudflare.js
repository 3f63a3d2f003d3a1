// berth's `alchemy/cloudflare`: Container, Worker and DurableObjectNamespace record what
// the program declares; berth turns the records into its manifest.
const berth = globalThis.__berth;

const check = (kind, id) => {
  if (typeof id !== "string" || id === "") {
    throw new TypeError(`${kind}(id, props): the id must be a non-empty string`);
  }
};

// A resource as a binding or a prop sees it, and as JSON describes it.
const resource = (fields, description) =>
  Object.defineProperty(fields, "toJSON", { value: () => description, enumerable: false });

export async function Container(id, props) {
  check("Container", id);
  const site = berth.site();
  berth.declared.containers.push({ id, site, props: berth.snapshot(props) });
  return resource(
    { type: "container", id, name: props?.name ?? id, className: props?.className, image: props?.image },
    { $resource: "container", id },
  );
}

export async function Worker(id, props) {
  check("Worker", id);
  const site = berth.site();
  berth.declared.workers.push({ id, site, props: berth.snapshot(props) });
  const name = props?.name ?? id;
  return resource(
    { type: "service", id, name, entrypoint: props?.entrypoint, bindings: props?.bindings ?? {}, Env: undefined },
    { $resource: "worker", id },
  );
}

export function DurableObjectNamespace(id, props) {
  check("DurableObjectNamespace", id);
  const className = props?.className ?? id;
  return resource(
    { type: "durable_object_namespace", id, className, sqlite: props?.sqlite ?? false },
    { $resource: "durable-object-namespace", id, className },
  );
}
