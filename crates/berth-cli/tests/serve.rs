//! `berth serve`, `berth deploy`, `berth rollback` and `berth destroy`, driven as a user
//! drives them: the real binary, a real OCI registry (`scripts/registry.sh`), HTTP
//! requests by `Host`, signals, and the real Docker Engine.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// The first event of `app` on the events stream (read for at most 30 s).
const APP: &str = r#"
[containers.app]
class_name = "App"
build = { context = ".", command = "cp @SERVER@ server" }
rollout = { steps = [50, 100], grace = "10s" }

[containers.app.class]
default_port = 8080
env_vars = { MESSAGE = "one" }

[workers.web]
bindings = { APP = "app" }
routes = [{ path = "/*", binding = "APP", instance = { from = "header", name = "x-user" } }]
"#;

async fn container_ids(app: &AppDir) -> BTreeSet<String> {
    app.containers()
        .await
        .into_iter()
        .filter(|c| c.running)
        .map(|c| c.id)
        .collect()
}

/// The folders of an app's programs on the server, one per version kept.
fn folders(programs: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(programs)
        .expect("the app's programs")
        .map(|e| e.expect("entry").path())
        .collect()
}

fn data_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("berth-serve-tests")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The life of an app on a server: deployed and reached by host; deployed again with no
/// change; rolled out while a request is in flight; rolled back; carried over a restart
/// of the server; destroyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_is_deployed_rolled_out_rolled_back_kept_over_a_restart_and_destroyed() {
    let app = AppDir::new("life", APP);
    let data = data_dir("life");
    let server = Server::start(&data);
    let host = format!("web.{}.localhost", app.name);

    let out = server.deploy(&app.dir, &[]);
    assert!(out.contains("is active"), "{out}");
    assert_eq!(
        server.get(&host, "/", "a").1,
        "Hi, I'm a container and this is my message: one"
    );
    assert_eq!(server.get(&host, "/", "b").0, 200);
    let (status, body) = server.get("nobody.localhost", "/", "a");
    assert_eq!(status, 404);
    assert!(
        !body.contains(&app.name),
        "a stranger learns no app's name: {body}"
    );
    let (status, _) = request(&server.control, "GET", "/v1/apps", &[]);
    assert_eq!(status, 401, "no token");
    let (status, _) = request(
        &server.control,
        "GET",
        "/v1/apps",
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(status, 401, "a wrong token");
    // The metrics are behind the token too, and count what the app's worker answered.
    assert_eq!(request(&server.control, "GET", "/metrics", &[]).0, 401);
    let (status, metrics) = server.api("GET", "/metrics");
    assert_eq!(status, 200, "{metrics}");
    let answered = format!(
        "berth_requests_total{{app=\"{}\",worker=\"web\",code=\"200\"}}",
        app.name
    );
    assert!(metrics.contains(&answered), "{answered} in:\n{metrics}");

    // berth events tells what just happened, then of a container that starts.
    let control = format!("http://{}", server.control);
    let env = [
        ("BERTH_SERVER", control.as_str()),
        ("BERTH_TOKEN", server.token.as_str()),
    ];
    let mut events = Berth::spawn(&["events", "--app", &app.name, "--follow", "--json"], &env);
    let mut seen: Vec<serde_json::Value> = Vec::new();
    let next_event = |events: &mut Berth, seen: &mut Vec<serde_json::Value>| {
        let line = events
            .next_line(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("no event came after {seen:?}"));
        seen.push(serde_json::from_str(&line).expect("a JSON event"));
    };
    let healthy_a = |e: &serde_json::Value| e["kind"] == "healthy" && e["object"] == "\"a\"";
    while !seen.iter().any(healthy_a) {
        next_event(&mut events, &mut seen);
    }
    let deployed = seen
        .iter()
        .find(|e| e["kind"] == "deployment")
        .unwrap_or_else(|| panic!("the deployment comes first: {seen:?}"));
    assert_eq!(
        (&deployed["deployment"], &deployed["status"]),
        (&1.into(), &"active".into())
    );
    assert!(
        seen.iter()
            .any(|e| e["kind"] == "healthy" && e["object"] == "\"a\""),
        "{seen:?}"
    );
    assert_eq!(server.get(&host, "/", "c").0, 200);
    while !seen.iter().any(|e| e["object"] == "\"c\"") {
        next_event(&mut events, &mut seen);
    }
    let c = seen.iter().find(|e| e["object"] == "\"c\"").expect("it");
    assert_eq!(
        (&c["kind"], &c["app"], &c["class"]),
        (&"started".into(), &app.name.as_str().into(), &"App".into())
    );
    assert!(
        c["time"]
            .as_str()
            .and_then(berth::timestamp::parse)
            .is_some(),
        "{c}"
    );
    drop(events);
    // An instance can be stopped through the API.
    let (_, instances) = server.api("GET", &format!("/v1/apps/{}/instances", app.name));
    let c = instances
        .split("{\"class\"")
        .find(|i| i.contains("\"name\":\"c\""))
        .and_then(|i| i.split("\"id\":\"").nth(1))
        .and_then(|i| i.split('"').next())
        .expect("instance c")
        .to_string();
    let (status, body) = server.api(
        "POST",
        &format!("/v1/apps/{}/instances/App/{c}/stop", app.name),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server
            .api("POST", &format!("/v1/apps/{}/instances/App/{c}", app.name))
            .0,
        405
    );

    // Again, unchanged: nothing pushed, nothing touched.
    let before = container_ids(&app).await;
    assert_eq!(before.len(), 2);
    let (code, stdout, stderr) = server.run(&["deploy", &app.dir.display().to_string()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), "no changes");
    assert!(stderr.contains("is in the registry already"), "{stderr}");
    assert!(!stderr.contains("pushing"), "{stderr}");
    assert_eq!(container_ids(&app).await, before);

    // A new value rolls out, and a request in flight on an old instance completes.
    let slow = {
        let (public, host) = (server.public.clone(), host.clone());
        std::thread::spawn(move || {
            request(
                &public,
                "GET",
                "/sleep/3000",
                &[("Host", &host), ("X-User", "a")],
            )
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    app.write_manifest(&APP.replace("\"one\"", "\"two\""));
    let out = server.deploy(&app.dir, &[]);
    assert!(out.contains("is active"), "{out}");
    assert_eq!(slow.join().expect("join"), (200, "slept 3000".to_string()));
    // Its steps and outcome are events, and so are the old instances' exits.
    let (code, told, err) = server.run(&["events", "--app", &app.name]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        told.contains("deployment 2: App: 1 of 2 running instances replaced"),
        "{told}"
    );
    assert!(told.contains("deployment 2 is active"), "{told}");
    assert!(
        told.contains("stopped (replaced by a new image, exit code"),
        "{told}"
    );
    for user in ["a", "b"] {
        assert_eq!(
            server.get(&host, "/", user).1,
            "Hi, I'm a container and this is my message: two"
        );
    }
    let after = container_ids(&app).await;
    assert!(after.is_disjoint(&before), "every instance was replaced");

    // Back to the first deployment's value.
    let (code, stdout, stderr) = server.run(&["rollback", &app.name]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("rollback to deployment 1"), "{stdout}");
    for user in ["a", "b"] {
        assert_eq!(
            server.get(&host, "/", user).1,
            "Hi, I'm a container and this is my message: one"
        );
    }

    assert_eq!(server.get(&host, "/say/before-restart", "a").0, 200);

    // A restart keeps the containers, their records and storage.
    let store = berth::Store::open(data.join("state.db")).expect("store");
    let (_, instances) = server.api("GET", &format!("/v1/apps/{}/instances", app.name));
    let id = instances
        .split("\"id\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("an object id");
    let id = berth::ObjectId::parse_hex(id).expect("a valid id");
    let storage = berth::Storage::new(store.clone(), &format!("{}/App", app.name), id);
    storage.put("k", b"kept").await.expect("put");
    let running = container_ids(&app).await;
    server.stop();
    assert_eq!(
        container_ids(&app).await,
        running,
        "containers run on while berth is down"
    );
    let server = Server::start(&data);
    assert_eq!(
        server.get(&host, "/", "a").1,
        "Hi, I'm a container and this is my message: one"
    );
    assert_eq!(
        container_ids(&app).await,
        running,
        "the same containers, re-adopted"
    );
    assert_eq!(
        storage.get("k").await.expect("get").as_deref(),
        Some(&b"kept"[..])
    );
    let (status, instances) = server.api("GET", &format!("/v1/apps/{}/instances", app.name));
    assert_eq!(status, 200);
    assert_eq!(
        instances.matches("\"state\":\"healthy\"").count(),
        2,
        "{instances}"
    );

    // What a's container wrote is kept across the restart, once, whatever it re-adopts.
    assert_eq!(server.get(&host, "/say/after-restart", "a").0, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let kept = loop {
        let (code, out, err) = server.run(&["logs", "--app", &app.name, "a"]);
        assert_eq!(code, Some(0), "{err}");
        if out.contains("| after-restart") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(kept.matches("| before-restart").count(), 1, "{kept}");
    assert_eq!(kept.matches("| after-restart").count(), 1, "{kept}");
    assert!(kept.lines().all(|l| l.contains(" App \"a\" ")), "{kept}");
    let (code, _, err) = server.run(&["logs", "--app", &app.name, "--since", "soon"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("since=\"soon\""), "{err}");
    assert!(data.join("logs").join(&app.name).is_dir());

    // Destroy leaves nothing.
    let (code, stdout, stderr) = server.run(&["destroy", "--app", &app.name, "--yes"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("left in the registry"), "{stdout}");
    assert!(app.containers().await.is_empty());
    assert_eq!(server.api("GET", &format!("/v1/apps/{}", app.name)).0, 404);
    assert_eq!(server.get(&host, "/", "a").0, 404);
    let records = store.objects_of(Some(&app.name)).await.expect("records");
    assert!(records.is_empty(), "{records:?}");
    assert!(
        !data.join("logs").join(&app.name).exists(),
        "logs are removed"
    );
    let (code, _, err) = server.run(&["logs", "--app", &app.name]);
    assert_ne!(code, Some(0));
    assert!(err.contains(&app.name), "{err}");
    server.stop();
    let _ = std::fs::remove_dir_all(&data);
}

/// What must not harm the running version: a new version that exits at once, and a
/// build that fails. Then a class removed from the manifest, and a stage kept apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_leave_the_running_version_and_stages_and_removed_classes_behave() {
    let app = AppDir::new("guard", APP);
    let data = data_dir("guard");
    let server = Server::start(&data);
    let host = format!("web.{}.localhost", app.name);
    server.deploy(&app.dir, &[]);
    for user in ["a", "b"] {
        assert_eq!(server.get(&host, "/", user).0, 200);
    }
    let running = container_ids(&app).await;

    // A version whose server cannot start: an invalid PORT makes it exit at once.
    app.write_manifest(&APP.replace(
        "MESSAGE = \"one\"",
        "MESSAGE = \"one\", PORT = \"not-a-port\"",
    ));
    let (code, _, stderr) = server.run(&["deploy", &app.dir.display().to_string()]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("rollout halted, deployment 1 restored"),
        "{stderr}"
    );
    assert!(stderr.contains("exited with code 1"), "the cause: {stderr}");
    for user in ["a", "b"] {
        assert_eq!(
            server.get(&host, "/", user).1,
            "Hi, I'm a container and this is my message: one"
        );
    }
    let survivors = container_ids(&app).await;
    assert!(
        !survivors.is_disjoint(&running),
        "the instances not yet replaced kept running"
    );

    // A build that fails changes nothing on the server.
    app.write_manifest(APP);
    std::fs::write(
        app.dir.join("Dockerfile"),
        "FROM scratch\nCOPY missing /x\n",
    )
    .expect("Dockerfile");
    let (code, _, stderr) = server.run(&["deploy", &app.dir.display().to_string()]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("COPY missing /x"), "{stderr}");
    assert_eq!(container_ids(&app).await, survivors);
    std::fs::write(
        app.dir.join("Dockerfile"),
        "FROM scratch\nCOPY server /server\nENTRYPOINT [\"/server\"]\n",
    )
    .expect("Dockerfile");

    // A copy of the app in another folder may not take it over unasked.
    let copy = app.dir.with_file_name(format!("{}-copy", app.name));
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).expect("copy");
    for file in ["Dockerfile", ".dockerignore", "berth.toml"] {
        std::fs::copy(app.dir.join(file), copy.join(file)).expect("copy a file");
    }
    let (code, _, stderr) = server.run(&["deploy", &copy.display().to_string()]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("pass --adopt to take it over"), "{stderr}");
    server.deploy(&copy, &["--adopt"]);
    server.deploy(&app.dir, &["--adopt"]);
    let _ = std::fs::remove_dir_all(&copy);

    // A second class, then removed: its containers go.
    let with_extra = format!(
        "{APP}\n[containers.extra]\nclass_name = \"Extra\"\nbuild = {{ context = \".\", command = \"cp @SERVER@ server\" }}\n[containers.extra.class]\ndefault_port = 8080\n[workers.more]\nbindings = {{ EXTRA = \"extra\" }}\nroutes = [{{ path = \"/*\", binding = \"EXTRA\", instance = \"x\" }}]\n"
    );
    app.write_manifest(&with_extra);
    server.deploy(&app.dir, &[]);
    assert_eq!(
        server
            .get(&format!("more.{}.localhost", app.name), "/", "a")
            .0,
        200
    );
    let extra = |containers: &[berth::runtime::ContainerInfo]| {
        containers
            .iter()
            .filter(|c| c.identity.as_ref().is_some_and(|i| i.class == "Extra"))
            .count()
    };
    assert_eq!(extra(&app.containers().await), 1);
    app.write_manifest(APP);
    let (code, _, stderr) = server.run(&["deploy", &app.dir.display().to_string()]);
    assert_ne!(
        code,
        Some(0),
        "deleting needs --yes without a terminal: {stderr}"
    );
    assert!(stderr.contains("pass --yes"), "{stderr}");
    server.deploy(&app.dir, &["--yes"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while extra(&app.containers().await) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        extra(&app.containers().await),
        0,
        "the removed class's container is gone"
    );
    assert_eq!(
        server
            .get(&format!("more.{}.localhost", app.name), "/", "a")
            .0,
        404
    );

    // A stage is a copy with its own objects.
    server.deploy(&app.dir, &["--stage", "staging"]);
    let staging = format!("web.{}-staging.localhost", app.name);
    assert_eq!(server.get(&staging, "/", "a").0, 200);
    let (_, instances) = server.api("GET", &format!("/v1/apps/{}-staging/instances", app.name));
    assert_eq!(
        instances.matches("\"class\":\"App\"").count(),
        1,
        "{instances}"
    );
    let (_, main) = server.api("GET", &format!("/v1/apps/{}/instances", app.name));
    assert_eq!(
        main.matches("\"class\":\"App\"").count(),
        2,
        "the main app's own: {main}"
    );

    for target in [app.name.clone(), format!("{}-staging", app.name)] {
        let (code, _, stderr) = server.run(&["destroy", "--app", &target, "--yes"]);
        assert_eq!(code, Some(0), "{stderr}");
    }
    assert!(app.containers().await.is_empty());
    server.stop();
    let _ = std::fs::remove_dir_all(&data);
}

/// An app of `alchemy.run.ts` deploys as a berth.toml app does: its JS worker answers
/// by host, the class's options and hooks come from its code, a deploy without change
/// changes nothing, and a restarted server runs the same program again. Only the modules
/// the program loaded are shipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alchemy_app_is_deployed_served_by_its_js_worker_and_kept_over_a_restart() {
    let app = alchemy_app("serve", None);
    std::fs::write(app.dir.join(".env"), "SECRET=never shipped\n").expect(".env");
    let data = data_dir("alchemy");
    // berth's own log as JSON, as log tools take it.
    let server = Server::start_with(&data, &[("BERTH_LOG_FORMAT", "json")]);
    let host = format!("my-worker.{}.localhost", app.name);
    let expected =
        "Hi, I'm a container and this is my message: I was passed in via the container class!";

    let out = server.deploy(&app.dir, &[]);
    assert!(out.contains("is active"), "{out}");
    let (status, body) = server.get(&host, "/", "a");
    assert_eq!(
        (status, body.as_str()),
        (200, expected),
        "{}",
        server.process.stderr()
    );
    let log = server.process.stderr_with("Container successfully started");
    let line = log
        .lines()
        .find(|l| l.contains("Container successfully started"))
        .unwrap_or_else(|| panic!("onStart's console.log: {log}"));
    let line: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["target"], "berth::js", "{line}");
    assert!(
        line["message"]
            .as_str()
            .is_some_and(|m| m.contains("Container successfully started")),
        "{line}"
    );
    assert!(
        line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{line}"
    );

    let programs = data.join("programs").join(&app.name);
    let shipped = folders(&programs);
    assert_eq!(shipped.len(), 1, "{shipped:?}");
    let mut files: Vec<String> = Vec::new();
    let mut pending = vec![shipped[0].clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(&shipped[0]).expect("inside");
                files.push(relative.display().to_string());
            }
        }
    }
    files.sort();
    assert_eq!(
        files,
        ["alchemy.run.ts", "src/container.ts", "src/worker.ts"]
    );

    let (code, stdout, stderr) = server.run(&["deploy", &app.dir.display().to_string()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), "no changes");

    // New code: the rollout replaces the JS worker.
    let worker = std::fs::read_to_string(app.dir.join("src/worker.ts")).expect("worker.ts");
    let changed = worker.replace(
        "    const container =",
        "    if (new URL(request.url).pathname === \"/version\") return new Response(\"two\");\n    const container =",
    );
    assert_ne!(changed, worker);
    std::fs::write(app.dir.join("src/worker.ts"), changed).expect("worker.ts");
    let out = server.deploy(&app.dir, &[]);
    assert!(out.contains("is active"), "{out}");
    assert_eq!(server.get(&host, "/version", "a"), (200, "two".into()));
    assert_eq!(server.get(&host, "/", "a"), (200, expected.into()));

    // A third version, whose word comes from a package of node_modules: the package goes
    // with the program. The first version's folder goes once it is 20 minutes old (made
    // so here), the one it replaced stays (its runtimes may still be ending), and a
    // rollback returns to it.
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::open(&shipped[0])
        .and_then(|folder| folder.set_modified(an_hour_ago))
        .expect("date the first version's folder back");
    let package = app.dir.join("node_modules/words");
    std::fs::create_dir_all(package.join("esm")).expect("package");
    std::fs::write(
        package.join("package.json"),
        r#"{ "name": "words", "exports": { "import": "./esm/index.js", "require": "./index.cjs" } }"#,
    )
    .expect("package.json");
    std::fs::write(
        package.join("esm/index.js"),
        "export const three = \"three\";\n",
    )
    .expect("index.js");
    let two = std::fs::read_to_string(app.dir.join("src/worker.ts")).expect("worker.ts");
    let three = format!(
        "import {{ three }} from \"words\";\n{}",
        two.replace("new Response(\"two\")", "new Response(three)")
    );
    std::fs::write(app.dir.join("src/worker.ts"), three).expect("worker.ts");
    let out = server.deploy(&app.dir, &[]);
    assert!(out.contains("is active"), "{out}");
    assert_eq!(server.get(&host, "/version", "a"), (200, "three".into()));
    let kept = folders(&programs);
    assert_eq!(
        kept.len(),
        2,
        "the first version's folder is gone: {kept:?}"
    );
    assert!(!kept.contains(&shipped[0]), "{kept:?}");
    let (code, stdout, stderr) = server.run(&["rollback", &app.name]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("rollback to deployment"), "{stdout}");
    assert_eq!(server.get(&host, "/version", "a"), (200, "two".into()));

    // Without its folders, a restarted server writes the live program again.
    server.stop();
    std::fs::remove_dir_all(&programs).expect("remove the programs");
    let server = Server::start(&data);
    let (status, body) = server.get(&host, "/", "b");
    assert_eq!(
        (status, body.as_str()),
        (200, expected),
        "{}",
        server.process.stderr()
    );
    assert_eq!(server.get(&host, "/version", "b"), (200, "two".into()));
    server.stop();
    let _ = std::fs::remove_dir_all(&data);
}

/// A Wrangler project (Cloudflare's own example) deploys as an alchemy one does: its
/// wrangler.jsonc and its worker's code are what is shipped, and the server reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrangler_project_is_deployed_and_served_by_its_worker() {
    let app = wrangler_app("serve");
    let data = data_dir("wrangler");
    let server = Server::start(&data);
    let host = format!("{0}.{0}.localhost", app.name);
    let out = server.deploy(&app.dir, &[]);
    assert!(out.contains("is active"), "{out}");
    let (status, body) = server.get(&host, "/container", "a");
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            "Hi, I'm a container and this is my message: I was passed in via the container class!"
        ),
        "{}",
        server.process.stderr()
    );
    let programs = data.join("programs").join(&app.name);
    let shipped = folders(&programs);
    assert_eq!(shipped.len(), 1, "{shipped:?}");
    for file in ["wrangler.jsonc", "src/index.ts"] {
        assert!(shipped[0].join(file).is_file(), "{file} is shipped");
    }
    let (code, stdout, stderr) = server.run(&["deploy", &app.dir.display().to_string()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), "no changes");
    server.stop();
    let _ = std::fs::remove_dir_all(&data);
}

/// The server runs the program with its own environment: a secret the deploying machine
/// has and the server lacks fails the deploy, naming the line that reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alchemy_program_that_throws_on_the_server_is_refused_naming_its_line() {
    let app = alchemy_app("throws", None);
    let variable = format!("BERTH_TEST_DEPLOYER_ONLY_{}", std::process::id());
    let program = format!(
        r#"import alchemy from "alchemy";
import {{ Container, Worker }} from "alchemy/cloudflare";
import type {{ MyContainer }} from "./src/container.ts";
const container = await Container<MyContainer>("my-container", {{ className: "MyContainer" }});
const token = alchemy.secret(process.env.{variable});
export const worker = await Worker("my-worker", {{
  entrypoint: "./src/worker.ts",
  bindings: {{ MY_CONTAINER: container, TOKEN: token }},
}});
"#
    );
    std::fs::write(app.dir.join("alchemy.run.ts"), program).expect("alchemy.run.ts");
    let data = data_dir("alchemy-throws");
    let server = Server::start(&data);
    let dir = app.dir.display().to_string();
    let (code, _, stderr) = server.run_with(&["deploy", &dir], &[(&variable, "deployer's")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("alchemy.run.ts:5:"), "{stderr}");
    assert!(stderr.contains("the value is undefined"), "{stderr}");
    assert!(!stderr.contains(&data.display().to_string()), "{stderr}");
    let (status, _) = server.api("GET", &format!("/v1/apps/{}", app.name));
    assert_eq!(status, 404, "nothing was deployed");
    server.stop();
    let _ = std::fs::remove_dir_all(&data);
}
