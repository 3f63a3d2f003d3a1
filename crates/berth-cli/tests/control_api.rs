//! The control API of `berth serve`, fuzzed by schemathesis from the OpenAPI document the
//! server itself serves at /v1/openapi.json: the real binary, a real registry
//! (scripts/registry.sh), a deployed app on the real Docker Engine, and
//! scripts/schemathesis.sh (which installs the pinned schemathesis on first use).
//!
//! Three runs, each bounded in examples and in time:
//! 1. any values, every endpoint but the event stream (it never ends) and the removal of
//!    an app (the fuzzer would find the deployed app's name in GET /v1/apps and remove it);
//! 2. the same endpoints with the deployed app, its class and its running instance as the
//!    path parameters, so that app-scoped endpoints answer from a real app (stop and
//!    destroy hit the real instance, which the next request starts again);
//! 3. after the app is seen to serve still, the removal of that app.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::request;

/// The checks that must hold on every answer. Left out, as opinions rather than defects:
/// `positive_data_acceptance`, which expects a schema-valid deploy request to be accepted,
/// while a random string is rightly refused as a manifest with 422 (the document says the
/// manifest is berth.toml text, which a JSON schema cannot describe); and
/// `object_level_authorization`, which needs two users and berth has one token.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,negative_data_rejection,\
missing_required_header,unsupported_method,allow_header_conformance,use_after_free,\
ensure_resource_availability,ignored_auth";

/// Test cases per operation in the runs over every endpoint.
const EXAMPLES: &str = "400";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `command` to its end, killing it after `limit`; its output.
fn run(command: &mut Command, limit: Duration) -> Output {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {limit:?}; it wrote:\n{}\n{}",
                String::from_utf8_lossy(&stdout.join().unwrap_or_default()),
                String::from_utf8_lossy(&stderr.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The address of the test registry that scripts/registry.sh starts or finds.
fn registry() -> String {
    let script = root().join("scripts/registry.sh");
    let out = run(Command::new("bash").arg(&script), Duration::from_secs(360));
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

/// The static test server, built by the example's own script.
fn server_binary() -> PathBuf {
    let script = root().join("examples/hello/build-server.sh");
    let out = run(Command::new("sh").arg(&script), Duration::from_secs(600));
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        text(&out.stderr)
    );
    root().join("examples/hello/server")
}

fn docker(args: &[&str]) -> String {
    let out = run(Command::new("docker").args(args), Duration::from_secs(120));
    assert!(
        out.status.success(),
        "docker {args:?} failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The containers labelled with the app, running or not.
fn containers_of(app: &str) -> Vec<String> {
    docker(&["ps", "-aq", "--filter", &format!("label=berth.app={app}")])
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The temporary folders, the app's containers and the images built and pulled for it,
/// removed however the test ends.
struct Scratch {
    dir: PathBuf,
    app: String,
    registry: String,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            Command::new("docker")
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .output()
        };
        if let Ok(out) = quiet(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=berth.app={}", self.app),
        ]) {
            for id in text(&out.stdout).split_whitespace() {
                let _ = quiet(&["rm", "-f", id]);
            }
        }
        // By reference, never by image id: another app built from the same files has the
        // same id, and a forced removal by id would untag it too.
        for pattern in [
            format!("berth-dev/{}-*", self.app),
            format!("{}/{}-*", self.registry, self.app),
        ] {
            let format = "{{.Repository}}:{{.Tag}} {{.Repository}}@{{.Digest}}";
            if let Ok(out) = quiet(&[
                "images",
                "--filter",
                &format!("reference={pattern}"),
                "--format",
                format,
            ]) {
                for reference in text(&out.stdout)
                    .split_whitespace()
                    .filter(|r| !r.ends_with(":<none>") && !r.ends_with("@<none>"))
                {
                    let _ = quiet(&["rmi", "--no-prune", reference]);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `berth serve`.
struct Serve {
    child: Child,
    stderr: Arc<Mutex<String>>,
    public: String,
    control: String,
}

impl Serve {
    fn start(data: &Path, registry: &str) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--data"])
            .arg(data)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--control",
                "127.0.0.1:0",
                "--registry",
                registry,
                "--stop-on-exit",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("berth serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("stderr")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut serve = Serve {
            child,
            stderr,
            public: String::new(),
            control: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while serve.public.is_empty() || serve.control.is_empty() {
            if Instant::now() >= deadline {
                panic!("berth serve did not start in time:\n{}", serve.stderr());
            }
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                if let Some(addr) = line.strip_prefix("Public on http://") {
                    serve.public = addr.trim().to_string();
                } else if let Some(addr) = line.strip_prefix("Control on http://") {
                    serve.control = addr.trim().to_string();
                }
            }
            if let Ok(Some(status)) = serve.child.try_wait() {
                panic!(
                    "berth serve exited with {status} at start:\n{}",
                    serve.stderr()
                );
            }
        }
        serve
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// SIGTERM, then its exit code.
    fn stop(&mut self) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("berth serve did not exit on SIGTERM:\n{}", self.stderr());
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs scripts/schemathesis.sh `run` against the server's own document with the token,
/// the checks and `extra`; asserts it exits 0 and returns the number of test cases.
fn schemathesis(control: &str, token: &str, config: Option<&Path>, extra: &[&str]) -> u64 {
    let mut command = Command::new("bash");
    command.arg(root().join("scripts/schemathesis.sh"));
    if let Some(config) = config {
        command.arg("--config-file").arg(config);
    }
    command
        .arg("run")
        .arg(format!("http://{control}/v1/openapi.json"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--checks", CHECKS])
        .args(["--exclude-path", "/v1/events"])
        .args(["--request-timeout", "30", "--no-color"])
        .args(["--generation-database", "none"])
        .args(extra)
        .current_dir(std::env::temp_dir());
    let started = Instant::now();
    let out = run(&mut command, Duration::from_secs(300));
    let report = text(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures ({}):\n{report}\n{}",
        out.status,
        text(&out.stderr)
    );
    // "Test cases:\n  3216 generated, 3216 passed, ..."
    let cases = report
        .split("Test cases:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of test cases in:\n{report}"));
    eprintln!(
        "schemathesis {extra:?}: {cases} test cases, no failure, in {:.0?}",
        started.elapsed()
    );
    cases
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_that_breaks_the_document() {
    let registry = registry();
    let app = format!("fuzz-{}", std::process::id());
    let scratch = Scratch {
        dir: std::env::temp_dir()
            .join("berth-cli-tests")
            .join(format!("control-api-{}", std::process::id())),
        app: app.clone(),
        registry: registry.clone(),
    };
    let _ = std::fs::remove_dir_all(&scratch.dir);
    let data = scratch.dir.join("data");
    let app_dir = scratch.dir.join("app");
    std::fs::create_dir_all(&data).expect("data folder");
    std::fs::create_dir_all(&app_dir).expect("app folder");
    std::fs::copy(server_binary(), app_dir.join("server")).expect("server binary");
    std::fs::write(
        app_dir.join("Dockerfile"),
        "FROM scratch\nCOPY server /server\nENTRYPOINT [\"/server\"]\n",
    )
    .expect("Dockerfile");
    std::fs::write(
        app_dir.join("berth.toml"),
        format!(
            r#"name = "{app}"

[containers.app]
class_name = "App"
build = {{ context = "." }}

[containers.app.class]
default_port = 8080
env_vars = {{ MESSAGE = "fuzzed" }}

[workers.web]
bindings = {{ APP = "app" }}
routes = [{{ path = "/*", binding = "APP", instance = "container" }}]
"#
        ),
    )
    .expect("berth.toml");

    let mut serve = Serve::start(&data, &registry);
    let token = run(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--data"])
            .arg(&data)
            .arg("--print-token"),
        Duration::from_secs(30),
    );
    assert!(token.status.success(), "{}", text(&token.stderr));
    let token = text(&token.stdout).trim().to_string();
    let bearer = format!("Bearer {token}");

    let deploy = run(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("deploy")
            .arg(&app_dir)
            .args(["--server", &format!("http://{}", serve.control)])
            .args(["--token", &token]),
        Duration::from_secs(300),
    );
    assert!(
        deploy.status.success(),
        "berth deploy failed:\n{}\nserver:\n{}",
        text(&deploy.stderr),
        serve.stderr()
    );

    // The token is needed, and only the right one will do.
    let apps = format!("/v1/apps/{app}");
    assert_eq!(request(&serve.control, "GET", &apps, &[]).0, 401);
    assert_eq!(
        request(
            &serve.control,
            "GET",
            &apps,
            &[("Authorization", "Bearer not-the-token")]
        )
        .0,
        401
    );
    assert_eq!(
        request(
            &serve.control,
            "GET",
            &apps,
            &[("Authorization", &format!("{bearer}x"))]
        )
        .0,
        401
    );
    assert_eq!(
        request(&serve.control, "GET", &apps, &[("Authorization", &bearer)]).0,
        200
    );

    // A name escaped in the path, as URL libraries may escape it, is the same name.
    let (status, body) = request(
        &serve.control,
        "GET",
        &format!("/v1/apps/%{:02X}{}", app.as_bytes()[0], &app[1..]),
        &[("Authorization", &bearer)],
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("\"name\":\"{app}\"")), "{body}");

    let host = format!("web.{app}.localhost");
    let serves = |serve: &Serve| {
        assert_eq!(
            request(&serve.public, "GET", "/", &[("Host", &host)]),
            (
                200,
                "Hi, I'm a container and this is my message: fuzzed".to_string()
            ),
            "server:\n{}",
            serve.stderr()
        );
    };
    serves(&serve);
    let (status, body) = request(
        &serve.control,
        "GET",
        &format!("{apps}/instances"),
        &[("Authorization", &bearer)],
    );
    assert_eq!(status, 200, "{body}");
    let instances: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let instance = instances[0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no instance in {body}"))
        .to_string();

    let mut cases = 0;
    // 1. Any values. The logs of the real app (which links lead to) could be followed,
    // and a followed log never ends: they are fuzzed below, with follow = false.
    cases += schemathesis(
        &serve.control,
        &token,
        None,
        &[
            "--exclude-name",
            "DELETE /v1/apps/{app}",
            "--exclude-path",
            "/v1/apps/{app}/logs",
            "--max-examples",
            EXAMPLES,
        ],
    );
    // 2. The deployed app, its class and its instance.
    let config = scratch.dir.join("schemathesis.toml");
    std::fs::write(
        &config,
        // follow = false: a followed log never ends, and the fuzzer waits for ends.
        format!(
            "[parameters]\napp = \"{app}\"\nclass = \"App\"\nid = \"{instance}\"\nfollow = false\n"
        ),
    )
    .expect("schemathesis.toml");
    cases += schemathesis(
        &serve.control,
        &token,
        Some(&config),
        &[
            "--exclude-name",
            "DELETE /v1/apps/{app}",
            "--max-examples",
            EXAMPLES,
        ],
    );

    assert_eq!(request(&serve.control, "GET", "/v1/health", &[]).0, 200);
    serves(&serve);

    // 3. The removal of the deployed app.
    cases += schemathesis(
        &serve.control,
        &token,
        Some(&config),
        &[
            "--include-name",
            "DELETE /v1/apps/{app}",
            "--max-examples",
            "20",
        ],
    );
    eprintln!("schemathesis: {cases} test cases in all");
    assert_eq!(
        request(&serve.control, "GET", &apps, &[("Authorization", &bearer)]).0,
        404
    );
    assert_eq!(request(&serve.control, "GET", "/v1/health", &[]).0, 200);

    assert_eq!(serve.stop(), Some(0), "{}", serve.stderr());
    assert_eq!(containers_of(&app), Vec::<String>::new());
    drop(scratch);
}
