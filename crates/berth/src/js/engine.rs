//! One QuickJS runtime for reading one app: the built-in modules, the file loader, and
//! the budget (time through QuickJS's interrupt handler, memory through the runtime's
//! limit); and QuickJS's failures turned into [`ScriptError`]s that name the place in
//! the file as written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rquickjs::{Context, Ctx, Function, Module, Object, Runtime, Value};

use super::modules::Shared;
use super::{builtins, Limits, ScriptError, SourcePlace};

pub(crate) struct Engine {
    /// The context, and its runtime declared after it so dropped after it; taken out in
    /// `drop`.
    quickjs: Option<(Context, Runtime)>,
    /// Set when a module's evaluation never settled. QuickJS aborts the process if a
    /// runtime is freed while a module's evaluation is pending, so such a runtime is
    /// leaked instead: it is one, it is small, and it happens only on this error.
    unsettled: AtomicBool,
    modules: Shared,
    /// Set once the interrupt handler has stopped the program for its time.
    timed_out: Arc<AtomicBool>,
    /// `alchemy.run.ts`.
    script: PathBuf,
    limits: Limits,
}

impl Engine {
    /// A runtime for the program `script`, with its budget starting now.
    pub fn new(script: &Path, limits: Limits) -> Result<Engine, ScriptError> {
        let engine_error = |e: rquickjs::Error| ScriptError::Engine {
            path: script.to_path_buf(),
            reason: e.to_string(),
        };
        let runtime = Runtime::new().map_err(engine_error)?;
        runtime.set_memory_limit(limits.memory_bytes);
        let timed_out = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + limits.time;
        let flag = timed_out.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || {
            let over = Instant::now() >= deadline;
            if over {
                flag.store(true, Ordering::Relaxed);
            }
            over
        })));
        let modules = Shared::default();
        runtime.set_loader(modules.resolver(), modules.loader());
        let context = Context::full(&runtime).map_err(engine_error)?;
        context
            .with(|ctx| builtins::install(&ctx, builtins::host_vars()))
            .map_err(engine_error)?;
        Ok(Engine {
            quickjs: Some((context, runtime)),
            unsettled: AtomicBool::new(false),
            modules,
            timed_out,
            script: script.to_path_buf(),
            limits,
        })
    }

    /// Runs `f` in the context; its error, from what QuickJS reports and what the loader
    /// and the budget saw.
    fn with<T>(
        &self,
        f: impl for<'js> FnOnce(&Ctx<'js>) -> rquickjs::Result<T>,
    ) -> Result<T, ScriptError> {
        let Some((context, runtime)) = &self.quickjs else {
            return Err(ScriptError::Engine {
                path: self.script.clone(),
                reason: "the engine is gone".into(),
            });
        };
        let error = match context.with(|ctx| f(&ctx).map_err(|e| self.failure(&ctx, e))) {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let unsettled = matches!(error, ScriptError::NeverSettled { .. });
        if unsettled {
            self.unsettled.store(true, Ordering::Relaxed);
        }
        // Out of memory, QuickJS may not manage to make an Error: it throws null, or
        // loses the exception in a promise job, so the program never settles.
        let null = matches!(&error, ScriptError::Thrown { message, .. } if message == THROWN_NULL);
        if unsettled || null {
            let used = runtime.memory_usage().malloc_size;
            let limit = i64::try_from(self.limits.memory_bytes).unwrap_or(i64::MAX);
            if used.saturating_mul(10) >= limit.saturating_mul(9) {
                return Err(self.out_of_memory());
            }
        }
        Err(error)
    }

    fn out_of_memory(&self) -> ScriptError {
        ScriptError::OutOfMemory {
            path: self.script.clone(),
            limit_mib: self.limits.memory_bytes >> 20,
        }
    }

    /// Runs the program to its end (top-level awaits included) and gives what it
    /// declared, as JSON.
    pub fn run_program(&self) -> Result<String, ScriptError> {
        self.with(|ctx| {
            import(ctx, &self.script)?;
            ctx.eval::<String, _>("__berth.describe()")
        })
    }

    /// The option fields of class `class` as `entrypoint` exports it, as JSON: `None`
    /// when the module does not export it.
    pub fn class_options(
        &self,
        entrypoint: &Path,
        class: &str,
        vars: &BTreeMap<String, String>,
    ) -> Result<Option<String>, ScriptError> {
        self.with(|ctx| {
            let berth: Object = ctx.globals().get("__berth")?;
            let worker_vars: Function = berth.get("workerVars")?;
            worker_vars.call::<_, ()>((vars.clone(),))?;
            let read = import(ctx, entrypoint).and_then(|namespace| {
                let options: Function = berth.get("classOptions")?;
                options.call::<_, Option<String>>((namespace, class))
            });
            // The program's own process.env back, with what was thrown kept aside.
            let thrown = matches!(read, Err(rquickjs::Error::Exception)).then(|| ctx.catch());
            worker_vars.call::<_, ()>((rquickjs::Null,))?;
            match thrown {
                Some(value) => Err(ctx.throw(value)),
                None => read,
            }
        })
    }

    /// Loads and runs the module at `path` (and what it imports), if not yet loaded.
    pub fn load_module(&self, path: &Path) -> Result<(), ScriptError> {
        self.with(|ctx| import(ctx, path).map(drop))
    }

    /// Every file the program and the modules loaded since have read.
    pub fn loaded_files(&self) -> Vec<PathBuf> {
        self.modules.files()
    }

    /// The files those may import at run time (see [`Shared::imported_later`]).
    pub fn imported_later(&self) -> Result<Vec<PathBuf>, ScriptError> {
        self.modules.imported_later()
    }

    /// The place a stack (as a built-in module records it) points to: its first frame in
    /// one of the app's files, in the file as written.
    pub fn place(&self, stack: &str) -> SourcePlace {
        place(&self.modules, stack).unwrap_or_else(|| SourcePlace::file(&self.script))
    }

    /// What went wrong, from what QuickJS reports and what the loader and the budget saw.
    fn failure(&self, ctx: &Ctx<'_>, error: rquickjs::Error) -> ScriptError {
        let thrown = matches!(error, rquickjs::Error::Exception).then(|| ctx.catch());
        if self.timed_out.load(Ordering::Relaxed) {
            return ScriptError::TimedOut {
                path: self.script.clone(),
                limit: self.limits.time,
            };
        }
        if let Some(failure) = self.modules.take_failure() {
            return failure;
        }
        match (error, thrown) {
            (_, Some(value)) => self.thrown(value),
            (rquickjs::Error::WouldBlock, _) => ScriptError::NeverSettled {
                path: self.script.clone(),
            },
            (other, None) => ScriptError::Engine {
                path: self.script.clone(),
                reason: other.to_string(),
            },
        }
    }

    /// An uncaught exception: its message, at the place its stack names.
    fn thrown(&self, value: Value<'_>) -> ScriptError {
        let (message, stack) = match value.as_object() {
            Some(error) => {
                let name = error.get::<_, Option<String>>("name").ok().flatten();
                let message = error.get::<_, Option<String>>("message").ok().flatten();
                let stack = error.get::<_, Option<String>>("stack").ok().flatten();
                let message = match (name, message) {
                    (Some(name), Some(message)) => format!("{name}: {message}"),
                    (None, Some(message)) => message,
                    _ => "an object that is not an Error was thrown".to_string(),
                };
                (message, stack.unwrap_or_default())
            }
            None => (describe(&value), String::new()),
        };
        if message.contains("out of memory") {
            return self.out_of_memory();
        }
        let mut at = self.place(&stack);
        let site = value
            .as_object()
            .and_then(|e| e.get::<_, Option<String>>("site").ok().flatten());
        if let Some(found) = site.and_then(|site| written_at(&at, &site)) {
            at = found;
        }
        let message = super::packages::explain_commonjs(message, &at.path);
        ScriptError::Thrown { at, message }
    }
}

/// Where `site` is first written in `at`'s file, at or after `at`'s line: a throw that
/// QuickJS places at an earlier call (one from a property read) names the text it was
/// read by, and is placed there instead.
fn written_at(at: &SourcePlace, site: &str) -> Option<SourcePlace> {
    let text = std::fs::read_to_string(&at.path).ok()?;
    let (line, column) = text
        .lines()
        .enumerate()
        .skip(at.line.saturating_sub(1) as usize)
        .find_map(|(n, line)| {
            line.find(site)
                .map(|byte| (n, line[..byte].chars().count()))
        })?;
    Some(SourcePlace {
        path: at.path.clone(),
        line: u32::try_from(line + 1).ok()?,
        column: u32::try_from(column + 1).ok()?,
    })
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(quickjs) = self.quickjs.take() {
            if self.unsettled.load(Ordering::Relaxed) {
                std::mem::forget(quickjs);
            }
        }
    }
}

/// The message of a thrown `null`.
const THROWN_NULL: &str = "uncaught null";

/// Imports (loads and runs) the module at `path`, running jobs until it is done, and
/// gives its namespace.
fn import<'js>(ctx: &Ctx<'js>, path: &Path) -> rquickjs::Result<Object<'js>> {
    let promise = Module::import(ctx, path.to_string_lossy().as_bytes())?;
    promise.finish::<Object>()
}

/// A thrown value that is no object, as text.
fn describe(value: &Value<'_>) -> String {
    match value.as_string().and_then(|s| s.to_string().ok()) {
        Some(text) => format!("uncaught {text:?}"),
        None => format!("uncaught {}", value.type_name()),
    }
}

/// The first frame of `stack` in one of the app's files, in the file as written.
pub(super) fn place(modules: &Shared, stack: &str) -> Option<SourcePlace> {
    frames(stack).find_map(|(module, line, column)| {
        let (line, column) = modules.original(module, line, column)?;
        Some(SourcePlace {
            path: PathBuf::from(module),
            line,
            column,
        })
    })
}

/// `stack` with every frame in one of the app's files pointing into the file as written
/// (QuickJS runs the code with its TypeScript stripped, so its lines differ).
pub(super) fn rewrite_stack(modules: &Shared, stack: &str) -> String {
    let mut out = String::new();
    for text in stack.lines() {
        let mapped = frames(text).next().and_then(|(module, line, column)| {
            let (original, col) = modules.original(module, line, column)?;
            let ran = format!("{module}:{line}:{column}");
            Some(text.replace(&ran, &format!("{module}:{original}:{col}")))
        });
        out.push_str(mapped.as_deref().unwrap_or(text));
        out.push('\n');
    }
    out
}

/// The frames of a QuickJS stack, `    at name (module:line:column)`, as
/// (module, line, column).
fn frames(stack: &str) -> impl Iterator<Item = (&str, u32, u32)> {
    stack.lines().filter_map(|line| {
        let frame = line.trim().strip_prefix("at ")?;
        let place = match frame.rfind('(') {
            Some(open) => frame[open + 1..].strip_suffix(')')?,
            None => frame,
        };
        let (rest, column) = place.rsplit_once(':')?;
        let (module, line) = rest.rsplit_once(':')?;
        Some((module, line.parse().ok()?, column.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::frames;

    #[test]
    fn stack_frames_give_module_line_and_column() {
        let stack = "Error\n    at site (alchemy/cloudflare:3:9)\n    at <anonymous> (/app/alchemy.run.ts:7:27)\n    at /app/x.ts:1:2\n";
        let found: Vec<_> = frames(stack).collect();
        assert_eq!(
            found,
            [
                ("alchemy/cloudflare", 3, 9),
                ("/app/alchemy.run.ts", 7, 27),
                ("/app/x.ts", 1, 2)
            ]
        );
    }
}
