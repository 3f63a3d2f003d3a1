// berth's `alchemy/docker`: images that a Container's `image` prop may name.
const describe = (fields, description) =>
  Object.defineProperty(fields, "toJSON", { value: () => description, enumerable: false });

// An image built from a Dockerfile.
export async function Image(id, props) {
  const name = props?.name ?? id;
  const image = { id, name, tag: props?.tag, build: props?.build ?? {} };
  return describe({ ...image, imageRef: `${name}:${props?.tag ?? "latest"}` }, { $resource: "image", ...image });
}

// A prebuilt image, used as is.
export async function RemoteImage(id, props) {
  const name = props?.name ?? id;
  const ref = props?.tag ? `${name}:${props.tag}` : name;
  return describe({ id, name, tag: props?.tag, imageRef: ref }, { $resource: "remote-image", ref });
}
