//! A Wrangler project as written (`wrangler.jsonc`, `wrangler.json` or `wrangler.toml`,
//! as Cloudflare's own container examples are): its `containers`, the Durable Object
//! bindings of their classes, its `main` worker, `vars`, `routes` and cron `triggers`,
//! as the same declarations `alchemy.run.ts` makes, so that the rest (the classes'
//! fields, the worker) is read as for alchemy.
//!
//! What berth has no use for (`compatibility_date`, `migrations`, `observability`, …) is
//! passed over, and what it does not know is logged as ignored, so that a project runs
//! unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use super::modules::normalize;
use super::{ScriptError, SourcePlace};
use crate::manifest::valid_app_name;

/// The files berth reads a Wrangler project from, in Wrangler's own order.
pub const FILE_NAMES: [&str; 3] = ["wrangler.json", "wrangler.jsonc", "wrangler.toml"];

/// Bindings berth has nothing to bind to: a project that uses one is refused, naming it,
/// rather than run with `env` lacking it.
const UNSUPPORTED_BINDINGS: [&str; 16] = [
    "kv_namespaces",
    "r2_buckets",
    "d1_databases",
    "services",
    "queues",
    "ai",
    "vectorize",
    "hyperdrive",
    "workflows",
    "analytics_engine_datasets",
    "browser",
    "mtls_certificates",
    "send_email",
    "dispatch_namespaces",
    "images",
    "secrets_store_secrets",
];

/// Keys of a Wrangler configuration that say nothing berth acts on.
const PASSED_OVER: [&str; 13] = [
    "exports",
    "$schema",
    "compatibility_date",
    "compatibility_flags",
    "migrations",
    "observability",
    "account_id",
    "workers_dev",
    "preview_urls",
    "minify",
    "upload_source_maps",
    "placement",
    "limits",
];

#[derive(Deserialize)]
struct Config {
    name: Option<String>,
    main: Option<String>,
    #[serde(default)]
    containers: Vec<ContainerConfig>,
    #[serde(default)]
    durable_objects: DurableObjects,
    #[serde(default)]
    vars: BTreeMap<String, Value>,
    #[serde(default)]
    routes: Vec<Value>,
    route: Option<Value>,
    #[serde(default)]
    triggers: Triggers,
    #[serde(default)]
    secrets: Secrets,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Deserialize, Default)]
struct Secrets {
    #[serde(default)]
    required: Vec<String>,
}

#[derive(Deserialize)]
struct ContainerConfig {
    class_name: String,
    image: String,
    image_build_context: Option<String>,
    #[serde(default)]
    image_vars: BTreeMap<String, String>,
    max_instances: Option<usize>,
    instance_type: Option<Value>,
    name: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Deserialize, Default)]
struct DurableObjects {
    #[serde(default)]
    bindings: Vec<DurableObjectBinding>,
}

#[derive(Deserialize)]
struct DurableObjectBinding {
    name: String,
    class_name: String,
    script_name: Option<String>,
}

#[derive(Deserialize, Default)]
struct Triggers {
    #[serde(default)]
    crons: Vec<String>,
}

/// The Wrangler configuration of `dir`, if it has one.
pub fn config_file(dir: &Path) -> Option<PathBuf> {
    FILE_NAMES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
}

/// What the configuration at `path` declares, as the built-in modules record an
/// `alchemy.run.ts` program's declarations (see `declare`).
pub(super) fn declared(path: &Path) -> Result<String, ScriptError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScriptError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    // Wrangler takes a file that starts with a byte order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let value = parse(path, text)?;
    let config: Config = serde_path_to_error::deserialize(value)
        .map_err(|e| invalid(path, format!("{}: {}", e.path(), e.inner())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    for (key, value) in &config.other {
        let empty = value.as_array().is_some_and(Vec::is_empty) || value.is_null();
        if UNSUPPORTED_BINDINGS.contains(&key.as_str()) && !empty {
            return Err(invalid(path, format!("{key}: berth binds containers, their Durable Object classes, vars and secrets, not {key}; run the worker without them, or on Cloudflare")));
        }
        if !PASSED_OVER.contains(&key.as_str()) {
            tracing::warn!("{}: berth ignores {key}", path.display());
        }
    }
    let app = match &config.name {
        Some(name) if valid_app_name(name) => json!({ "name": name, "site": "" }),
        Some(name) => return Err(invalid(path, format!("name {name:?} is not a valid app name; use lowercase letters, digits, '-', '_' or '.', starting with a letter or digit, at most 64"))),
        None => Value::Null,
    };
    let mut containers = Vec::new();
    for container in &config.containers {
        containers.push(self::container(path, dir, container)?);
    }
    let workers = match &config.main {
        Some(main) => vec![worker(path, &config, main)?],
        None => {
            return Err(invalid(
                path,
                "main is missing; give the worker's module, as in \"main\": \"src/index.ts\""
                    .into(),
            ))
        }
    };
    Ok(json!({ "app": app, "containers": containers, "workers": workers }).to_string())
}

/// One container: built from its Dockerfile, or a prebuilt image.
fn container(path: &Path, dir: &Path, c: &ContainerConfig) -> Result<Value, ScriptError> {
    for key in c.other.keys() {
        tracing::warn!(
            "{}: berth ignores containers[{}].{key}",
            path.display(),
            c.class_name
        );
    }
    let fail = |message: String| invalid(path, format!("containers ({}): {message}", c.class_name));
    let mut props = json!({ "className": c.class_name });
    // The image's name: the container's, else its class's, as an image name can be.
    let name = c.name.as_deref().unwrap_or(&c.class_name);
    props["name"] = json!(super::app_name_from_folder(Path::new(
        &name.replace('/', "-")
    )));
    // A path (of a Dockerfile) is built; anything else is an image's name. Not whether
    // the file exists: a server reads the project without it, and takes the image pushed.
    let dockerfile = dir.join(&c.image);
    let is_path = c.image.starts_with('.') || c.image.starts_with('/');
    if is_path || dockerfile.is_file() {
        let context = match &c.image_build_context {
            Some(context) => dir.join(context),
            None => dockerfile.parent().unwrap_or(dir).to_path_buf(),
        };
        let inside = normalize(&dockerfile)
            .strip_prefix(normalize(&context))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
            .ok_or_else(|| {
                fail(format!(
                    "the Dockerfile {} is not inside the build context {}; berth builds with the Dockerfile inside its context",
                    c.image,
                    c.image_build_context.as_deref().unwrap_or(".")
                ))
            })?;
        let relative = normalize(&context)
            .strip_prefix(normalize(dir))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| context.to_string_lossy().into_owned());
        let relative = if relative.is_empty() {
            ".".to_string()
        } else {
            relative
        };
        props["build"] = json!({ "context": relative, "dockerfile": inside, "args": c.image_vars });
    } else {
        props["image"] = json!(c.image);
    }
    if let Some(max) = c.max_instances {
        props["maxInstances"] = json!(max);
    }
    if let Some(kind) = &c.instance_type {
        props["instanceType"] = kind.clone();
    }
    Ok(json!({ "id": c.class_name, "site": "", "props": props }))
}

/// The worker `main` is: its Durable Object bindings, vars, routes and crons.
fn worker(path: &Path, config: &Config, main: &str) -> Result<Value, ScriptError> {
    let mut bindings = serde_json::Map::new();
    for binding in &config.durable_objects.bindings {
        if let Some(script) = &binding.script_name {
            return Err(invalid(path, format!("durable_objects.bindings ({}): script_name {script:?} binds another worker's class; berth binds the classes of this project", binding.name)));
        }
        bindings.insert(
            binding.name.clone(),
            json!({ "$resource": "durable-object-namespace", "className": binding.class_name }),
        );
    }
    for (name, value) in &config.vars {
        // A var that is not text is JSON, and `env` holds its value, as on Cloudflare.
        let bound = match value {
            Value::String(text) => json!(text),
            other => json!({ "$resource": "json", "value": other }),
        };
        if bindings.insert(name.clone(), bound).is_some() {
            return Err(invalid(path, format!("vars.{name}: the name is a Durable Object binding too; give each binding its own name")));
        }
    }
    // Secrets: a `.dev.vars` (else `.env`) beside the configuration, as Wrangler reads for
    // local development (a deploy does not send it), over the vars; then each name of
    // `secrets.required` from there or from berth's environment (a server's own).
    let dir = path.parent().unwrap_or(Path::new("."));
    let local = dev_vars(dir)?;
    for name in &config.secrets.required {
        if local.contains_key(name) {
            continue;
        }
        let value = std::env::var(name).map_err(|_| invalid(path, format!("secrets.required names {name}, which is neither in .dev.vars nor in berth's environment; set it in either")))?;
        bindings.insert(
            name.clone(),
            json!({ "$resource": "secret", "value": value }),
        );
    }
    for (name, value) in local {
        let secret = json!({ "$resource": "secret", "value": value });
        if let Some(Value::Object(kind)) = bindings.insert(name.clone(), secret) {
            if kind.contains_key("className") {
                return Err(invalid(path, format!("{name} of .dev.vars is a Durable Object binding too; give each binding its own name")));
            }
        }
    }
    let mut routes: Vec<Value> = Vec::new();
    for route in config.routes.iter().chain(config.route.as_ref()) {
        routes.extend(hosts_of(path, route).into_iter().map(Value::String));
    }
    let name = config.name.clone().unwrap_or_else(|| "worker".into());
    let props = json!({
        "name": name,
        "entrypoint": main,
        "bindings": bindings,
        "routes": routes,
        "crons": config.triggers.crons,
    });
    Ok(json!({ "id": name, "site": "", "props": props }))
}

/// The `KEY=value` lines of `dir`'s `.dev.vars`, else its `.env` (`#` comments, `export`,
/// quotes): Wrangler's local secrets.
fn dev_vars(dir: &Path) -> Result<BTreeMap<String, String>, ScriptError> {
    let Some(file) = [".dev.vars", ".env"]
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
    else {
        return Ok(BTreeMap::new());
    };
    let text = std::fs::read_to_string(&file).map_err(|e| ScriptError::Read {
        path: file.clone(),
        reason: e.to_string(),
    })?;
    let mut vars = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let quoted = value.len() >= 2
            && (value.starts_with('"') && value.ends_with('"')
                || value.starts_with('\'') && value.ends_with('\''));
        let value = if quoted {
            &value[1..value.len() - 1]
        } else {
            value
        };
        vars.insert(key.trim().to_string(), value.to_string());
    }
    Ok(vars)
}

/// The hosts a Wrangler route gives the worker, as `host/*`: berth routes whole hosts, so
/// a route of a path (`example.com/api/*`) routes its host, and Cloudflare's
/// `*example.com/*` is the host and its subdomains. An empty route is no route, as in
/// Wrangler; a route that is neither text nor `{ pattern }` is left to the worker's check.
fn hosts_of(config: &Path, route: &Value) -> Vec<String> {
    let pattern = match route {
        Value::String(text) => text.as_str(),
        other => match other.get("pattern").and_then(Value::as_str) {
            Some(pattern) => pattern,
            None => return vec![other.to_string()],
        },
    };
    let (host, rest) = super::workers::host_and_path(pattern);
    if host.is_empty() {
        return Vec::new();
    }
    if !matches!(rest, "" | "*") {
        tracing::warn!(
            "{}: route {pattern:?} names a path; berth routes the whole host {host} to the worker, whose fetch sees the path",
            config.display()
        );
    }
    match host.strip_prefix('*') {
        Some(apex) if !apex.starts_with('.') && !apex.is_empty() => {
            vec![format!("{apex}/*"), format!("*.{apex}/*")]
        }
        _ => vec![format!("{host}/*")],
    }
}

fn invalid(path: &Path, message: String) -> ScriptError {
    ScriptError::Invalid {
        at: SourcePlace::file(path),
        resource: "wrangler configuration".into(),
        message,
    }
}

/// The configuration as a JSON value: TOML, or JSON with comments and trailing commas.
fn parse(path: &Path, text: &str) -> Result<Value, ScriptError> {
    let syntax = |line: usize, column: usize, message: String| ScriptError::Syntax {
        at: SourcePlace {
            path: path.to_path_buf(),
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
        },
        message,
    };
    if path.extension().is_some_and(|e| e == "toml") {
        return toml::from_str::<Value>(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map_or((0, 0), |span| line_column(text, span.start));
            syntax(line, column, e.message().to_string())
        });
    }
    serde_json::from_str(&plain_json(text)).map_err(|e| {
        let message = e.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        syntax(e.line(), e.column(), message)
    })
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let end = (0..=offset.min(text.len()))
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// JSON with comments (`//`, `/* */`) and trailing commas, as plain JSON: each comment
/// and trailing comma becomes spaces (newlines kept), so that an error's line and
/// column are those of the file.
fn plain_json(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out: Vec<char> = Vec::with_capacity(chars.len());
    let mut i = 0;
    let mut in_string = false;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(escaped) = next {
                    out.push(escaped);
                    i += 1;
                }
            } else if c == '"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        match (c, next) {
            ('"', _) => {
                in_string = true;
                out.push(c);
                i += 1;
            }
            ('/', Some('/')) => {
                while i < chars.len() && chars[i] != '\n' {
                    out.push(' ');
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                out.extend([' ', ' ']);
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    out.push(if chars[i] == '\n' { '\n' } else { ' ' });
                    i += 1;
                }
                if i < chars.len() {
                    out.extend([' ', ' ']);
                    i += 2;
                }
            }
            (']' | '}', _) => {
                // A comma with only blanks after it, before this bracket, was a trailing one.
                if let Some(comma) = out.iter().rposition(|c| !c.is_whitespace()) {
                    if out[comma] == ',' {
                        out[comma] = ' ';
                    }
                }
                out.push(c);
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_trailing_commas_go_and_strings_keep_theirs() {
        let text = "{\n  // a comment\n  \"a\": \"// not one, /* nor this */\",\n  /* gone */ \"b\": [1, 2,],\n  \"c\": \"\\\"quoted,\\\" ]\",\n}\n";
        let value: Value = serde_json::from_str(&plain_json(text)).expect("plain JSON");
        assert_eq!(
            value,
            json!({ "a": "// not one, /* nor this */", "b": [1, 2], "c": "\"quoted,\" ]" })
        );
    }

    #[test]
    fn a_syntax_error_names_the_line_and_column_of_the_file() {
        let text = "{\n  // one\n  /* two\n  three */\n  \"a\": 1\n  \"b\": 2\n}\n";
        let err = parse(Path::new("/x/wrangler.jsonc"), text).expect_err("no comma");
        assert!(
            err.to_string()
                .starts_with("/x/wrangler.jsonc:6:3: syntax error"),
            "{err}"
        );
        let err =
            parse(Path::new("/x/wrangler.toml"), "name = \"a\"\nmain = \n").expect_err("no value");
        assert!(err.to_string().starts_with("/x/wrangler.toml:2:"), "{err}");
    }
}
