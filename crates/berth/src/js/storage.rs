//! `native.storage(target, op, key, value)`: the object's durable storage
//! ([`crate::store::Storage`]) for `this.ctx.storage` in a container class's hooks
//! (builtins/hooks.js). Values cross as JSON text, so what JavaScript stores is what
//! `JSON.stringify` keeps, as Cloudflare's structured clone would for plain data.

use rquickjs::prelude::Async;
use rquickjs::{Ctx, Function, Object};
use tokio::runtime::Handle;

use super::bindings::on_object;
use crate::worker::Env;

/// One storage operation: "get" gives the value's JSON or null, "put" stores `value`,
/// "delete" gives "true" when the key was there, "keys" gives the keys as a JSON array.
async fn run(
    storage: crate::store::Storage,
    op: String,
    key: String,
    value: Option<String>,
) -> Result<Option<String>, String> {
    let failed = |e: crate::store::StoreError| format!("storage.{op}({key:?}): {e}");
    match op.as_str() {
        "get" => match storage.get(&key).await.map_err(failed)? {
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| format!("storage.get({key:?}): the value is not JSON text")),
            None => Ok(None),
        },
        "put" => {
            let value = value.unwrap_or_else(|| "null".into());
            storage.put(&key, value.as_bytes()).await.map_err(failed)?;
            Ok(None)
        }
        "delete" => Ok(Some(
            storage.delete(&key).await.map_err(failed)?.to_string(),
        )),
        "keys" => {
            let keys = storage.keys().await.map_err(failed)?;
            Ok(Some(serde_json::Value::from(keys).to_string()))
        }
        other => Err(format!("storage has no operation {other}")),
    }
}

/// Sets `native.storage`.
pub(super) fn install<'js>(
    ctx: &Ctx<'js>,
    native: &Object<'js>,
    env: &Env,
    main: &Handle,
) -> rquickjs::Result<()> {
    let (e, m) = (env.clone(), main.clone());
    let storage = move |ctx: Ctx<'js>,
                        target: Object<'js>,
                        op: String,
                        key: String,
                        value: Option<String>| {
        on_object(&ctx, &e, &m, &target, |object| {
            run(object.storage(), op, key, value)
        })
    };
    native.set("storage", Function::new(ctx.clone(), Async(storage))?)
}
