//! The manifest as written: serde's view of `berth.toml`, with the spans of the values
//! that later checks point at.
//!
//! Values whose form alone says whether they are valid (ports, durations, instance
//! types, route paths and targets) are checked here while they are read, so that serde
//! reports them at the right key and position.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::diagnose::Source;
use super::ManifestError;
use crate::class::{parse_duration, parse_size, InstanceType};
use crate::router::{KeySource, PathPattern, Strategy, Target, MAX_POOL};

/// Reads the text into the raw manifest; errors point into `source`.
pub(super) fn deserialize(source: &Source) -> Result<RawManifest, ManifestError> {
    let deserializer =
        toml::de::Deserializer::parse(source.text).map_err(|e| source.syntax_error(&e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| source.value_error(e))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawManifest {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) containers: BTreeMap<String, Spanned<RawContainer>>,
    #[serde(default)]
    pub(super) workers: BTreeMap<String, Spanned<RawWorker>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawContainer {
    pub(super) class_name: Option<String>,
    pub(super) name: Option<Spanned<String>>,
    pub(super) tag: Option<Spanned<String>>,
    pub(super) build: Option<Spanned<RawBuild>>,
    pub(super) image: Option<Spanned<String>>,
    pub(super) max_instances: Option<Spanned<usize>>,
    pub(super) standby: Option<Spanned<usize>>,
    pub(super) instance_type: Option<InstanceTypeValue>,
    #[serde(default)]
    pub(super) class: RawClass,
    pub(super) rollout: Option<Spanned<RawRollout>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    pub(super) steps: Option<Vec<u8>>,
    pub(super) grace: Option<DurationValue>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBuild {
    pub(super) context: Option<String>,
    pub(super) dockerfile: Option<String>,
    #[serde(default)]
    pub(super) args: BTreeMap<String, String>,
    pub(super) target: Option<String>,
    pub(super) command: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClass {
    pub(super) default_port: Option<Port>,
    #[serde(default)]
    pub(super) required_ports: Vec<Port>,
    pub(super) sleep_after: Option<Spanned<SleepAfterValue>>,
    pub(super) sleep_mode: Option<Spanned<String>>,
    pub(super) pause_for: Option<Spanned<DurationValue>>,
    pub(super) max_paused: Option<Spanned<usize>>,
    #[serde(default)]
    pub(super) env_vars: BTreeMap<Spanned<String>, String>,
    pub(super) entrypoint: Option<Vec<String>>,
    pub(super) enable_internet: Option<bool>,
    #[serde(default)]
    pub(super) allowed_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) denied_hosts: Vec<Spanned<String>>,
    pub(super) ping_endpoint: Option<PingEndpoint>,
    #[serde(default)]
    pub(super) labels: BTreeMap<Spanned<String>, String>,
    pub(super) start_timeout: Option<Spanned<DurationValue>>,
    pub(super) port_ready_timeout: Option<Spanned<DurationValue>>,
    pub(super) request_timeout: Option<Spanned<DurationValue>>,
    pub(super) stop_grace: Option<Spanned<DurationValue>>,
    pub(super) init: Option<bool>,
    pub(super) log_max: Option<Spanned<SizeValue>>,
    pub(super) ready: Option<Spanned<RawReady>>,
    #[serde(default)]
    pub(super) volumes: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReady {
    pub(super) path: Spanned<String>,
    #[serde(default)]
    pub(super) status: Vec<Spanned<u16>>,
    pub(super) interval: Option<Spanned<DurationValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorker {
    #[serde(default)]
    pub(super) bindings: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub(super) routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub(super) hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) schedules: Vec<Spanned<RawSchedule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    pub(super) cron: Spanned<String>,
    pub(super) path: Spanned<String>,
    pub(super) instance: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) path: RoutePath,
    pub(super) binding: String,
    pub(super) instance: TargetValue,
    #[serde(default)]
    pub(super) strip_prefix: bool,
    #[serde(default)]
    pub(super) start_only: bool,
    pub(super) wake: Option<bool>,
    #[serde(default)]
    pub(super) fallback: bool,
    #[serde(default)]
    pub(super) keep_warm: bool,
}

/// A port from 1 to 65535.
pub(super) struct Port(pub(super) u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        u16::try_from(n)
            .ok()
            .filter(|p| *p != 0)
            .map(Port)
            .ok_or_else(|| {
                de::Error::custom(format!("{n} is not a port; use a number from 1 to 65535"))
            })
    }
}

/// Seconds as a number, or a string such as `30s`, `3m`, `1h30m`.
pub(super) struct DurationValue(pub(super) Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a duration: seconds (90) or a string such as \"30s\", \"3m\", \"1h30m\"",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationValue, E> {
                u64::try_from(v)
                    .map(|s| DurationValue(Duration::from_secs(s)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationValue, E> {
                parse_duration(v).map(DurationValue).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration, or `"never"` ([`crate::class::ContainerClass::NEVER`]).
pub(super) struct SleepAfterValue(pub(super) Duration);

impl<'de> Deserialize<'de> for SleepAfterValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SleepAfterValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration (90, \"30s\", \"3m\", \"1h30m\") or \"never\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SleepAfterValue, E> {
                u64::try_from(v)
                    .map(|s| SleepAfterValue(Duration::from_secs(s)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SleepAfterValue, E> {
                if v == "never" {
                    return Ok(SleepAfterValue(crate::class::ContainerClass::NEVER));
                }
                parse_duration(v)
                    .map(SleepAfterValue)
                    .map_err(|e| E::custom(format!("{e}; or \"never\" to keep it running")))
            }
        }
        d.deserialize_any(V)
    }
}

/// Bytes as a number, or a string such as `10MiB`.
pub(super) struct SizeValue(pub(super) u64);

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SizeValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size: bytes (65536) or a string such as \"512KiB\", \"10MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SizeValue, E> {
                u64::try_from(v)
                    .map(SizeValue)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SizeValue, E> {
                parse_size(v).map(SizeValue).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A `host/path` string, or `false` for no probe.
pub(super) struct PingEndpoint(pub(super) Option<String>);

impl<'de> Deserialize<'de> for PingEndpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PingEndpoint;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a \"host/path\" string, or false to skip the HTTP probe")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<PingEndpoint, E> {
                if v {
                    Err(E::custom(
                        "ping_endpoint = true means nothing; give a \"host/path\" string, or false",
                    ))
                } else {
                    Ok(PingEndpoint(None))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PingEndpoint, E> {
                Ok(PingEndpoint(Some(v.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

/// A named size, or `{ vcpu, memory_mib }`.
pub(super) struct InstanceTypeValue(pub(super) InstanceType);

impl<'de> Deserialize<'de> for InstanceTypeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Custom {
            vcpu: f64,
            memory_mib: u64,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = InstanceTypeValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "lite, basic, standard-1 … standard-4, or { vcpu = 0.5, memory_mib = 512 }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<InstanceTypeValue, E> {
                InstanceType::named(v)
                    .map(InstanceTypeValue)
                    .map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<InstanceTypeValue, A::Error> {
                let c = Custom::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if !(c.vcpu > 0.0 && c.vcpu <= 256.0) {
                    return Err(de::Error::custom(
                        "vcpu must be more than 0 (and at most 256)",
                    ));
                }
                if c.memory_mib < 6 {
                    return Err(de::Error::custom(
                        "memory_mib must be at least 6 (Docker's minimum)",
                    ));
                }
                Ok(InstanceTypeValue(InstanceType {
                    vcpu: c.vcpu,
                    memory_mib: c.memory_mib,
                }))
            }
        }
        d.deserialize_any(V)
    }
}

pub(super) struct RoutePath(pub(super) PathPattern);

impl<'de> Deserialize<'de> for RoutePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        PathPattern::parse(&raw)
            .map(RoutePath)
            .map_err(de::Error::custom)
    }
}

/// `"name"`, `{ from = "path", param = "user" }`, `{ from = "header", name = "x-user" }`,
/// `{ pool = 3, strategy = "round-robin" }`, or `{ pool = 3, strategy = "hash", key = { … } }`.
pub(super) struct TargetValue(pub(super) Target);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyTable {
    from: String,
    param: Option<String>,
    name: Option<String>,
}

impl KeyTable {
    fn into_source<E: de::Error>(self) -> Result<KeySource, E> {
        let need = |value: Option<String>, key: &str, example: &str| {
            value.filter(|v| !v.is_empty()).ok_or_else(|| {
                E::custom(format!(
                    "from = \"{}\" needs {key}, as in {example}",
                    self.from
                ))
            })
        };
        match self.from.as_str() {
            "path" => Ok(KeySource::Path(need(
                self.param.clone(),
                "param",
                "{ from = \"path\", param = \"user\" }",
            )?)),
            "header" => Ok(KeySource::Header(
                need(
                    self.name.clone(),
                    "name",
                    "{ from = \"header\", name = \"x-user\" }",
                )?
                .to_ascii_lowercase(),
            )),
            "query" => Ok(KeySource::Query(need(
                self.name.clone(),
                "name",
                "{ from = \"query\", name = \"user\" }",
            )?)),
            "cookie" => Ok(KeySource::Cookie(need(
                self.name.clone(),
                "name",
                "{ from = \"cookie\", name = \"session\" }",
            )?)),
            other => Err(E::custom(format!(
                "from = {other:?} is not a part of a request; use path, header, query or cookie"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for TargetValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            from: Option<String>,
            param: Option<String>,
            name: Option<String>,
            pool: Option<i64>,
            strategy: Option<String>,
            key: Option<KeyTable>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TargetValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object name, { from = \"path\", param = \"user\" }, or { pool = 3, strategy = \"round-robin\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TargetValue, E> {
                if v.is_empty() {
                    return Err(E::custom("the instance name is empty"));
                }
                Ok(TargetValue(Target::Fixed(v.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TargetValue, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                match (t.from, t.pool) {
                    (Some(_), Some(_)) => Err(de::Error::custom(
                        "give either from (a name taken from the request) or pool (a pool of instances), not both",
                    )),
                    (Some(from), None) => {
                        if t.strategy.is_some() || t.key.is_some() {
                            return Err(de::Error::custom("strategy and key belong to pools; with from, give param or name"));
                        }
                        let key = KeyTable { from, param: t.param, name: t.name };
                        Ok(TargetValue(Target::From(key.into_source()?)))
                    }
                    (None, Some(size)) => {
                        let size = usize::try_from(size)
                            .ok()
                            .filter(|s| (1..=MAX_POOL).contains(s))
                            .ok_or_else(|| {
                                de::Error::custom(format!(
                                    "pool = {size}: a pool has from 1 to {MAX_POOL} objects"
                                ))
                            })?;
                        let strategy = match t.strategy.as_deref().unwrap_or("random") {
                            "random" => Strategy::Random,
                            "round-robin" => Strategy::RoundRobin,
                            "least-in-flight" => Strategy::LeastInFlight,
                            "hash" => Strategy::Hash(
                                t.key
                                    .ok_or_else(|| de::Error::custom(
                                        "strategy = \"hash\" needs key, as in key = { from = \"header\", name = \"x-user\" }",
                                    ))?
                                    .into_source()?,
                            ),
                            other => {
                                return Err(de::Error::custom(format!(
                                    "strategy {other:?} is not known; use random, round-robin, least-in-flight or hash"
                                )))
                            }
                        };
                        Ok(TargetValue(Target::Pool { size, strategy }))
                    }
                    (None, None) => Err(de::Error::custom(
                        "an instance table needs from (a name taken from the request) or pool (a pool of instances)",
                    )),
                }
            }
        }
        d.deserialize_any(V)
    }
}
