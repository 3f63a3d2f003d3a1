//! The dashboard of `berth serve`, in a real browser: Debian's chromium (installed by
//! scripts/chromium.sh), headless, driven over the DevTools protocol, against the real
//! binary with a deployed app on the real Docker Engine. The screenshots it takes are
//! written to `<target>/test-output/dashboard/`, for a person to look at.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use common::*;

const APP: &str = r#"
[containers.app]
class_name = "App"
build = { context = ".", command = "cp @SERVER@ server" }
rollout = { steps = [100], grace = "5m" }

[containers.app.class]
default_port = 8080
sleep_after = "30m"
env_vars = { MESSAGE = "one" }

[workers.web]
bindings = { APP = "app" }
routes = [{ path = "/*", binding = "APP", instance = { from = "header", name = "x-user" } }]
"#;

/// A control API call with the token; the status and the body as JSON.
fn api(server: &Server, path: &str) -> (u16, Value) {
    let (status, body) = server.api("GET", path);
    let value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e} in {body:?}"));
    (status, value)
}

/// One raw request to the control listener; the whole response as text.
fn raw(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

fn data_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("berth-dashboard-tests")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Where the screenshots go: `<target>/test-output/dashboard/`.
fn output_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("..")
        .join("test-output")
        .join("dashboard");
    std::fs::create_dir_all(&dir).expect("output folder");
    dir.canonicalize().expect("output folder")
}

/// The chromium binary, installed by scripts/chromium.sh if need be.
fn chromium() -> PathBuf {
    PathBuf::from(script(
        "chromium.sh",
        "the dashboard is tested in Debian's chromium, which scripts/chromium.sh could not install",
    ))
}

/// A headless chromium of this test's own (its own profile, no network beyond
/// 127.0.0.1), killed on drop.
struct Chromium {
    child: Child,
    profile: PathBuf,
    /// `ws://127.0.0.1:PORT/devtools/browser/ID`.
    endpoint: String,
}

impl Chromium {
    fn start(binary: &Path) -> Chromium {
        let profile = data_dir("chromium-profile");
        std::fs::create_dir_all(&profile).expect("profile");
        let mut command = Command::new(binary);
        command.args([
            "--headless",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-proxy-server",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ]);
        command.arg(format!("--user-data-dir={}", profile.display()));
        if is_root() {
            // Chromium's sandbox refuses to run as root.
            command.arg("--no-sandbox");
        }
        let mut child = command
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
                sink.lock().expect("stderr").push_str(&format!("{line}\n"));
            }
        });
        let endpoint = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "chromium did not open its DevTools endpoint:\n{}",
                    stderr.lock().expect("stderr")
                )
            });
        Chromium {
            child,
            profile,
            endpoint,
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// One page (tab) of the browser, over the DevTools protocol.
struct Page {
    socket: Socket,
    session: String,
    next_id: u64,
    /// What the page's scripts threw that nothing caught.
    exceptions: Vec<String>,
}

impl Page {
    async fn open(browser: &Chromium) -> Page {
        let addr = browser
            .endpoint
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .expect("a ws:// endpoint");
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to chromium");
        let (socket, _) = tokio_tungstenite::client_async(browser.endpoint.as_str(), stream)
            .await
            .expect("the DevTools handshake");
        let mut page = Page {
            socket,
            session: String::new(),
            next_id: 0,
            exceptions: Vec::new(),
        };
        let target = page
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let target = target["targetId"].as_str().expect("a target").to_string();
        let attached = page
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .await;
        page.session = attached["sessionId"]
            .as_str()
            .expect("a session")
            .to_string();
        page.call("Page.enable", json!({})).await;
        page.call("Runtime.enable", json!({})).await;
        page
    }

    /// Sends a command (to the page, once attached) and waits for its answer.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("send to chromium");
        let answer = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(frame) = self.socket.next().await {
                let Ok(Message::Text(text)) = frame else {
                    continue;
                };
                let value: Value = serde_json::from_str(&text).expect("JSON from chromium");
                if value["id"] == json!(id) {
                    return value;
                }
                self.keep(value);
            }
            panic!("chromium closed the DevTools connection during {method}");
        })
        .await
        .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
        assert!(
            answer.get("error").is_none(),
            "{method} failed: {}",
            answer["error"]
        );
        answer["result"].clone()
    }

    /// Keeps an event: an exception, or one a test may wait for.
    fn keep(&mut self, event: Value) {
        if event["method"] == "Runtime.exceptionThrown" {
            let details = &event["params"]["exceptionDetails"];
            self.exceptions.push(details.to_string());
        }
    }

    /// The value of a JavaScript expression in the page.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page; fails with the page's text if it
    /// does not become so within two minutes.
    async fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if self.eval(expression).await == json!(true) {
                return;
            }
            if Instant::now() >= deadline {
                let text = self.eval("document.body.innerText").await;
                panic!("the page never showed {what}; it shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
    }

    /// Lays the page out `width` CSS pixels wide, as a phone when `mobile`.
    async fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": if mobile { 2 } else { 1 }, "mobile": mobile }),
        )
        .await;
    }

    /// Makes the page see the system's colour scheme as `scheme` (`light` or `dark`).
    async fn color_scheme(&mut self, scheme: &str) {
        let features = json!([{ "name": "prefers-color-scheme", "value": scheme }]);
        self.call(
            "Emulation.setEmulatedMedia",
            json!({ "features": features }),
        )
        .await;
    }

    /// A PNG of the whole page (not only what the window shows), written to `path`.
    async fn screenshot(&mut self, path: &Path) {
        let metrics = self.call("Page.getLayoutMetrics", json!({})).await;
        let size = &metrics["cssContentSize"];
        let clip = json!({
            "x": 0, "y": 0,
            "width": size["width"], "height": size["height"],
            "scale": 1
        });
        self.capture(
            path,
            json!({ "format": "png", "captureBeyondViewport": true, "clip": clip }),
        )
        .await;
    }

    /// A PNG of what the window shows, written to `path`.
    async fn screenshot_window(&mut self, path: &Path) {
        self.capture(path, json!({ "format": "png" })).await;
    }

    async fn capture(&mut self, path: &Path, params: Value) {
        let shot = self.call("Page.captureScreenshot", params).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).expect("write the screenshot");
        println!("screenshot: {}", path.display());
    }
}

/// The `Set-Cookie` value of a raw response.
fn set_cookie(response: &str) -> Option<String> {
    response
        .split("\r\n\r\n")
        .next()?
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .map(str::to_string)
}

/// The session the dashboard opens: the token in a cookie that scripts cannot read and
/// other sites cannot send, good for reading only.
#[test]
fn the_dashboard_cookie_reads_but_never_changes() {
    let data = data_dir("cookie");
    let server = Server::start(&data);
    let control = server.control.as_str();
    let (status, page) = request(control, "GET", "/", &[]);
    assert_eq!(status, 200, "the page needs no token");
    assert!(page.contains("<title>berth</title>"), "{page}");

    let refused = raw(control, "POST", "/v1/session", &[]);
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert_eq!(set_cookie(&refused), None);
    let wrong = raw(
        control,
        "POST",
        "/v1/session",
        &[("Authorization", "Bearer wrong")],
    );
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");

    let auth = format!("Bearer {}", server.token);
    let opened = raw(control, "POST", "/v1/session", &[("Authorization", &auth)]);
    assert!(opened.starts_with("HTTP/1.1 204"), "{opened}");
    let cookie = set_cookie(&opened).expect("a cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let pair = cookie.split(';').next().expect("name=value").to_string();
    assert!(pair.starts_with("berth_token="), "{pair}");
    assert!(
        !pair.contains(&server.token),
        "the cookie holds no token: {pair}"
    );

    let (status, apps) = request(control, "GET", "/v1/apps", &[("Cookie", &pair)]);
    assert_eq!(
        (status, apps.as_str()),
        (200, "[]"),
        "a GET with the cookie"
    );
    let (status, _) = request(control, "GET", "/metrics", &[("Cookie", &pair)]);
    assert_eq!(status, 200);
    let (status, _) = request(
        control,
        "GET",
        "/v1/apps",
        &[("Cookie", "berth_token=wrong")],
    );
    assert_eq!(status, 401, "a wrong cookie");
    // Mutations need the header, whatever the cookie holds.
    let (status, _) = request(control, "DELETE", "/v1/apps/any", &[("Cookie", &pair)]);
    assert_eq!(status, 401, "a DELETE with the cookie only");
    let (status, _) = request(control, "POST", "/v1/session", &[("Cookie", &pair)]);
    assert_eq!(status, 401, "a POST with the cookie only");

    let closed = raw(control, "DELETE", "/v1/session", &[]);
    assert!(closed.starts_with("HTTP/1.1 204"), "{closed}");
    let cleared = set_cookie(&closed).expect("a cookie");
    assert!(
        cleared.starts_with("berth_token=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    // A dashboard left open holds an event stream: a stop of the server ends it, rather
    // than waiting for it as for a request in flight.
    let mut events = TcpStream::connect(control).expect("connect");
    events
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let ask = format!("GET /v1/events HTTP/1.1\r\nHost: localhost\r\nCookie: {pair}\r\n\r\n");
    events.write_all(ask.as_bytes()).expect("send");
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains(": berth events") {
        let n = events.read(&mut buf).expect("the stream opens");
        assert!(n > 0, "the stream closed before it opened");
        seen.extend_from_slice(&buf[..n]);
    }
    let mut server = server;
    server.process.signal("TERM");
    assert_eq!(server.process.wait(Duration::from_secs(60)), Some(0));
    let mut rest = Vec::new();
    events.read_to_end(&mut rest).expect("the stream ends");
    let log = server.process.stderr();
    assert!(
        !log.contains("still in flight"),
        "the stream held up the stop:\n{log}"
    );
    assert!(!log.contains(&server.token), "the token is never logged");
    let _ = std::fs::remove_dir_all(&data);
}

/// The dashboard in chromium: signed in by a link that carries the token, it shows the
/// app and its running instances with their states, images and start times; an instance
/// woken while it is open appears, with its events, without a reload; a rollout under
/// way is shown; it reads well as wide as a desktop and as narrow as a phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_instances_their_states_and_live_events_in_chromium() {
    let binary = chromium();
    let app = AppDir::new("dashboard", APP);
    let data = data_dir("browser");
    let server = Server::start(&data);
    let host = format!("web.{}.localhost", app.name);
    let out = deploy_to(&server.control, &server.token, &app.dir);
    assert!(out.contains("is active"), "{out}");
    for user in ["alpha", "gamma"] {
        assert_eq!(server.get(&host, "/", user).0, 200);
    }

    // The API tells what each instance runs and how its start went.
    let instances_path = format!("/v1/apps/{}/instances", app.name);
    let (status, instances) = api(&server, &instances_path);
    assert_eq!(status, 200, "{instances}");
    let alpha = instances
        .as_array()
        .and_then(|all| all.iter().find(|i| i["name"] == "alpha"))
        .unwrap_or_else(|| panic!("no instance alpha in {instances}"))
        .clone();
    assert_eq!(alpha["state"], "healthy", "{alpha}");
    let (_, deployment) = api(&server, &format!("/v1/apps/{}/deployments/1", app.name));
    let image = alpha["image"].as_str().expect("an image");
    assert!(
        deployment["images"]
            .as_object()
            .is_some_and(|images| images.values().any(|i| i == image)),
        "alpha runs the deployed image: {alpha} vs {deployment}"
    );
    let digest = image
        .rsplit_once("@sha256:")
        .map(|(_, hex)| hex[..12].to_string())
        .unwrap_or_else(|| panic!("an image by digest: {image}"));
    let start = &alpha["last_start"];
    for phase in ["create_ms", "start_ms", "ready_ms"] {
        assert!(start[phase].is_u64(), "{phase} in {alpha}");
    }

    let browser = Chromium::start(&binary);
    let mut page = Page::open(&browser).await;
    page.viewport(1280, 900, false).await;
    let control = format!("http://{}", server.control);
    assert_eq!(server.dashboard, format!("{control}/"));
    page.navigate(&format!("{}#token={}", server.dashboard, server.token))
        .await;
    let row = |name: &str| {
        format!(
            "[...document.querySelectorAll('table.instances tr[data-key]')].find(r => r.querySelector('.name')?.textContent === '{name}')"
        )
    };
    page.wait_for(
        "alpha, healthy",
        &format!(
            "{}?.querySelector('td.state')?.textContent === 'healthy'",
            row("alpha")
        ),
    )
    .await;
    let address = page.eval("location.href").await;
    assert_eq!(
        address,
        json!(format!("{control}/")),
        "the token left the address"
    );
    let shown = page.eval("document.body.innerText").await;
    let shown = shown.as_str().expect("text");
    for expected in [
        app.name.as_str(),
        &host,
        "App",
        "gamma",
        &digest,
        "deployment 1 · active",
    ] {
        assert!(shown.contains(expected), "{expected:?} in:\n{shown}");
    }
    page.wait_for(
        "that the events are live",
        "document.getElementById('live-text').textContent === 'live'",
    )
    .await;

    // Woken while the page is open: its events and its row come without a reload.
    assert_eq!(server.get(&host, "/", "beta").0, 200);
    page.wait_for(
        "beta's start among the events",
        "[...document.querySelectorAll('#events li')].some(li => li.textContent.includes('App \"beta\": healthy'))",
    )
    .await;
    page.wait_for(
        "beta, healthy",
        &format!(
            "{}?.querySelector('td.state')?.textContent === 'healthy'",
            row("beta")
        ),
    )
    .await;

    // The logs of an instance, from the server: its lines, or "No logs" where the server
    // has none.
    page.eval(&format!("{}.querySelector('button').click()", row("gamma")))
        .await;
    page.wait_for(
        "gamma's logs",
        "(() => { const box = document.getElementById('logs'); return box.textContent.includes('Logs of ') && box.textContent.includes('gamma') && box.children.length > 1; })()",
    )
    .await;

    // alpha's logs, from the server's logbook: what its container wrote since it started
    // (the test server says where it listens, on stderr), then a line it writes while the
    // page is open, live.
    page.eval(&format!("{}.querySelector('button').click()", row("alpha")))
        .await;
    page.wait_for(
        "alpha's kept log lines",
        "[...document.querySelectorAll('#logs > div.err')].some(d => d.textContent.includes('berth-test-server: listening on 0.0.0.0:8080') \
         && /^\\d\\d:\\d\\d:\\d\\d\\.\\d{3}$/.test(d.querySelector('.t').textContent))",
    )
    .await;
    let (status, _) = request(
        &server.public,
        "GET",
        "/say/written-while-the-page-is-open",
        &[("Host", &host), ("X-User", "alpha")],
    );
    assert_eq!(status, 200);
    page.wait_for(
        "alpha's new log line, live",
        "[...document.querySelectorAll('#logs > div:not(.err):not(.note)')].some(d => d.textContent.endsWith('written-while-the-page-is-open'))",
    )
    .await;

    // A rollout of a new image, held up by a request in flight on alpha (its grace is
    // long): alpha runs the old image meanwhile, and shows it.
    let slow = {
        let (public, host) = (server.public.clone(), host.clone());
        std::thread::spawn(move || {
            request(
                &public,
                "GET",
                "/sleep/60000",
                &[("Host", &host), ("X-User", "alpha")],
            )
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while api(&server, &instances_path)
        .1
        .as_array()
        .is_some_and(|all| {
            !all.iter()
                .any(|i| i["name"] == "alpha" && i["in_flight"] == 1)
        })
    {
        assert!(
            Instant::now() < deadline,
            "alpha's request never got in flight"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    app.write_manifest(&APP.replace("\"one\"", "\"two\""));
    std::fs::write(
        app.dir.join("Dockerfile"),
        "FROM scratch\nCOPY server /server\nLABEL berth.test=two\nENTRYPOINT [\"/server\"]\n",
    )
    .expect("Dockerfile");
    let deploying = {
        let (control, token, dir) = (
            server.control.clone(),
            server.token.clone(),
            app.dir.clone(),
        );
        std::thread::spawn(move || deploy_to(&control, &token, &dir))
    };
    page.wait_for(
        "the rollout",
        "document.querySelector('.rollout')?.textContent.includes('Rolling out deployment 2')",
    )
    .await;
    // Once beta's old container is gone, it shows the image its next start runs.
    let image_of = |name: &str| {
        let (_, instances) = api(&server, &instances_path);
        instances
            .as_array()
            .and_then(|all| all.iter().find(|i| i["name"] == name))
            .and_then(|i| i["image"].as_str())
            .unwrap_or_else(|| panic!("no image for {name} in {instances}"))
            .to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let next = loop {
        let next = image_of("beta");
        if next != image {
            break next;
        }
        assert!(Instant::now() < deadline, "beta kept the first image");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(image_of("alpha"), image, "alpha still runs the first image");
    let next_digest = next
        .rsplit_once("@sha256:")
        .map(|(_, hex)| hex[..12].to_string())
        .unwrap_or_else(|| panic!("an image by digest: {next}"));
    for (name, digest) in [("alpha", &digest), ("beta", &next_digest)] {
        page.wait_for(
            &format!("{name}'s image {digest}"),
            &format!(
                "{}?.querySelector('td[data-label=\"image\"]')?.textContent === '{digest}'",
                row(name)
            ),
        )
        .await;
    }
    page.wait_for(
        "alpha's request in flight",
        &format!(
            "{}?.querySelector('td[data-label=\"in flight\"]')?.textContent === '1'",
            row("alpha")
        ),
    )
    .await;

    let dir = output_dir();
    page.screenshot(&dir.join("desktop.png")).await;
    page.color_scheme("dark").await;
    page.wait_for(
        "the dark colours",
        "getComputedStyle(document.body).backgroundColor !== 'rgb(245, 246, 248)'",
    )
    .await;
    page.screenshot(&dir.join("desktop-dark.png")).await;
    page.color_scheme("light").await;
    page.viewport(390, 844, true).await;
    page.wait_for(
        "the phone layout",
        "getComputedStyle(document.querySelector('table.instances thead')).display === 'none'",
    )
    .await;
    page.screenshot_window(&dir.join("phone.png")).await;
    page.screenshot(&dir.join("phone-whole-page.png")).await;

    // Signed out, it asks for the token again.
    page.eval("document.getElementById('logout').click()").await;
    page.wait_for(
        "the token form",
        "!document.getElementById('login').hidden && document.getElementById('app').hidden",
    )
    .await;
    page.navigate(&format!("{control}/")).await;
    page.wait_for(
        "the token form after a reload",
        "!document.getElementById('login').hidden",
    )
    .await;
    page.screenshot(&dir.join("phone-sign-in.png")).await;
    let sign_in = |token: &str| {
        format!(
            "document.getElementById('token').value = '{token}'; \
             document.querySelector('#login-form button').click()"
        )
    };
    page.eval(&sign_in("wrong")).await;
    page.wait_for(
        "that the token is wrong",
        "document.getElementById('login-error').textContent === 'That is not the control token.'",
    )
    .await;
    page.eval(&sign_in(&server.token)).await;
    page.wait_for(
        "the dashboard again, signed in by the form",
        &format!(
            "document.getElementById('login').hidden && !!{}",
            row("alpha")
        ),
    )
    .await;
    assert!(
        page.exceptions.is_empty(),
        "the page's script failed: {:?}",
        page.exceptions
    );
    drop(page);

    assert_eq!(slow.join().expect("join"), (200, "slept 60000".to_string()));
    let out = deploying.join().expect("join");
    assert!(out.contains("is active"), "{out}");
    let log = server.process.stderr();
    assert!(!log.contains(&server.token), "the token is never logged");
    drop(browser);
    let _ = std::fs::remove_dir_all(&data);
}
