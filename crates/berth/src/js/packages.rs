//! Bare imports (`import { Hono } from "hono"`) from the app's `node_modules`, as a
//! bundler resolves them for a Cloudflare worker: the package is looked for in
//! `node_modules` of the importer's folder and of each folder above it; its
//! `package.json` `exports` are read with the conditions a worker build uses (`workerd`,
//! `worker`, `browser`, `import`, `module`, `default`), else its `module` or `main` field,
//! else its `index` file. Packages must be ES modules: QuickJS has no `require`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::modules::normalize;
use super::ScriptError;

/// The `exports` conditions taken, best first.
const CONDITIONS: [&str; 6] = [
    "workerd", "worker", "browser", "import", "module", "default",
];

/// The file bare import `name` means when `base` imports it: `Ok(None)` when no
/// `node_modules` above `base` holds its package.
pub(super) fn resolve(
    base: &str,
    name: &str,
    candidates: impl Fn(&Path) -> Vec<PathBuf>,
) -> Result<Option<PathBuf>, ScriptError> {
    let Some((package, subpath)) = split(name) else {
        return Ok(None);
    };
    let mut dir = Path::new(base).parent();
    while let Some(here) = dir {
        let root = here.join("node_modules").join(package);
        if root.is_dir() {
            return in_package(&root, &subpath, candidates)
                .map(Some)
                .map_err(|reason| ScriptError::Package {
                    module: name.to_string(),
                    importer: base.to_string(),
                    reason,
                });
        }
        // Not above the app's folder: a deploy sends nothing from there, and on a server
        // that is where other apps' programs are.
        if super::program_file(here).is_some() {
            break;
        }
        dir = here.parent();
    }
    Ok(None)
}

/// `name` as its package and the path inside it (`.` for the package itself); `None` for
/// what names no package (`node:fs`, `@scope` alone).
fn split(name: &str) -> Option<(&str, String)> {
    if name.is_empty() || name.contains(':') || name.contains('\\') {
        return None;
    }
    let mut parts = name.splitn(if name.starts_with('@') { 3 } else { 2 }, '/');
    let first = parts.next()?;
    let package_len = if first.starts_with('@') {
        let second = parts.next().filter(|s| !s.is_empty())?;
        first.len() + 1 + second.len()
    } else {
        first.len()
    };
    let rest = parts.next().unwrap_or("");
    let package = &name[..package_len];
    if package.split('/').any(|p| p == "." || p == "..") {
        return None;
    }
    let subpath = if rest.is_empty() {
        ".".to_string()
    } else {
        format!("./{rest}")
    };
    Some((package, subpath))
}

/// The file `subpath` names in the package at `root`, or why there is none.
fn in_package(
    root: &Path,
    subpath: &str,
    candidates: impl Fn(&Path) -> Vec<PathBuf>,
) -> Result<PathBuf, String> {
    let manifest = root.join("package.json");
    let fields: Value = match std::fs::read_to_string(&manifest) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", manifest.display()))?,
        Err(_) => Value::Null,
    };
    let tried = if let Some(exports) = fields.get("exports").filter(|e| !e.is_null()) {
        let target = exported(exports, subpath).ok_or_else(|| {
            format!(
                "its package.json exports no {subpath:?} for an ES module (conditions {})",
                CONDITIONS.join(", ")
            )
        })?;
        vec![normalize(&root.join(target))]
    } else {
        let entry = match subpath {
            "." => ["module", "main"]
                .iter()
                .find_map(|field| fields.get(field).and_then(Value::as_str))
                .unwrap_or("index"),
            path => path,
        };
        // As written first (`main` may name `index.cjs`), then as a relative import.
        let path = normalize(&root.join(entry));
        let mut tried = vec![path.clone()];
        tried.extend(candidates(&path).into_iter().filter(|p| *p != path));
        tried
    };
    let found = tried.iter().find(|path| path.is_file()).ok_or_else(|| {
        let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        format!("no such file: tried {}", tried.join(", "))
    })?;
    if found.extension().is_some_and(|e| e == "cjs" || e == "cts") {
        return Err(format!(
            "{} is CommonJS, and berth loads ES modules only (QuickJS has no require); use the package's ES module build",
            found.display()
        ));
    }
    if !found.starts_with(root) {
        return Err(format!("{} is outside the package", found.display()));
    }
    Ok(found.clone())
}

/// The target `exports` gives `subpath`: an exact key, or a key with one `*`.
fn exported(exports: &Value, subpath: &str) -> Option<String> {
    let map = exports.as_object();
    let by_subpath = map.is_some_and(|m| m.keys().any(|k| k.starts_with('.')));
    if !by_subpath {
        return (subpath == ".").then(|| conditional(exports)).flatten();
    }
    let map = map?;
    if let Some(value) = map.get(subpath) {
        return conditional(value);
    }
    // The pattern with the longest part before its `*` wins, as in Node; one whose
    // target is null excludes what it matches.
    let (value, middle) = map
        .iter()
        .filter_map(|(key, value)| {
            let (before, after) = key.split_once('*')?;
            let middle = subpath.strip_prefix(before)?.strip_suffix(after)?;
            Some((before.len(), value, middle))
        })
        .max_by_key(|(prefix, _, _)| *prefix)
        .map(|(_, value, middle)| (value, middle))?;
    conditional(value).map(|target| target.replace('*', middle))
}

/// A target of `exports`, with the conditions taken in [`CONDITIONS`]'s order.
fn conditional(value: &Value) -> Option<String> {
    match value {
        Value::String(target) => Some(target.clone()),
        Value::Array(choices) => choices.iter().find_map(conditional),
        Value::Object(by_condition) => CONDITIONS
            .iter()
            .find_map(|c| by_condition.get(*c).and_then(conditional)),
        _ => None,
    }
}

/// `message` with a word on why, when a file of `node_modules` at `at` failed as
/// CommonJS code does in an ES module (`module`, `exports` or `require` undefined).
pub(super) fn explain_commonjs(message: String, at: &Path) -> String {
    let commonjs = ["module", "exports", "require"]
        .iter()
        .any(|name| message.contains(&format!("ReferenceError: {name} is not defined")))
        || message.contains("'require' is not defined");
    let in_package = at.components().any(|c| c.as_os_str() == "node_modules");
    if commonjs && in_package {
        format!("{message} ({} is CommonJS, and berth loads ES modules only: use the package's ES module build, or another package)", at.display())
    } else {
        message
    }
}

/// The `package.json` of the package a file of `node_modules` is in: shipped with the
/// program, since it says where the package's modules are.
pub(super) fn manifest_of(file: &Path) -> Option<PathBuf> {
    let parts: Vec<_> = file.components().collect();
    let at = parts
        .iter()
        .rposition(|c| c.as_os_str() == "node_modules")?;
    let first = parts.get(at + 1)?.as_os_str().to_str()?;
    let depth = if first.starts_with('@') { 3 } else { 2 };
    let root: PathBuf = parts.get(..=at + depth - 1)?.iter().collect();
    let manifest = root.join("package.json");
    manifest.is_file().then_some(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_split_into_package_and_path() {
        assert_eq!(split("hono"), Some(("hono", ".".into())));
        assert_eq!(split("hono/cors"), Some(("hono", "./cors".into())));
        assert_eq!(
            split("@scope/pkg/a/b"),
            Some(("@scope/pkg", "./a/b".into()))
        );
        assert_eq!(split("@scope"), None);
        assert_eq!(split("node:buffer"), None);
        assert_eq!(split("../x"), None);
    }

    #[test]
    fn exports_are_read_with_a_workers_conditions() {
        let exports = json!({
            ".": { "types": "./d.ts", "require": "./index.cjs", "import": "./index.mjs" },
            "./cors": { "workerd": "./cors.worker.js", "default": "./cors.js" },
            "./utils/*": "./dist/utils/*.js",
            "./node": { "node": "./node.js" }
        });
        assert_eq!(exported(&exports, "."), Some("./index.mjs".into()));
        assert_eq!(
            exported(&exports, "./cors"),
            Some("./cors.worker.js".into())
        );
        assert_eq!(
            exported(&exports, "./utils/http"),
            Some("./dist/utils/http.js".into())
        );
        assert_eq!(exported(&exports, "./node"), None);
        let patterns =
            json!({ "./*": "./any/*.js", "./utils/*": "./u/*.js", "./utils/private/*": null });
        assert_eq!(exported(&patterns, "./utils/x"), Some("./u/x.js".into()));
        assert_eq!(exported(&patterns, "./y"), Some("./any/y.js".into()));
        assert_eq!(exported(&patterns, "./utils/private/z"), None);
        assert_eq!(exported(&exports, "./other"), None);
        assert_eq!(exported(&json!("./main.js"), "."), Some("./main.js".into()));
        assert_eq!(
            exported(&json!({ "browser": "./b.js", "default": "./d.js" }), "."),
            Some("./b.js".into())
        );
    }
}
