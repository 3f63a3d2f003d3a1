//! Rollouts by the platform of `berth serve`, on the fake runtime: the share of running
//! instances each step replaces, and a halt when the new version fails.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth::api::{DeployRequest, DeploymentView};
use berth::build::{BuildError, Builder, ImageBuild};
use berth::platform::Platform;
use berth::runtime::fake::{Behaviour, FakeRuntime};
use berth::{Env, Store, Worker};
use http::{Request, StatusCode};
use tokio::time::sleep;

/// An engine that has every image already: deploys name prebuilt images.
struct Present;

#[async_trait]
impl Builder for Present {
    async fn has_image(&self, _image: &str) -> Result<bool, BuildError> {
        Ok(true)
    }

    async fn recorded_hash(&self, _image: &str) -> Result<Option<String>, BuildError> {
        Ok(None)
    }

    async fn build_image(
        &self,
        build: ImageBuild<'_>,
        _progress: &mut (dyn for<'line> FnMut(&'line str) + Send),
    ) -> Result<(), BuildError> {
        Err(BuildError::Engine {
            image: build.image.to_string(),
            reason: "this engine builds nothing".into(),
        })
    }

    async fn remove_superseded(&self, _: &str, _: &str) -> Result<Vec<String>, BuildError> {
        Ok(Vec::new())
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

    async fn pull(&self, _reference: &str) -> Result<(), BuildError> {
        Ok(())
    }
}

fn manifest(image: &str) -> String {
    format!(
        r#"
name = "ignored"
[containers.app]
class_name = "App"
image = "{image}"
rollout = {{ steps = [10, 100], grace = "1s" }}
[containers.app.class]
default_port = 8080
sleep_after = "1h"
[workers.web]
bindings = {{ APP = "app" }}
routes = [{{ path = "/*", binding = "APP", instance = {{ from = "header", name = "x-user" }} }}]
"#
    )
}

async fn deploy(platform: &Arc<Platform>, app: &str, image: &str) -> DeploymentView {
    let request = DeployRequest {
        manifest: manifest(image),
        images: BTreeMap::new(),
        source: "here:/app".into(),
        adopt: false,
        dry_run: false,
    };
    let answer = platform.deploy(app, request).await.expect("deploy");
    let number = answer.deployment.expect("a deployment");
    for _ in 0..600 {
        let view = platform.deployment(app, number).await.expect("deployment");
        if view.status != "rolling-out" {
            return view;
        }
        sleep(Duration::from_millis(100)).await;
    }
    panic!("the rollout of {image} did not end");
}

async fn get(platform: &Platform, app: &str, user: &str) -> StatusCode {
    let request = Request::get("/")
        .header("host", format!("web.{app}.localhost"))
        .header("x-user", user)
        .body(berth::http::full(""))
        .expect("request");
    platform.fetch(request, &Env::new()).await.status()
}

fn running(fake: &FakeRuntime) -> BTreeSet<String> {
    fake.running().into_iter().collect()
}

#[tokio::test(start_paused = true)]
async fn a_rollout_replaces_a_tenth_first_and_a_failing_version_halts_it() {
    let fake = FakeRuntime::new();
    fake.image("fake/app:1", Behaviour::default());
    let dies = Behaviour {
        exit_after: Some((Duration::from_millis(1), 3)),
        ..Behaviour::default()
    };
    fake.image("fake/app:2", dies);
    fake.image("fake/app:3", Behaviour::default());
    let platform = Platform::start(
        fake.clone(),
        Arc::new(Present),
        Store::in_memory().expect("store"),
    )
    .await
    .expect("platform");
    let app = format!("rollout-{}", std::process::id());
    assert_eq!(deploy(&platform, &app, "fake/app:1").await.status, "active");
    let users: Vec<String> = (0..10).map(|i| format!("user-{i}")).collect();
    for user in &users {
        assert_eq!(get(&platform, &app, user).await, StatusCode::OK);
    }
    let first = running(&fake);
    assert_eq!(first.len(), 10);

    // The first step replaces one instance in ten; it dies, so the rollout halts there.
    let failed = deploy(&platform, &app, "fake/app:2").await;
    assert_eq!(failed.status, "failed");
    assert!(
        failed
            .message
            .contains("rollout halted, deployment 1 restored"),
        "{}",
        failed.message
    );
    assert!(
        failed.message.contains("exited with code 3"),
        "{}",
        failed.message
    );
    let after = running(&fake);
    assert_eq!(
        after.intersection(&first).count(),
        9,
        "nine were never touched"
    );
    for user in &users {
        assert_eq!(
            get(&platform, &app, user).await,
            StatusCode::OK,
            "the old version serves {user}"
        );
    }

    // A good version replaces all of them, in two steps.
    assert_eq!(deploy(&platform, &app, "fake/app:3").await.status, "active");
    for user in &users {
        assert_eq!(get(&platform, &app, user).await, StatusCode::OK);
    }
    let last = running(&fake);
    assert_eq!(last.len(), 10);
    assert!(
        last.is_disjoint(&first),
        "every instance runs the new version"
    );
    platform.destroy(&app).await.expect("destroy");
    assert!(fake.running().is_empty());
}
