//! A `Worker(id, props)` to berth's [`WorkerDef`]: its entrypoint (the script the next
//! step serves), its bindings, and the hosts its `routes` and `domains` name.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::declare::{invalid, props, Declaration};
use super::engine::Engine;
use super::{modules, ScriptError, SourcePlace};
use crate::hosts::HostPattern;
use crate::manifest::{ContainerDef, WorkerDef, WorkerScript};

#[derive(Deserialize)]
struct WorkerProps {
    name: Option<String>,
    entrypoint: Option<String>,
    script: Option<Value>,
    #[serde(default)]
    bindings: BTreeMap<String, Value>,
    #[serde(default)]
    routes: Vec<Value>,
    #[serde(default)]
    domains: Vec<Value>,
    #[serde(default)]
    crons: Vec<String>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

/// One worker; `containers` are the app's, each with the place it is declared.
pub(super) fn worker(
    engine: &Engine,
    dir: &Path,
    d: &Declaration,
    containers: &[(ContainerDef, SourcePlace)],
) -> Result<WorkerDef, ScriptError> {
    let at = engine.place(&d.site);
    let props: WorkerProps = props(&at, "Worker", d)?;
    for key in props.other.keys() {
        tracing::warn!("{at}: berth ignores Worker({:?}) prop {key}", d.id);
    }
    let fail = |message: String| invalid(at.clone(), "Worker", &d.id, message);
    let name = props.name.unwrap_or_else(|| d.id.clone());
    if HostPattern::default_for(&name, "app").is_err() {
        return Err(fail(format!("{name:?} cannot be part of a host name; name workers with lowercase letters, digits and '-'")));
    }
    let entrypoint = match (props.entrypoint, props.script) {
        (Some(entrypoint), _) => entrypoint,
        (None, Some(_)) => return Err(fail("an inline script is not supported; put the worker in a file and give its path as entrypoint".into())),
        (None, None) => return Err(fail("entrypoint is missing; give the worker's module, as in entrypoint: \"./src/worker.ts\"".into())),
    };
    let base = dir.join(super::SCRIPT_FILE_NAME);
    let relative = if entrypoint.starts_with('/') || entrypoint.starts_with('.') {
        entrypoint.clone()
    } else {
        format!("./{entrypoint}")
    };
    let entrypoint = modules::resolve(&base.to_string_lossy(), &relative)
        .map_err(|e| fail(format!("entrypoint: {e}")))?;
    let mut bindings = BTreeMap::new();
    let mut vars = BTreeMap::new();
    let mut json_vars = std::collections::BTreeSet::new();
    for (binding, value) in &props.bindings {
        match bound(value, containers) {
            Ok(Bound::Container(id)) => drop(bindings.insert(binding.clone(), id)),
            Ok(Bound::Text(text)) => drop(vars.insert(binding.clone(), text)),
            Ok(Bound::Json(text)) => {
                json_vars.insert(binding.clone());
                vars.insert(binding.clone(), text);
            }
            Err(message) => return Err(fail(format!("bindings.{binding}: {message}"))),
        }
    }
    let mut hosts: Vec<HostPattern> = Vec::new();
    let named = props
        .routes
        .iter()
        .map(|r| ("routes", r, "pattern"))
        .chain(props.domains.iter().map(|r| ("domains", r, "domainName")));
    for (key, value, field) in named {
        let host = host(value, field).map_err(|message| fail(format!("{key}: {message}")))?;
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    let mut crons = Vec::new();
    for (i, text) in props.crons.iter().enumerate() {
        let cron: crate::cron::Cron = text
            .parse()
            .map_err(|why| fail(format!("crons[{i}]: {text:?} {why}")))?;
        // The same expression twice is one trigger, not two runs of each tick.
        if !crons.contains(&cron) {
            crons.push(cron);
        }
    }
    Ok(WorkerDef {
        name,
        bindings,
        routes: Vec::new(),
        hosts,
        schedules: Vec::new(),
        script: Some(WorkerScript {
            entrypoint: entrypoint.into(),
            vars,
            json_vars,
            crons,
        }),
    })
}

enum Bound {
    /// A container resource id.
    Container(String),
    /// JSON, whose value `env` holds (a Wrangler var that is not text).
    Json(String),
    /// A string or a secret.
    Text(String),
}

/// What a binding's value binds.
fn bound(value: &Value, containers: &[(ContainerDef, SourcePlace)]) -> Result<Bound, String> {
    let field = |name: &str| value.get(name).and_then(Value::as_str);
    match (value, field("$resource")) {
        (Value::String(text), _) => Ok(Bound::Text(text.clone())),
        (_, Some("container")) => Ok(Bound::Container(field("id").unwrap_or_default().to_string())),
        (_, Some("secret")) => Ok(Bound::Text(field("value").unwrap_or_default().to_string())),
        (_, Some("json")) => Ok(Bound::Json(value.get("value").map(Value::to_string).unwrap_or_default())),
        (_, Some("durable-object-namespace")) => {
            let class = field("className").unwrap_or_default();
            containers
                .iter()
                .find(|(c, _)| c.class.name == class)
                .map(|(c, _)| Bound::Container(c.id.clone()))
                .ok_or_else(|| format!("binds Durable Object class {class}, which no Container declares as its className; berth runs Durable Objects only as containers"))
        }
        (_, kind) => Err(format!(
            "{} bindings are not supported; berth binds containers, Durable Object namespaces of container classes, strings and secrets",
            kind.map(str::to_string).unwrap_or_else(|| value.to_string())
        )),
    }
}

/// The host of a route (`"api.example.com/*"`, or `{ pattern }`) or a custom domain
/// (`"api.example.com"`, or `{ domainName }`): berth routes whole hosts to a worker.
fn host(value: &Value, field: &str) -> Result<HostPattern, String> {
    let text = match value {
        Value::String(text) => text.as_str(),
        _ => value
            .get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{value} is neither a text nor an object with {field}"))?,
    };
    let (host, path) = host_and_path(text);
    if !matches!(path, "*" | "") {
        return Err(format!("{text:?} routes the path /{path}, and berth routes whole hosts to a worker; route {host}/* and let the worker's fetch look at the path"));
    }
    HostPattern::parse(host)
}

/// A route's host and the path after it (empty when it names none), its scheme left out:
/// `https://api.example.com/v1/*` is `api.example.com` and `v1/*`.
pub(super) fn host_and_path(route: &str) -> (&str, &str) {
    let without_scheme = route.split_once("://").map_or(route, |(_, rest)| rest);
    without_scheme
        .split_once('/')
        .unwrap_or((without_scheme, ""))
}
