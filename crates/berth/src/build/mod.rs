//! Images from Dockerfiles.
//!
//! Honouring `.dockerignore`, the context's files are hashed (with the Dockerfile path,
//! the build args and the target), then streamed to the engine as a tar, each file
//! checked against its hash on the way (`context`, `archive`). The hash is the default
//! tag and is stored as a label on the image, so an unchanged context skips the build and
//! a changed one rebuilds, whatever the tag. A build then removes the images of the same
//! repository it supersedes, unless a container uses them.
//!
//! Deciding what to build is the same for every engine and lives here; the engine is
//! behind [`Builder`], which the Docker Engine API implements (in `docker`).

mod archive;
mod context;
mod docker;
mod engine;
mod file;
mod ignore;
mod name;
mod registry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use archive::{Archive, Failure};
use context::{content_hash, read_context};
pub use engine::{Builder, ImageBuild};

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
    #[error("pushing {image} failed: {reason}; check that the registry runs and that the engine may push to it (a registry other than on loopback must be an insecure-registries entry of the Docker daemon, or serve TLS)")]
    Push { image: String, reason: String },
    #[error("pulling {image} failed: {reason}")]
    Pull { image: String, reason: String },
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
    let manifest = origin.manifest.to_path_buf();
    let read = tokio::task::spawn_blocking(move || read_context(&context, &dockerfile, &manifest))
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
            remove_superseded(builder, &image_name, &image, progress).await;
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
    remove_superseded(builder, &image_name, &image, progress).await;
    Ok(Built {
        image,
        content_hash: hash,
        up_to_date: false,
    })
}

/// Removes the app's other images of this repository that no container uses. A failure
/// is only reported: the image that was asked for is there.
async fn remove_superseded(
    builder: &dyn Builder,
    repository: &str,
    keep: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) {
    match builder.remove_superseded(repository, keep).await {
        Ok(removed) => {
            for image in removed {
                progress(&format!("removed {image}, superseded by {keep}"));
            }
        }
        Err(e) => progress(&format!("could not remove superseded images: {e}")),
    }
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
mod tests;
