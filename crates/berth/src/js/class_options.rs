//! A container class's option fields, as the instantiated class holds them, to berth's
//! [`ContainerClass`]: Cloudflare's names and types (`defaultPort = 8080`,
//! `sleepAfter = "3m"` or seconds, `envVars = { … }`), each checked, with an error that
//! names the class and the field.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

use super::ScriptError;
use crate::class::{
    parse_duration, parse_size, ContainerClass, ReadyCheck, SleepMode, MIN_LOG_MAX,
};

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
    if let Some(handlers) = fields.get("$outbound").and_then(Value::as_str) {
        return Err(error(
            "(outbound)",
            format!("the class sets {handlers}: berth does not pass a container's outbound requests through JavaScript; control its egress with enableInternet, allowedHosts and deniedHosts"),
        ));
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
            "sleepMode" => sleep_mode(value).map(|m| options.sleep_mode = m),
            "pauseFor" => sleep_after(value).map(|d| options.pause_for = d),
            "maxPaused" => count(value).map(|n| options.max_paused = Some(n)),
            "envVars" => strings(value).map(|v| options.env_vars = v),
            "entrypoint" => list(value, string).map(|e| options.entrypoint = Some(e)),
            "enableInternet" => boolean(value).map(|b| options.enable_internet = b),
            "allowedHosts" => list(value, host).map(|h| options.allowed_hosts = h),
            "deniedHosts" => list(value, host).map(|h| options.denied_hosts = h),
            "pingEndpoint" => string(value).map(|p| options.ping_endpoint = Some(p)),
            "labels" => strings(value).map(|l| options.labels = l),
            "ready" => ready(value).map(|r| options.ready = Some(r)),
            "logMax" => log_max(value).map(|m| options.log_max = m),
            "volumes" => list(value, volume_path).map(|v| options.volumes = v),
            _ => Ok(()),
        };
        // envVars may hold secrets (`env.KEY`): only its names go into an error.
        let shown = match (field.as_str(), value.as_object()) {
            ("envVars", Some(vars)) => {
                let names: Vec<&str> = vars.keys().map(String::as_str).collect();
                format!("{{{}}}", names.join(", "))
            }
            _ => value.to_string(),
        };
        checked.map_err(|message| error(known(field), format!("{shown} {message}")))?;
    }
    Ok(options)
}

/// The field's name as berth spells it in errors.
fn known(field: &str) -> &'static str {
    const FIELDS: [&str; 16] = [
        "defaultPort",
        "requiredPorts",
        "sleepAfter",
        "sleepMode",
        "pauseFor",
        "maxPaused",
        "envVars",
        "entrypoint",
        "enableInternet",
        "allowedHosts",
        "deniedHosts",
        "pingEndpoint",
        "labels",
        "ready",
        "logMax",
        "volumes",
    ];
    FIELDS
        .into_iter()
        .find(|f| *f == field)
        .unwrap_or("(field)")
}

/// `sleepMode = "stop" | "pause"`.
fn sleep_mode(value: &Value) -> Result<SleepMode, String> {
    match value.as_str() {
        Some("stop") => Ok(SleepMode::Stop),
        Some("pause") => Ok(SleepMode::Pause),
        _ => Err("is not a sleep mode; give \"stop\" (the default) or \"pause\"".into()),
    }
}

/// A whole number above 0.
fn count(value: &Value) -> Result<usize, String> {
    value
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| "is not a whole number above 0".to_string())
}

/// A host pattern of `allowedHosts` or `deniedHosts`.
fn host(value: &Value) -> Result<String, String> {
    let text = value
        .as_str()
        .ok_or("is not a host; give a text such as \"api.example.com\"")?;
    crate::egress::check_pattern(text)?;
    Ok(text.to_ascii_lowercase())
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
        Value::String(text) if text == "never" => return Ok(ContainerClass::NEVER),
        Value::String(text) => {
            parse_duration(text).map_err(|e| format!("is not a duration: {e}"))?
        }
        Value::Number(n) => n
            .as_f64()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| {
                "is not a duration; give seconds, or a text such as \"3m\"".to_string()
            })?,
        _ => return Err("is not a duration; give a text such as \"3m\", or seconds".into()),
    };
    if duration.is_zero() {
        return Err("would stop each container as soon as it starts; give it time to serve, as in \"30s\" (the default is 10m)".into());
    }
    Ok(duration)
}

/// `{ path: "/healthz", status: [200, 204], interval: "50ms" }` (interval also in ms).
fn ready(value: &Value) -> Result<ReadyCheck, String> {
    let object = value
        .as_object()
        .ok_or("is not an object such as { path: \"/healthz\", status: [200] }")?;
    if let Some(key) = object
        .keys()
        .find(|k| !["path", "status", "interval"].contains(&k.as_str()))
    {
        return Err(format!(
            "has {key}, which berth does not know; give path, status and interval"
        ));
    }
    let path = object
        .get("path")
        .and_then(Value::as_str)
        .filter(|p| p.starts_with('/') && !p.chars().any(char::is_whitespace))
        .ok_or("needs a path such as \"/healthz\"")?
        .to_string();
    let status = match object.get("status") {
        None => Vec::new(),
        Some(status) => list(status, |v| {
            v.as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .filter(|s| (100..=599).contains(s))
                .ok_or_else(|| "is not an HTTP status from 100 to 599".to_string())
        })?,
    };
    let interval = match object.get("interval") {
        None => ReadyCheck::DEFAULT_INTERVAL,
        Some(Value::String(text)) => parse_duration(text)
            .map_err(|e| format!("has an interval that is not a duration: {e}"))?,
        Some(Value::Number(ms)) => ms
            .as_u64()
            .map(Duration::from_millis)
            .ok_or("has an interval that is not whole milliseconds")?,
        Some(_) => return Err("has an interval that is not a duration such as \"50ms\"".into()),
    };
    if interval.is_zero() {
        return Err("has an interval of 0, which would ask without pause".into());
    }
    Ok(ReadyCheck {
        path,
        status,
        interval,
    })
}

/// An absolute path in the container, not its root.
fn volume_path(value: &Value) -> Result<String, String> {
    let path = value
        .as_str()
        .ok_or("is not a string")?
        .trim_end_matches('/');
    if !path.starts_with('/') {
        return Err("is not a folder of the container such as \"/data\"".into());
    }
    Ok(path.to_string())
}

/// Bytes, or a size such as `"10MiB"`, at least 64 KiB.
fn log_max(value: &Value) -> Result<u64, String> {
    let bytes = match value {
        Value::String(text) => parse_size(text).map_err(|e| e.to_string())?,
        Value::Number(n) => n.as_u64().ok_or("is not a whole number of bytes")?,
        _ => return Err("is not a size; give bytes, or a text such as \"10MiB\"".into()),
    };
    if bytes < MIN_LOG_MAX {
        return Err("is below 64KiB, which leaves no room for a crash's last lines".into());
    }
    Ok(bytes)
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
