//! A release: a deployment made ready to run. Its manifest is parsed again on the server
//! (the client's copy is never trusted), each container gets the image the deployment
//! names, and each worker its hosts.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::api::{Change, PlanItem};
use crate::class::ContainerClass;
use crate::hosts::HostPattern;
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
}

/// What an app runs: its classes and its workers.
#[derive(Debug, Clone)]
pub(crate) struct Release {
    pub classes: Vec<ReleasedClass>,
    /// Workers, with their hosts filled in.
    pub workers: Vec<WorkerDef>,
    pub fingerprint: String,
}

impl Release {
    /// The release of `app` from a manifest's text and the images a deploy pushed.
    pub fn new(
        app: &str,
        manifest: &str,
        images: &BTreeMap<String, String>,
    ) -> Result<Release, PlatformError> {
        let parsed = Manifest::parse(manifest, Path::new(crate::manifest::FILE_NAME))
            .map_err(|e| PlatformError::Invalid(e.to_string()))?;
        if let Some(worker) = WorkerDef::scripts(&parsed.workers).first() {
            return Err(PlatformError::Invalid(format!(
                "worker {worker} is a JS worker, and berth serve does not run JS workers yet (berth dev does)"
            )));
        }
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
    fn a_built_container_needs_an_image() {
        let e = Release::new("hello", MANIFEST, &BTreeMap::new()).expect_err("no image");
        assert!(e.to_string().contains("names no image for it"), "{e}");
        let mut extra = images("1");
        extra.insert("db".into(), "r/db@sha256:1".into());
        assert!(Release::new("hello", MANIFEST, &extra).is_err());
    }
}
