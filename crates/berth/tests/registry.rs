//! Images pushed to a real registry and pulled back by digest, as `berth deploy` and
//! `berth serve` move them. The registry is the one `scripts/registry.sh` starts on
//! 127.0.0.1 (installing Debian's docker-registry if need be); the engine is the local
//! Docker Engine.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use berth::build::BuildError;
use berth::{Builder, DockerRuntime};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;

static REGISTRY: OnceLock<String> = OnceLock::new();

/// The registry's `host:port`, started (or found running) once per test process.
fn registry() -> String {
    REGISTRY
        .get_or_init(|| {
            let script =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/registry.sh");
            let output = Command::new("bash")
                .arg(&script)
                .output()
                .expect("bash runs");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                output.status.success(),
                "{} failed ({}):\n{stderr}",
                script.display(),
                output.status
            );
            let stdout = String::from_utf8_lossy(&output.stdout);
            let addr = stdout.lines().last().unwrap_or_default().trim().to_string();
            assert!(
                addr.parse::<SocketAddr>().is_ok(),
                "scripts/registry.sh printed {stdout:?}, not an address; its stderr:\n{stderr}"
            );
            addr
        })
        .clone()
}

/// A repository of the registry that no other test run uses.
fn repository(test: &str) -> String {
    format!("{}/berth-test-{test}-{}", registry(), std::process::id())
}

/// Local image names this test created, removed when it ends, even when it fails. Only
/// the names go: the image under them keeps its other names.
struct LocalNames(Vec<String>);

impl LocalNames {
    fn add(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
}

impl Drop for LocalNames {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let runtime = DockerRuntime::connect().await.expect("Docker Engine");
                for name in names {
                    let _ = untag(&runtime, &name).await;
                }
            })
        })
        .join();
    }
}

/// Removes the name `name` from the engine (the image itself too if it has no other).
async fn untag(runtime: &DockerRuntime, name: &str) -> Result<(), bollard::errors::Error> {
    let options = bollard::query_parameters::RemoveImageOptionsBuilder::new()
        .force(false)
        .noprune(true)
        .build();
    runtime
        .docker()
        .remove_image(name, Some(options), None)
        .await
        .map(|_| ())
}

/// The image id the engine has under `name`.
async fn image_id(runtime: &DockerRuntime, name: &str) -> String {
    runtime
        .docker()
        .inspect_image(name)
        .await
        .unwrap_or_else(|e| panic!("the engine has no {name}: {e}"))
        .id
        .unwrap_or_else(|| panic!("{name} has no id"))
}

/// The digest in `reference` if it is `<repository>@sha256:<64 hex digits>`.
fn digest_of<'a>(reference: &'a str, repository: &str) -> Option<&'a str> {
    let digest = reference.strip_prefix(repository)?.strip_prefix('@')?;
    let hex = digest.strip_prefix("sha256:")?;
    let well_formed = hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    well_formed.then_some(digest)
}

/// What the registry itself answers for a manifest: its status and `Docker-Content-Digest`.
async fn manifest(repository: &str, digest: &str) -> (StatusCode, Option<String>) {
    let (host, name) = repository.split_once('/').expect("registry/repository");
    let addr: SocketAddr = host.parse().expect("the registry's address");
    let request = Request::get(format!("/v2/{name}/manifests/{digest}"))
        .header(http::header::HOST, host)
        .header(
            http::header::ACCEPT,
            "application/vnd.docker.distribution.manifest.v2+json, \
             application/vnd.oci.image.manifest.v1+json",
        )
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, headers, _) = common::send(addr, request).await;
    let digest = headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, digest)
}

#[tokio::test]
async fn a_pushed_image_is_pulled_back_by_its_digest() {
    let image = common::image().await;
    let runtime = DockerRuntime::connect()
        .await
        .expect("a running Docker Engine");
    let mut names = LocalNames(Vec::new());
    let repository = repository("push");
    let target = format!("{repository}:v1");
    names.add(&target);

    let mut lines = Vec::new();
    let reference = runtime
        .push(&image, &target, &mut |line| lines.push(line.to_string()))
        .await
        .unwrap_or_else(|e| panic!("pushing {image} as {target}: {e}"));
    names.add(&reference);
    let Some(digest) = digest_of(&reference, &repository) else {
        panic!("push returned {reference:?}, not {repository}@sha256:<64 hex digits>");
    };
    assert!(
        lines.iter().any(|l| l.contains(digest)),
        "the push's progress names the digest {digest}: {lines:?}"
    );
    assert_eq!(
        manifest(&repository, digest).await,
        (StatusCode::OK, Some(digest.to_string())),
        "the registry holds the manifest the push returned"
    );

    let again = runtime
        .push(&image, &target, &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("pushing {image} as {target} again: {e}"));
    assert_eq!(
        again, reference,
        "the same image pushed again has the same digest"
    );

    // Only the pushed names go; the test image keeps its own, for other tests. The
    // engine forgets a repository's digests with its last tag.
    let original = image_id(&runtime, &image).await;
    untag(&runtime, &target)
        .await
        .unwrap_or_else(|e| panic!("removing {target}: {e}"));
    match untag(&runtime, &reference).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => panic!("removing {reference}: {e}"),
    }
    assert!(
        !runtime.has_image(&reference).await.expect("engine"),
        "{reference} is gone from the engine before the pull"
    );
    assert_eq!(image_id(&runtime, &image).await, original);

    runtime
        .pull(&reference)
        .await
        .unwrap_or_else(|e| panic!("pulling {reference}: {e}"));
    assert!(
        runtime.has_image(&reference).await.expect("engine"),
        "the engine has {reference} after the pull"
    );
    assert_eq!(
        image_id(&runtime, &reference).await,
        original,
        "the pulled image is the one that was pushed"
    );
}

#[tokio::test]
async fn pulling_a_digest_the_registry_lacks_fails_saying_what_to_check() {
    let image = common::image().await;
    let runtime = DockerRuntime::connect()
        .await
        .expect("a running Docker Engine");
    let mut names = LocalNames(Vec::new());
    let repository = repository("lacks");
    let target = format!("{repository}:v1");
    names.add(&target);
    let reference = runtime
        .push(&image, &target, &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("pushing {image} as {target}: {e}"));
    names.add(&reference);

    // A digest of the same repository that no push returned.
    let missing = format!("{repository}@sha256:{}", "0".repeat(64));
    assert_ne!(missing, reference);
    names.add(&missing);
    let error = runtime
        .pull(&missing)
        .await
        .expect_err("a digest the registry lacks cannot be pulled");
    let message = error.to_string();
    let BuildError::Pull { image: named, .. } = &error else {
        panic!("a failed pull is BuildError::Pull, not {error:?}");
    };
    assert_eq!(named, &missing);
    assert!(message.contains(&missing), "names the reference: {message}");
    assert!(
        message.contains("has no image with that digest"),
        "says what is missing: {message}"
    );
    assert!(
        message.contains("check that"),
        "says what to check: {message}"
    );
    assert!(!runtime.has_image(&missing).await.expect("engine"));
}

#[tokio::test]
async fn pulling_from_a_registry_that_does_not_run_fails_saying_so() {
    // A port that was free a moment ago, and that nothing listens on now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let runtime = DockerRuntime::connect()
        .await
        .expect("a running Docker Engine");
    let reference = format!(
        "127.0.0.1:{port}/berth-test-nowhere-{}@sha256:{}",
        std::process::id(),
        "0".repeat(64)
    );
    let error = runtime
        .pull(&reference)
        .await
        .expect_err("nothing answers on that port");
    let message = error.to_string();
    assert!(
        matches!(&error, BuildError::Pull { image, .. } if image == &reference),
        "{error:?}"
    );
    assert!(
        message.contains("check that the registry runs"),
        "says what to check: {message}"
    );
}

#[tokio::test]
async fn pushing_to_a_registry_that_does_not_run_fails_saying_so() {
    let image = common::image().await;
    let runtime = DockerRuntime::connect()
        .await
        .expect("a running Docker Engine");
    let mut names = LocalNames(Vec::new());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let target = format!(
        "127.0.0.1:{port}/berth-test-nowhere-{}:v1",
        std::process::id()
    );
    names.add(&target);
    let error = runtime
        .push(&image, &target, &mut |_| {})
        .await
        .expect_err("nothing answers on that port");
    let message = error.to_string();
    assert!(
        matches!(&error, BuildError::Push { image, .. } if image == &target),
        "{error:?}"
    );
    assert!(
        message.contains("check that the registry runs"),
        "says what to check: {message}"
    );
}
