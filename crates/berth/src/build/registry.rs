//! Moving images between the Docker Engine and a registry: `berth deploy` pushes what it
//! built, `berth serve` pulls what a deployment names, always by digest.

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    CreateImageOptionsBuilder, PushImageOptionsBuilder, TagImageOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::BuildError;

/// Splits `name:tag` (a registry's `host:port` may hold a colon too) into name and tag.
fn split_tag(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

/// Names `image` `target` (`<registry>/<repository>:<tag>`), pushes it, and returns the
/// reference by digest that the registry gave it: `<registry>/<repository>@sha256:…`.
pub(super) async fn push(
    docker: &Docker,
    image: &str,
    target: &str,
    progress: &mut (dyn for<'line> FnMut(&'line str) + Send),
) -> Result<String, BuildError> {
    let failed = |reason: String| BuildError::Push {
        image: target.to_string(),
        reason,
    };
    let (repository, tag) = split_tag(target);
    let options = TagImageOptionsBuilder::new()
        .repo(repository)
        .tag(tag)
        .build();
    docker
        .tag_image(image, Some(options))
        .await
        .map_err(|e| failed(e.to_string()))?;
    let options = PushImageOptionsBuilder::new().tag(tag).build();
    // The engine wants a credentials header even for a registry that needs none.
    let mut stream = docker.push_image(
        repository,
        Some(options),
        Some(DockerCredentials::default()),
    );
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| failed(e.to_string()))?;
        if let Some(error) = info.error_detail.and_then(|d| d.message) {
            return Err(failed(error));
        }
        if let Some(status) = info.status.filter(|s| s.contains("digest:")) {
            progress(&status);
        }
    }
    let inspected = docker
        .inspect_image(target)
        .await
        .map_err(|e| failed(e.to_string()))?;
    inspected
        .repo_digests
        .unwrap_or_default()
        .into_iter()
        .find(|d| {
            d.split_once('@')
                .is_some_and(|(name, _)| name == repository)
        })
        .ok_or_else(|| failed("the engine recorded no digest for the pushed image".into()))
}

/// Pulls `reference` into the engine.
pub(super) async fn pull(
    docker: &Docker,
    reference: &str,
    progress: &mut (dyn for<'line> FnMut(&'line str) + Send),
) -> Result<(), BuildError> {
    let failed = |reason: String| BuildError::Pull {
        image: reference.to_string(),
        reason,
    };
    let options = CreateImageOptionsBuilder::new()
        .from_image(reference)
        .build();
    let mut stream = docker.create_image(Some(options), None, Some(DockerCredentials::default()));
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| failed(e.to_string()))?;
        if let Some(error) = info.error_detail.and_then(|d| d.message) {
            return Err(failed(error));
        }
        if let Some(status) = info
            .status
            .filter(|s| s.starts_with("Digest") || s.starts_with("Status"))
        {
            progress(&status);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_tag;

    #[test]
    fn a_registry_port_is_not_a_tag() {
        assert_eq!(
            split_tag("127.0.0.1:5000/a-b:c1"),
            ("127.0.0.1:5000/a-b", "c1")
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/a-b"),
            ("127.0.0.1:5000/a-b", "latest")
        );
        assert_eq!(split_tag("a:1"), ("a", "1"));
    }
}
