//! A container class's option fields, as the instantiated class holds them, to berth's
//! [`ContainerClass`]: Cloudflare's names and types (`defaultPort = 8080`,
//! `sleepAfter = "3m"` or seconds, `envVars = { … }`), each checked, with an error that
//! names the class and the field.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

use super::ScriptError;
use crate::class::{parse_duration, ContainerClass};

/// The class `class` from the JSON of its fields (see `classOptions` in the prelude),
/// exported by `entrypoint`; the image is left empty.
pub(super) fn container_class(
    json: &str,
    class: &str,
    entrypoint: &Path,
) -> Result<ContainerClass, ScriptError> {
    let error = |field: &'static str, message: String| ScriptError::ClassOption {
        entrypoint: entrypoint.to_path_buf(),
        class: class.to_string(),
        field,
        message,
    };
    let fields: Map<String, Value> =
        serde_json::from_str(json).map_err(|e| error("(all)", e.to_string()))?;
    if let Some(kind) = fields.get("$notClass") {
        return Err(error(
            "(export)",
            format!("the export is a {kind}, not a class"),
        ));
    }
    if fields.get("$extendsContainer") != Some(&Value::Bool(true)) {
        return Err(error("(extends)", "the class does not extend Container from \"@cloudflare/containers\"; berth reads a container's options from that class's fields".into()));
    }
    let mut options = ContainerClass::new(class, String::new());
    for (field, value) in &fields {
        if let Some(kind) = value.get("$unsupported") {
            return Err(error(
                known(field),
                format!("is a {kind}; give a plain value"),
            ));
        }
        let checked = match field.as_str() {
            "defaultPort" => port(value).map(|p| options.default_port = Some(p)),
            "requiredPorts" => list(value, port).map(|p| options.required_ports = p),
            "sleepAfter" => sleep_after(value).map(|d| options.sleep_after = d),
            "envVars" => strings(value).map(|v| options.env_vars = v),
            "entrypoint" => list(value, string).map(|e| options.entrypoint = Some(e)),
            "enableInternet" => boolean(value).map(|b| options.enable_internet = b),
            "pingEndpoint" => string(value).map(|p| options.ping_endpoint = Some(p)),
            "labels" => strings(value).map(|l| options.labels = l),
            _ => Ok(()),
        };
        checked.map_err(|message| error(known(field), format!("{value} {message}")))?;
    }
    Ok(options)
}

/// The field's name as berth spells it in errors.
fn known(field: &str) -> &'static str {
    const FIELDS: [&str; 8] = [
        "defaultPort",
        "requiredPorts",
        "sleepAfter",
        "envVars",
        "entrypoint",
        "enableInternet",
        "pingEndpoint",
        "labels",
    ];
    FIELDS
        .into_iter()
        .find(|f| *f == field)
        .unwrap_or("(field)")
}

fn port(value: &Value) -> Result<u16, String> {
    value
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| "is not a port; give a whole number from 1 to 65535".to_string())
}

fn sleep_after(value: &Value) -> Result<Duration, String> {
    let duration = match value {
        Value::String(text) => {
            parse_duration(text).map_err(|e| format!("is not a duration: {e}"))?
        }
        Value::Number(n) => n.as_u64().map(Duration::from_secs).ok_or_else(|| {
            "is not a duration; give whole seconds, or a text such as \"3m\"".to_string()
        })?,
        _ => return Err("is not a duration; give a text such as \"3m\", or seconds".into()),
    };
    if duration.is_zero() {
        return Err("would stop each container as soon as it starts; give it time to serve, as in \"30s\" (the default is 10m)".into());
    }
    Ok(duration)
}

fn string(value: &Value) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "is not a string".to_string())
}

fn boolean(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| "is not true or false".to_string())
}

fn list<T>(value: &Value, item: fn(&Value) -> Result<T, String>) -> Result<Vec<T>, String> {
    let items = value.as_array().ok_or("is not an array")?;
    items
        .iter()
        .map(|v| item(v).map_err(|e| format!("holds {v}, which {e}")))
        .collect()
}

/// An object whose values are all strings.
fn strings(value: &Value) -> Result<BTreeMap<String, String>, String> {
    let object = value.as_object().ok_or("is not an object of strings")?;
    object
        .iter()
        .map(|(k, v)| match v.as_str() {
            Some(text) => Ok((k.clone(), text.to_string())),
            None => Err(format!("has {k} = {v}, which is not a string; quote it")),
        })
        .collect()
}
