//! `berth serve --engine swarm` as the cluster's routers: a global service, one router per
//! node on the overlay, each publishing its port on its node. The test reaches them at
//! the nodes' addresses; every router takes any request, and each object's lifecycle
//! runs on its home router.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cluster::{self, Cluster, MANAGER_API_PORT, OVERLAY};

pub const SERVICE: &str = "berth-router";
/// The cluster's store (`berth store`).
pub const STORE_SERVICE: &str = "berth-store";
const PUBLIC_PORT: u16 = 8080;
pub const CONTROL_PORT: u16 = 7878;
pub const HOST: &str = "web.swarm.localhost";

/// The routers, running, with the app deployed to each.
pub struct Routers {
    pub token: String,
    /// Each node's public address (`ip:port`), in node order.
    pub public: Vec<String>,
}

/// One HTTP/1.1 request; status, headers and body as text.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream
        .write_all(text.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| format!("{addr}{path}: no answer in 120 s"))?
        .map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not HTTP: {answer:?}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The routers that still answer (an earlier scenario may have killed one), in order.
pub async fn answering(routers: &Routers) -> Vec<usize> {
    let mut alive = Vec::new();
    for (i, addr) in routers.public.iter().enumerate() {
        if request(addr, "GET", "/", &[("Host", "nobody.localhost")], "")
            .await
            .is_ok()
        {
            alive.push(i);
        }
    }
    alive
}

/// `GET path` for object `name` of the app, through router `router`.
pub async fn get(
    routers: &Routers,
    router: usize,
    name: &str,
    path: &str,
) -> Result<(u16, String), String> {
    request(
        &routers.public[router],
        "GET",
        path,
        &[("Host", HOST), ("x-name", name)],
        "",
    )
    .await
}

/// The manifest every router gets: one class of the test server, whose object is named
/// by the `x-name` header; it sleeps after 8 s without requests.
pub fn manifest(image: &str) -> String {
    manifest_with(image, "")
}

/// [`manifest`], with `message` as the class's `MESSAGE` (what `GET /` shows).
pub fn manifest_with(image: &str, message: &str) -> String {
    format!(
        r#"name = "swarm"
[containers.echo]
class_name = "Echo"
image = "{image}"
[containers.echo.class]
default_port = 8080
sleep_after = "8s"
env_vars = {{ MESSAGE = "{message}" }}
[workers.web]
bindings = {{ ECHO = "echo" }}
routes = [
  {{ path = "/start/*", binding = "ECHO", instance = {{ from = "header", name = "x-name" }}, start_only = true }},
  {{ path = "/peek/*", binding = "ECHO", instance = {{ from = "header", name = "x-name" }}, wake = false }},
  {{ path = "/*", binding = "ECHO", instance = {{ from = "header", name = "x-name" }} }},
]
"#
    )
}

impl Routers {
    /// Starts the routers' global service, and deploys the app to each router.
    pub async fn start(cluster: &Cluster) -> Routers {
        let image = cluster::router_image().await;
        for node in &cluster.nodes {
            cluster::load_image(node, &image).await;
        }
        let token: String = {
            let mut bytes = [0u8; 32];
            std::io::Read::read_exact(
                &mut std::fs::File::open("/dev/urandom").expect("urandom"),
                &mut bytes,
            )
            .expect("random");
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        };
        let manager = cluster.manager();
        let script = format!(
            "printf %s {token} | docker -H unix://{} secret create berth-token - >/dev/null",
            manager.socket.display()
        );
        cluster::run(tokio::process::Command::new("sh").args(["-c", &script])).await;
        // The cluster's store, on the manager, where the objects' storage lives.
        cluster::run(manager.docker().args([
            "service",
            "create",
            "-d",
            "--name",
            STORE_SERVICE,
            "--network",
            OVERLAY,
            "--endpoint-mode",
            "dnsrr",
            "--no-resolve-image",
            "--init",
            "--constraint",
            "node.role==manager",
            "--secret",
            "source=berth-token,target=berth-token",
            &image,
            "store",
            "--token-file",
            "/run/secrets/berth-token",
            "--data",
            "/data",
        ]))
        .await;
        cluster::run(manager.docker().args([
            "service",
            "create",
            "-d",
            "--name",
            SERVICE,
            "--mode",
            "global",
            "--network",
            OVERLAY,
            "--endpoint-mode",
            "dnsrr",
            "--no-resolve-image",
            "--init",
            // A router that dies stays dead, so that the test decides who is alive.
            "--restart-condition",
            "none",
            "--publish",
            &format!("mode=host,target={PUBLIC_PORT},published={PUBLIC_PORT}"),
            "--publish",
            &format!("mode=host,target={CONTROL_PORT},published={CONTROL_PORT}"),
            "--secret",
            "source=berth-token,target=berth-token",
            "--env",
            &format!("DOCKER_HOST=tcp://{}:{MANAGER_API_PORT}", manager.ip),
            "--env",
            "RUST_LOG=berth=info",
            &image,
            "serve",
            "--engine",
            "swarm",
            "--swarm-network",
            OVERLAY,
            "--swarm-routers",
            SERVICE,
            "--listen",
            &format!("0.0.0.0:{PUBLIC_PORT}"),
            "--control",
            &format!("0.0.0.0:{CONTROL_PORT}"),
            "--token-file",
            "/run/secrets/berth-token",
            "--data",
            "/data",
            "--swarm-store",
            STORE_SERVICE,
        ]))
        .await;
        let public: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("{}:{PUBLIC_PORT}", n.ip))
            .collect();
        let routers = Routers { token, public };
        let app = cluster::app_image().await;
        let body = serde_json::json!({
            "manifest": manifest(&app),
            "images": {},
            "source": "swarm-test",
        })
        .to_string();
        for node in &cluster.nodes {
            let control = format!("{}:{CONTROL_PORT}", node.ip);
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                match request(&control, "GET", "/v1/health", &[], "").await {
                    Ok((200, _)) => break,
                    other => {
                        if Instant::now() > deadline {
                            let logs = cluster::run(
                                manager
                                    .docker()
                                    .args(["service", "logs", "--tail", "40", SERVICE]),
                            )
                            .await;
                            panic!(
                                "the router on {} is not up after 90 s: {other:?}\n{logs}",
                                node.name
                            );
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
        // Homes are computed from each router's list: the test starts once all agree.
        let auth = format!("Bearer {}", routers.token);
        wait_for_routers(cluster, &auth).await;
        // Deployed to one router, made by all: it relays the change to the others.
        let first = format!("{}:{CONTROL_PORT}", cluster.nodes[0].ip);
        let (status, answer) = request(
            &first,
            "POST",
            "/v1/apps/swarm/deployments",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            &body,
        )
        .await
        .expect("deploy");
        assert!(status < 300, "deploy: {status} {answer}");
        for node in &cluster.nodes {
            let control = format!("{}:{CONTROL_PORT}", node.ip);
            let (status, app) = request(
                &control,
                "GET",
                "/v1/apps/swarm",
                &[("Authorization", &auth)],
                "",
            )
            .await
            .expect("app");
            assert_eq!(
                status, 200,
                "the router on {} runs the app: {app}",
                node.name
            );
        }
        routers
    }
}

/// Waits until every router that answers sees as many routers as answer.
pub async fn wait_for_routers(cluster: &Cluster, auth: &str) {
    let mut controls = Vec::new();
    for node in &cluster.nodes {
        let control = format!("{}:{CONTROL_PORT}", node.ip);
        if let Ok((200, _)) = request(&control, "GET", "/v1/health", &[], "").await {
            controls.push((control, node.name.clone()));
        }
    }
    for (control, name) in &controls {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, info) = request(control, "GET", "/v1/info", &[("Authorization", auth)], "")
                .await
                .expect("info");
            let info: serde_json::Value = serde_json::from_str(&info).expect("JSON");
            if info["routers"]
                .as_array()
                .is_some_and(|r| r.len() == controls.len())
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the router on {name} sees {info}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The app's services, as the manager lists them.
pub async fn services(cluster: &Cluster) -> Vec<String> {
    let list = cluster::run(cluster.manager().docker().args([
        "service",
        "ls",
        "--filter",
        "label=berth.app=swarm",
        "--format",
        "{{.Name}}",
    ]))
    .await;
    list.lines().map(str::to_string).collect()
}

/// Running tasks of the app's services, cluster-wide.
async fn running_tasks(cluster: &Cluster) -> usize {
    let mut running = 0;
    for service in services(cluster).await {
        let tasks = cluster::run(cluster.manager().docker().args([
            "service",
            "ps",
            &service,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.CurrentState}}",
        ]))
        .await;
        running += tasks.lines().filter(|l| l.starts_with("Running")).count();
    }
    running
}

/// What the container of `name` says of itself (`/env`: its HOSTNAME is its container).
pub async fn hostname(routers: &Routers, router: usize, name: &str) -> String {
    let (status, env) = get(routers, router, name, "/env").await.expect("an answer");
    assert_eq!(status, 200, "{env}");
    let env: serde_json::Value = serde_json::from_str(&env).expect("JSON");
    env["HOSTNAME"].as_str().unwrap_or_default().to_string()
}

/// 200 first requests for one name, sent to the three routers at once: 200 successes, one
/// service and one running task cluster-wide, and every request reached that one task.
pub async fn first_requests_through_every_router_make_one_service(
    cluster: &Cluster,
    routers: &Routers,
) {
    let mut requests = Vec::new();
    for i in 0..200 {
        let addr = routers.public[i % 3].clone();
        requests.push(tokio::spawn(async move {
            request(
                &addr,
                "GET",
                "/hit",
                &[("Host", HOST), ("x-name", "stampede")],
                "",
            )
            .await
        }));
    }
    let mut hits = BTreeSet::new();
    for request in requests {
        let (status, body) = request.await.expect("task").expect("an answer");
        assert_eq!(status, 200, "{body}");
        hits.insert(body.trim().parse::<u32>().expect("a count"));
    }
    assert_eq!(
        hits,
        (1..=200).collect(),
        "every request reached the same container"
    );
    assert_eq!(services(cluster).await.len(), 1);
    assert_eq!(running_tasks(cluster).await, 1);
    let holders = holders(cluster, routers, "stampede").await;
    assert_eq!(
        holders.len(),
        1,
        "one router runs the object's lifecycle: {holders:?}"
    );
}

/// The routers whose control API lists object `name` as running or healthy: its home only.
pub async fn holders(cluster: &Cluster, routers: &Routers, name: &str) -> Vec<usize> {
    let auth = format!("Bearer {}", routers.token);
    let mut holders = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let control = format!("{}:{CONTROL_PORT}", node.ip);
        let Ok((200, list)) = request(
            &control,
            "GET",
            "/v1/apps/swarm/instances",
            &[("Authorization", &auth)],
            "",
        )
        .await
        else {
            continue;
        };
        let list: serde_json::Value = serde_json::from_str(&list).expect("JSON");
        let holds = list.as_array().is_some_and(|all| {
            all.iter()
                .any(|i| i["name"] == name && (i["state"] == "healthy" || i["state"] == "running"))
        });
        if holds {
            holders.push(i);
        }
    }
    holders
}

/// A name is served through every router by one container; it sleeps on its home (the
/// service goes), and a request through any router wakes it on a new one.
pub async fn any_router_serves_a_name_that_sleeps_and_wakes(cluster: &Cluster, routers: &Routers) {
    let first = hostname(routers, 0, "sleeper").await;
    for router in 1..3 {
        assert_eq!(
            hostname(routers, router, "sleeper").await,
            first,
            "router {router} reaches the same container"
        );
    }
    let before = services(cluster).await.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while services(cluster).await.len() >= before {
        assert!(
            Instant::now() < deadline,
            "sleeper did not sleep within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let woken = hostname(routers, 2, "sleeper").await;
    assert_ne!(woken, first, "a new container after the sleep");
    assert_eq!(hostname(routers, 1, "sleeper").await, woken);
}

/// The home router of a running object is killed: another router becomes its home and
/// adopts its service, with the same container (its hit count goes on).
pub async fn a_killed_routers_objects_are_adopted_without_restart(
    cluster: &Cluster,
    routers: &Routers,
) {
    let name = "survivor";
    hostname(routers, 0, name).await;
    // The home made the service: its berth.host label is the router container's hostname.
    let home_host = maker_of(cluster, name)
        .await
        .expect("the service of the object names its router");
    // An object on the same home that gets no request after the kill: no request adopts
    // it, so a look of its new home must, or it would stay awake for good.
    let mut idle = None;
    for n in 0..20 {
        let candidate = format!("idle-{n}");
        hostname(routers, 0, &candidate).await;
        if maker_of(cluster, &candidate).await.as_deref() == Some(home_host.as_str()) {
            idle = Some(candidate);
            break;
        }
    }
    let idle = idle.expect("one of 20 names has the same home");
    // Taken now, just before the kill: the search above may outlast its sleep_after, and a
    // container that slept meanwhile is started again by the same home.
    let first = hostname(routers, 0, name).await;
    let (_, hits) = get(routers, 0, name, "/hit").await.expect("an answer");
    let mut killed = None;
    for (i, node) in cluster.nodes.iter().enumerate() {
        let ids = cluster::run(node.docker().args([
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("name={SERVICE}"),
        ]))
        .await;
        if ids.lines().any(|id| id.starts_with(&home_host)) {
            cluster::run(node.docker().args(["kill", &home_host])).await;
            killed = Some(i);
        }
    }
    let killed = killed.expect("the home router runs on a node");
    let other = (killed + 1) % 3;
    let began = Instant::now();
    let after = cluster::eventually(|| async {
        match get(routers, other, name, "/hit").await {
            Ok((200, body)) => Ok(body),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .expect("another router serves the object");
    eprintln!(
        "served again {:?} after its home router was killed",
        began.elapsed()
    );
    let (hits, after): (u32, u32) = (
        hits.trim().parse().expect("count"),
        after.trim().parse().expect("count"),
    );
    assert!(
        after > hits,
        "the same container goes on counting: {hits} then {after}"
    );
    assert_eq!(hostname(routers, other, name).await, first, "not restarted");
    let holders = holders(cluster, routers, name).await;
    assert_eq!(holders.len(), 1, "one router holds it now: {holders:?}");
    assert_ne!(holders[0], killed, "and not the one killed");

    let deadline = began + Duration::from_secs(120);
    while maker_of(cluster, &idle).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "{idle}, idle on the killed router, is still awake 120 s later"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "{idle}, idle on the killed router, slept {:?} after the kill",
        began.elapsed()
    );
}

/// The `berth.host` label (the router that made it) of the service of object `name`, if
/// it has one.
async fn maker_of(cluster: &Cluster, name: &str) -> Option<String> {
    for service in services(cluster).await {
        let Some(labels) = cluster::try_run(cluster.manager().docker().args([
            "service",
            "inspect",
            &service,
            "--format",
            "{{index .Spec.Labels \"berth.object-name\"}} {{index .Spec.Labels \"berth.host\"}}",
        ]))
        .await
        else {
            continue;
        };
        if let Some(host) = labels.trim().strip_prefix(&format!("{name} ")) {
            return Some(host.to_string());
        }
    }
    None
}

/// What router `router`'s control API shows of the app (`GET /v1/apps/swarm`).
pub async fn app_of(cluster: &Cluster, routers: &Routers, router: usize) -> serde_json::Value {
    let control = format!("{}:{CONTROL_PORT}", cluster.nodes[router].ip);
    let auth = format!("Bearer {}", routers.token);
    let (status, app) = request(
        &control,
        "GET",
        "/v1/apps/swarm",
        &[("Authorization", &auth)],
        "",
    )
    .await
    .expect("the app");
    assert_eq!(status, 200, "router {router} runs the app: {app}");
    serde_json::from_str(&app).expect("JSON")
}

/// The routers' running tasks.
async fn router_tasks(cluster: &Cluster) -> Vec<String> {
    let list = cluster::run(cluster.manager().docker().args([
        "service",
        "ps",
        SERVICE,
        "--filter",
        "desired-state=running",
        "-q",
    ]))
    .await;
    list.lines().map(str::to_string).collect()
}

/// Every router is replaced, one after another, by a new one with an empty data folder
/// (`docker service update --force`): no deploy reaches the new ones, so each takes the app
/// from a router that still runs it, and serves its objects.
pub async fn replaced_routers_catch_up_from_the_others(cluster: &Cluster, routers: &Routers) {
    let manager = cluster.manager();
    let source =
        app_of(cluster, routers, answering(routers).await[0]).await["deployment"]["source"].clone();
    let before = router_tasks(cluster).await;
    // An object kept awake throughout: a new router must take the app while services of
    // the others run, and the object's container must go on (taken over, not restarted).
    let kept = hostname(routers, answering(routers).await[0], "kept-awake").await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let keeper = {
        let (stop, public) = (stop.clone(), routers.public.clone());
        tokio::spawn(async move {
            let mut answered = 0;
            for _ in 0..300 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                for addr in &public {
                    let sent = request(
                        addr,
                        "GET",
                        "/",
                        &[("Host", HOST), ("x-name", "kept-awake")],
                        "",
                    );
                    if let Ok(Ok((200, _))) =
                        tokio::time::timeout(Duration::from_secs(5), sent).await
                    {
                        answered += 1;
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            answered
        })
    };
    cluster::run(manager.docker().args([
        "service",
        "update",
        "-d",
        "--force",
        "--update-parallelism",
        "1",
        SERVICE,
    ]))
    .await;
    let began = Instant::now();
    loop {
        let state = cluster::run(manager.docker().args([
            "service",
            "inspect",
            "--format",
            "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
            SERVICE,
        ]))
        .await;
        if state == "completed" {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(180) && !state.contains("paused"),
            "the routers' replacement did not complete: {state:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = keeper.await.expect("the keeper");
    assert!(
        answered > 0,
        "kept-awake was answered during the replacement"
    );
    let after = router_tasks(cluster).await;
    assert!(
        !after.is_empty() && after.iter().all(|task| !before.contains(task)),
        "every router is new: {before:?}, then {after:?}"
    );
    let auth = format!("Bearer {}", routers.token);
    wait_for_routers(cluster, &auth).await;
    let alive = answering(routers).await;
    assert!(alive.len() >= 2, "routers answer: {alive:?}");
    for &router in &alive {
        let control = format!("{}:{CONTROL_PORT}", cluster.nodes[router].ip);
        let app = cluster::eventually(|| async {
            match request(
                &control,
                "GET",
                "/v1/apps/swarm",
                &[("Authorization", &auth)],
                "",
            )
            .await
            {
                Ok((200, app)) => Ok(app),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        assert!(app.is_ok(), "the new router {router} runs the app: {app:?}");
        assert_eq!(
            app_of(cluster, routers, router).await["deployment"]["source"],
            source,
            "router {router} runs the deployment the others ran"
        );
    }
    eprintln!(
        "every router replaced and caught up {:?} after the update began",
        began.elapsed()
    );
    for &router in &alive {
        assert_eq!(
            hostname(routers, router, "kept-awake").await,
            kept,
            "router {router} reaches the container kept awake, not a new one"
        );
    }
    let first = hostname(routers, alive[0], "caught-up").await;
    for &router in &alive[1..] {
        assert_eq!(
            hostname(routers, router, "caught-up").await,
            first,
            "router {router} reaches the same container"
        );
    }
}

/// A start that is not a request (a `start_only` route) runs on the object's home, not on
/// the router that took it; a `wake = false` route through any router wakes nothing, and
/// reaches the container where it serves.
pub async fn starts_and_peeks_go_home(cluster: &Cluster, routers: &Routers) {
    let through = answering(routers).await[0];
    let mut elsewhere = None;
    for n in 0..12 {
        let name = format!("started-{n}");
        let (status, body) = get(routers, through, &name, "/start/x")
            .await
            .expect("an answer");
        assert_eq!(status, 202, "{body}");
        let held = cluster::eventually(|| async {
            match holders(cluster, routers, &name).await {
                held if held.len() == 1 => Ok(held),
                held => Err(format!("{held:?}")),
            }
        })
        .await
        .unwrap_or_else(|held| panic!("one router holds {name}: {held}"));
        if held[0] != through {
            elsewhere = Some(name);
            break;
        }
    }
    let started =
        elsewhere.expect("a name started through one router is held by its home, another");
    // Once a request made it healthy at its home, a wake = false route reaches its
    // container (whose 404 says it got the path).
    let (status, body) = get(routers, through, &started, "/hit")
        .await
        .expect("an answer");
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(routers, through, &started, "/peek/x")
        .await
        .expect("an answer");
    assert_eq!((status, body.trim()), (404, "not found: /peek/x"));
    // Asleep: no route wakes it.
    for router in answering(routers).await {
        let (status, body) = get(routers, router, "never-woken", "/peek/x")
            .await
            .expect("an answer");
        assert_eq!(status, 503, "router {router}: {body}");
    }
    assert_eq!(
        maker_of(cluster, "never-woken").await,
        None,
        "no service for never-woken"
    );
}
