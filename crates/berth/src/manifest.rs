//! `berth.toml`: the app's containers (image, class options, limits) and workers
//! (bindings and routes), mirroring the seeds' `alchemy.run.ts` and `MyContainer` class.
//!
//! Every error names the file, line and column, the key, and what is accepted; unknown
//! keys are errors with the nearest known key suggested.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::class::{parse_duration, ContainerClass, InstanceType};
use crate::router::{KeySource, PathPattern, Route, Strategy, Target};

/// The manifest's file name.
pub const FILE_NAME: &str = "berth.toml";

/// A manifest that cannot be used, and where.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {reason}; berth looks for {FILE_NAME} in the folder you give it (default: the current one)")]
    Read { path: PathBuf, reason: String },
    #[error("{path}:{line}:{column}: {key}{message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        /// The dotted key at fault, with a trailing `: `, or empty.
        key: String,
        message: String,
    },
}

/// A parsed and checked manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The app's name: it prefixes images and labels every container.
    pub name: String,
    /// The folder that holds `berth.toml`; relative paths start here.
    pub dir: PathBuf,
    pub containers: Vec<ContainerDef>,
    pub workers: Vec<WorkerDef>,
}

/// A container resource: how to get its image, and its class.
#[derive(Debug, Clone)]
pub struct ContainerDef {
    /// The resource id (the key under `[containers]`).
    pub id: String,
    pub image: ImageSource,
    /// The class options; `image` is filled in once the image is built.
    pub class: ContainerClass,
}

/// Where a container's image comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    Build(BuildSpec),
    /// A prebuilt image, used as is.
    Prebuilt(String),
}

/// How to build an image from a Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildSpec {
    /// The image name (without registry prefix or tag).
    pub name: String,
    /// A fixed tag; `None`: a content hash of the build inputs.
    pub tag: Option<String>,
    pub context: PathBuf,
    /// Relative to the context.
    pub dockerfile: String,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// A shell command run in the manifest's folder before the build.
    pub command: Option<String>,
}

/// A worker: its bindings and its routes.
#[derive(Debug, Clone)]
pub struct WorkerDef {
    pub name: String,
    /// Binding name → container resource id.
    pub bindings: BTreeMap<String, String>,
    pub routes: Vec<Route>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: Spanned<String>,
    #[serde(default)]
    containers: BTreeMap<String, Spanned<RawContainer>>,
    #[serde(default)]
    workers: BTreeMap<String, Spanned<RawWorker>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainer {
    class_name: Option<String>,
    name: Option<Spanned<String>>,
    tag: Option<Spanned<String>>,
    build: Option<RawBuild>,
    image: Option<Spanned<String>>,
    max_instances: Option<Spanned<usize>>,
    instance_type: Option<InstanceTypeValue>,
    #[serde(default)]
    class: RawClass,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    context: Option<String>,
    dockerfile: Option<String>,
    #[serde(default)]
    args: BTreeMap<String, String>,
    target: Option<String>,
    command: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawClass {
    default_port: Option<Port>,
    #[serde(default)]
    required_ports: Vec<Port>,
    sleep_after: Option<DurationValue>,
    #[serde(default)]
    env_vars: BTreeMap<String, String>,
    entrypoint: Option<Vec<String>>,
    enable_internet: Option<bool>,
    ping_endpoint: Option<PingEndpoint>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    start_timeout: Option<DurationValue>,
    port_ready_timeout: Option<DurationValue>,
    stop_grace: Option<DurationValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    #[serde(default)]
    bindings: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path: RoutePath,
    binding: String,
    instance: TargetValue,
    #[serde(default)]
    strip_prefix: bool,
}

/// A port from 1 to 65535.
struct Port(u16);

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
struct DurationValue(Duration);

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

/// A `host/path` string, or `false` for no probe.
struct PingEndpoint(Option<String>);

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
struct InstanceTypeValue(InstanceType);

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

struct RoutePath(PathPattern);

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
struct TargetValue(Target);

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
            pool: Option<usize>,
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
                        if size == 0 {
                            return Err(de::Error::custom("pool must be at least 1"));
                        }
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

impl Manifest {
    /// Loads `dir/berth.toml`.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path).map_err(|e| ManifestError::Read {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Manifest::parse(&text, &path)
    }

    /// Parses manifest text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let at = |span: std::ops::Range<usize>, key: &str, message: String| {
            let (line, column) = position(text, span.start);
            ManifestError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                key: if key.is_empty() {
                    String::new()
                } else {
                    format!("{key}: ")
                },
                message,
            }
        };
        let raw: RawManifest = match toml::de::Deserializer::parse(text) {
            Ok(deserializer) => serde_path_to_error::deserialize(deserializer).map_err(|e| {
                let key = e
                    .path()
                    .to_string()
                    .split('.')
                    .filter(|part| !part.starts_with("$__serde"))
                    .collect::<Vec<_>>()
                    .join(".");
                let key = if key == "." { String::new() } else { key };
                let inner = e.into_inner();
                at(inner.span().unwrap_or(0..0), &key, explain(inner.message()))
            })?,
            Err(e) => return Err(at(e.span().unwrap_or(0..0), "", e.message().to_string())),
        };

        let name = raw.name.get_ref().clone();
        if !valid_name(&name) {
            return Err(at(
                raw.name.span(),
                "name",
                format!("{name:?} is not a valid app name; use lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"),
            ));
        }
        let mut containers = Vec::new();
        for (id, spanned) in &raw.containers {
            let key = format!("containers.{id}");
            let c = spanned.get_ref();
            let image = match (&c.image, &c.build) {
                (Some(image), Some(_)) => {
                    return Err(at(
                        image.span(),
                        &format!("{key}.image"),
                        "give either image (prebuilt) or build, not both".into(),
                    ))
                }
                (Some(image), None) => ImageSource::Prebuilt(image.get_ref().clone()),
                (None, build) => {
                    let default_build = RawBuild::default();
                    let b = build.as_ref().unwrap_or(&default_build);
                    let image_name = c
                        .name
                        .as_ref()
                        .map(|n| n.get_ref().clone())
                        .unwrap_or_else(|| id.clone());
                    if !valid_name(&image_name) {
                        let span = c
                            .name
                            .as_ref()
                            .map(|n| n.span())
                            .unwrap_or_else(|| spanned.span());
                        return Err(at(span, &format!("{key}.name"), format!(
                            "{image_name:?} is not a valid image name; use lowercase letters, digits, '-', '_' or '.'"
                        )));
                    }
                    if let Some(tag) = &c.tag {
                        if !valid_tag(tag.get_ref()) {
                            return Err(at(tag.span(), &format!("{key}.tag"), format!(
                                "{:?} is not a valid tag; use up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
                                tag.get_ref()
                            )));
                        }
                    }
                    ImageSource::Build(BuildSpec {
                        name: image_name,
                        tag: c.tag.as_ref().map(|t| t.get_ref().clone()),
                        context: dir.join(b.context.as_deref().unwrap_or(".")),
                        dockerfile: b.dockerfile.clone().unwrap_or_else(|| "Dockerfile".into()),
                        args: b.args.clone(),
                        target: b.target.clone(),
                        command: b.command.clone(),
                    })
                }
            };
            let class_name = c.class_name.clone().unwrap_or_else(|| id.clone());
            let mut class = ContainerClass::new(class_name, String::new());
            let rc = &c.class;
            class.default_port = rc.default_port.as_ref().map(|p| p.0);
            class.required_ports = rc.required_ports.iter().map(|p| p.0).collect();
            if let Some(d) = &rc.sleep_after {
                class.sleep_after = d.0;
            }
            class.env_vars = rc.env_vars.clone();
            class.entrypoint = rc.entrypoint.clone();
            if let Some(v) = rc.enable_internet {
                class.enable_internet = v;
            }
            if let Some(p) = &rc.ping_endpoint {
                class.ping_endpoint = p.0.clone();
            }
            class.labels = rc.labels.clone();
            if let Some(d) = &rc.start_timeout {
                class.start_timeout = d.0;
            }
            if let Some(d) = &rc.port_ready_timeout {
                class.port_ready_timeout = d.0;
            }
            if let Some(d) = &rc.stop_grace {
                class.stop_grace = d.0;
            }
            if let Some(max) = &c.max_instances {
                if *max.get_ref() == 0 {
                    return Err(at(
                        max.span(),
                        &format!("{key}.max_instances"),
                        "must be at least 1".into(),
                    ));
                }
                class.max_instances = *max.get_ref();
            }
            class.instance_type = c.instance_type.as_ref().map(|t| t.0);
            containers.push(ContainerDef {
                id: id.clone(),
                image,
                class,
            });
        }
        let mut class_names = BTreeMap::new();
        for (def, (_, spanned)) in containers.iter().zip(&raw.containers) {
            if let Some(other) = class_names.insert(def.class.name.clone(), def.id.clone()) {
                return Err(at(spanned.span(), &format!("containers.{}.class_name", def.id), format!(
                    "class {} is already used by containers.{other}; each container needs its own class_name",
                    def.class.name
                )));
            }
        }

        let known: Vec<&str> = raw.containers.keys().map(String::as_str).collect();
        let mut workers = Vec::new();
        for (worker_name, spanned) in &raw.workers {
            let w = spanned.get_ref();
            let key = format!("workers.{worker_name}");
            let mut bindings = BTreeMap::new();
            for (binding, target) in &w.bindings {
                if !raw.containers.contains_key(target.get_ref()) {
                    return Err(at(
                        target.span(),
                        &format!("{key}.bindings.{binding}"),
                        format!(
                            "binds container {:?}, which is not defined; defined containers: {}{}",
                            target.get_ref(),
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            },
                            suggest(target.get_ref(), &known),
                        ),
                    ));
                }
                bindings.insert(binding.clone(), target.get_ref().clone());
            }
            if w.routes.is_empty() {
                return Err(at(spanned.span(), &key, format!(
                    "has no routes; add routes = [{{ path = \"/*\", binding = \"{}\", instance = \"container\" }}]",
                    bindings.keys().next().map(String::as_str).unwrap_or("MY_CONTAINER")
                )));
            }
            let mut routes = Vec::new();
            for (i, route) in w.routes.iter().enumerate() {
                let r = route.get_ref();
                let route_key = format!("{key}.routes[{i}]");
                let binding_names: Vec<&str> = bindings.keys().map(String::as_str).collect();
                if !bindings.contains_key(&r.binding) {
                    return Err(at(
                        route.span(),
                        &format!("{route_key}.binding"),
                        format!(
                            "{:?} is not a binding of this worker; bindings: {}{}",
                            r.binding,
                            if binding_names.is_empty() {
                                "none".to_string()
                            } else {
                                binding_names.join(", ")
                            },
                            suggest(&r.binding, &binding_names),
                        ),
                    ));
                }
                let path_params = |source: &KeySource| match source {
                    KeySource::Path(p) if !r.path.0.has_param(p) => Some(p.clone()),
                    _ => None,
                };
                let missing = match &r.instance.0 {
                    Target::From(source)
                    | Target::Pool {
                        strategy: Strategy::Hash(source),
                        ..
                    } => path_params(source),
                    _ => None,
                };
                if let Some(param) = missing {
                    return Err(at(
                        route.span(),
                        &format!("{route_key}.instance"),
                        format!(
                            "takes path parameter {param:?}, but path {} has no :{param} segment",
                            r.path.0.as_str()
                        ),
                    ));
                }
                routes.push(Route {
                    path: r.path.0.clone(),
                    binding: r.binding.clone(),
                    target: r.instance.0.clone(),
                    strip_prefix: r.strip_prefix,
                });
            }
            workers.push(WorkerDef {
                name: worker_name.clone(),
                bindings,
                routes,
            });
        }
        Ok(Manifest {
            name,
            dir,
            containers,
            workers,
        })
    }
}

/// 1-based line and column of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// Rewrites serde's messages for people: unknown keys get the nearest known key.
fn explain(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let accepted: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    format!(
        "unknown key `{field}`{}; accepted keys: {}",
        suggest(field, &accepted),
        accepted.join(", ")
    )
}

/// ` (did you mean `x`?)` for the nearest candidate, if one is near enough.
fn suggest(word: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"
name = "hello"

[containers.my-container]
class_name = "MyContainer"
name = "your-container"
tag = "some-tag"
build = { context = ".", dockerfile = "Dockerfile.dev", args = { K = "v" }, target = "stage" }
max_instances = 20
instance_type = "lite"

[containers.my-container.class]
default_port = 8080
sleep_after = "3m"
env_vars = { MESSAGE = "I was passed in via the container class!" }

[workers.my-worker]
bindings = { MY_CONTAINER = "my-container" }
routes = [
  { path = "/users/:user/*", binding = "MY_CONTAINER", instance = { from = "path", param = "user" } },
  { path = "/lb/*",          binding = "MY_CONTAINER", instance = { pool = 3, strategy = "round-robin" } },
  { path = "/h/*",           binding = "MY_CONTAINER", instance = { pool = 4, strategy = "hash", key = { from = "header", name = "X-User" } } },
  { path = "/*",             binding = "MY_CONTAINER", instance = "container" },
]
"#;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("app/berth.toml"))
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("an error").to_string()
    }

    #[test]
    fn the_seed_shape_parses() {
        let m = parse(SEED).expect("valid");
        assert_eq!(m.name, "hello");
        let c = &m.containers[0];
        assert_eq!(c.class.name, "MyContainer");
        assert_eq!(c.class.default_port, Some(8080));
        assert_eq!(c.class.sleep_after, Duration::from_secs(180));
        assert_eq!(c.class.instance_type.map(|t| t.memory_mib), Some(256));
        let ImageSource::Build(b) = &c.image else {
            panic!("a build")
        };
        assert_eq!(b.name, "your-container");
        assert_eq!(b.tag.as_deref(), Some("some-tag"));
        assert_eq!(b.dockerfile, "Dockerfile.dev");
        assert_eq!(b.context, Path::new("app/."));
        let w = &m.workers[0];
        assert_eq!(w.routes.len(), 4);
        assert_eq!(
            w.routes[0].target,
            Target::From(KeySource::Path("user".into()))
        );
        assert_eq!(
            w.routes[1].target,
            Target::Pool {
                size: 3,
                strategy: Strategy::RoundRobin
            }
        );
        assert_eq!(
            w.routes[2].target,
            Target::Pool {
                size: 4,
                strategy: Strategy::Hash(KeySource::Header("x-user".into()))
            }
        );
        assert_eq!(w.routes[3].target, Target::Fixed("container".into()));
    }

    #[test]
    fn unknown_keys_name_the_place_and_the_nearest_key() {
        let text = SEED.replace("sleep_after = \"3m\"", "sleep_afte = \"3m\"");
        let e = error(&text);
        assert!(e.starts_with("app/berth.toml:14:1: containers.my-container.class.sleep_afte: unknown key `sleep_afte` (did you mean `sleep_after`?); accepted keys: default_port"), "{e}");
        assert!(e.contains("accepted keys: default_port"), "{e}");
    }

    #[test]
    fn bad_values_say_what_is_accepted() {
        let e = error(&SEED.replace("\"3m\"", "\"3x\""));
        assert!(e.starts_with("app/berth.toml:14:15: containers.my-container.class.sleep_after: invalid duration \"3x\""), "{e}");
        let e = error(&SEED.replace("default_port = 8080", "default_port = 70000"));
        assert!(
            e.contains("containers.my-container.class.default_port: 70000 is not a port"),
            "{e}"
        );
        let e = error(&SEED.replace("\"lite\"", "\"huge\""));
        assert!(
            e.contains("containers.my-container.instance_type: unknown instance type \"huge\""),
            "{e}"
        );
        let e = error(&SEED.replace("\"round-robin\"", "\"fastest\""));
        assert!(
            e.contains("strategy \"fastest\" is not known; use random, round-robin"),
            "{e}"
        );
        let e = error(&SEED.replace("name = \"hello\"", "name = \"Hello World\""));
        assert!(
            e.starts_with("app/berth.toml:2:8: name: \"Hello World\" is not a valid app name"),
            "{e}"
        );
    }

    #[test]
    fn a_binding_to_a_missing_container_is_an_error() {
        let e = error(&SEED.replace(
            "MY_CONTAINER = \"my-container\"",
            "MY_CONTAINER = \"my-containr\"",
        ));
        assert!(e.starts_with("app/berth.toml:18:"), "{e}");
        assert!(e.contains("workers.my-worker.bindings.MY_CONTAINER: binds container \"my-containr\", which is not defined; defined containers: my-container (did you mean `my-container`?)"), "{e}");
    }

    #[test]
    fn routes_are_checked_against_bindings_and_paths() {
        let e = error(&SEED.replace(
            "binding = \"MY_CONTAINER\", instance = \"container\"",
            "binding = \"OTHER\", instance = \"container\"",
        ));
        assert!(
            e.contains("routes[3].binding: \"OTHER\" is not a binding of this worker"),
            "{e}"
        );
        let e = error(&SEED.replace("param = \"user\"", "param = \"id\""));
        assert!(
            e.contains("takes path parameter \"id\", but path /users/:user/* has no :id segment"),
            "{e}"
        );
        let e = error(&SEED.replace("path = \"/lb/*\"", "path = \"lb\""));
        assert!(e.contains("must start with /"), "{e}");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = error("name = \"x\"\n[containers.a\n");
        assert!(e.starts_with("app/berth.toml:2:"), "{e}");
    }

    #[test]
    fn a_missing_name_is_reported() {
        let e = error("[containers.a]\n");
        assert!(e.contains("missing field `name`"), "{e}");
    }

    #[test]
    fn suggestions_pick_the_nearest_key_only_when_near() {
        assert_eq!(
            suggest("sleep_afte", &["sleep_after", "labels"]),
            " (did you mean `sleep_after`?)"
        );
        assert_eq!(suggest("zzz", &["sleep_after", "labels"]), "");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn check(text: &str) {
            match parse(text) {
                Ok(m) => assert!(!m.name.is_empty()),
                Err(ManifestError::Invalid { line, column, .. }) => {
                    assert!(line >= 1 && column >= 1);
                    assert!(
                        line <= text.lines().count().max(1) + 1,
                        "line {line} is in the file"
                    );
                }
                Err(e) => panic!("parse gave a non-positional error: {e}"),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]

            /// Any text gives a manifest or a positioned error, never a panic.
            #[test]
            fn any_text(text in "\\PC{0,400}") {
                check(&text);
            }

            /// Edits of a valid manifest: characters replaced, removed or inserted.
            #[test]
            fn edited_seed(edits in proptest::collection::vec((0usize..2000, 0u8..3, "[ -~\n]"), 1..6)) {
                let mut text: Vec<char> = SEED.chars().collect();
                for (at, kind, c) in edits {
                    let at = at % (text.len() + 1);
                    let c = c.chars().next().unwrap_or('x');
                    match kind {
                        0 if at < text.len() => text[at] = c,
                        1 if at < text.len() => { text.remove(at); }
                        _ => text.insert(at, c),
                    }
                }
                check(&text.into_iter().collect::<String>());
            }
        }
    }
}
