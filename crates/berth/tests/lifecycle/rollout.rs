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
    with_extra(image, false)
}

/// The manifest, with a second class `Extra` behind worker `side` if `extra`.
fn with_extra(image: &str, extra: bool) -> String {
    let mut text = format!(
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
    );
    if extra {
        text.push_str(
            r#"
[containers.extra]
class_name = "Extra"
image = "fake/extra:1"
[containers.extra.class]
default_port = 8080
[workers.side]
bindings = { EXTRA = "extra" }
routes = [{ path = "/*", binding = "EXTRA", instance = "e" }]
"#,
        );
    }
    text
}

async fn deploy(platform: &Arc<Platform>, app: &str, image: &str) -> DeploymentView {
    deploy_text(platform, app, manifest(image)).await
}

async fn deploy_text(platform: &Arc<Platform>, app: &str, manifest: String) -> DeploymentView {
    let request = DeployRequest {
        program: Default::default(),
        manifest,
        images: BTreeMap::new(),
        source: "here:/app".into(),
        adopt: false,
        dry_run: false,
    };
    let answer = platform.deploy(app, request).await.expect("deploy");
    let number = answer.deployment.expect("a deployment");
    for _ in 0..3000 {
        let view = platform.deployment(app, number).await.expect("deployment");
        if view.status != "rolling-out" {
            return view;
        }
        sleep(Duration::from_millis(100)).await;
    }
    panic!("the rollout of deployment {number} did not end");
}

async fn get(platform: &Platform, app: &str, user: &str) -> StatusCode {
    get_at(platform, &format!("web.{app}.localhost"), "/", user).await
}

async fn get_at(platform: &Platform, host: &str, path: &str, user: &str) -> StatusCode {
    let request = Request::get(path)
        .header("host", host)
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
        std::env::temp_dir().join("berth-rollout-programs"),
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
    let metrics = platform.metrics().encode().expect("metrics");
    let done = format!("berth_rollout_progress{{app=\"{app}\",class=\"App\"}} 1.0");
    assert!(metrics.contains(&done), "{done} in:\n{metrics}");
    platform.destroy(&app).await.expect("destroy");
    assert!(fake.running().is_empty());
}

async fn images(fake: &FakeRuntime) -> Vec<String> {
    use berth::Runtime;
    let mut images = Vec::new();
    for id in fake.running() {
        images.push(fake.inspect(&id).await.expect("inspect").image);
    }
    images.sort();
    images
}

fn platform_on(fake: &Arc<FakeRuntime>) -> impl std::future::Future<Output = Arc<Platform>> {
    let fake = fake.clone();
    async move {
        Platform::start(
            fake,
            Arc::new(Present),
            Store::in_memory().expect("store"),
            std::env::temp_dir().join("berth-rollout-programs"),
        )
        .await
        .expect("platform")
    }
}

/// A class that only the failed deployment added goes with it: no container of it runs
/// on, unreachable, to clash later with the class when it comes back.
#[tokio::test(start_paused = true)]
async fn a_halted_rollout_removes_the_classes_it_added() {
    let fake = FakeRuntime::new();
    fake.image("fake/app:1", Behaviour::default());
    let dies = Behaviour {
        exit_after: Some((Duration::from_millis(1), 3)),
        ..Behaviour::default()
    };
    fake.image("fake/app:2", dies);
    fake.image("fake/extra:1", Behaviour::default());
    let platform = platform_on(&fake).await;
    let app = format!("revert-{}", std::process::id());
    assert_eq!(deploy(&platform, &app, "fake/app:1").await.status, "active");
    assert_eq!(get(&platform, &app, "u").await, StatusCode::OK);
    let request = DeployRequest {
        program: Default::default(),
        manifest: with_extra("fake/app:2", true),
        images: BTreeMap::new(),
        source: "here:/app".into(),
        adopt: false,
        dry_run: false,
    };
    let number = platform
        .deploy(&app, request)
        .await
        .expect("deploy")
        .deployment
        .expect("made");
    let side = format!("side.{app}.localhost");
    // A start of the new class under way, which the halt must end too.
    let _ = get_at(&platform, &side, "/", "x").await;
    for _ in 0..600 {
        if platform
            .deployment(&app, number)
            .await
            .expect("view")
            .status
            != "rolling-out"
        {
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        platform
            .deployment(&app, number)
            .await
            .expect("view")
            .status,
        "failed"
    );
    assert_eq!(
        get_at(&platform, &side, "/", "x").await,
        StatusCode::NOT_FOUND
    );
    sleep(Duration::from_secs(1)).await;
    let running = images(&fake).await;
    assert!(
        !running.iter().any(|i| i == "fake/extra:1"),
        "no Extra container runs on: {running:?}"
    );
    platform.destroy(&app).await.expect("destroy");
}

/// A start under way on the old version when the rollout looks is replaced too, so that
/// an active deployment runs nothing older.
#[tokio::test(start_paused = true)]
async fn a_start_under_way_during_a_rollout_ends_on_the_new_version() {
    let fake = FakeRuntime::new();
    fake.image("fake/app:1", Behaviour::default());
    fake.image("fake/app:3", Behaviour::default());
    let platform = platform_on(&fake).await;
    let app = format!("race-{}", std::process::id());
    assert_eq!(deploy(&platform, &app, "fake/app:1").await.status, "active");
    assert_eq!(get(&platform, &app, "warm").await, StatusCode::OK);
    let cold = {
        let (platform, app) = (platform.clone(), app.clone());
        tokio::spawn(async move { get(&platform, &app, "cold").await })
    };
    sleep(Duration::from_millis(10)).await;
    assert_eq!(deploy(&platform, &app, "fake/app:3").await.status, "active");
    assert_eq!(cold.await.expect("join"), StatusCode::OK);
    assert!(
        images(&fake).await.iter().all(|i| i == "fake/app:3"),
        "{:?}",
        images(&fake).await
    );
    platform.destroy(&app).await.expect("destroy");
}

/// A request to an instance that drains for a long rollout grace waits for the new
/// version, however long the grace.
#[tokio::test(start_paused = true)]
async fn a_request_waits_out_a_long_grace() {
    let fake = FakeRuntime::new();
    fake.image("fake/app:1", Behaviour::default());
    fake.image("fake/app:3", Behaviour::default());
    let platform = platform_on(&fake).await;
    let app = format!("grace-{}", std::process::id());
    let long = |image: &str| manifest(image).replace("grace = \"1s\"", "grace = \"2m\"");
    assert_eq!(
        deploy_text(&platform, &app, long("fake/app:1"))
            .await
            .status,
        "active"
    );
    assert_eq!(get(&platform, &app, "u").await, StatusCode::OK);
    let host = format!("web.{app}.localhost");
    let slow = {
        let (platform, host) = (platform.clone(), host.clone());
        tokio::spawn(async move { get_at(&platform, &host, "/sleep/90000", "u").await })
    };
    sleep(Duration::from_millis(50)).await;
    let rollout = {
        let (platform, app) = (platform.clone(), app.clone());
        tokio::spawn(async move { deploy_text(&platform, &app, long("fake/app:3")).await })
    };
    sleep(Duration::from_millis(500)).await;
    assert_eq!(
        get(&platform, &app, "u").await,
        StatusCode::OK,
        "after the drain, on the new version"
    );
    assert_eq!(
        slow.await.expect("join"),
        StatusCode::OK,
        "the request in flight finished"
    );
    assert_eq!(rollout.await.expect("join").status, "active");
    platform.destroy(&app).await.expect("destroy");
}

/// Two apps deployed at once that both claim a host: one gets it, the other is refused.
#[tokio::test(start_paused = true)]
async fn two_apps_cannot_both_claim_a_host() {
    let fake = FakeRuntime::new();
    fake.image("fake/app:1", Behaviour::default());
    let platform = platform_on(&fake).await;
    let request = || DeployRequest {
        program: Default::default(),
        manifest: manifest("fake/app:1").replace(
            "[workers.web]\n",
            "[workers.web]\nhosts = [\"shared.example.com\"]\n",
        ),
        images: BTreeMap::new(),
        source: "here:/app".into(),
        adopt: false,
        dry_run: false,
    };
    let (one, two) = (
        format!("one-{}", std::process::id()),
        format!("two-{}", std::process::id()),
    );
    let (a, b) = tokio::join!(
        platform.deploy(&one, request()),
        platform.deploy(&two, request())
    );
    assert!(
        a.is_ok() != b.is_ok(),
        "exactly one: {:?} / {:?}",
        a.map(|r| r.deployment),
        b.map(|r| r.deployment)
    );
    let refused = a.err().or(b.err()).expect("one refused").to_string();
    assert!(
        refused.contains("host shared.example.com is already served by app"),
        "{refused}"
    );
    for app in [one, two] {
        let _ = platform.destroy(&app).await;
    }
}

/// A rollout that a stop of berth serve cut short was never proven: the restarted server
/// marks it failed and brings the app back on the deployment before it.
#[tokio::test(start_paused = true)]
async fn a_rollout_cut_short_by_a_restart_is_undone() {
    use berth::store::{Deployment, DeploymentStatus};
    let fake = FakeRuntime::new();
    fake.image("fake/app:1", Behaviour::default());
    fake.image("fake/app:2", Behaviour::default());
    let store = Store::in_memory().expect("store");
    let app = format!("cut-{}", std::process::id());
    for (image, status) in [
        ("fake/app:1", DeploymentStatus::Active),
        ("fake/app:2", DeploymentStatus::RollingOut),
    ] {
        let deployment = Deployment {
            app: app.clone(),
            number: 0,
            manifest: manifest(image),
            program: BTreeMap::new(),
            images: BTreeMap::new(),
            source: "here:/app".into(),
            fingerprint: image.into(),
            status,
            message: String::new(),
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        store.add_deployment(deployment).await.expect("recorded");
    }
    let programs = std::env::temp_dir().join("berth-rollout-programs");
    let platform = Platform::start(fake.clone(), Arc::new(Present), store, programs)
        .await
        .expect("platform");
    let view = platform.app(&app).await.expect("restored");
    assert_eq!(view.deployment.number, 1);
    assert_eq!(view.deployment.status, "active");
    let cut = platform.deployment(&app, 2).await.expect("deployment 2");
    assert_eq!(cut.status, "failed");
    assert!(
        cut.message.contains("restarted before its rollout ended"),
        "{}",
        cut.message
    );
    assert_eq!(get(&platform, &app, "u").await, StatusCode::OK);
    assert_eq!(images(&fake).await, ["fake/app:1"]);
    platform.destroy(&app).await.expect("destroy");
}
