//! Which module an `import` names, and its code: the resolver and loader QuickJS asks.
//!
//! Relative imports resolve as TypeScript's bundler resolution does: the extension may be
//! left out (`.ts`, `.mts`, `.js`, `.mjs` are tried, in that order), a folder means its
//! `index` file, and `./x.js` finds `./x.ts`, since TypeScript code imports its own files
//! by the name they compile to. Bare names are berth's built-in modules, else packages
//! of `node_modules` (see [`super::packages`]).
//!
//! QuickJS only learns that an import failed; the typed error is kept in [`Shared`], so
//! the caller can report it instead of QuickJS's message.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rquickjs::loader::{Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::{Ctx, Module};

use super::builtins;
use super::strip::{strip, Stripped};
use super::ScriptError;

/// The extensions tried, in order, for an import that names none.
const EXTENSIONS: [&str; 4] = ["ts", "mts", "js", "mjs"];

/// What the resolver and loader learn, shared with the engine.
#[derive(Clone, Default)]
pub(crate) struct Shared(Arc<Mutex<State>>);

#[derive(Default)]
struct State {
    /// Each file loaded, by its module name (its absolute path).
    files: BTreeMap<String, Stripped>,
    /// The first import that failed.
    failure: Option<ScriptError>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The first import failure, once.
    pub fn take_failure(&self) -> Option<ScriptError> {
        self.lock().failure.take()
    }

    /// Every file loaded so far (built-in modules aside), by absolute path.
    pub fn files(&self) -> Vec<PathBuf> {
        self.lock().files.keys().map(PathBuf::from).collect()
    }

    /// The files that the files loaded so far may import at run time (`import("./x")`,
    /// with the name written out) and that are not loaded yet, with what those import in
    /// turn: the code a worker needs beyond what loading it ran. Each is read and
    /// stripped, not run, so a syntax error in one is found now. A name that resolves to
    /// no file is left for the import to report when it runs.
    pub fn imported_later(&self) -> Result<Vec<PathBuf>, ScriptError> {
        let mut pending: Vec<(String, String)> = {
            let state = self.lock();
            let loaded = state.files.iter();
            loaded
                .flat_map(|(file, s)| s.imports.iter().map(|i| (file.clone(), i.clone())))
                .collect()
        };
        let mut seen = std::collections::BTreeSet::new();
        while let Some((importer, name)) = pending.pop() {
            let Ok(path) = resolve(&importer, &name) else {
                continue;
            };
            if builtins::source(&path).is_some()
                || seen.contains(&path)
                || self.lock().files.contains_key(&path)
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| ScriptError::Read {
                path: PathBuf::from(&path),
                reason: e.to_string(),
            })?;
            let stripped = strip(Path::new(&path), &text)?;
            pending.extend(stripped.imports.iter().map(|i| (path.clone(), i.clone())));
            seen.insert(path);
        }
        Ok(seen.into_iter().map(PathBuf::from).collect())
    }

    /// The place in the file as written of a place in the code QuickJS ran: `None` for a
    /// module that is no file (a built-in), `(0, 0)` for a place the file does not map.
    pub fn original(&self, module: &str, line: u32, column: u32) -> Option<(u32, u32)> {
        let state = self.lock();
        let file = state.files.get(module)?;
        Some(file.original(line, column).unwrap_or((0, 0)))
    }

    /// Keeps `error` as the failure, unless one came first, and gives QuickJS its text.
    fn fail(&self, error: ScriptError, base: &str, name: &str) -> rquickjs::Error {
        let message = error.to_string();
        self.lock().failure.get_or_insert(error);
        rquickjs::Error::new_resolving_message(base, name, message)
    }

    pub fn resolver(&self) -> impl Resolver + 'static {
        FileResolver(self.clone())
    }

    pub fn loader(&self) -> impl Loader + 'static {
        FileLoader(self.clone())
    }
}

struct FileResolver(Shared);

impl Resolver for FileResolver {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
    ) -> rquickjs::Result<String> {
        resolve(base, name).map_err(|error| self.0.fail(error, base, name))
    }
}

/// The module name `name` means when `base` imports it.
pub(crate) fn resolve(base: &str, name: &str) -> Result<String, ScriptError> {
    if builtins::source(name).is_some() {
        return Ok(name.to_string());
    }
    let relative = name.starts_with("./") || name.starts_with("../");
    if !relative && !name.starts_with('/') {
        return match super::packages::resolve(base, name, candidates)? {
            Some(found) => Ok(found.to_string_lossy().into_owned()),
            None => Err(ScriptError::UnknownModule {
                module: name.to_string(),
                importer: base.to_string(),
            }),
        };
    }
    let from = Path::new(base).parent().unwrap_or(Path::new("/"));
    let tried = candidates(&normalize(&from.join(name)));
    match tried.iter().find(|path| path.is_file()) {
        Some(found) => Ok(found.to_string_lossy().into_owned()),
        None => Err(ScriptError::ModuleNotFound {
            module: name.to_string(),
            importer: base.to_string(),
            tried,
        }),
    }
}

/// The files `path` may mean, in the order they are tried.
fn candidates(path: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let extension = path.extension().and_then(|e| e.to_str());
    if extension.is_some_and(|e| EXTENSIONS.contains(&e)) {
        paths.push(path.to_path_buf());
        match extension {
            Some("js") => paths.push(path.with_extension("ts")),
            Some("mjs") => paths.push(path.with_extension("mts")),
            _ => {}
        }
        return paths;
    }
    let file = path.as_os_str().to_string_lossy();
    paths.extend(EXTENSIONS.map(|e| PathBuf::from(format!("{file}.{e}"))));
    paths.extend(EXTENSIONS.map(|e| path.join(format!("index.{e}"))));
    paths
}

/// `path` without `.` and `..` components (without asking the file system).
pub(super) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

struct FileLoader(Shared);

impl Loader for FileLoader {
    fn load<'js>(&mut self, ctx: &Ctx<'js>, name: &str) -> rquickjs::Result<Module<'js, Declared>> {
        if let Some(source) = builtins::source(name) {
            return Module::declare(ctx.clone(), name, source);
        }
        let path = Path::new(name);
        let text = std::fs::read_to_string(path).map_err(|e| {
            let error = ScriptError::Read {
                path: path.to_path_buf(),
                reason: e.to_string(),
            };
            self.0.fail(error, "", name)
        })?;
        let stripped = strip(path, &text).map_err(|error| self.0.fail(error, "", name))?;
        let code = stripped.code.clone();
        self.0.lock().files.insert(name.to_string(), stripped);
        let module = Module::declare(ctx.clone(), name, code)?;
        let meta = module.meta()?;
        let dir = path.parent().unwrap_or(Path::new("/")).to_string_lossy();
        meta.set("dir", dir.as_ref())?;
        meta.set("dirname", dir.as_ref())?;
        meta.set("path", name)?;
        meta.set("filename", name)?;
        meta.set("url", format!("file://{name}"))?;
        Ok(module)
    }
}
