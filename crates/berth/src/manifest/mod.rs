//! `berth.toml`: the app's containers (image, class options, limits) and workers
//! (bindings and routes), mirroring Cloudflare's `alchemy.run.ts` and the container
//! class (`MyContainer`) of a Cloudflare Containers app.
//!
//! Every error names the file, line and column, the key, and what is accepted; unknown
//! keys are errors with the nearest known key suggested.
//!
//! Parsing is two steps: `raw` reads the text as written, with positions, and `lower`
//! checks it and fills in defaults; `diagnose` turns positions into errors.

mod diagnose;
mod lower;
mod raw;
mod workers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::build::BuildSpec;
use crate::class::ContainerClass;
use crate::hosts::HostPattern;
use crate::router::{CronSchedule, Route};
use diagnose::Source;

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

/// A place in the manifest: `path:line:column: key`, for errors found after parsing
/// (a build that fails, an image that is missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The dotted key.
    pub key: String,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.key
        )
    }
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
    /// Where the manifest sets the image (or the build), for errors found later.
    pub image_place: Place,
    /// The class options; `image` is filled in once the image is built.
    pub class: ContainerClass,
    /// How `berth serve` replaces running instances when a deployment changes the class.
    pub rollout: Rollout,
    /// The worker entrypoint whose exports hold the class (apps of `alchemy.run.ts`): the
    /// class's JS hooks run in a worker of that module, where its code is. `None` for
    /// `berth.toml`, whose classes have no code.
    pub exported_by: Option<PathBuf>,
}

/// How a deployment replaces the running instances of a class (wrangler's
/// `rollout_step_percentage` and `rollout_active_grace_period`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// Cumulative shares of the running instances replaced at each step, in percent,
    /// rising and ending at 100.
    pub steps: Vec<u8>,
    /// How long an instance may finish its requests before it is stopped.
    pub grace: std::time::Duration,
}

impl Default for Rollout {
    fn default() -> Rollout {
        Rollout {
            steps: vec![10, 100],
            grace: std::time::Duration::from_secs(30),
        }
    }
}

/// Where a container's image comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    Build(BuildSpec),
    /// A prebuilt image, used as is.
    Prebuilt(String),
}

/// A worker: its bindings and its routes, or its script.
#[derive(Clone)]
pub struct WorkerDef {
    pub name: String,
    /// Binding name → container resource id.
    pub bindings: BTreeMap<String, String>,
    /// The declarative routes of `berth.toml`; empty for a script worker.
    pub routes: Vec<Route>,
    /// The hosts `berth serve` routes to this worker; empty: `<worker>.<app>.localhost`.
    /// `berth dev` serves each worker on a port of its own instead.
    pub hosts: Vec<HostPattern>,
    /// Cron schedules, each a request to one of the routes (see [`CronSchedule`]).
    pub schedules: Vec<CronSchedule>,
    /// A worker written in JavaScript or TypeScript (from `alchemy.run.ts`), whose `fetch`
    /// answers instead of routes; `None` for the workers of `berth.toml`.
    pub script: Option<WorkerScript>,
}

/// A worker's module and what its `env` holds besides container bindings.
#[derive(Clone, PartialEq, Eq)]
pub struct WorkerScript {
    /// The module whose default export has `fetch`.
    pub entrypoint: PathBuf,
    /// Text bindings (plain strings and secrets), by binding name.
    pub vars: BTreeMap<String, String>,
    /// The vars whose text is JSON (Wrangler's vars that are not text): `env` holds the
    /// value, as on Cloudflare, not the text.
    pub json_vars: std::collections::BTreeSet<String>,
    /// Cron triggers: at each tick the module's `scheduled` handler runs.
    pub crons: Vec<crate::cron::Cron>,
}

// By hand, because `vars` hold secrets: each value prints as a digest, which still
// changes when the value does (deployments fingerprint workers by this text) but does not
// put the secret into a log.
impl std::fmt::Debug for WorkerScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use sha2::{Digest, Sha256};
        let vars: BTreeMap<&str, String> = self
            .vars
            .iter()
            .map(|(name, value)| {
                let digest = Sha256::digest(value.as_bytes());
                let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
                (name.as_str(), format!("sha256:{hex}"))
            })
            .collect();
        let mut s = f.debug_struct("WorkerScript");
        s.field("entrypoint", &self.entrypoint).field("vars", &vars);
        // Only when there are some, so that the text of a worker without is as before.
        if !self.json_vars.is_empty() {
            s.field("json_vars", &self.json_vars);
        }
        // Only when there are some, so that the text of a worker without is as before.
        if !self.crons.is_empty() {
            let crons: Vec<String> = self.crons.iter().map(|c| c.to_string()).collect();
            s.field("crons", &crons);
        }
        s.finish()
    }
}

// By hand, so that a worker without a script prints as it did before scripts existed:
// deployments fingerprint their workers by this text.
impl std::fmt::Debug for WorkerDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("WorkerDef");
        s.field("name", &self.name)
            .field("bindings", &self.bindings)
            .field("routes", &self.routes)
            .field("hosts", &self.hosts);
        if !self.schedules.is_empty() {
            s.field("schedules", &self.schedules);
        }
        if let Some(script) = &self.script {
            s.field("script", script);
        }
        s.finish()
    }
}

/// Whether `name` can name an app: lowercase letters, digits, '-', '_' or '.', starting
/// with a letter or digit, at most 64 bytes.
pub fn valid_app_name(name: &str) -> bool {
    diagnose::valid_name(name)
}

/// Whether `tag` can tag an image: up to 128 letters, digits, '_', '.' or '-', not
/// starting with '.' or '-'.
pub fn valid_image_tag(tag: &str) -> bool {
    diagnose::valid_tag(tag)
}

impl Manifest {
    /// Loads `dir/berth.toml`. [`Manifest::load`] (in `js`) picks it, or else the folder's
    /// `alchemy.run.ts`.
    pub fn load_toml(dir: &Path) -> Result<Manifest, ManifestError> {
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
        let source = Source { text, path };
        let raw = raw::deserialize(&source)?;
        lower::manifest(&raw, &dir, &source)
    }
}

#[cfg(test)]
mod tests;
