//! Images from Dockerfiles.
//!
//! The context is read once: honouring `.dockerignore`, its files are hashed (with the
//! Dockerfile path, the build args and the target) and sent as a tar. The hash is the
//! default tag and is stored as a label on the image, so an unchanged context skips the
//! build and a changed one rebuilds, whatever the tag.
//!
//! Deciding what to build is the same for every engine and lives here; the engine is
//! behind [`Builder`], which the Docker Engine API implements (in `docker`).

mod archive;
mod context;
mod docker;
mod ignore;
mod name;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

pub use archive::{Archive, Failure};
use context::{content_hash, read_context};

/// How to build an image from a Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildSpec {
    /// The image name (without registry prefix, app or tag).
    pub name: String,
    /// A fixed tag; `None`: a content hash of the build inputs.
    pub tag: Option<String>,
    pub context: PathBuf,
    /// Relative to the context.
    pub dockerfile: String,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// A shell command run in the manifest's folder before the build.
    pub command: Option<String>,
}

/// The label on built images that records the hash of their inputs.
pub const CONTENT_HASH_LABEL: &str = "berth.content-hash";
/// The prefix of images built for `berth dev`; they are never pushed.
pub const DEV_PREFIX: &str = "berth-dev";

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("build.command `{command}` for {image} failed ({status}); fix it, or run it by hand in {dir}")]
    Command {
        image: String,
        command: String,
        dir: PathBuf,
        status: String,
    },
    #[error("the build context {path} does not exist or is not a folder; set build.context (relative to berth.toml) to the folder that holds the Dockerfile")]
    NoContext { path: PathBuf },
    #[error("cannot read the build context {path}: {reason}")]
    Context { path: PathBuf, reason: String },
    #[error("{path} changed while the build context was sent, so the image would not match its content hash; build again once it is saved")]
    Changed { path: PathBuf },
    #[error(
        "the Dockerfile {path} does not exist; set build.dockerfile (relative to build.context)"
    )]
    NoDockerfile { path: PathBuf },
    #[error("{image} is not an image name the Docker Engine accepts; rename the app or the container's image (name = …) to lowercase letters and digits separated by one '.', one or two '_', or '-'")]
    Name { image: String },
    #[error("building {image} failed{}: {message}\n{}", .step.as_ref().map(|s| format!(" at {s}")).unwrap_or_default(), .output.join("\n"))]
    Failed {
        image: String,
        step: Option<String>,
        message: String,
        /// The last lines the build printed.
        output: Vec<String>,
    },
    #[error("the Docker Engine could not look up or build {image}: {reason}; check that Docker runs, or set DOCKER_HOST")]
    Engine { image: String, reason: String },
}

/// What a build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// `berth-dev/<app>-<name>:<tag>`.
    pub image: String,
    pub content_hash: String,
    /// The image was already there with the same inputs, so nothing was built.
    pub up_to_date: bool,
}

/// One image for an engine to build: the context already hashed, and archived as the
/// engine reads it.
pub struct ImageBuild<'a> {
    /// The name and tag to give the image: `berth-dev/<app>-<name>:<tag>`.
    pub image: &'a str,
    /// Where the Dockerfile, build args and target come from.
    pub spec: &'a BuildSpec,
    /// To record on the image, for [`Builder::recorded_hash`] to find.
    pub content_hash: &'a str,
    /// The context as a tar archive, produced as it is read.
    pub context: Archive,
}

/// An engine that builds images.
///
/// A trait so that whoever builds is handed the engine rather than tied to Docker: a
/// session or a benchmark uses the engine it runs on, and tests stand in a fake. It holds
/// only what differs between engines. Running `build.command`, reading and hashing the
/// context and deciding whether anything needs building are the same for all, in
/// [`build`], so that no engine can decide differently.
#[async_trait]
pub trait Builder: Send + Sync {
    /// Whether the engine has `image`: `berth dev` never pulls, so a prebuilt image must
    /// be there already.
    async fn has_image(&self, image: &str) -> Result<bool, BuildError>;

    /// The content hash recorded on `image` when it was built, or `None` if there is no
    /// such image or it has none. A fixed tag says nothing about what is in an image, so
    /// the hash is kept on the image itself, under [`CONTENT_HASH_LABEL`].
    async fn recorded_hash(&self, image: &str) -> Result<Option<String>, BuildError>;

    /// Builds and names the image, recording its content hash; each line of output goes
    /// to `progress`.
    ///
    /// The lifetime of a line is spelt out because `#[async_trait]` would otherwise tie
    /// it to one the caller picks, and lines the engine reads could not be passed on.
    async fn build_image(
        &self,
        build: ImageBuild<'_>,
        progress: &mut (dyn for<'line> FnMut(&'line str) + Send),
    ) -> Result<(), BuildError>;
}

/// Who asks for a build.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The app's name, which comes first in the image's: two apps may both have a `web`.
    pub app: &'a str,
    /// The manifest file; `build.command` runs in its folder.
    pub manifest: &'a Path,
}

/// Runs `build.command` (in the manifest's folder), then has `builder` build the image
/// `berth-dev/<app>-<name>` unless an image with the same inputs exists. Each line of
/// output goes to `progress`.
pub async fn build(
    builder: &dyn Builder,
    spec: &BuildSpec,
    origin: Origin<'_>,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Built, BuildError> {
    let image_name = name::repository(origin.app, &spec.name)?;
    if let Some(command) = &spec.command {
        let dir = origin.manifest.parent().unwrap_or(Path::new("."));
        run_command(command, &image_name, dir, progress).await?;
    }

    let context = spec.context.clone();
    let dockerfile = spec.dockerfile.clone();
    let read = tokio::task::spawn_blocking(move || read_context(&context, &dockerfile))
        .await
        .map_err(|e| BuildError::Context {
            path: spec.context.clone(),
            reason: e.to_string(),
        })??;
    if !read.skipped.is_empty() {
        progress(&format!(
            "left out of the context, as neither files, folders nor links: {}",
            read.skipped.join(", ")
        ));
    }
    let hash = content_hash(&read.entries, spec);
    let tag = spec.tag.clone().unwrap_or_else(|| hash[..12].to_string());
    let image = format!("{image_name}:{tag}");

    // An engine that cannot answer is asked to build all the same; if it is really gone,
    // that error says so.
    if let Ok(Some(recorded)) = builder.recorded_hash(&image).await {
        if recorded == hash {
            progress(&format!("{image} is up to date"));
            return Ok(Built {
                image,
                content_hash: hash,
                up_to_date: true,
            });
        }
    }

    progress(&format!("building {image} from {}", spec.context.display()));
    let build = ImageBuild {
        image: &image,
        spec,
        content_hash: &hash,
        context: Archive::start(read),
    };
    builder.build_image(build, progress).await?;
    progress(&format!("built {image}"));
    Ok(Built {
        image,
        content_hash: hash,
        up_to_date: false,
    })
}

/// Runs `command` with `sh -c` in `dir`.
async fn run_command(
    command: &str,
    image_name: &str,
    dir: &Path,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), BuildError> {
    progress(&format!("running {command}"));
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .status()
        .await;
    let failure = match status {
        Ok(s) if s.success() => None,
        Ok(s) => Some(s.to_string()),
        Err(e) => Some(format!("could not run sh: {e}")),
    };
    match failure {
        None => Ok(()),
        Some(status) => Err(BuildError::Command {
            image: image_name.to_string(),
            command: command.to_string(),
            dir: dir.to_path_buf(),
            status,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
