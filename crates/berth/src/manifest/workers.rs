//! The workers of a manifest, from `[workers.<name>]` as written to the model: bindings
//! that must name containers, routes that must name bindings and path parameters, hosts,
//! and cron schedules that must reach a route.

use std::collections::BTreeMap;

use toml::Spanned;

use super::diagnose::{suggest, Source};
use super::raw::{RawRoute, RawSchedule, RawWorker};
use super::{ManifestError, WorkerDef};
use crate::cron::Cron;
use crate::hosts::HostPattern;
use crate::router::{CronSchedule, KeySource, Route, Strategy, Target};

/// One `[workers.<name>]` table; `known` are the container resource ids.
pub(super) fn worker(
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
