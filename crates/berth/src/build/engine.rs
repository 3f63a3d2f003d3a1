//! What an engine does for a build, and what it is handed.

use async_trait::async_trait;

use super::{Archive, BuildError, BuildSpec};

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
/// [`build`](super::build), so that no engine can decide differently.
#[async_trait]
pub trait Builder: Send + Sync {
    /// Whether the engine has `image`: `berth dev` never pulls, so a prebuilt image must
    /// be there already.
    async fn has_image(&self, image: &str) -> Result<bool, BuildError>;

    /// The content hash recorded on `image` when it was built, or `None` if there is no
    /// such image or it has none. A fixed tag says nothing about what is in an image, so
    /// the hash is kept on the image itself, under [`CONTENT_HASH_LABEL`](super::CONTENT_HASH_LABEL).
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

    /// Removes the images of `repository` tagged other than `keep`, unless a container
    /// uses them (those are left, without a word), and returns the tags it removed.
    /// Otherwise every change to a context would leave one more image behind.
    async fn remove_superseded(
        &self,
        repository: &str,
        keep: &str,
    ) -> Result<Vec<String>, BuildError>;

    /// Names `image` `target` (`<registry>/<repository>:<tag>`), pushes it, and returns
    /// the reference by digest the registry gave it (`<registry>/<repository>@sha256:…`).
    async fn push(
        &self,
        image: &str,
        target: &str,
        progress: &mut (dyn for<'line> FnMut(&'line str) + Send),
    ) -> Result<String, BuildError>;

    /// Pulls `reference` (by digest) into the engine.
    async fn pull(&self, reference: &str) -> Result<(), BuildError>;
}
