//! `berth ps`: the app's instances, from its state file, checked against the engine.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Context;
use berth::dev::STATE_DIR;
use berth::runtime::labels;
use berth::store::now_ms;
use berth::{DockerRuntime, Runtime, State, Store};
use serde::Serialize;

#[derive(Serialize)]
struct Row {
    class: String,
    name: Option<String>,
    id: String,
    state: String,
    exit_code: Option<i64>,
    uptime_seconds: Option<u64>,
    container_id: Option<String>,
}

pub async fn run(dir: &Path, json: bool) -> anyhow::Result<()> {
    let path = dir.join(STATE_DIR).join("state.db");
    let records = if path.exists() {
        Store::open(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .objects()?
    } else {
        Vec::new()
    };
    // A record of a running container is only as good as the engine's word for it.
    let live: Option<HashSet<String>> = match DockerRuntime::connect().await {
        Ok(runtime) => {
            let app = records
                .first()
                .and_then(|r| r.namespace.split_once('/'))
                .map(|(app, _)| app.to_string());
            match app {
                Some(app) => runtime
                    .list(&[(labels::APP, &app)])
                    .await
                    .ok()
                    .map(|found| {
                        found
                            .into_iter()
                            .filter(|c| c.running)
                            .map(|c| c.id)
                            .collect()
                    }),
                None => Some(HashSet::new()),
            }
        }
        Err(_) => None,
    };
    let now = now_ms();
    let rows: Vec<Row> = records
        .into_iter()
        .map(|r| {
            let gone = r.state.is_active()
                && live
                    .as_ref()
                    .is_some_and(|ids| !r.container_id.as_ref().is_some_and(|id| ids.contains(id)));
            let state = if gone { State::Stopped } else { r.state };
            Row {
                class: r
                    .namespace
                    .split_once('/')
                    .map(|(_, c)| c.to_string())
                    .unwrap_or(r.namespace.clone()),
                name: r.name,
                id: r.id,
                state: state.as_str().to_string(),
                exit_code: state.exit_code(),
                uptime_seconds: state
                    .is_active()
                    .then_some(r.started_at_ms)
                    .flatten()
                    .map(|t| u64::try_from((now - t) / 1000).unwrap_or(0)),
                container_id: r.container_id.filter(|_| state.is_active()),
            }
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "no instances yet: berth dev has not started any container in {}",
            dir.display()
        );
        return Ok(());
    }
    let name_width = rows
        .iter()
        .map(|r| r.name.as_deref().unwrap_or("-").chars().count().min(40))
        .max()
        .unwrap_or(4)
        .max(4);
    let class_width = rows.iter().map(|r| r.class.len()).max().unwrap_or(5).max(5);
    println!(
        "{:class_width$}  {:name_width$}  {:12}  {:20}  UPTIME",
        "CLASS", "NAME", "ID", "STATE"
    );
    for r in rows {
        let state = match r.exit_code {
            Some(code) => format!("{}({code})", r.state),
            None => r.state.clone(),
        };
        let name: String = r.name.as_deref().unwrap_or("-").chars().take(40).collect();
        println!(
            "{:class_width$}  {:name_width$}  {:12}  {:20}  {}",
            r.class,
            name,
            &r.id[..12.min(r.id.len())],
            state,
            r.uptime_seconds.map(uptime).unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}

fn uptime(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}
