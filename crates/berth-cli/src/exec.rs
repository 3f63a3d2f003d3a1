//! `berth exec`: a command in the running container of one object of a `berth dev` app,
//! as `docker exec` runs it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use berth::app::{list_objects, ObjectStatus};
use berth::http::percent_encode;
use berth::runtime::docker::ExecOptions;
use berth::session::STATE_DIR;
use berth::{DockerRuntime, Runtime, Store};

/// The command ended with this exit code, which `berth exec` passes on.
#[derive(Debug)]
pub struct Exited(pub i64);

impl std::fmt::Display for Exited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the command exited with code {}", self.0)
    }
}

impl std::error::Error for Exited {}

/// `berth exec`, as the command line gives it.
#[derive(clap::Args)]
pub struct Args {
    /// `[DIR] NAME`: the app's folder (default: this one) and the object's name (or
    /// the first 4 or more characters of its id).
    #[arg(num_args = 1..=2, required = true, value_name = "[DIR] NAME")]
    pub words: Vec<String>,
    /// The object's class, when objects of two classes share the name (or, with
    /// --wake, for an object that never ran).
    #[arg(long)]
    pub class: Option<String>,
    /// Start the object's container first if none runs (berth dev must run).
    #[arg(long)]
    pub wake: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (dir, name) = match args.words.as_slice() {
        [name] => (PathBuf::from("."), name.clone()),
        [dir, name] => (PathBuf::from(dir), name.clone()),
        _ => bail!("give the object's name, and the app's folder before it if it is not this one: berth exec [DIR] NAME -- COMMAND"),
    };
    let state = dir.join(STATE_DIR).join("state.db");
    if !state.exists() {
        bail!(
            "{} has no berth dev state ({STATE_DIR}/ is missing): run berth dev there first, or give the app's folder",
            dir.display()
        );
    }
    let runtime = DockerRuntime::connect().await?;
    let store = Store::open(&state).with_context(|| format!("reading {}", state.display()))?;
    let list = || list_objects(&store, None, Some(&runtime as &dyn Runtime));
    let rows = list().await?;
    let class = args.class.as_deref();
    let found = find(&rows, &name, class)?;
    let running = found.and_then(|o| o.container_id.clone());
    let container = match (running, found) {
        (Some(container), _) => container,
        (None, found) if args.wake => {
            let class = found
                .map(|o| o.class.clone())
                .or_else(|| args.class.clone())
                .ok_or_else(|| {
                    anyhow::anyhow!("{name:?} has never run, so berth does not know its class: give --class")
                })?;
            // The session starts objects by name: an id prefix must stand for a named one.
            let name = match found {
                Some(object) => object.name.clone().ok_or_else(|| {
                    anyhow::anyhow!("{class} {name} has no name, and berth exec --wake starts objects by name; wake it with a request")
                })?,
                None => name.clone(),
            };
            // A container that just exited may not be known to the session as gone yet:
            // it then says the object runs. Asked again, it starts a new one.
            let mut started = None;
            for attempt in 0..3 {
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                wake(&dir, &class, &name).await?;
                let rows = list().await?;
                started = find(&rows, &name, Some(&class))?.and_then(|o| o.container_id.clone());
                if started.is_some() {
                    break;
                }
            }
            started.ok_or_else(|| anyhow::anyhow!("{class} {name:?} was started, but stopped again before the command could run"))?
        }
        (None, Some(object)) => bail!(
            "{} {:?} is {}: it has no container to run the command in; give --wake to start it (or send it a request), then run berth exec again",
            object.class,
            name,
            object.state
        ),
        (None, None) => bail!(
            "no object {name:?}{} in {}: `berth ps {}` lists them; --wake --class C starts one that never ran",
            class.map(|c| format!(" of class {c}")).unwrap_or_default(),
            dir.display(),
            dir.display()
        ),
    };
    let container = container.as_str();
    let tty = terminal_size()
        .filter(|_| std::io::stdin().is_terminal() && std::io::stdout().is_terminal());
    let options = ExecOptions {
        command: args.command,
        tty,
    };
    // A terminal goes raw, so that keys reach the command as typed; it is given back
    // as it was, whatever happens.
    let restore = tty.and_then(|_| raw_terminal());
    let result = runtime
        .exec(
            container,
            &options,
            tokio::io::stdin(),
            tokio::io::stdout(),
            tokio::io::stderr(),
        )
        .await;
    if let Some(saved) = restore {
        stty(&[&saved]);
    }
    match result? {
        0 => Ok(()),
        code => Err(Exited(code).into()),
    }
}

/// Asks the `berth dev` session of `dir` to start `class` `name`, and waits until it has.
async fn wake(dir: &Path, class: &str, name: &str) -> anyhow::Result<()> {
    let socket = dir.join(STATE_DIR).join(berth::session::CONTROL_SOCKET);
    if !socket.exists() {
        bail!(
            "berth dev does not run in {}, so nothing can start {class} {name:?}: start berth dev there, then run berth exec --wake again",
            dir.display()
        );
    }
    let client = berth::deploy::ControlClient::new(&format!("unix:{}", socket.display()), "")?;
    let path = format!("/wake/{}/{}", percent_encode(class), percent_encode(name));
    let _: serde_json::Value = client
        .call(http::Method::POST, &path, None::<&()>)
        .await
        .with_context(|| format!("starting {class} {name:?}"))?;
    Ok(())
}

/// The one object `name` (a name, or the first 4 or more characters of an id) names, if
/// any has run.
fn find<'a>(
    rows: &'a [ObjectStatus],
    name: &str,
    class: Option<&str>,
) -> anyhow::Result<Option<&'a ObjectStatus>> {
    let found: Vec<&ObjectStatus> = rows
        .iter()
        .filter(|r| class.is_none_or(|c| r.class == c))
        .filter(|r| r.name.as_deref() == Some(name) || (name.len() >= 4 && r.id.starts_with(name)))
        .collect();
    match found.as_slice() {
        [one] => Ok(Some(one)),
        [] => Ok(None),
        several => {
            let classes: Vec<&str> = several.iter().map(|r| r.class.as_str()).collect();
            bail!(
                "{name:?} names an object of each of {}: give --class",
                classes.join(", ")
            )
        }
    }
}

/// `stty ARGS` on the terminal; its output, if it worked.
fn stty(args: &[&str]) -> Option<String> {
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let output = Command::new("stty")
        .args(args)
        .stdin(tty)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The terminal's size, (columns, rows).
fn terminal_size() -> Option<(u16, u16)> {
    let size = stty(&["size"])?;
    let mut parts = size.split_whitespace().map(|p| p.parse::<u16>().ok());
    let (rows, columns) = (parts.next()??, parts.next()??);
    Some((columns, rows))
}

/// Puts the terminal in raw mode; its settings before, to give back.
fn raw_terminal() -> Option<String> {
    let saved = stty(&["-g"])?;
    stty(&["raw", "-echo"])?;
    Some(saved)
}
