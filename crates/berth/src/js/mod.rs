//! Cloudflare Containers projects as written: `alchemy.run.ts` and the TypeScript it
//! imports, run in an embedded JavaScript engine (QuickJS) to find the app's containers
//! and workers.
//!
//! `alchemy.run.ts` runs as alchemy runs it, with berth's own `alchemy`,
//! `alchemy/cloudflare`, `alchemy/docker`, `@cloudflare/containers` and
//! `cloudflare:workers` modules: its `Container(…)` and `Worker(…)` calls record what
//! the app declares. Each container's class (`class MyContainer extends Container`) is
//! then found among the exports of the workers' entrypoints and instantiated, and its
//! fields (`defaultPort`, `sleepAfter`, `envVars`, …) become the class options.
//!
//! The program runs with a time and a memory budget, so one that loops or allocates
//! without end fails with an error instead of hanging berth.
//!
//! Which file an app is read from, and its name, are decided here:
//! - [`Manifest::load`] reads `berth.toml` when the folder has one, and `alchemy.run.ts`
//!   otherwise: `berth.toml` is berth's own and says more (routes, rollouts, timeouts),
//!   so a folder that has both is an alchemy project that berth was told how to run.
//! - The app's name is the one given to `alchemy("name")`; a program that never calls
//!   `alchemy` (as Cloudflare's example does not) is named after its folder, lowercased,
//!   with every run of characters an app name cannot hold replaced by one `-` (see
//!   [`app_name_from_folder`]).

mod bindings;
mod bodies;
mod builtins;
mod class_hooks;
mod class_options;
mod declare;
mod engine;
mod host;
mod lanes;
mod messages;
mod modules;
mod packages;
mod schedules;
mod serve;
mod sockets;
mod storage;
mod strip;
mod turns;
mod upgrade;
mod wiring;
mod workers;
mod wrangler;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::manifest::{Manifest, ManifestError, FILE_NAME};

pub use class_hooks::JsHooks;
pub use declare::app_name_from_folder;
pub use serve::{ErrorDetail, JsWorker, WorkerLimits};
pub use wiring::{start_workers, BoundClass, Started, StartedWorker, WorkersError};
pub use wrangler::FILE_NAMES as WRANGLER_FILE_NAMES;

/// The program berth runs when a folder has no `berth.toml`.
pub const SCRIPT_FILE_NAME: &str = "alchemy.run.ts";

/// The file a folder's JavaScript app is read from: `alchemy.run.ts`, else a Wrangler
/// configuration (`wrangler.jsonc`, `wrangler.json` or `wrangler.toml`).
pub fn program_file(dir: &Path) -> Option<PathBuf> {
    let script = dir.join(SCRIPT_FILE_NAME);
    if script.is_file() {
        return Some(script);
    }
    wrangler::config_file(dir)
}

/// A place in a script: `path:line:column`, or only the path when the place is unknown
/// (line 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePlace {
    pub path: PathBuf,
    /// 1-based; 0: unknown.
    pub line: u32,
    /// 1-based, in characters.
    pub column: u32,
}

impl SourcePlace {
    pub(crate) fn file(path: &Path) -> SourcePlace {
        SourcePlace {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
        }
    }
}

impl std::fmt::Display for SourcePlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            0 => write!(f, "{}", self.path.display()),
            line => write!(f, "{}:{line}:{}", self.path.display(), self.column),
        }
    }
}

/// Why an `alchemy.run.ts` app could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScriptError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{at}: syntax error: {message}")]
    Syntax { at: SourcePlace, message: String },
    #[error("{importer}: imports {module:?}, which berth does not provide and no node_modules above it holds; berth provides {}, files by relative path (./file.ts) and ES module packages in node_modules", builtins::NAMES.join(", "))]
    UnknownModule { module: String, importer: String },
    #[error("{importer}: imports {module:?} from node_modules, but {reason}")]
    Package {
        module: String,
        importer: String,
        reason: String,
    },
    #[error("{importer}: cannot find {module:?}: tried {}", .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    ModuleNotFound {
        module: String,
        importer: String,
        tried: Vec<PathBuf>,
    },
    #[error("{at}: {message}")]
    Thrown { at: SourcePlace, message: String },
    #[error("{path} was still running after {limit:?}, so berth stopped it; an app's program should declare its resources and finish (does it loop forever?)")]
    TimedOut { path: PathBuf, limit: Duration },
    #[error("{path} used more than {limit_mib} MiB of memory, so berth stopped it; an app's program should declare its resources and finish (does it allocate without end?)")]
    OutOfMemory { path: PathBuf, limit_mib: usize },
    #[error("{path}: the program waits for something that never comes (a top-level await that never settles); berth runs it without timers or network")]
    NeverSettled { path: PathBuf },
    #[error("{at}: {resource}: {message}")]
    Invalid {
        at: SourcePlace,
        /// `Container("my-container")`, `Worker("my-worker")`.
        resource: String,
        message: String,
    },
    #[error("{entrypoint}: class {class}, field {field}: {message}")]
    ClassOption {
        entrypoint: PathBuf,
        class: String,
        field: &'static str,
        message: String,
    },
    #[error("{at}: Container({container:?}) names class {class}, but {}; export the class from the worker's entrypoint (export {{ {class} }} from \"./container.ts\")", match .searched.len() { 0 => "the app has no Worker whose entrypoint could export it".to_string(), _ => format!("no worker entrypoint exports it (looked in {})", .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")) })]
    NoClass {
        at: SourcePlace,
        container: String,
        class: String,
        searched: Vec<PathBuf>,
    },
    #[error("{path}: the JavaScript engine failed: {reason}")]
    Engine { path: PathBuf, reason: String },
}

/// Why a folder's app could not be read, from either file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Script(#[from] ScriptError),
    #[error("{dir} has no {FILE_NAME}, no {SCRIPT_FILE_NAME} and no wrangler.jsonc, wrangler.json or wrangler.toml; run berth in the app's folder, or give it the folder")]
    NoApp { dir: PathBuf },
}

/// How much a program may take before it is stopped.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Running time for the whole program, its imports and the class constructors.
    pub time: Duration,
    /// Memory of the JavaScript heap.
    pub memory_bytes: usize,
}

impl Default for Limits {
    /// 10 s and 256 MiB: far more than declaring resources takes.
    fn default() -> Limits {
        Limits {
            time: Duration::from_secs(10),
            memory_bytes: 256 << 20,
        }
    }
}

impl Manifest {
    /// Loads the app in `dir`: `dir/berth.toml` if there is one, else `dir/alchemy.run.ts`
    /// (with the default [`Limits`]). When both are there, `berth.toml` wins: it is
    /// berth's own file, so it says how berth runs the project.
    pub fn load(dir: &Path) -> Result<Manifest, LoadError> {
        if dir.join(FILE_NAME).exists() {
            return Ok(Manifest::load_toml(dir)?);
        }
        if program_file(dir).is_some() {
            return Ok(load_script(dir, Limits::default())?);
        }
        Err(LoadError::NoApp {
            dir: dir.to_path_buf(),
        })
    }
}

/// Runs `dir/alchemy.run.ts` and reads the app it declares.
pub fn load_script(dir: &Path, limits: Limits) -> Result<Manifest, ScriptError> {
    load_program(dir, limits).map(|program| program.manifest)
}

/// An app of `alchemy.run.ts`, with the files its code is made of.
#[derive(Debug, Clone)]
pub struct Program {
    pub manifest: Manifest,
    /// Every module the program imported, every module of the workers' entrypoints, and
    /// every file those may import at run time by a name written out (`import("./x")`)
    /// (absolute paths): what runs the app on another machine, and nothing else.
    pub files: Vec<PathBuf>,
}

/// Runs `dir/alchemy.run.ts`, reads the app it declares, and loads each worker's
/// entrypoint too, so that [`Program::files`] holds the code the workers run. A module
/// that a worker imports at run time (`await import("./x.ts")`) is among them when its
/// name is written out; one whose name is computed (`import(path)`) is not.
pub fn load_program(dir: &Path, limits: Limits) -> Result<Program, ScriptError> {
    let dir = std::path::absolute(dir).map_err(|e| ScriptError::Read {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let script = program_file(&dir).ok_or_else(|| ScriptError::Read {
        path: dir.join(SCRIPT_FILE_NAME),
        reason: "there is no such file (nor a wrangler.jsonc, wrangler.json or wrangler.toml)"
            .into(),
    })?;
    let engine = engine::Engine::new(&script, limits)?;
    let is_wrangler = !script.ends_with(SCRIPT_FILE_NAME);
    let declared = match is_wrangler {
        true => wrangler::declared(&script)?,
        false => engine.run_program()?,
    };
    let manifest = declare::manifest(&engine, &dir, declared)?;
    for worker in &manifest.workers {
        if let Some(script) = &worker.script {
            engine.load_module(&script.entrypoint)?;
        }
    }
    let mut files = engine.loaded_files();
    files.extend(engine.imported_later()?);
    if is_wrangler {
        files.push(script);
    }
    // Where the packages' modules are, for the server to resolve them again.
    let manifests: std::collections::BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| packages::manifest_of(f))
        .collect();
    files.extend(manifests);
    Ok(Program { manifest, files })
}

#[cfg(test)]
mod tests;
