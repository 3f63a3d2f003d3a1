//! `berth logs`: what an app's containers wrote, kept after they are gone; from the
//! folder of a `berth dev` app, or from a `berth serve`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use berth::api::PREFIX;
use berth::http::percent_encode;
use berth::logbook::{self, Entry, Logbook, Query};
use berth::session::{logs_dir, STATE_DIR};

use crate::remote;

/// `berth logs`, as the command line gives it.
#[derive(clap::Args)]
pub struct Args {
    /// The app's folder (as for berth dev); a first word that is no folder is OBJECT.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Only this object: its name, or the first 4 or more characters of its id.
    pub object: Option<String>,
    /// The app on a berth serve (see --server) instead of the folder's berth dev logs.
    #[arg(long)]
    pub app: Option<String>,
    /// Only the objects of this class.
    #[arg(long)]
    pub class: Option<String>,
    /// Keep printing lines as they are written.
    #[arg(long, short)]
    pub follow: bool,
    /// Only lines written since: a duration back from now (10m, 1h30m) or an RFC 3339
    /// UTC time (2026-11-26T05:30:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Only the last N lines.
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<usize>,
    /// One JSON object per line: time, app, class, object, id, instance, stream, line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: remote::Server,
}

pub async fn run(mut args: Args) -> anyhow::Result<()> {
    // `berth logs NAME` in an app's folder: a first word that is no folder is the object.
    if args.object.is_none() && (args.app.is_some() || !args.dir.is_dir()) {
        args.object = Some(args.dir.to_string_lossy().into_owned());
        args.dir = PathBuf::from(".");
    }
    let since = args
        .since
        .as_deref()
        .map(logbook::parse_since)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let json = args.json;
    let print = move |entry: &Entry| {
        if json {
            println!("{}", serde_json::to_string(entry).unwrap_or_default());
        } else {
            println!("{}", text(entry));
        }
    };
    match args.app.clone() {
        Some(app) => remote(&args, &app, print).await,
        None => local(&args, since, print).await,
    }
}

/// `2026-11-26T05:30:35.123Z Cart "alice" 1a2b3c4d5e6f stderr | the line`
fn text(entry: &Entry) -> String {
    let time = berth::timestamp::format(entry.time);
    let millis = format!("{}Z", &time[..23.min(time.len())]);
    format!(
        "{millis} {} {} {} {:<6} | {}",
        entry.class,
        entry.object,
        entry.instance,
        entry.stream.as_str(),
        entry.line
    )
}

/// The logs `berth dev` kept in the folder, read from its files.
async fn local(
    args: &Args,
    since: Option<std::time::SystemTime>,
    print: impl Fn(&Entry),
) -> anyhow::Result<()> {
    let dir = &args.dir;
    let has_app =
        dir.join(berth::manifest::FILE_NAME).is_file() || berth::js::program_file(dir).is_some();
    if !has_app && !dir.join(STATE_DIR).is_dir() {
        bail!(
            "{} holds no berth app (no {}, no {}, no wrangler.jsonc and no {STATE_DIR}/); give the app's folder, or --app NAME for an app on a berth serve",
            dir.display(),
            berth::manifest::FILE_NAME,
            berth::js::SCRIPT_FILE_NAME,
        );
    }
    let book = Logbook::new(logs_dir(dir));
    let apps = book.apps().context("reading the kept logs")?;
    let query_of = |app: String| Query {
        app,
        class: args.class.clone(),
        object: args.object.clone(),
        since,
        tail: args.tail,
    };
    let mut queries: Vec<Query> = apps.into_iter().map(query_of).collect();
    if !args.follow {
        let mut entries = Vec::new();
        for query in &queries {
            entries.extend(book.read(query).context("reading the kept logs")?);
        }
        entries.sort_by_key(|e| e.time);
        if let Some(tail) = args.tail {
            entries.drain(..entries.len().saturating_sub(tail));
        }
        if entries.is_empty() && !args.json {
            eprintln!("{}", nothing(args, &dir.display().to_string()));
        }
        entries.iter().for_each(print);
        return Ok(());
    }
    // berth dev runs one app; before its first container writes, its name is not known
    // here (an alchemy.run.ts names it in code): wait for it to appear.
    while queries.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let apps = book.apps().context("reading the kept logs")?;
        queries = apps.into_iter().map(query_of).collect();
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let followers: Vec<_> = queries
        .into_iter()
        .map(|query| tokio::spawn(logbook::follow(book.clone(), query, tx.clone())))
        .collect();
    drop(tx);
    while let Some(entry) = rx.recv().await {
        print(&entry);
    }
    for follower in followers {
        follower.await?.context("following the kept logs")?;
    }
    Ok(())
}

fn nothing(args: &Args, place: &str) -> String {
    let which = match (&args.object, &args.class) {
        (Some(object), _) => format!("object {object:?}"),
        (None, Some(class)) => format!("class {class}"),
        (None, None) => "any container".to_string(),
    };
    format!(
        "no logs of {which} in {place} (yet): they are kept from the first start of a container"
    )
}

/// The logs a `berth serve` kept, through its control API.
async fn remote(args: &Args, app: &str, print: impl Fn(&Entry)) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let mut query = Vec::new();
    let mut add = |key: &str, value: &str| query.push(format!("{key}={}", percent_encode(value)));
    if let Some(class) = &args.class {
        add("class", class);
    }
    if let Some(object) = &args.object {
        add("object", object);
    }
    if let Some(since) = &args.since {
        add("since", since);
    }
    if let Some(tail) = args.tail {
        add("tail", &tail.to_string());
    }
    if args.follow {
        add("follow", "true");
    }
    let path = format!(
        "{PREFIX}/apps/{}/logs?{}",
        percent_encode(app),
        query.join("&")
    );
    let mut shown = 0usize;
    client
        .each_line(&path, |line| {
            match serde_json::from_str::<Entry>(line) {
                Ok(entry) => {
                    shown += 1;
                    print(&entry);
                }
                Err(e) => eprintln!("warning: a log line berth does not understand ({e}): {line}"),
            }
            true
        })
        .await?;
    if shown == 0 && !args.follow && !args.json {
        eprintln!(
            "{}",
            nothing(args, &format!("app {app} on {}", client.url()))
        );
    }
    Ok(())
}
