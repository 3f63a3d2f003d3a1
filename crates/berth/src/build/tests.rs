//! The build flow against an engine that builds nothing.

use super::*;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;

/// An engine that keeps the hashes of the images it built, and builds nothing.
#[derive(Default)]
struct Fake {
    hashes: Mutex<HashMap<String, String>>,
    builds: Mutex<Vec<String>>,
}

#[async_trait]
impl Builder for Fake {
    async fn has_image(&self, image: &str) -> Result<bool, BuildError> {
        Ok(self.hashes.lock().expect("lock").contains_key(image))
    }

    async fn recorded_hash(&self, image: &str) -> Result<Option<String>, BuildError> {
        Ok(self.hashes.lock().expect("lock").get(image).cloned())
    }

    async fn build_image(
        &self,
        build: ImageBuild<'_>,
        _progress: &mut (dyn for<'line> FnMut(&'line str) + Send),
    ) -> Result<(), BuildError> {
        build.context.bytes().await?;
        self.hashes
            .lock()
            .expect("lock")
            .insert(build.image.to_string(), build.content_hash.to_string());
        self.builds
            .lock()
            .expect("lock")
            .push(build.image.to_string());
        Ok(())
    }

    async fn remove_superseded(
        &self,
        repository: &str,
        keep: &str,
    ) -> Result<Vec<String>, BuildError> {
        let mut hashes = self.hashes.lock().expect("lock");
        let old: Vec<String> = hashes
            .keys()
            .filter(|i| i.starts_with(&format!("{repository}:")) && *i != keep)
            .cloned()
            .collect();
        for image in &old {
            hashes.remove(image);
        }
        Ok(old)
    }

    async fn push(
        &self,
        image: &str,
        _target: &str,
        _progress: &mut (dyn for<'line> FnMut(&'line str) + Send),
    ) -> Result<String, BuildError> {
        Err(BuildError::Push {
            image: image.to_string(),
            reason: "this engine has no registry".into(),
        })
    }

    async fn pull(&self, reference: &str) -> Result<(), BuildError> {
        Err(BuildError::Pull {
            image: reference.to_string(),
            reason: "this engine has no registry".into(),
        })
    }
}

#[tokio::test]
async fn an_unchanged_context_is_not_built_again() {
    let dir = std::env::temp_dir().join(format!("berth-build-flow-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\n").expect("write");
    let mut spec = BuildSpec {
        name: "t".into(),
        tag: Some("fixed".into()),
        context: dir.clone(),
        dockerfile: "Dockerfile".into(),
        args: BTreeMap::new(),
        target: None,
        command: None,
    };
    let fake = Fake::default();
    let manifest = dir.join("berth.toml");
    let origin = Origin {
        app: "app",
        manifest: &manifest,
    };
    let first = build(&fake, &spec, origin, &mut |_| {})
        .await
        .expect("built");
    assert_eq!(first.image, "berth-dev/app-t:fixed");
    assert!(!first.up_to_date);
    assert!(fake
        .has_image("berth-dev/app-t:fixed")
        .await
        .expect("answer"));
    let again = build(&fake, &spec, origin, &mut |_| {})
        .await
        .expect("built");
    assert!(again.up_to_date);
    assert_eq!(again.content_hash, first.content_hash);

    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nENV A=b\n").expect("write");
    let changed = build(&fake, &spec, origin, &mut |_| {})
        .await
        .expect("built");
    assert!(
        !changed.up_to_date,
        "the same tag with new content is rebuilt"
    );
    assert_eq!(fake.builds.lock().expect("lock").len(), 2);

    spec.command = Some("exit 3".into());
    let e = build(&fake, &spec, origin, &mut |_| {}).await;
    assert!(matches!(e, Err(BuildError::Command { .. })), "{e:?}");
    assert_eq!(fake.builds.lock().expect("lock").len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_manifest_counts_only_when_the_dockerfile_names_it() {
    let dir = std::env::temp_dir().join(format!("berth-build-manifest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY . /app\n").expect("write");
    std::fs::write(dir.join("berth.toml"), "name = \"app\"\n").expect("write");
    let spec = BuildSpec {
        name: "web".into(),
        tag: None,
        context: dir.clone(),
        dockerfile: "Dockerfile".into(),
        args: BTreeMap::new(),
        target: None,
        command: None,
    };
    let manifest = dir.join("berth.toml");
    let origin = Origin {
        app: "app",
        manifest: &manifest,
    };
    let fake = Fake::default();
    let mut lines = Vec::new();
    let first = build(&fake, &spec, origin, &mut |l| lines.push(l.to_string()))
        .await
        .expect("built");
    std::fs::write(&manifest, "name = \"app\"\n# a new route\n").expect("write");
    let again = build(&fake, &spec, origin, &mut |_| {})
        .await
        .expect("built");
    assert!(again.up_to_date, "an edited berth.toml is not rebuilt");
    assert_eq!(again.image, first.image);

    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY berth.toml /app/\n",
    )
    .expect("write");
    let named = build(&fake, &spec, origin, &mut |l| lines.push(l.to_string()))
        .await
        .expect("built");
    assert!(!named.up_to_date);
    std::fs::write(&manifest, "name = \"app\"\n# another route\n").expect("write");
    let edited = build(&fake, &spec, origin, &mut |l| lines.push(l.to_string()))
        .await
        .expect("built");
    assert!(
        !edited.up_to_date,
        "a berth.toml the Dockerfile copies counts"
    );

    assert_eq!(
        *fake.hashes.lock().expect("lock").keys().collect::<Vec<_>>(),
        [&edited.image],
        "the superseded images are gone"
    );
    let removed = format!("removed {}, superseded by {}", named.image, edited.image);
    assert!(lines.contains(&removed), "{lines:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
