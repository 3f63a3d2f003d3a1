//! `berth ps`: the app's objects, from its state file, checked against the engine.

use std::path::Path;

use anyhow::Context;
use berth::app::{list_objects, ObjectStatus};
use berth::runtime::{Selector, VolumeInfo};
use berth::session::STATE_DIR;
use berth::{DockerRuntime, Runtime, Store};

pub async fn run(dir: &Path, json: bool, volumes: bool) -> anyhow::Result<()> {
    let manifest = dir.join(berth::manifest::FILE_NAME);
    let program = berth::js::program_file(dir);
    anyhow::ensure!(
        dir.join(STATE_DIR).is_dir() || manifest.is_file() || program.is_some(),
        "{} holds no berth app (no {}, no {}, no wrangler.jsonc and no {STATE_DIR}/); give the app's folder, as for berth dev",
        dir.display(),
        berth::manifest::FILE_NAME,
        berth::js::SCRIPT_FILE_NAME,
    );
    let path = dir.join(STATE_DIR).join("state.db");
    // Without an engine to ask, the records are shown as they are.
    let runtime = DockerRuntime::connect().await;
    let (rows, owner) = if path.exists() {
        let store = Store::open(&path).with_context(|| format!("reading {}", path.display()))?;
        let engine = runtime.as_ref().ok().map(|r| r as &dyn Runtime);
        let rows = list_objects(&store, None, engine).await?;
        (rows, store.owner().to_string())
    } else {
        (Vec::new(), String::new())
    };
    if volumes {
        return show_volumes(&runtime?, &rows, &owner, json).await;
    }
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
    print_table(&rows);
    Ok(())
}

/// The volumes of the apps the objects belong to, with their size.
async fn show_volumes(
    runtime: &DockerRuntime,
    rows: &[ObjectStatus],
    owner: &str,
    json: bool,
) -> anyhow::Result<()> {
    let mut apps: Vec<&str> = rows.iter().map(|r| r.app.as_str()).collect();
    apps.sort_unstable();
    apps.dedup();
    let mut volumes = Vec::new();
    for app in apps {
        volumes.extend(runtime.volumes(&Selector::app(app), owner).await?);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&volumes)?);
        return Ok(());
    }
    if volumes.is_empty() {
        println!(
            "no volumes: no class of the app has volumes = [...], or none of its objects has run"
        );
        return Ok(());
    }
    let width = |f: &dyn Fn(&VolumeInfo) -> usize, min: usize| {
        volumes.iter().map(f).max().unwrap_or(min).max(min)
    };
    let class_width = width(&|v| v.class.chars().count(), 5);
    let name_width = width(
        &|v| {
            printable(v.object_name.as_deref().unwrap_or("-"), 40)
                .chars()
                .count()
        },
        4,
    );
    let path_width = width(&|v| v.path.chars().count(), 4);
    println!(
        "{:class_width$}  {:name_width$}  {:path_width$}  {:>9}  VOLUME",
        "CLASS", "NAME", "PATH", "SIZE"
    );
    for v in &volumes {
        let size = v.size_bytes.map_or_else(|| "?".to_string(), human_size);
        println!(
            "{:class_width$}  {:name_width$}  {:path_width$}  {size:>9}  {}",
            v.class,
            printable(v.object_name.as_deref().unwrap_or("-"), 40),
            v.path,
            v.name
        );
    }
    Ok(())
}

/// `512 B`, `3.4 KiB`, `12.0 MiB`, `1.5 GiB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn print_table(rows: &[ObjectStatus]) {
    let name_width = rows
        .iter()
        .map(|r| {
            printable(r.name.as_deref().unwrap_or("-"), 40)
                .chars()
                .count()
        })
        .max()
        .unwrap_or(4)
        .max(4);
    let class_width = rows
        .iter()
        .map(|r| r.class.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:class_width$}  {:name_width$}  {:12}  {:20}  UPTIME",
        "CLASS", "NAME", "ID", "STATE"
    );
    for r in rows {
        let state = match (r.exit_code, r.memory_bytes) {
            (Some(code), _) => format!("{}({code})", r.state),
            (None, Some(bytes)) => format!("{} ({})", r.state, human_size(bytes)),
            (None, None) => r.state.clone(),
        };
        let name = printable(r.name.as_deref().unwrap_or("-"), 40);
        let id: String = r.id.chars().take(12).collect();
        println!(
            "{:class_width$}  {:name_width$}  {:12}  {:20}  {}",
            r.class,
            name,
            id,
            state,
            r.uptime_seconds.map(uptime).unwrap_or_else(|| "-".into())
        );
    }
}

/// At most `max` characters of a name a client may have chosen, with control characters
/// escaped, so that it cannot move the cursor, clear the terminal or forge a row.
fn printable(name: &str, max: usize) -> String {
    name.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .take(max)
        .collect()
}

fn uptime(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::{human_size, printable};

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(3 * 1024 + 400), "3.4 KiB");
        assert_eq!(human_size(12 << 20), "12.0 MiB");
    }

    #[test]
    fn names_cannot_reach_the_terminal() {
        assert_eq!(printable("a\x1b[2Jb\nc", 40), "a\\u{1b}[2Jb\\nc");
        assert_eq!(printable("ünïcödé", 40), "ünïcödé");
        assert_eq!(printable(&"x".repeat(100), 40).len(), 40);
    }
}
