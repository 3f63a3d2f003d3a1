//! A release: a deployment made ready to run. Its manifest is parsed again on the server
//! (the client's copy is never trusted), or its program run again, each container gets
//! the image the deployment names, and each worker its hosts.
//!
//! A program (an app of `alchemy.run.ts`) is written under the data folder, in a folder
//! named by the digest of its files, and run from there with the JS loader's limits; the
//! JS workers then load their entrypoints from the same folder. Its containers' builds
//! are never run here (the deploy names their images), so their contexts need not exist.
//! The program runs with the environment of `berth serve`: `process.env` and
//! `alchemy.secret.env` read the server's variables, never the deploying machine's, so
//! that secrets stay where the app runs and never travel with a deployment.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::api::{Change, PlanItem};
use crate::class::ContainerClass;
use crate::hosts::HostPattern;
use crate::js::{load_script, Limits, SCRIPT_FILE_NAME, WRANGLER_FILE_NAMES};
use crate::manifest::{ImageSource, Manifest, Rollout, WorkerDef};

use super::PlatformError;

/// One container class of a release.
#[derive(Debug, Clone)]
pub(crate) struct ReleasedClass {
    /// The container resource id.
    pub id: String,
    /// The options, with the image by digest.
    pub class: ContainerClass,
    pub rollout: Rollout,
    /// The worker entrypoint that exports the class (a program's classes).
    pub exported_by: Option<PathBuf>,
}

/// What an app runs: its classes and its workers.
#[derive(Debug, Clone)]
pub(crate) struct Release {
    pub classes: Vec<ReleasedClass>,
    /// Workers, with their hosts filled in.
    pub workers: Vec<WorkerDef>,
    pub fingerprint: String,
    /// The folder its program was written to and runs from (an app of `alchemy.run.ts`).
    pub program: Option<PathBuf>,
}

impl Release {
    /// The release of `app` from a deployment's manifest text or program files (written
    /// under `programs` and run there), and the images a deploy pushed.
    pub async fn load(
        app: &str,
        manifest: &str,
        program: &BTreeMap<String, String>,
        images: &BTreeMap<String, String>,
        programs: &Path,
    ) -> Result<Release, PlatformError> {
        if program.is_empty() {
            return Release::new(app, manifest, images);
        }
        if !manifest.trim().is_empty() {
            return Err(PlatformError::Invalid(
                "the deployment gives both a berth.toml and a program; give one".into(),
            ));
        }
        let (root, files) = (programs.join(app), program.clone());
        // Writing the files and running the program both block: off the async threads.
        let (dir, parsed) = tokio::task::spawn_blocking(move || {
            let dir = write_program(&root, &files)?;
            let parsed = load_script(&dir, Limits::default()).map_err(|e| {
                let prefix = format!("{}/", dir.display());
                PlatformError::Invalid(format!(
                    "the program fails on the server: {}; fix it and deploy again",
                    e.to_string().replace(&prefix, "")
                ))
            })?;
            Ok::<_, PlatformError>((dir, parsed))
        })
        .await
        .map_err(|e| PlatformError::Invalid(format!("running the program failed: {e}")))??;
        let mut release = Release::of(app, parsed, images)?;
        release.program = Some(dir);
        Ok(release)
    }

    /// The release of `app` from a manifest's text and the images a deploy pushed.
    pub fn new(
        app: &str,
        manifest: &str,
        images: &BTreeMap<String, String>,
    ) -> Result<Release, PlatformError> {
        let parsed = Manifest::parse(manifest, Path::new(crate::manifest::FILE_NAME))
            .map_err(|e| PlatformError::Invalid(e.to_string()))?;
        Release::of(app, parsed, images)
    }

    fn of(
        app: &str,
        parsed: Manifest,
        images: &BTreeMap<String, String>,
    ) -> Result<Release, PlatformError> {
        let mut classes = Vec::new();
        for def in parsed.containers {
            let image = match (images.get(&def.id), &def.image) {
                (Some(image), _) => image.clone(),
                (None, ImageSource::Prebuilt(image)) => image.clone(),
                (None, ImageSource::Build(_)) => {
                    return Err(PlatformError::Invalid(format!(
                        "container {} is built, but the deployment names no image for it; berth deploy builds and pushes it",
                        def.id
                    )))
                }
            };
            let mut class = def.class;
            class.image = image;
            classes.push(ReleasedClass {
                id: def.id,
                class,
                rollout: def.rollout,
                exported_by: def.exported_by,
            });
        }
        let unknown: Vec<&String> = images
            .keys()
            .filter(|id| !classes.iter().any(|c| &c.id == *id))
            .collect();
        if !unknown.is_empty() {
            return Err(PlatformError::Invalid(format!(
                "the deployment names images for {unknown:?}, which the manifest does not define"
            )));
        }
        let mut workers = parsed.workers;
        for worker in &mut workers {
            if worker.hosts.is_empty() {
                let host =
                    HostPattern::default_for(&worker.name, app).map_err(PlatformError::Invalid)?;
                worker.hosts.push(host);
            }
        }
        let fingerprint = fingerprint(&classes, &workers);
        Ok(Release {
            classes,
            workers,
            fingerprint,
            program: None,
        })
    }

    /// Every host the release's workers answer.
    pub fn hosts(&self) -> impl Iterator<Item = &HostPattern> {
        self.workers.iter().flat_map(|w| w.hosts.iter())
    }

    /// What going from `old` to this release changes, class by class and worker by worker.
    pub fn plan(&self, old: Option<&Release>) -> Vec<PlanItem> {
        let mut plan = Vec::new();
        let old_classes = old.map(|o| o.classes.as_slice()).unwrap_or_default();
        for new in &self.classes {
            let change = match old_classes.iter().find(|c| c.class.name == new.class.name) {
                None => Change::Create,
                Some(c) if c.class.image != new.class.image => Change::Replace,
                Some(c) if format!("{:?}", c.class) != format!("{:?}", new.class) => Change::Update,
                Some(_) => Change::Unchanged,
            };
            plan.push(item("class", &new.class.name, change));
        }
        for gone in old_classes
            .iter()
            .filter(|c| !self.classes.iter().any(|n| n.class.name == c.class.name))
        {
            plan.push(item("class", &gone.class.name, Change::Delete));
        }
        let old_workers = old.map(|o| o.workers.as_slice()).unwrap_or_default();
        for new in &self.workers {
            let change = match old_workers.iter().find(|w| w.name == new.name) {
                None => Change::Create,
                Some(w) if format!("{w:?}") != format!("{new:?}") => Change::Update,
                Some(_) => Change::Unchanged,
            };
            plan.push(item("worker", &new.name, change));
        }
        for gone in old_workers
            .iter()
            .filter(|w| !self.workers.iter().any(|n| n.name == w.name))
        {
            plan.push(item("worker", &gone.name, Change::Delete));
        }
        plan
    }
}

/// How long a program folder stays after its deployment was superseded: runtimes of the
/// old version finish their requests and streams for up to 15 minutes, and may import
/// modules meanwhile.
const PROGRAM_GRACE: std::time::Duration = std::time::Duration::from_secs(20 * 60);

/// Removes the program folders under `root` (one app's) that are not in `keep` and were
/// written more than [`PROGRAM_GRACE`] ago: those of superseded deployments, and any
/// left half-written. A deployment keeps its files in the store, so a rollback writes its
/// folder again. Called under the app's turn, so no deploy writes beside it.
pub(crate) fn prune_programs(root: &Path, keep: &[&Path]) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let recent = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|written| written.elapsed().ok())
            .is_none_or(|age| age < PROGRAM_GRACE);
        if keep.contains(&path.as_path()) || !path.is_dir() || recent {
            continue;
        }
        if let Err(e) = std::fs::remove_dir_all(&path) {
            tracing::warn!(
                "cannot remove the superseded program {}: {e}",
                path.display()
            );
        }
    }
}

/// Writes `program` into a folder of `root` named by its digest, unless it is there
/// already (a folder appears whole: written aside, then renamed), and gives the folder.
fn write_program(
    root: &Path,
    program: &BTreeMap<String, String>,
) -> Result<PathBuf, PlatformError> {
    let top = std::iter::once(SCRIPT_FILE_NAME).chain(WRANGLER_FILE_NAMES);
    if !top.into_iter().any(|name| program.contains_key(name)) {
        return Err(PlatformError::Invalid(format!(
            "the program has no {SCRIPT_FILE_NAME} (nor a Wrangler configuration); berth deploy sends it with the modules it imports"
        )));
    }
    let bytes: usize = program.values().map(String::len).sum();
    if bytes > crate::api::MAX_PROGRAM_BYTES {
        return Err(PlatformError::Invalid(format!(
            "the program's files take {bytes} bytes, over the {} berth serve takes",
            crate::api::MAX_PROGRAM_BYTES
        )));
    }
    let mut hash = Sha256::new();
    for (path, text) in program {
        let plain = !path.is_empty()
            && Path::new(path)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(PlatformError::Invalid(format!(
                "the program's file {path:?} is not a plain path inside the app's folder (a/b.ts)"
            )));
        }
        hash.update(format!("{}\n{}\n{}\n", path.len(), path, text.len()));
        hash.update(text.as_bytes());
    }
    let digest: String = hash
        .finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = root.join(&digest);
    if dir.is_dir() {
        return Ok(dir);
    }
    let io = |path: &Path, e: std::io::Error| {
        PlatformError::Io(format!(
            "cannot write the program into {}: {e}",
            path.display()
        ))
    };
    let aside = root.join(format!(".{digest}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&aside);
    for (path, text) in program {
        let file = aside.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::write(&file, text).map_err(|e| io(&file, e))?;
    }
    match std::fs::rename(&aside, &dir) {
        Ok(()) => Ok(dir),
        // Another process's copy won: the same files.
        Err(_) if dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&aside);
            Ok(dir)
        }
        Err(e) => Err(io(&dir, e)),
    }
}

fn item(kind: &str, name: &str, change: Change) -> PlanItem {
    PlanItem {
        kind: kind.to_string(),
        name: name.to_string(),
        change,
    }
}

/// A digest of everything a release runs: class versions, rollouts and workers.
fn fingerprint(classes: &[ReleasedClass], workers: &[WorkerDef]) -> String {
    let mut hash = Sha256::new();
    for c in classes {
        hash.update(format!("{}\n{:?}\n{:?}\n", c.id, c.class, c.rollout));
    }
    for w in workers {
        hash.update(format!("{w:?}\n"));
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
name = "hello"
[containers.web]
class_name = "Web"
[containers.web.class]
default_port = 8080
env_vars = { MESSAGE = "one" }
[workers.site]
bindings = { WEB = "web" }
routes = [{ path = "/*", binding = "WEB", instance = "x" }]
"#;

    fn images(digest: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("web".to_string(), format!("r/web@sha256:{digest}"))])
    }

    fn changes(plan: &[PlanItem]) -> Vec<(String, Change)> {
        plan.iter().map(|p| (p.name.clone(), p.change)).collect()
    }

    #[test]
    fn plans_tell_creates_replacements_updates_and_deletes() {
        let one = Release::new("hello", MANIFEST, &images("1")).expect("release");
        assert_eq!(one.workers[0].hosts[0].as_str(), "site.hello.localhost");
        assert_eq!(
            changes(&one.plan(None)),
            [
                ("Web".into(), Change::Create),
                ("site".into(), Change::Create)
            ]
        );
        let same = Release::new("hello", MANIFEST, &images("1")).expect("release");
        assert_eq!(same.fingerprint, one.fingerprint);
        assert!(same
            .plan(Some(&one))
            .iter()
            .all(|p| p.change == Change::Unchanged));
        let new_image = Release::new("hello", MANIFEST, &images("2")).expect("release");
        assert_eq!(new_image.plan(Some(&one))[0].change, Change::Replace);
        let new_env = Release::new("hello", &MANIFEST.replace("one", "two"), &images("1"));
        let new_env = new_env.expect("release");
        assert_eq!(new_env.plan(Some(&one))[0].change, Change::Update);
        assert_ne!(new_env.fingerprint, one.fingerprint);
        let renamed = MANIFEST.replace("class_name = \"Web\"", "class_name = \"Site\"");
        let renamed = Release::new("hello", &renamed, &images("1")).expect("release");
        assert_eq!(
            changes(&renamed.plan(Some(&one)))[..2],
            [
                ("Site".into(), Change::Create),
                ("Web".into(), Change::Delete)
            ]
        );
    }

    #[test]
    fn a_program_is_written_once_and_only_inside_its_folder() {
        let root = std::env::temp_dir().join(format!("berth-programs-{}", std::process::id()));
        let program = |path: &str| {
            BTreeMap::from([
                (SCRIPT_FILE_NAME.to_string(), "export {};".to_string()),
                (path.to_string(), "export const x = 1;".to_string()),
            ])
        };
        let one = write_program(&root, &program("src/x.ts")).expect("written");
        assert_eq!(
            std::fs::read_to_string(one.join("src/x.ts")).expect("read"),
            "export const x = 1;"
        );
        let again = write_program(&root, &program("src/x.ts")).expect("written");
        assert_eq!(one, again, "the same files, the same folder");
        for bad in ["../x.ts", "/etc/x.ts", "a/../../x.ts", ""] {
            let e = write_program(&root, &program(bad)).expect_err(bad);
            assert!(e.to_string().contains("not a plain path"), "{bad}: {e}");
        }
        let none = BTreeMap::from([("x.ts".to_string(), String::new())]);
        let e = write_program(&root, &none).expect_err("no alchemy.run.ts");
        assert!(e.to_string().contains("has no alchemy.run.ts"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_built_container_needs_an_image() {
        let e = Release::new("hello", MANIFEST, &BTreeMap::new()).expect_err("no image");
        assert!(e.to_string().contains("names no image for it"), "{e}");
        let mut extra = images("1");
        extra.insert("db".into(), "r/db@sha256:1".into());
        assert!(Release::new("hello", MANIFEST, &extra).is_err());
    }
}
