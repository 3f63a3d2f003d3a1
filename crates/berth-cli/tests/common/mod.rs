//! What the CLI tests share: the static test server, app folders with a Dockerfile and a
//! berth.toml, a running `berth` process with its output, and plain HTTP requests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use berth::runtime::Selector;
use berth::{DockerRuntime, Runtime};

mod server;
#[allow(unused_imports)]
pub use server::{deploy_to, Server};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the project's `scripts/NAME`, which installs or starts what a test needs, and
/// returns what it prints (a path or an address); `failed` says what its failure means.
pub fn script(name: &str, failed: &str) -> String {
    let output = Command::new("bash")
        .arg(root().join("scripts").join(name))
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "{failed}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The address of the local registry, started once per test process.
pub fn registry() -> String {
    static ADDR: OnceLock<String> = OnceLock::new();
    ADDR.get_or_init(|| script("registry.sh", "scripts/registry.sh failed"))
        .clone()
}

/// The static test server, compiled once by the example's own build script.
pub fn server_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let script = root().join("examples/hello/build-server.sh");
            let status = Command::new("sh").arg(&script).status().expect("sh runs");
            assert!(status.success(), "{} failed", script.display());
            root().join("examples/hello/server")
        })
        .clone()
}

/// A copy of `examples/alchemy` with the test server as its container's binary, its
/// worker replaced by `worker` when given. Cleaned up (containers, images, folder) on drop.
pub fn alchemy_app(test: &str, worker: Option<&str>) -> AppDir {
    let files = [
        "alchemy.run.ts",
        "Dockerfile",
        "src/container.ts",
        "src/worker.ts",
    ];
    let (dir, name) = example_copy("alchemy", test, &files);
    if let Some(worker) = worker {
        std::fs::write(dir.join("src/worker.ts"), worker).expect("worker.ts");
    }
    AppDir { dir, name }
}

/// `files` of `examples/EXAMPLE` copied into a fresh folder `cli-EXAMPLE-TEST-PID`, with
/// the test server its Dockerfile copies; the folder and its name.
fn example_copy(example: &str, test: &str, files: &[&str]) -> (PathBuf, String) {
    let name = format!("cli-{example}-{test}-{}", std::process::id());
    let dir = std::env::temp_dir().join("berth-cli-tests").join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).expect("app dir");
    let from = root().join("examples").join(example);
    for file in files {
        std::fs::copy(from.join(file), dir.join(file)).expect(file);
    }
    std::fs::copy(server_binary(), dir.join("server")).expect("server");
    (dir, name)
}

/// A copy of `examples/wrangler` (Cloudflare's own example, with its `wrangler.jsonc`),
/// with the static server its Dockerfile copies.
pub fn wrangler_app(test: &str) -> AppDir {
    let files = [
        "wrangler.jsonc",
        "Dockerfile",
        ".dockerignore",
        "src/index.ts",
    ];
    let (dir, name) = example_copy("wrangler", test, &files);
    // The app is named as the test's folder, for its cleanup to find its containers.
    let config = dir.join("wrangler.jsonc");
    let text = std::fs::read_to_string(&config).expect("wrangler.jsonc");
    let renamed = text.replace(
        "\"name\": \"container-package-class-worker\"",
        &format!("\"name\": \"{name}\""),
    );
    assert_ne!(renamed, text, "the example's name in wrangler.jsonc");
    std::fs::write(&config, renamed).expect("wrangler.jsonc");
    AppDir { dir, name }
}

/// A temporary app folder: a FROM-scratch Dockerfile, the server binary copied in by
/// build.command, and the berth.toml given.
pub struct AppDir {
    pub dir: PathBuf,
    pub name: String,
}

impl AppDir {
    pub fn new(test: &str, manifest_body: &str) -> AppDir {
        let name = format!("cli-{test}-{}", std::process::id());
        let dir = std::env::temp_dir().join("berth-cli-tests").join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("app dir");
        std::fs::write(
            dir.join("Dockerfile"),
            "FROM scratch\nCOPY server /server\nENTRYPOINT [\"/server\"]\n",
        )
        .expect("Dockerfile");
        std::fs::write(dir.join(".dockerignore"), "*\n!Dockerfile\n!server\n")
            .expect("dockerignore");
        let app = AppDir { dir, name };
        app.write_manifest(manifest_body);
        app
    }

    pub fn write_manifest(&self, body: &str) {
        let server = server_binary();
        let text = format!(
            "name = \"{}\"\n\n{}",
            self.name,
            body.replace("@SERVER@", &server.display().to_string())
        );
        std::fs::write(self.dir.join("berth.toml"), text).expect("berth.toml");
    }

    pub async fn containers(&self) -> Vec<berth::runtime::ContainerInfo> {
        let runtime = DockerRuntime::connect().await.expect("Docker Engine");
        runtime
            .list(&Selector::app(&self.name))
            .await
            .expect("list")
    }
}

impl Drop for AppDir {
    fn drop(&mut self) {
        let name = self.name.clone();
        let state = self.dir.join(".berth/state.db");
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let runtime = DockerRuntime::connect().await.expect("Docker Engine");
                // The app, and its staging copy if a test deployed one.
                for app in [name.clone(), format!("{name}-staging")] {
                    for info in runtime.list(&Selector::app(&app)).await.unwrap_or_default() {
                        let _ = runtime.remove(&info.id).await;
                    }
                    // The volumes this folder's berth dev made (its store says which).
                    let store = state
                        .exists()
                        .then(|| berth::Store::open(&state).ok())
                        .flatten();
                    if let Some(store) = store {
                        let _ = runtime
                            .remove_volumes(&Selector::app(&app), store.owner())
                            .await;
                    }
                }
                // The images each test built under its own name, and pushed to a registry.
                let docker = runtime.docker();
                let filters = std::collections::HashMap::from([(
                    "reference",
                    vec![format!("berth-dev/{name}-*"), format!("*/{name}-*")],
                )]);
                let options = bollard::query_parameters::ListImagesOptionsBuilder::new()
                    .filters(&filters)
                    .build();
                // By tag, never by id: images of the same content share an id with other
                // tests' images, which a removal by id would take away mid-build. Parent
                // layers stay, for the same reason: other builds may be using them.
                let keep_parents = bollard::query_parameters::RemoveImageOptionsBuilder::new()
                    .noprune(true)
                    .build();
                for image in docker.list_images(Some(options)).await.unwrap_or_default() {
                    for tag in image.repo_tags.iter().filter(|t| t.contains(&name)) {
                        let _ = docker
                            .remove_image(tag, Some(keep_parents.clone()), None)
                            .await;
                    }
                }
            });
        })
        .join();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `berth` process with its output collected.
pub struct Berth {
    child: Child,
    stderr: Arc<Mutex<String>>,
    stdout_lines: mpsc::Receiver<String>,
}

impl Berth {
    pub fn start(args: &[&str], dir: &Path) -> Berth {
        Berth::start_with(args, dir, &[])
    }

    /// [`Berth::start`] with more variables in berth's environment.
    pub fn start_with(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Berth {
        let dir = dir.to_string_lossy();
        let all: Vec<&str> = args.iter().copied().chain([dir.as_ref()]).collect();
        Berth::spawn(&all, env)
    }

    /// `berth ARGS`, with more variables in its environment.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Berth {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("berth starts");
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
        Berth {
            child,
            stderr,
            stdout_lines: rx,
        }
    }

    /// Waits for a line of standard output that starts with `prefix`, and returns the
    /// first word after it.
    pub fn line_after(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            if let Ok(line) = self.stdout_lines.recv_timeout(Duration::from_millis(200)) {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return rest.split_whitespace().next().unwrap_or("").to_string();
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "berth exited with {status} before it printed {prefix:?}:\n{}",
                    self.stderr()
                );
            }
        }
        panic!("berth did not print {prefix:?} in time:\n{}", self.stderr());
    }

    /// The next line of standard output, if one comes within `wait`.
    pub fn next_line(&mut self, wait: Duration) -> Option<String> {
        self.stdout_lines.recv_timeout(wait).ok()
    }

    /// Waits for `Ready on http://ADDR` and returns ADDR.
    pub fn ready(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            if let Ok(line) = self.stdout_lines.recv_timeout(Duration::from_millis(200)) {
                if let Some(addr) = line.strip_prefix("Ready on http://") {
                    return addr.split_whitespace().next().expect("address").to_string();
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "berth exited with {status} before it was ready:\n{}",
                    self.stderr()
                );
            }
        }
        panic!("berth was not ready in time:\n{}", self.stderr());
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// The standard error once it holds `needle`, or after 10 s. Lines written to it before
    /// "Ready on" was written to standard output may still be on their way: the two are
    /// read by different threads.
    pub fn stderr_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.stderr();
            if log.contains(needle) || Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id of berth.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader thread take the last words.
                std::thread::sleep(Duration::from_millis(50));
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("berth did not exit:\n{}", self.stderr());
    }

    pub fn type_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to stdin");
        stdin.flush().expect("flush");
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `berth ARGS` in `cwd` with `input` on its standard input, to its end; its exit
/// code, standard output and standard error.
pub fn berth_in(cwd: &Path, args: &[&str], input: &[u8]) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berth runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("write stdin");
    drop(stdin);
    let output = child.wait_with_output().expect("berth ends");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `berth ARGS DIR` to its end with no input; its exit code and its standard error.
pub fn run_to_end(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .arg(dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("berth runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// One GET on its own connection, to `Host: localhost`; returns the status and the body.
pub fn http(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    request(addr, "GET", path, headers)
}

/// One HTTP/1.1 request with the headers given (the first `Host` wins); status and body.
pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to berth");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut text =
        format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        text.push_str("Host: localhost\r\n");
    }
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    status_and_body(&response)
}

/// The status and the body of a whole HTTP/1.1 response, as read off the wire.
pub fn status_and_body(response: &str) -> (u16, String) {
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
