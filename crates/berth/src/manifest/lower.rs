//! From the manifest as written to the model: defaults filled in, relative paths
//! anchored, and the checks that span more than one value (names, tags, bindings that
//! must name containers, routes that must name bindings and path parameters).
//!
//! Checks run in the order of the file, and the first failure is the error.

use std::collections::BTreeMap;
use std::path::Path;

use toml::Spanned;

use super::diagnose::{suggest, valid_name, valid_tag, Source};
use super::raw::{
    DurationValue, RawBuild, RawContainer, RawManifest, RawReady, RawRoute, RawSchedule, RawWorker,
};
use super::{ContainerDef, ImageSource, Manifest, ManifestError, Rollout, WorkerDef};
use crate::build::BuildSpec;
use crate::class::{ContainerClass, ReadyCheck, SleepMode, MIN_LOG_MAX};
use crate::cron::Cron;
use crate::hosts::HostPattern;
use crate::router::{CronSchedule, KeySource, Route, Strategy, Target};

/// The whole manifest; `dir` is the folder relative paths start from.
pub(super) fn manifest(
    raw: &RawManifest,
    dir: &Path,
    source: &Source,
) -> Result<Manifest, ManifestError> {
    let name = raw.name.get_ref().clone();
    if !valid_name(&name) {
        return Err(source.error(
            raw.name.span(),
            "name",
            format!("{name:?} is not a valid app name; use lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"),
        ));
    }
    let containers = raw
        .containers
        .iter()
        .map(|(id, spanned)| container(id, spanned, dir, source))
        .collect::<Result<Vec<_>, _>>()?;
    unique_class_names(&containers, raw, source)?;
    let known: Vec<&str> = raw.containers.keys().map(String::as_str).collect();
    let workers = raw
        .workers
        .iter()
        .map(|(name, spanned)| worker(name, spanned, &known, source))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Manifest {
        name,
        dir: dir.to_path_buf(),
        containers,
        workers,
    })
}

/// One `[containers.<id>]` table.
fn container(
    id: &str,
    spanned: &Spanned<RawContainer>,
    dir: &Path,
    source: &Source,
) -> Result<ContainerDef, ManifestError> {
    let key = format!("containers.{id}");
    let image = image_source(id, &key, spanned, dir, source)?;
    let class = class_options(id, &key, spanned.get_ref(), source)?;
    let c = spanned.get_ref();
    let image_place = match (&c.image, &c.build) {
        (Some(image), _) => source.place(image.span(), &format!("{key}.image")),
        (None, Some(build)) => source.place(build.span(), &format!("{key}.build")),
        (None, None) => source.place(spanned.span(), &key),
    };
    let rollout = rollout(&key, c, source)?;
    Ok(ContainerDef {
        id: id.to_string(),
        image,
        image_place,
        class,
        rollout,
        exported_by: None,
    })
}

/// The rollout settings: steps that rise, from 1 to 100, and end at 100.
fn rollout(key: &str, c: &RawContainer, source: &Source) -> Result<Rollout, ManifestError> {
    let mut rollout = Rollout::default();
    let Some(raw) = &c.rollout else {
        return Ok(rollout);
    };
    if let Some(steps) = &raw.get_ref().steps {
        let rising = steps.windows(2).all(|w| w[0] < w[1]);
        if steps.is_empty() || !rising || steps[0] == 0 || steps.last() != Some(&100) {
            return Err(source.error(
                raw.span(),
                &format!("{key}.rollout.steps"),
                format!("{steps:?} are not rollout steps; give rising percentages of the running instances that end at 100, as in [10, 100]"),
            ));
        }
        rollout.steps = steps.clone();
    }
    if let Some(grace) = &raw.get_ref().grace {
        rollout.grace = grace.0;
    }
    Ok(rollout)
}

/// A prebuilt `image`, or else a build (with every build option defaulted).
fn image_source(
    id: &str,
    key: &str,
    spanned: &Spanned<RawContainer>,
    dir: &Path,
    source: &Source,
) -> Result<ImageSource, ManifestError> {
    let c = spanned.get_ref();
    match (&c.image, &c.build) {
        (Some(image), Some(_)) => Err(source.error(
            image.span(),
            &format!("{key}.image"),
            "give either image (prebuilt) or build, not both".into(),
        )),
        (Some(image), None) => Ok(ImageSource::Prebuilt(image.get_ref().clone())),
        (None, build) => {
            let default_build = RawBuild::default();
            let b = build.as_ref().map_or(&default_build, Spanned::get_ref);
            let image_name = c
                .name
                .as_ref()
                .map(|n| n.get_ref().clone())
                .unwrap_or_else(|| id.to_string());
            if !valid_name(&image_name) {
                let span = c
                    .name
                    .as_ref()
                    .map(|n| n.span())
                    .unwrap_or_else(|| spanned.span());
                return Err(source.error(span, &format!("{key}.name"), format!(
                    "{image_name:?} is not a valid image name; use lowercase letters, digits, '-', '_' or '.'"
                )));
            }
            if let Some(tag) = &c.tag {
                if !valid_tag(tag.get_ref()) {
                    return Err(source.error(tag.span(), &format!("{key}.tag"), format!(
                        "{:?} is not a valid tag; use up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
                        tag.get_ref()
                    )));
                }
            }
            Ok(ImageSource::Build(BuildSpec {
                name: image_name,
                tag: c.tag.as_ref().map(|t| t.get_ref().clone()),
                context: dir.join(b.context.as_deref().unwrap_or(".")),
                dockerfile: b.dockerfile.clone().unwrap_or_else(|| "Dockerfile".into()),
                args: b.args.clone(),
                target: b.target.clone(),
                command: b.command.clone(),
            }))
        }
    }
}

/// The class options; what the manifest leaves out keeps [`ContainerClass::new`]'s
/// default. The image is left empty, to be filled in once it is built.
fn class_options(
    id: &str,
    key: &str,
    c: &RawContainer,
    source: &Source,
) -> Result<ContainerClass, ManifestError> {
    let class_name = c.class_name.clone().unwrap_or_else(|| id.to_string());
    let mut class = ContainerClass::new(class_name, String::new());
    let rc = &c.class;
    class.default_port = rc.default_port.as_ref().map(|p| p.0);
    class.required_ports = rc.required_ports.iter().map(|p| p.0).collect();
    let duration = |value: &Option<Spanned<DurationValue>>, name: &str, zero: &str| {
        let Some(value) = value else {
            return Ok(None);
        };
        if value.get_ref().0.is_zero() && !zero.is_empty() {
            return Err(source.error(
                value.span(),
                &format!("{key}.class.{name}"),
                format!("0s {zero}"),
            ));
        }
        Ok(Some(value.get_ref().0))
    };
    if let Some(sleep_after) = &rc.sleep_after {
        if sleep_after.get_ref().0.is_zero() {
            return Err(source.error(
                sleep_after.span(),
                &format!("{key}.class.sleep_after"),
                "0s would stop each container as soon as it starts; give it time to serve, as in \"30s\" (the default is 10m), or \"never\"".into(),
            ));
        }
        class.sleep_after = sleep_after.get_ref().0;
    }
    if let Some(mode) = &rc.sleep_mode {
        class.sleep_mode = match mode.get_ref().as_str() {
            "stop" => SleepMode::Stop,
            "pause" => SleepMode::Pause,
            other => {
                return Err(source.error(
                    mode.span(),
                    &format!("{key}.class.sleep_mode"),
                    format!(
                        "{other:?} is not a sleep mode; give \"stop\" (the default) or \"pause\""
                    ),
                ))
            }
        };
    }
    if let Some(max) = &rc.max_paused {
        if *max.get_ref() == 0 {
            return Err(source.error(
                max.span(),
                &format!("{key}.class.max_paused"),
                "0 would stop every container as soon as it pauses; give at least 1, or use sleep_mode = \"stop\"".into(),
            ));
        }
        class.max_paused = Some(*max.get_ref());
    }
    let durations = [
        (
            &rc.pause_for,
            "pause_for",
            "would stop each container as soon as it pauses; the default is 1h",
            &mut class.pause_for,
        ),
        (
            &rc.start_timeout,
            "start_timeout",
            "leaves no time to start a container; the default is 30s",
            &mut class.start_timeout,
        ),
        (
            &rc.port_ready_timeout,
            "port_ready_timeout",
            "leaves no time for a port to accept connections; the default is 20s",
            &mut class.port_ready_timeout,
        ),
        (
            &rc.request_timeout,
            "request_timeout",
            "would end every request at once; the default is 100s",
            &mut class.request_timeout,
        ),
        // No grace at all is a choice: SIGKILL at once.
        (&rc.stop_grace, "stop_grace", "", &mut class.stop_grace),
    ];
    for (value, name, zero, field) in durations {
        if let Some(d) = duration(value, name, zero)? {
            *field = d;
        }
    }
    class.env_vars = env_vars(key, &rc.env_vars, source)?;
    class.entrypoint = rc.entrypoint.clone();
    if let Some(v) = rc.enable_internet {
        class.enable_internet = v;
    }
    for (list, name, field) in [
        (&rc.allowed_hosts, "allowed_hosts", &mut class.allowed_hosts),
        (&rc.denied_hosts, "denied_hosts", &mut class.denied_hosts),
    ] {
        for host in list {
            if let Err(why) = crate::egress::check_pattern(host.get_ref()) {
                return Err(source.error(
                    host.span(),
                    &format!("{key}.class.{name}"),
                    format!("{:?} {why}", host.get_ref()),
                ));
            }
            field.push(host.get_ref().to_ascii_lowercase());
        }
    }
    if let Some(p) = &rc.ping_endpoint {
        class.ping_endpoint = p.0.clone();
    }
    class.labels = labels(key, &rc.labels, source)?;
    if let Some(init) = rc.init {
        class.init = init;
    }
    for volume in &rc.volumes {
        let path = volume.get_ref().trim_end_matches('/');
        let why = if !path.starts_with('/') {
            Some("is not an absolute path in the container; give one such as \"/data\"")
        } else if path.is_empty() {
            Some("is the container's root, which cannot be a volume; give a folder such as \"/data\"")
        } else if class.volumes.iter().any(|p| p == path) {
            Some("is listed twice")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(source.error(
                volume.span(),
                &format!("{key}.class.volumes"),
                format!("{:?} {why}", volume.get_ref()),
            ));
        }
        class.volumes.push(path.to_string());
    }
    if let Some(ready) = &rc.ready {
        class.ready = Some(ready_check(key, ready, rc.ping_endpoint.is_some(), source)?);
    }
    if let Some(max) = &rc.log_max {
        if max.get_ref().0 < MIN_LOG_MAX {
            return Err(source.error(
                max.span(),
                &format!("{key}.class.log_max"),
                format!("must be at least 64KiB (the default is 10MiB); {} bytes leaves no room for a crash's last lines", max.get_ref().0),
            ));
        }
        class.log_max = max.get_ref().0;
    }
    if let Some(max) = &c.max_instances {
        if *max.get_ref() == 0 {
            return Err(source.error(
                max.span(),
                &format!("{key}.max_instances"),
                "must be at least 1".into(),
            ));
        }
        class.max_instances = *max.get_ref();
    }
    class.instance_type = c.instance_type.as_ref().map(|t| t.0);
    Ok(class)
}

/// `ready = { path, status, interval }`, checked.
fn ready_check(
    key: &str,
    ready: &Spanned<RawReady>,
    ping_given: bool,
    source: &Source,
) -> Result<ReadyCheck, ManifestError> {
    let raw = ready.get_ref();
    let at = |field: &str| format!("{key}.class.ready{field}");
    if ping_given {
        return Err(source.error(
            ready.span(),
            &at(""),
            "give ready or ping_endpoint, not both: ready replaces the ping endpoint's any-answer check".into(),
        ));
    }
    let path = raw.path.get_ref();
    if !path.starts_with('/') || path.chars().any(char::is_whitespace) {
        return Err(source.error(
            raw.path.span(),
            &at(".path"),
            format!("{path:?} is not a path; give one such as \"/healthz\""),
        ));
    }
    let mut status = Vec::new();
    for code in &raw.status {
        if !(100..=599).contains(code.get_ref()) {
            return Err(source.error(
                code.span(),
                &at(".status"),
                format!(
                    "{} is not an HTTP status; give statuses from 100 to 599, as [200, 204]",
                    code.get_ref()
                ),
            ));
        }
        status.push(*code.get_ref());
    }
    let interval = match &raw.interval {
        None => ReadyCheck::DEFAULT_INTERVAL,
        Some(interval) if interval.get_ref().0.is_zero() => {
            return Err(source.error(
                interval.span(),
                &at(".interval"),
                "0s would ask without pause; give a time between asks, as \"50ms\"".into(),
            ))
        }
        Some(interval) => interval.get_ref().0,
    };
    Ok(ReadyCheck {
        path: path.clone(),
        status,
        interval,
    })
}

/// Names the engine would refuse, or that would never reach the process, are errors.
fn env_vars(
    key: &str,
    vars: &BTreeMap<Spanned<String>, String>,
    source: &Source,
) -> Result<BTreeMap<String, String>, ManifestError> {
    let mut out = BTreeMap::new();
    for (name, value) in vars {
        let why = if name.get_ref().is_empty() {
            Some("an environment variable needs a name".to_string())
        } else if name.get_ref().contains('=') {
            Some("an environment variable's name cannot hold '='".to_string())
        } else if name.get_ref().contains('\0') || value.contains('\0') {
            Some("an environment variable cannot hold a NUL character".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            return Err(source.error(
                name.span(),
                &format!("{key}.class.env_vars.{:?}", name.get_ref()),
                why,
            ));
        }
        out.insert(name.get_ref().clone(), value.clone());
    }
    Ok(out)
}

/// berth's own labels are set on every container after the class's, so a class label
/// under `berth.` would be silently replaced: it is an error instead.
fn labels(
    key: &str,
    labels: &BTreeMap<Spanned<String>, String>,
    source: &Source,
) -> Result<BTreeMap<String, String>, ManifestError> {
    let mut out = BTreeMap::new();
    for (name, value) in labels {
        if name.get_ref().starts_with("berth.") || name.get_ref().is_empty() {
            return Err(source.error(
                name.span(),
                &format!("{key}.class.labels.{:?}", name.get_ref()),
                "an empty label or one starting with berth. is berth's own and would be replaced; use another prefix, as in \"app.team\"".into(),
            ));
        }
        out.insert(name.get_ref().clone(), value.clone());
    }
    Ok(out)
}

/// Class names identify containers to the engine, so two containers cannot share one.
fn unique_class_names(
    containers: &[ContainerDef],
    raw: &RawManifest,
    source: &Source,
) -> Result<(), ManifestError> {
    let mut class_names = BTreeMap::new();
    for (def, (_, spanned)) in containers.iter().zip(&raw.containers) {
        if let Some(other) = class_names.insert(def.class.name.clone(), def.id.clone()) {
            return Err(source.error(spanned.span(), &format!("containers.{}.class_name", def.id), format!(
                "class {} is already used by containers.{other}; each container needs its own class_name",
                def.class.name
            )));
        }
    }
    Ok(())
}

/// One `[workers.<name>]` table; `known` are the container resource ids.
fn worker(
    worker_name: &str,
    spanned: &Spanned<RawWorker>,
    known: &[&str],
    source: &Source,
) -> Result<WorkerDef, ManifestError> {
    let w = spanned.get_ref();
    let key = format!("workers.{worker_name}");
    let mut bindings = BTreeMap::new();
    for (binding, target) in &w.bindings {
        if !known.contains(&target.get_ref().as_str()) {
            return Err(source.error(
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
                    suggest(target.get_ref(), known),
                ),
            ));
        }
        bindings.insert(binding.clone(), target.get_ref().clone());
    }
    if w.routes.is_empty() {
        return Err(source.error(spanned.span(), &key, format!(
            "has no routes; add routes = [{{ path = \"/*\", binding = \"{}\", instance = \"container\" }}]",
            bindings.keys().next().map(String::as_str).unwrap_or("MY_CONTAINER")
        )));
    }
    let routes = w
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| route(&format!("{key}.routes[{i}]"), r, &bindings, source))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, later) in routes.iter().enumerate() {
        if let Some((j, earlier)) = routes[..i]
            .iter()
            .enumerate()
            // A fallback route passes on what it cannot serve: the routes after it are reached.
            .find(|(_, earlier)| !earlier.fallback && earlier.path.covers(&later.path))
        {
            return Err(source.error(w.routes[i].span(), &format!("{key}.routes[{i}].path"), format!(
                "path {} is never reached: routes[{j}] (path {}) matches every path it does, and the first matching route wins; move this route above it, or remove it",
                later.path.as_str(),
                earlier.path.as_str()
            )));
        }
    }
    let mut hosts = Vec::new();
    for (i, host) in w.hosts.iter().enumerate() {
        let pattern = HostPattern::parse(host.get_ref())
            .map_err(|e| source.error(host.span(), &format!("{key}.hosts[{i}]"), e))?;
        if hosts.contains(&pattern) {
            return Err(source.error(
                host.span(),
                &format!("{key}.hosts[{i}]"),
                format!("{pattern} is listed twice"),
            ));
        }
        hosts.push(pattern);
    }
    if HostPattern::default_for(worker_name, "app").is_err() {
        return Err(source.error(spanned.span(), &key, format!(
            "{worker_name:?} cannot be part of a host name; name workers with lowercase letters, digits and '-'"
        )));
    }
    let schedules = w
        .schedules
        .iter()
        .enumerate()
        .map(|(i, raw)| schedule(&format!("{key}.schedules[{i}]"), raw, &routes, source))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(WorkerDef {
        name: worker_name.to_string(),
        bindings,
        routes,
        hosts,
        schedules,
        script: None,
    })
}

/// One cron schedule: its expression must parse, its path must reach a route, and a
/// route that takes the name from the request needs the schedule's `instance`.
fn schedule(
    key: &str,
    raw: &Spanned<RawSchedule>,
    routes: &[Route],
    source: &Source,
) -> Result<CronSchedule, ManifestError> {
    let r = raw.get_ref();
    let cron: Cron = r.cron.get_ref().parse().map_err(|why| {
        source.error(
            r.cron.span(),
            &format!("{key}.cron"),
            format!("{:?} {why}", r.cron.get_ref()),
        )
    })?;
    let path = r.path.get_ref();
    let bare = path.split('?').next().unwrap_or("");
    let route = match routes.iter().find(|route| route.path.matches(bare).is_some()) {
        Some(route) if path.starts_with('/') => route,
        _ => {
            return Err(source.error(
                r.path.span(),
                &format!("{key}.path"),
                format!("{path:?} matches none of the worker's routes; give a path, such as \"/tick\", that a route serves"),
            ))
        }
    };
    let instance = r.instance.as_ref().map(|i| i.get_ref().clone());
    if instance.as_deref() == Some("")
        || (instance.is_none() && !matches!(route.target, Target::Fixed(_)))
    {
        return Err(source.error(
            raw.span(),
            &format!("{key}.instance"),
            format!(
                "is needed: route {} takes the object's name from the request; give the name of the object to wake, as in instance = \"reporter\"",
                route.path.as_str()
            ),
        ));
    }
    Ok(CronSchedule {
        cron,
        path: path.clone(),
        instance,
    })
}

/// One route: its binding must be the worker's, and a name taken from a path parameter
/// needs that parameter in the path.
fn route(
    route_key: &str,
    route: &Spanned<RawRoute>,
    bindings: &BTreeMap<String, String>,
    source: &Source,
) -> Result<Route, ManifestError> {
    let r = route.get_ref();
    let binding_names: Vec<&str> = bindings.keys().map(String::as_str).collect();
    if !bindings.contains_key(&r.binding) {
        return Err(source.error(
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
    let path_params = |from: &KeySource| match from {
        KeySource::Path(p) if !r.path.0.has_param(p) => Some(p.clone()),
        _ => None,
    };
    let missing = match &r.instance.0 {
        Target::From(from)
        | Target::Pool {
            strategy: Strategy::Hash(from),
            ..
        } => path_params(from),
        _ => None,
    };
    if let Some(param) = missing {
        return Err(source.error(
            route.span(),
            &format!("{route_key}.instance"),
            format!(
                "takes path parameter {param:?}, but path {} has no :{param} segment",
                r.path.0.as_str()
            ),
        ));
    }
    let wake = r.wake.unwrap_or(true);
    let refuse = |field: &str, message: &str| {
        Err(source.error(
            route.span(),
            &format!("{route_key}.{field}"),
            message.to_string(),
        ))
    };
    if r.fallback && wake {
        return refuse(
            "fallback",
            "applies to a route that does not wake its instance: add wake = false",
        );
    }
    if r.keep_warm && !matches!(r.instance.0, Target::Pool { .. }) {
        return refuse(
            "keep_warm",
            "keeps a pool running: give instance = { pool = N }, or set sleep_after = \"never\" on the class",
        );
    }
    if r.keep_warm && !wake {
        return refuse(
            "keep_warm",
            "keeps the pool running, so wake = false would never apply: drop one of them",
        );
    }
    Ok(Route {
        path: r.path.0.clone(),
        binding: r.binding.clone(),
        target: r.instance.0.clone(),
        strip_prefix: r.strip_prefix,
        start_only: r.start_only,
        wake,
        fallback: r.fallback,
        keep_warm: r.keep_warm,
    })
}
