//! Moving images between the Docker Engine and a registry: `berth deploy` pushes what it
//! built, `berth serve` pulls what a deployment names, always by digest.

use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
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

/// The digest in the engine's last line of a push, `<tag>: digest: sha256:… size: …`.
fn pushed_digest(status: &str) -> Option<&str> {
    let mut words = status.split_whitespace();
    words.find(|w| *w == "digest:")?;
    words.next().filter(|d| {
        d.strip_prefix("sha256:")
            .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// Names `image` `target` (`<registry>/<repository>:<tag>`), pushes it, and returns the
/// reference by digest that the registry gave it: `<registry>/<repository>@sha256:…`.
///
/// The digest is the one the engine reports for this push. The engine's record of the
/// image may hold several digests of one repository (pushed or pulled before), so it is
/// only asked when the push reported none.
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
    let mut pushed = None;
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| failed(e.to_string()))?;
        if let Some(error) = info.error_detail.and_then(|d| d.message) {
            return Err(failed(error));
        }
        if let Some(status) = info.status.filter(|s| s.contains("digest:")) {
            pushed = pushed_digest(&status).map(str::to_string);
            progress(&status);
        }
    }
    if let Some(digest) = pushed {
        return Ok(format!("{repository}@{digest}"));
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

/// The advice for a pull that failed short of the registry's answer.
const UNREACHABLE: &str = "check that the registry runs and that this engine can reach it";

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
        let info = match item {
            Ok(info) => info,
            // The registry answered, without this manifest.
            Err(BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            }) => {
                return Err(failed(format!(
                    "the registry has no image with that digest ({message}); check that \
                     the reference is one a push returned, to this registry, or push the \
                     image again"
                )))
            }
            Err(e) => return Err(failed(format!("{e}; {UNREACHABLE}"))),
        };
        if let Some(error) = info.error_detail.and_then(|d| d.message) {
            return Err(failed(format!("{error}; {UNREACHABLE}")));
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
    use super::{pushed_digest, split_tag};

    #[test]
    fn the_digest_comes_from_the_last_line_of_a_push() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let status = format!("v1: digest: {digest} size: 528");
        assert_eq!(pushed_digest(&status), Some(digest.as_str()));
        assert_eq!(pushed_digest("v1: digest: sha256:abc size: 528"), None);
        assert_eq!(pushed_digest("Pushed"), None);
    }

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
