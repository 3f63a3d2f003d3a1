//! [`Builder`] for [`DockerRuntime`]: images built by the Docker Engine, through `bollard`.

use std::collections::HashMap;

use async_trait::async_trait;
use bollard::errors::Error as BollardError;
use bollard::models::ImageInspect;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::{BuildError, Builder, ImageBuild, CONTENT_HASH_LABEL};
use crate::runtime::docker::DockerRuntime;

/// How many of the last lines of build output a failure shows.
const OUTPUT_LINES: usize = 20;

#[async_trait]
impl Builder for DockerRuntime {
    async fn has_image(&self, image: &str) -> Result<bool, BuildError> {
        Ok(inspect(self.docker(), image).await?.is_some())
    }

    async fn recorded_hash(&self, image: &str) -> Result<Option<String>, BuildError> {
        Ok(inspect(self.docker(), image)
            .await?
            .and_then(|existing| existing.config)
            .and_then(|config| config.labels)
            .and_then(|mut labels| labels.remove(CONTENT_HASH_LABEL)))
    }

    async fn build_image(
        &self,
        build: ImageBuild<'_>,
        progress: &mut (dyn for<'line> FnMut(&'line str) + Send),
    ) -> Result<(), BuildError> {
        let image = build.image.to_string();
        // A fixed tag moves to the new image and leaves the old one untagged, where no
        // repository filter finds it again: it goes now, unless a container uses it.
        let before = inspect(self.docker(), &image).await?.and_then(|i| i.id);
        send(self.docker(), build, progress).await?;
        let after = inspect(self.docker(), &image).await?.and_then(|i| i.id);
        if let Some(old) = before.filter(|old| Some(old) != after.as_ref()) {
            let _ = remove_unused(self.docker(), &old).await;
        }
        Ok(())
    }

    async fn push(
        &self,
        image: &str,
        target: &str,
        progress: &mut (dyn for<'line> FnMut(&'line str) + Send),
    ) -> Result<String, BuildError> {
        super::registry::push(self.docker(), image, target, progress).await
    }

    async fn pull(&self, reference: &str) -> Result<(), BuildError> {
        super::registry::pull(self.docker(), reference, &mut |_| {}).await
    }

    async fn remove_superseded(
        &self,
        repository: &str,
        keep: &str,
    ) -> Result<Vec<String>, BuildError> {
        let engine = |e: BollardError| BuildError::Engine {
            image: repository.to_string(),
            reason: e.to_string(),
        };
        // Without a tag, the filter matches every tag of the repository.
        let filters = HashMap::from([("reference", vec![repository])]);
        let options = ListImagesOptionsBuilder::new().filters(&filters).build();
        let images = self
            .docker()
            .list_images(Some(options))
            .await
            .map_err(engine)?;
        let prefix = format!("{repository}:");
        let mut removed = Vec::new();
        let tags = images.iter().flat_map(|image| &image.repo_tags);
        for tag in tags.filter(|tag| tag.starts_with(&prefix) && *tag != keep) {
            if remove_unused(self.docker(), tag).await.map_err(engine)? {
                removed.push(tag.clone());
            }
        }
        Ok(removed)
    }
}

/// Removes an image (or only its tag, if it has others) unless a container uses it;
/// whether it did.
async fn remove_unused(docker: &Docker, image: &str) -> Result<bool, BollardError> {
    // Its untagged parent layers stay: another build, of this app or another, may be using
    // them as its cache right now, and would fail if they went ("failed to get digest").
    let options = RemoveImageOptionsBuilder::new()
        .force(false)
        .noprune(true)
        .build();
    match docker.remove_image(image, Some(options), None).await {
        Ok(_) => Ok(true),
        // In use by a container (409), or gone already (404).
        Err(BollardError::DockerResponseServerError {
            status_code: 409 | 404,
            ..
        }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The label naming the repository an image was built for.
const REPOSITORY_LABEL: &str = "berth.repository";

/// `name` without its `:tag`, if it has one (a `:` before the last `/` is a port).
fn repository_of(image: &str) -> &str {
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

/// The image, or `None` if the engine does not have it.
async fn inspect(docker: &Docker, image: &str) -> Result<Option<ImageInspect>, BuildError> {
    match docker.inspect_image(image).await {
        Ok(found) => Ok(Some(found)),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(BuildError::Engine {
            image: image.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Sends the build and streams its output to `progress`, remembering the step it is at
/// and the last lines, so that a failure says where and shows why.
async fn send(
    docker: &Docker,
    build: ImageBuild<'_>,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), BuildError> {
    let spec = build.spec;
    let image = build.image;
    // The repository on the image makes its id its own: two apps with the same context
    // would otherwise share one image, and one app's pruning would delete it under the
    // other's build between "Successfully built" and the tag ("failed to get digest").
    let repository = repository_of(image);
    let labels = HashMap::from([
        (CONTENT_HASH_LABEL, build.content_hash),
        (REPOSITORY_LABEL, repository),
    ]);
    let args: HashMap<&str, &str> = spec
        .args
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut options = BuildImageOptionsBuilder::new()
        .dockerfile(&spec.dockerfile)
        .t(image)
        .rm(true)
        .forcerm(true)
        .labels(&labels)
        .buildargs(&args);
    if let Some(target) = &spec.target {
        options = options.target(target);
    }
    let (body, archive) = build.context.into_stream();
    let mut stream =
        docker.build_image(options.build(), None, Some(bollard::body_try_stream(body)));
    let mut step = None;
    let mut output: Vec<String> = Vec::new();
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            // An upload that broke off is an error to the engine; the archive knows why.
            Err(_) if archive.has_failed() => break,
            Err(BollardError::DockerResponseServerError { message, .. })
            | Err(BollardError::DockerStreamError { error: message }) => {
                return Err(BuildError::Failed {
                    image: image.to_string(),
                    step,
                    message,
                    output,
                })
            }
            Err(e) => {
                return Err(BuildError::Engine {
                    image: image.to_string(),
                    reason: e.to_string(),
                })
            }
        };
        if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
            for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                if line.starts_with("Step ") || line.starts_with("#") {
                    step = Some(line.to_string());
                }
                progress(line);
                output.push(line.to_string());
                if output.len() > OUTPUT_LINES {
                    output.remove(0);
                }
            }
        }
        if let Some(detail) = info.error_detail {
            if archive.has_failed() {
                break;
            }
            return Err(BuildError::Failed {
                image: image.to_string(),
                step,
                message: detail.message.unwrap_or_else(|| "the build failed".into()),
                output,
            });
        }
    }
    match archive.take() {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::repository_of;

    #[test]
    fn the_repository_is_the_name_without_its_tag() {
        assert_eq!(repository_of("berth-dev/app-web:abc"), "berth-dev/app-web");
        assert_eq!(
            repository_of("127.0.0.1:5000/app/web:1"),
            "127.0.0.1:5000/app/web"
        );
        assert_eq!(
            repository_of("127.0.0.1:5000/app/web"),
            "127.0.0.1:5000/app/web"
        );
        assert_eq!(repository_of("web"), "web");
    }
}
