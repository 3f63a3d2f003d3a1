//! `berth dev` and `berth ps`, driven as a user drives them: the real binary, a folder
//! with a Dockerfile and a berth.toml, HTTP requests, signals, and the real Docker Engine.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth::runtime::docker::labels;
use berth::DockerRuntime;

mod common;

use common::*;

const ROUTES: &str = r#"
[containers.app]
class_name = "App"
build = { context = ".", command = "cp @SERVER@ server" }

[containers.app.class]
default_port = 8080
env_vars = { MESSAGE = "from berth.toml" }

[workers.web]
bindings = { APP = "app" }
routes = [
  { path = "/users/:user/*", strip_prefix = true, binding = "APP", instance = { from = "path", param = "user" } },
  { path = "/by-header/*", strip_prefix = true, binding = "APP", instance = { from = "header", name = "x-user" } },
  { path = "/by-query/*", strip_prefix = true, binding = "APP", instance = { from = "query", name = "user" } },
  { path = "/by-cookie/*", strip_prefix = true, binding = "APP", instance = { from = "cookie", name = "session" } },
  { path = "/rr/*", strip_prefix = true, binding = "APP", instance = { pool = 2, strategy = "round-robin" } },
  { path = "/hash/*", strip_prefix = true, binding = "APP", instance = { pool = 3, strategy = "hash", key = { from = "header", name = "x-user" } } },
  { path = "/fixed/*", strip_prefix = true, binding = "APP", instance = "container" },
]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_every_kind_of_route_and_removes_its_containers_on_ctrl_c() {
    let app = AppDir::new("routes", ROUTES);
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();

    let (status, body) = http(&addr, "/fixed/", &[]);
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            "Hi, I'm a container and this is my message: from berth.toml"
        )
    );
    assert_eq!(http(&addr, "/users/alice/ping", &[]), (200, "pong".into()));
    assert_eq!(
        http(&addr, "/by-header/ping", &[("x-user", "bob")]),
        (200, "pong".into())
    );
    assert_eq!(
        http(&addr, "/by-query/ping?user=carol", &[]),
        (200, "pong".into())
    );
    assert_eq!(
        http(
            &addr,
            "/by-cookie/ping",
            &[("cookie", "theme=dark; session=dave")]
        ),
        (200, "pong".into())
    );
    assert_eq!(http(&addr, "/rr/ping", &[]).0, 200);
    assert_eq!(http(&addr, "/rr/ping", &[]).0, 200);
    for _ in 0..3 {
        assert_eq!(http(&addr, "/hash/ping", &[("x-user", "erin")]).0, 200);
    }

    let (status, body) = http(&addr, "/by-header/ping", &[]);
    assert_eq!(status, 400);
    assert!(body.contains("header x-user"), "{body}");
    let (status, body) = http(&addr, "/nowhere", &[]);
    assert_eq!(status, 404);
    assert!(
        body.contains("routes: /users/:user/*, /by-header/*"),
        "{body}"
    );

    let mut names: Vec<String> = app
        .containers()
        .await
        .iter()
        .map(|c| c.labels[labels::OBJECT_NAME].clone())
        .collect();
    names.sort();
    let hashed: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("instance-"))
        .collect();
    // instance-0 and instance-1 from round robin, and one instance for all of erin's requests.
    assert!(hashed.len() == 2 || hashed.len() == 3, "{names:?}");
    for expected in [
        "alice",
        "bob",
        "carol",
        "container",
        "dave",
        "instance-0",
        "instance-1",
    ] {
        assert!(
            names.contains(&expected.to_string()),
            "{expected} missing from {names:?}"
        );
    }
    for c in app.containers().await {
        assert_eq!(c.labels[labels::APP], app.name);
        assert_eq!(c.labels[labels::CLASS], "App");
        assert!(c.running);
    }

    let ps = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["ps", "--json"])
        .arg(&app.dir)
        .output()
        .expect("berth ps");
    assert!(ps.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&ps.stdout).expect("JSON");
    let alice = listed
        .as_array()
        .expect("a list")
        .iter()
        .find(|r| r["name"] == "alice")
        .expect("alice is listed");
    assert_eq!(alice["class"], "App");
    assert_eq!(alice["state"], "healthy");
    assert!(alice["uptime_seconds"].is_u64());
    assert_eq!(alice["id"].as_str().map(str::len), Some(64));

    let table = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("ps")
        .arg(&app.dir)
        .output()
        .expect("ps");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("CLASS"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("alice") && l.contains("healthy")),
        "{table}"
    );

    berth.signal("INT");
    assert_eq!(
        berth.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        berth.stderr()
    );
    assert!(
        app.containers().await.is_empty(),
        "no container is left after Ctrl-C"
    );
    let log = berth.stderr();
    assert!(log.contains("App \"alice\": started"), "{log}");
    assert!(log.contains("App \"alice\": healthy after"), "{log}");
    assert!(
        log.contains("App \"alice\" | berth-test-server: listening on 0.0.0.0:8080"),
        "container logs are shown: {log}"
    );
    assert!(log.contains("stopped (shutdown, exit code 0)"), "{log}");
}

/// The container's hostname: the first 12 digits of its id.
fn hostname(addr: &str) -> String {
    let (status, env) = http(addr, "/fixed/env", &[]);
    assert_eq!(status, 200, "{env}");
    let at = env.find("\"HOSTNAME\":\"").expect("HOSTNAME in the env") + 12;
    env[at..at + 12].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_context_is_not_rebuilt_and_a_killed_session_is_recovered() {
    let app = AppDir::new("rerun", ROUTES);
    let mut first = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = first.ready();
    let building = format!("building berth-dev/{}-app:", app.name);
    let log = first.stderr_with(&building);
    assert!(log.contains(&building), "{log}");
    let container = hostname(&addr);
    first.signal("KILL");
    first.wait(Duration::from_secs(10));
    assert_eq!(
        app.containers().await.len(),
        1,
        "SIGKILL leaves the container behind"
    );

    // The next session re-adopts the healthy container instead of starting another.
    let mut second = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = second.ready();
    let log = second.stderr_with("re-adopted");
    assert!(
        log.contains("re-adopted 1 running container(s) of an earlier session"),
        "{log}"
    );
    assert!(log.contains("is up to date"), "{log}");
    assert!(
        !log.contains("building berth-dev"),
        "an unchanged context is not rebuilt: {log}"
    );
    assert_eq!(hostname(&addr), container, "the same container serves");
    assert_eq!(app.containers().await.len(), 1);

    // A changed context rebuilds, on request, and replaces the running container.
    std::fs::write(
        app.dir.join("Dockerfile"),
        "FROM scratch\nCOPY server /server\nENV CHANGED=1\nENTRYPOINT [\"/server\"]\n",
    )
    .expect("Dockerfile");
    second.type_line("r");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !second.stderr().contains("replaced 1 running container(s)") {
        assert!(
            Instant::now() < deadline,
            "no rebuild:\n{}",
            second.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(second
        .stderr()
        .contains(&format!("building berth-dev/{}-app:", app.name)));
    let (status, body) = http(&addr, "/fixed/env", &[]);
    assert_eq!(status, 200);
    assert!(
        body.contains("\"CHANGED\":\"1\""),
        "the new image serves: {body}"
    );
    second.signal("KILL");
    second.wait(Duration::from_secs(10));

    // A container on an image that has changed since is not re-adopted but removed.
    std::fs::write(
        app.dir.join("Dockerfile"),
        "FROM scratch\nCOPY server /server\nENV CHANGED=2\nENTRYPOINT [\"/server\"]\n",
    )
    .expect("Dockerfile");
    let mut third = Berth::start(&["dev", "--port", "0"], &app.dir);
    third.ready();
    let log = third.stderr_with("left behind");
    assert!(
        log.contains("container(s) left behind by an earlier session"),
        "{log}"
    );
    assert!(
        !log.contains("re-adopted"),
        "a container on the old image is not re-adopted: {log}"
    );
    assert!(app.containers().await.is_empty());
    third.signal("TERM");
    assert_eq!(
        third.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        third.stderr()
    );
    assert!(app.containers().await.is_empty());
}

/// The tags of the app's image `app`.
async fn image_tags(app: &AppDir) -> Vec<String> {
    let runtime = DockerRuntime::connect().await.expect("Docker Engine");
    let repository = format!("berth-dev/{}-app", app.name);
    let filters = std::collections::HashMap::from([("reference", vec![repository.as_str()])]);
    let options = bollard::query_parameters::ListImagesOptionsBuilder::new()
        .filters(&filters)
        .build();
    let images = runtime
        .docker()
        .list_images(Some(options))
        .await
        .expect("images");
    let mut tags: Vec<String> = images.into_iter().flat_map(|i| i.repo_tags).collect();
    tags.sort();
    tags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_berth_toml_does_not_rebuild_and_a_rebuild_removes_the_old_image() {
    let app = AppDir::new("manifest", ROUTES);
    // The whole folder is the context: berth.toml, and a FIFO, which must not be read.
    std::fs::remove_file(app.dir.join(".dockerignore")).expect("dockerignore");
    let made = Command::new("mkfifo")
        .arg(app.dir.join("pipe"))
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let building = format!("building berth-dev/{}-app:", app.name);

    let mut first = Berth::start(&["dev", "--port", "0"], &app.dir);
    first.ready();
    let log = first.stderr_with(&building);
    assert!(log.contains(&building), "{log}");
    assert!(
        log.contains("left out of the context, as neither files, folders nor links: pipe"),
        "{log}"
    );
    first.signal("TERM");
    assert_eq!(
        first.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        first.stderr()
    );
    let built = image_tags(&app).await;
    assert_eq!(built.len(), 1, "{built:?}");

    app.write_manifest(&ROUTES.replace("from berth.toml", "from an edited berth.toml"));
    let mut second = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = second.ready();
    let log = second.stderr_with("is up to date");
    assert!(log.contains("is up to date"), "{log}");
    assert!(
        !log.contains(&building),
        "an edited berth.toml is not rebuilt: {log}"
    );
    let (status, body) = http(&addr, "/fixed/", &[]);
    assert_eq!(status, 200);
    assert!(body.ends_with("from an edited berth.toml"), "{body}");
    second.signal("TERM");
    assert_eq!(
        second.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        second.stderr()
    );
    assert_eq!(image_tags(&app).await, built);

    // A changed context is rebuilt, and the image it supersedes goes.
    std::fs::write(
        app.dir.join("Dockerfile"),
        "FROM scratch\nCOPY server /server\nENV CHANGED=1\nENTRYPOINT [\"/server\"]\n",
    )
    .expect("Dockerfile");
    let mut third = Berth::start(&["dev", "--port", "0"], &app.dir);
    third.ready();
    let removed = format!("removed {}, superseded by", built[0]);
    let log = third.stderr_with(&removed);
    assert!(log.contains(&removed), "{log}");
    third.signal("TERM");
    assert_eq!(
        third.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        third.stderr()
    );
    let rebuilt = image_tags(&app).await;
    assert_eq!(rebuilt.len(), 1, "{rebuilt:?}");
    assert_ne!(rebuilt, built);
}

#[test]
fn bad_manifests_say_where_and_what_is_accepted() {
    let cases = [
        (
            "[containers.app]\nclass_name = \"App\"\n[containers.app.class]\nsleep_afte = \"3m\"\n",
            vec!["berth.toml:6:1: containers.app.class.sleep_afte: unknown key `sleep_afte` (did you mean `sleep_after`?)", "accepted keys:"],
        ),
        (
            "[containers.app]\n[containers.app.class]\nsleep_after = \"3 minutes\"\n",
            vec!["berth.toml:5:15: containers.app.class.sleep_after: invalid duration \"3 minutes\"", "1h30m"],
        ),
        (
            "[containers.app]\n[workers.w]\nbindings = { APP = \"ap\" }\nroutes = [{ path = \"/*\", binding = \"APP\", instance = \"x\" }]\n",
            vec!["berth.toml:5:20: workers.w.bindings.APP: binds container \"ap\", which is not defined; defined containers: app (did you mean `app`?)"],
        ),
        (
            "[containers.app]\ninstance_type = \"huge\"\n",
            vec!["containers.app.instance_type: unknown instance type \"huge\"; use lite, basic"],
        ),
        (
            "[containers.app]\nimage = \"berth-test/absent:1\"\n",
            vec!["berth.toml:4:9: containers.app.image: image \"berth-test/absent:1\" is not in the container engine, and berth dev never pulls"],
        ),
    ];
    for (body, expected) in cases {
        let app = AppDir::new("bad", body);
        let (code, stderr) = run_to_end(&["dev"], &app.dir, &[]);
        assert_eq!(code, Some(1));
        for part in expected {
            assert!(stderr.contains(part), "{part:?} not in:\n{stderr}");
        }
    }
}

#[test]
fn a_failing_build_shows_the_step_and_exits_non_zero() {
    let app = AppDir::new(
        "badbuild",
        "[containers.app]\nbuild = { context = \".\" }\n",
    );
    std::fs::write(
        app.dir.join("Dockerfile"),
        "FROM scratch\nCOPY missing-file /x\n",
    )
    .expect("Dockerfile");
    std::fs::write(app.dir.join(".dockerignore"), "").expect("dockerignore");
    let (code, stderr) = run_to_end(&["dev"], &app.dir, &[]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!(
            "berth.toml:4:9: containers.app.build: building berth-dev/{}-app:",
            app.name
        )),
        "the failure names its place in the manifest: {stderr}"
    );
    // The total counts the labels berth adds as steps of their own.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("Step 2/") && l.contains(" : COPY missing-file /x")),
        "{stderr}"
    );
}

#[test]
fn help_explains_the_commands() {
    let output = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--help")
        .output()
        .expect("berth runs");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(help.contains("dev") && help.contains("ps"), "{help}");
    let output = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["dev", "--help"])
        .output()
        .expect("berth runs");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--port") && help.contains("Ctrl-C"), "{help}");
    let output = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--version")
        .output()
        .expect("berth runs");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("berth "));
}

#[test]
fn an_unreachable_engine_is_a_clear_error() {
    let app = AppDir::new("noengine", "[containers.app]\n");
    let env = [("DOCKER_HOST", "unix:///nonexistent/docker.sock")];
    let (code, stderr) = run_to_end(&["dev"], &app.dir, &env);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("error: cannot reach the Docker Engine at unix:///nonexistent/docker.sock"),
        "{stderr}"
    );
    assert!(
        stderr.contains("start Docker or point DOCKER_HOST at a running engine"),
        "{stderr}"
    );
}

#[test]
fn a_port_in_use_is_a_clear_error_and_leaves_nothing() {
    let app = AppDir::new("busyport", ROUTES);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let (code, stderr) = run_to_end(&["dev", "--port", &port], &app.dir, &[]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(stderr.contains("pick another port with --port"), "{stderr}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    assert!(rt.block_on(app.containers()).is_empty());
}

/// `berth ps` shows whatever the state file holds, even ids that are not ASCII, which it
/// once cut by byte position and panicked on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ps_shows_records_of_any_text() {
    let app = AppDir::new("ps-text", "[containers.app]\n");
    let state = app.dir.join(".berth");
    std::fs::create_dir_all(&state).expect("state dir");
    let store = berth::Store::open(state.join("state.db")).expect("store");
    store
        .save_object(berth::store::ObjectRecord {
            namespace: format!("{}/App", app.name),
            id: format!("a{}", "é".repeat(40)),
            name: Some("ünïcödé\x1b[2J".into()),
            state: berth::State::StoppedWithCode(3),
            container_id: None,
            started_at_ms: None,
            updated_at_ms: 0,
        })
        .await
        .expect("save");
    for json in [false, true] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
        command.arg("ps").arg(&app.dir);
        if json {
            command.arg("--json");
        }
        let output = command.output().expect("berth runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("ünïcödé"), "{stdout}");
        assert!(stdout.contains("stopped_with_code"), "{stdout}");
        assert!(
            !stdout.contains('\x1b'),
            "no raw escape reaches the terminal: {stdout:?}"
        );
    }
    let (code, stderr) = run_to_end(&["ps"], Path::new("/nonexistent/app"), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/app holds no berth app"),
        "{stderr}"
    );
}

/// A copy of an app in another folder, with the same name, while the first runs: the
/// second `berth dev` is refused and says why, and the first keeps its containers and
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_session_of_the_same_app_is_refused_and_harms_nothing() {
    let app = AppDir::new("twins", ROUTES);
    let copy_dir = app.dir.with_file_name(format!("{}-copy", app.name));
    let _ = std::fs::remove_dir_all(&copy_dir);
    std::fs::create_dir_all(&copy_dir).expect("copy");
    for file in ["Dockerfile", ".dockerignore", "berth.toml"] {
        std::fs::copy(app.dir.join(file), copy_dir.join(file)).expect("copy a file");
    }
    let mut first = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = first.ready();
    let (status, _) = http(&addr, "/fixed/", &[]);
    assert_eq!(status, 200);
    let (code, stderr) = run_to_end(&["dev", "--port", "0"], &copy_dir, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "another berth session of app {} is running",
            app.name
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("on this machine (1 container(s))"),
        "{stderr}"
    );
    assert!(
        stderr.contains("give this copy of the app another name"),
        "{stderr}"
    );
    assert_eq!(
        app.containers().await.len(),
        1,
        "the first session's container is left"
    );
    let (status, _) = http(&addr, "/fixed/", &[]);
    assert_eq!(status, 200, "and it still serves");
    first.signal("TERM");
    assert_eq!(
        first.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        first.stderr()
    );
    assert!(app.containers().await.is_empty());
    let _ = std::fs::remove_dir_all(&copy_dir);
}

/// A class with no port runs from berth.toml through a `start_only` route: the request
/// starts the container and is answered 202; a proxying route to it says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_with_no_port_is_started_by_a_start_only_route() {
    let app = AppDir::new(
        "portless",
        r#"
[containers.job]
class_name = "Job"
build = { command = "cp @SERVER@ server" }

[workers.web]
bindings = { JOB = "job" }
routes = [
  { path = "/run/:name", binding = "JOB", instance = { from = "path", param = "name" }, start_only = true },
  { path = "/*", binding = "JOB", instance = "proxied" },
]
"#,
    );
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    let (status, body) = http(&addr, "/run/alpha", &[]);
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("started") && body.contains("alpha"), "{body}");
    assert_eq!(app.containers().await.len(), 1, "the job runs");
    let (status, _) = http(&addr, "/run/alpha", &[]);
    assert_eq!(status, 202, "a running job is accepted again");
    assert_eq!(app.containers().await.len(), 1, "and not started twice");
    let (status, body) = http(&addr, "/anything", &[]);
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("start_only = true"), "{body}");
    assert_eq!(
        app.containers().await.len(),
        1,
        "nothing to proxy to, nothing started"
    );
    berth.signal("TERM");
    assert_eq!(
        berth.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        berth.stderr()
    );
    assert!(app.containers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_of_a_crashed_container_is_kept_and_shown_by_berth_logs() {
    let app = AppDir::new("logs", ROUTES);
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    assert_eq!(http(&addr, "/users/alice/say/hello-from-alice", &[]).0, 200);
    assert_eq!(http(&addr, "/users/bob/say/hello-from-bob", &[]).0, 200);
    // alice crashes: the container exits 3 and berth removes it.
    let _ = http(&addr, "/users/alice/exit/3", &[]);
    let log = berth.stderr_with("exit code 3");
    assert!(
        log.contains("App \"alice\": stopped (exited, exit code 3"),
        "{log}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.containers().await.len() > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.containers().await.len(),
        1,
        "alice's container is removed"
    );

    let dir = app.dir.to_string_lossy().into_owned();
    let (code, out, err) = berth_in(Path::new("/"), &["logs", &dir, "alice"], b"");
    assert_eq!(code, Some(0), "{err}");
    let said = out
        .lines()
        .find(|l| l.ends_with("| hello-from-alice"))
        .unwrap_or_else(|| panic!("alice's line is kept: {out}"));
    // `2026-11-26T05:30:35.123Z App "alice" 1a2b3c4d5e6f stdout | hello-from-alice`
    let words: Vec<&str> = said.split_whitespace().collect();
    assert!(berth::timestamp::parse(words[0]).is_some(), "{said}");
    assert_eq!(&words[1..3], ["App", "\"alice\""], "{said}");
    assert_eq!(words[3].len(), 12, "the instance: {said}");
    assert_eq!(words[4], "stdout", "{said}");
    assert!(
        out.lines()
            .any(|l| l.contains(" stderr | berth-test-server: exiting with code 3")),
        "the last words before the crash are kept: {out}"
    );
    assert!(!out.contains("hello-from-bob"), "only alice: {out}");

    // In the app's folder, the first word is the object; --json gives one object a line.
    let (code, out, err) = berth_in(&app.dir, &["logs", "bob", "--json"], b"");
    assert_eq!(code, Some(0), "{err}");
    let entries: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let hello = entries
        .iter()
        .find(|e| e["line"] == "hello-from-bob")
        .unwrap_or_else(|| panic!("bob's line: {out}"));
    assert_eq!(hello["app"], app.name.as_str());
    assert_eq!(
        (&hello["class"], &hello["object"]),
        (&"App".into(), &"\"bob\"".into())
    );
    assert_eq!(hello["stream"], "stdout");
    assert_eq!(hello["id"].as_str().map(str::len), Some(64));
    assert!(entries.iter().all(|e| e["object"] == "\"bob\""), "{out}");

    let (code, out, _) = berth_in(&app.dir, &["logs", "--tail", "1", "--class", "App"], b"");
    assert_eq!((code, out.lines().count()), (Some(0), 1), "{out}");
    let (code, out, err) = berth_in(&app.dir, &["logs", "nobody"], b"");
    assert_eq!((code, out.as_str()), (Some(0), ""), "{err}");
    assert!(err.contains("no logs of object \"nobody\""), "{err}");
    let (code, _, err) = berth_in(&app.dir, &["logs", "--since", "yesterday"], b"");
    assert_ne!(code, Some(0));
    assert!(err.contains("since=\"yesterday\""), "{err}");

    // --follow prints lines as the container writes them, and those of a new container.
    let mut follow = Berth::start(&["logs", "--follow"], &app.dir);
    assert_eq!(http(&addr, "/users/alice/say/alice-is-back", &[]).0, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.ends_with("| alice-is-back")) {
        assert!(Instant::now() < deadline, "not followed: {seen:?}");
        if let Some(line) = follow.next_line(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    assert!(
        seen.iter().any(|l| l.ends_with("| hello-from-alice")),
        "the kept lines come first: {seen:?}"
    );
    drop(follow);

    berth.signal("INT");
    assert_eq!(berth.wait(Duration::from_secs(60)), Some(0));
    // The session is over; what it kept is still there.
    let (_, out, _) = berth_in(&app.dir, &["logs", "alice"], b"");
    assert!(out.contains("| alice-is-back"), "{out}");
}

const WARMING: &str = r#"
[containers.app]
class_name = "App"
build = { context = ".", command = "cp @SERVER@ server" }

[containers.app.class]
default_port = 8080
ready = { path = "/warming/1500", status = [200], interval = "20ms" }

[containers.cold]
class_name = "Cold"
build = { context = ".", command = "cp @SERVER@ server" }

[containers.cold.class]
default_port = 8080
port_ready_timeout = "1s"
ready = { path = "/warming/3600000" }

[workers.web]
bindings = { APP = "app", COLD = "cold" }
routes = [
  { path = "/cold/*", strip_prefix = true, binding = "COLD", instance = "c" },
  { path = "/*", binding = "APP", instance = "a" },
]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_gets_traffic_only_once_its_ready_check_passes() {
    let app = AppDir::new("ready", WARMING);
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    // The app answers 503 for its first 1.5 s, though its port opens at once. The very
    // first request that reaches it must find it warm.
    assert_eq!(http(&addr, "/warming/1500", &[]), (200, "warm".into()));

    // A check that never passes: a 504 that names the path and what it got last.
    let (status, body) = http(&addr, "/cold/ping", &[]);
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("GET /warming/3600000 on port 8080"), "{body}");
    assert!(body.contains("gave status 503 last"), "{body}");
    let log = berth.stderr_with("never passed its ready check");
    assert!(log.contains("never passed its ready check"), "{log}");
}

const WAKE: &str = r#"
[containers.app]
class_name = "App"
build = { context = ".", command = "cp @SERVER@ server" }

[containers.app.class]
default_port = 8080

[workers.web]
bindings = { APP = "app" }
routes = [
  { path = "/peek/*", strip_prefix = true, binding = "APP", instance = "a", wake = false },
  { path = "/maybe/*", strip_prefix = true, binding = "APP", instance = "a", wake = false, fallback = true },
  { path = "/maybe/*", strip_prefix = true, binding = "APP", instance = "shared" },
  { path = "/pool/*", strip_prefix = true, binding = "APP", instance = { pool = 2 }, keep_warm = true },
  { path = "/*", binding = "APP", instance = "a" },
]
"#;

/// The object names of the app's running containers, sorted.
async fn running_names(app: &AppDir) -> Vec<String> {
    let mut names: Vec<String> = app
        .containers()
        .await
        .iter()
        .filter(|c| c.running)
        .map(|c| c.labels[labels::OBJECT_NAME].clone())
        .collect();
    names.sort();
    names
}

/// Waits (at most 60 s) until the app's running containers are those named `expected`.
async fn wait_for_names(app: &AppDir, expected: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let names = running_names(app).await;
        if names == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "running: {names:?}, wanted {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_that_never_wake_fall_back_and_a_warm_pool_runs_from_the_start() {
    let app = AppDir::new("wake", WAKE);
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    // keep_warm: the pool runs before any request.
    wait_for_names(&app, &["instance-0", "instance-1"]).await;

    // wake = false: a sleeping instance is not started.
    let (status, body) = http(&addr, "/peek/ping", &[]);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("App \"a\" sleeps"), "{body}");
    // fallback: the next matching route serves instead.
    assert_eq!(http(&addr, "/maybe/ping", &[]), (200, "pong".into()));
    wait_for_names(&app, &["instance-0", "instance-1", "shared"]).await;
    // Once a runs, both routes reach it.
    assert_eq!(http(&addr, "/ping", &[]), (200, "pong".into()));
    assert_eq!(http(&addr, "/peek/ping", &[]), (200, "pong".into()));
    assert_eq!(http(&addr, "/maybe/ping", &[]), (200, "pong".into()));
    wait_for_names(&app, &["a", "instance-0", "instance-1", "shared"]).await;

    // A pool container that dies is started again.
    let runtime = DockerRuntime::connect().await.expect("Docker Engine");
    let victim = app
        .containers()
        .await
        .into_iter()
        .find(|c| c.labels[labels::OBJECT_NAME] == "instance-0")
        .expect("instance-0 runs");
    use berth::Runtime as _;
    runtime.remove(&victim.id).await.expect("remove");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !app
        .containers()
        .await
        .iter()
        .any(|c| c.running && c.labels[labels::OBJECT_NAME] == "instance-0" && c.id != victim.id)
    {
        assert!(
            Instant::now() < deadline,
            "instance-0 was not started again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    berth.signal("INT");
    assert_eq!(
        berth.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        berth.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_exec_runs_a_command_in_a_running_instance_and_passes_its_exit_code() {
    let app = AppDir::new("exec", ROUTES);
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    assert_eq!(http(&addr, "/users/alice/ping", &[]), (200, "pong".into()));

    let (code, out, err) = berth_in(
        &app.dir,
        &["exec", "alice", "--", "/server", "echo-stdin", "3"],
        b"hello from the test",
    );
    assert_eq!(code, Some(3), "the command's exit code: {err}");
    assert_eq!(out, "hello from the test");
    assert!(err.contains("echo-stdin: 19 bytes, exiting 3"), "{err}");
    let dir = app.dir.to_string_lossy().into_owned();
    let (code, out, err) = berth_in(
        Path::new("/"),
        &["exec", &dir, "alice", "--", "/server", "echo-stdin", "0"],
        b"",
    );
    assert_eq!((code, out.as_str()), (Some(0), ""), "{err}");

    // At a terminal (script(1) gives berth one), the command gets a terminal too: the
    // container's terminal echoes the line typed, and Ctrl-D ends its input. The Ctrl-D
    // comes once berth exec has surely put this terminal in raw mode, so that it goes to
    // the command's terminal rather than ending berth's own input.
    let typed = "(printf 'typed-line\\n'; sleep 5; printf '\\004')";
    let command = format!(
        "{typed} | script -qec '{} exec alice -- /server echo-stdin 5' /dev/null",
        env!("CARGO_BIN_EXE_berth")
    );
    let output = Command::new("timeout")
        .args(["60", "sh", "-c", &command])
        .current_dir(&app.dir)
        .output()
        .expect("sh runs");
    let shown = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(5), "{shown}");
    assert!(
        shown.contains("typed-line\r\n"),
        "a terminal's line ends: {shown:?}"
    );
    assert!(
        shown.contains("echo-stdin: 11 bytes, exiting 5"),
        "{shown:?}"
    );

    // An object that never ran, and one that does not exist, are refused with a reason.
    let (code, _, err) = berth_in(&app.dir, &["exec", "nobody", "--", "/server"], b"");
    assert_eq!(code, Some(1));
    assert!(err.contains("no object \"nobody\""), "{err}");
    let (status, _) = http(&addr, "/users/bob/ping", &[]);
    assert_eq!(status, 200);
    let runtime = DockerRuntime::connect().await.expect("Docker Engine");
    let bob = app
        .containers()
        .await
        .into_iter()
        .find(|c| c.labels[labels::OBJECT_NAME] == "bob")
        .expect("bob runs");
    use berth::Runtime as _;
    runtime
        .kill(&bob.id, berth::runtime::Signal::Term)
        .await
        .expect("stop bob");
    // Once the session has seen it go, berth exec finds no container.
    let log = berth.stderr_with("App \"bob\": stopped");
    assert!(log.contains("App \"bob\": stopped"), "{log}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        let (code, _, err) = berth_in(
            &app.dir,
            &["exec", "bob", "--", "/server", "echo-stdin"],
            b"",
        );
        if code == Some(1) && err.contains("no container to run the command in") {
            break err;
        }
        assert!(Instant::now() < deadline, "bob still takes commands: {err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(err.contains("App \"bob\" is stopped"), "{err}");
    // --wake has berth dev start it first; one that never ran needs its class.
    let (code, out, err) = berth_in(
        &app.dir,
        &["exec", "bob", "--wake", "--", "/server", "echo-stdin", "0"],
        b"awake",
    );
    assert_eq!((code, out.as_str()), (Some(0), "awake"), "{err}");
    let (code, _, err) = berth_in(&app.dir, &["exec", "carol", "--wake", "--", "/server"], b"");
    assert_eq!(code, Some(1));
    assert!(err.contains("give --class"), "{err}");
    let (code, out, err) = berth_in(
        &app.dir,
        &[
            "exec",
            "carol",
            "--wake",
            "--class",
            "App",
            "--",
            "/server",
            "echo-stdin",
        ],
        b"new",
    );
    assert_eq!((code, out.as_str()), (Some(0), "new"), "{err}");
    berth.signal("INT");
    assert_eq!(
        berth.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        berth.stderr()
    );
    assert!(
        !app.dir.join(".berth/control.sock").exists(),
        "the session's control socket goes with it"
    );
}

const VOLUMES: &str = r#"
[containers.app]
class_name = "App"
build = { context = ".", command = "cp @SERVER@ server" }

[containers.app.class]
default_port = 8080
sleep_after = "1s"
volumes = ["/data"]

[workers.web]
bindings = { APP = "app" }
routes = [{ path = "/users/:user/*", strip_prefix = true, binding = "APP", instance = { from = "path", param = "user" } }]
"#;

/// The id of the app's dev store, which labels the volumes its berth dev makes.
fn owner(app: &AppDir) -> String {
    berth::Store::open(app.dir.join(".berth/state.db"))
        .expect("the dev store")
        .owner()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_object_writes_on_its_volume_outlives_sleep_and_rebuilds() {
    let app = AppDir::new("volumes", VOLUMES);
    let runtime = DockerRuntime::connect().await.expect("Docker Engine");
    use berth::Runtime as _;
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    let write = "/users/alice/file/write/note/kept";
    assert_eq!(http(&addr, write, &[]), (200, "written".into()));
    assert_eq!(
        http(&addr, "/users/bob/file/write/note/bobs", &[]),
        (200, "written".into())
    );
    // alice sleeps: her container is removed; the next request starts a new one.
    let first = running_names(&app).await;
    assert_eq!(first, ["alice", "bob"]);
    let before = app.containers().await;
    let log = berth.stderr_with("App \"alice\": stopped (slept");
    assert!(log.contains("App \"alice\": stopped (slept"), "{log}");
    wait_for_names(&app, &[]).await;
    assert_eq!(
        http(&addr, "/users/alice/file/read/note", &[]),
        (200, "kept".into())
    );
    assert_eq!(
        http(&addr, "/users/bob/file/read/note", &[]),
        (200, "bobs".into())
    );
    let after = app.containers().await;
    assert!(
        after.iter().all(|c| before.iter().all(|b| b.id != c.id)),
        "new containers read what the old ones wrote"
    );

    // A rebuild with a changed image: the next containers run it, on the same volume.
    let dockerfile = app.dir.join("Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).expect("Dockerfile");
    std::fs::write(&dockerfile, format!("{text}LABEL rebuilt=yes\n")).expect("Dockerfile");
    berth.type_line("r");
    let log = berth.stderr_with("rebuilt;");
    assert!(log.contains("rebuilt;"), "{log}");
    assert_eq!(
        http(&addr, "/users/alice/file/read/note", &[]),
        (200, "kept".into())
    );
    let alice = app
        .containers()
        .await
        .into_iter()
        .find(|c| c.running && c.labels[labels::OBJECT_NAME] == "alice")
        .expect("alice runs");
    let old = before
        .iter()
        .find(|c| c.labels[labels::OBJECT_NAME] == "alice")
        .expect("alice ran before");
    assert_ne!(alice.image, old.image, "alice runs the rebuilt image");

    // berth ps --volumes shows each object's volume, with its size.
    let ps = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["ps", "--volumes", "--json"])
        .arg(&app.dir)
        .output()
        .expect("berth ps");
    assert!(
        ps.status.success(),
        "{}",
        String::from_utf8_lossy(&ps.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&ps.stdout).expect("JSON");
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    let mine = listed
        .iter()
        .find(|v| v["object_name"] == "alice")
        .expect("alice's volume");
    assert_eq!(
        (&mine["path"], &mine["class"]),
        (&"/data".into(), &"App".into())
    );
    assert_eq!(mine["size_bytes"], 4, "the 4 bytes of \"kept\"");

    // The end of the session removes them; --keep-volumes keeps them for the next.
    berth.signal("INT");
    assert_eq!(
        berth.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        berth.stderr()
    );
    assert!(
        berth.stderr().contains("and 2 volume(s); bye"),
        "{}",
        berth.stderr()
    );
    let left = runtime
        .volumes(&berth::runtime::Selector::app(&app.name), &owner(&app))
        .await
        .expect("volumes");
    assert!(left.is_empty(), "{left:?}");

    let mut berth = Berth::start(&["dev", "--port", "0", "--keep-volumes"], &app.dir);
    let addr = berth.ready();
    assert_eq!(
        http(&addr, "/users/carol/file/write/note/stays", &[]),
        (200, "written".into())
    );
    berth.signal("INT");
    assert_eq!(
        berth.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        berth.stderr()
    );
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    assert_eq!(
        http(&addr, "/users/carol/file/read/note", &[]),
        (200, "stays".into())
    );
    berth.signal("INT");
    assert_eq!(
        berth.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        berth.stderr()
    );
    let left = runtime
        .volumes(&berth::runtime::Selector::app(&app.name), &owner(&app))
        .await
        .expect("volumes");
    assert!(left.is_empty(), "{left:?}");
}
