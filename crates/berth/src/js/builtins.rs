//! berth's own versions of the modules an alchemy project imports, written in
//! JavaScript (in `builtins/`): `alchemy` and `alchemy/cloudflare` record what the
//! program declares, `alchemy/docker` describes images, and `@cloudflare/containers` and
//! `cloudflare:workers` define the classes a worker's module extends, so that it loads.
//!
//! The prelude, run before the program, holds what the modules record (the hidden global
//! `__berth`) and gives the program `console` and `process.env`.

use rquickjs::{Ctx, Function, Object};

/// The built-in modules, by the name they are imported by.
const MODULES: [(&str, &str); 5] = [
    ("alchemy", include_str!("builtins/alchemy.js")),
    ("alchemy/cloudflare", include_str!("builtins/cloudflare.js")),
    ("alchemy/docker", include_str!("builtins/docker.js")),
    (
        "@cloudflare/containers",
        include_str!("builtins/containers.js"),
    ),
    ("cloudflare:workers", include_str!("builtins/workers.js")),
];

/// The names of the built-in modules, for errors.
pub(crate) const NAMES: [&str; 5] = [
    MODULES[0].0,
    MODULES[1].0,
    MODULES[2].0,
    MODULES[3].0,
    MODULES[4].0,
];

/// The source of the built-in module `name`.
pub(crate) fn source(name: &str) -> Option<&'static str> {
    MODULES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Runs the prelude in `ctx`: `__berth`, `console`, and `process.env` with `vars`: the
/// environment of berth for the app's program (`alchemy.run.ts` reads its secrets there),
/// only a worker's own vars and secrets for a worker, as on Cloudflare (berth's
/// environment is not a worker's to read, nor its packages').
pub(crate) fn install(
    ctx: &Ctx<'_>,
    vars: impl IntoIterator<Item = (String, String)>,
) -> rquickjs::Result<()> {
    ctx.eval::<(), _>(include_str!("builtins/prelude.js"))?;
    let berth: Object = ctx.globals().get("__berth")?;
    let print = Function::new(ctx.clone(), |level: String, text: String| {
        match level.as_str() {
            "error" => tracing::error!(target: "berth::js", "{text}"),
            "warn" => tracing::warn!(target: "berth::js", "{text}"),
            _ => tracing::info!(target: "berth::js", "{text}"),
        }
    })?;
    berth.set("print", print)?;
    let env = Object::new(ctx.clone())?;
    for (key, value) in vars {
        env.set(key, value)?;
    }
    let process: Object = ctx.globals().get("process")?;
    process.set("env", env)?;
    Ok(())
}

/// berth's own environment, as far as it is text.
pub(crate) fn host_vars() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
}
