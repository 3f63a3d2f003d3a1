//! From the manifest as written to the model: defaults filled in, relative paths
//! anchored, and the checks that span more than one value (names, tags); the workers
//! are lowered in `workers`.
//!
//! Checks run in the order of the file, and the first failure is the error.

use std::collections::BTreeMap;
use std::path::Path;

use toml::Spanned;

use super::diagnose::{valid_name, valid_tag, Source};
use super::raw::{DurationValue, RawBuild, RawContainer, RawManifest, RawReady};
use super::{ContainerDef, ImageSource, Manifest, ManifestError, Rollout};
use crate::build::BuildSpec;
use crate::class::{ContainerClass, ReadyCheck, SleepMode, MIN_LOG_MAX};

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
        .map(|(name, spanned)| super::workers::worker(name, spanned, &known, source))
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
    if let Some(standby) = &c.standby {
        class.standby = *standby.get_ref();
        if let Some(why) = crate::class::standby_conflict(&class) {
            return Err(source.error(standby.span(), &format!("{key}.standby"), why));
        }
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
