//! `berth dev` on a Cloudflare Containers project as written (`alchemy.run.ts`): its JS
//! worker answers requests, against the real Docker Engine.

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alchemy_example_answers_through_its_js_worker() {
    let app = alchemy_app("example", None);
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    let (status, body) = http(&addr, "/", &[]);
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            "Hi, I'm a container and this is my message: I was passed in via the container class!"
        ),
        "{}",
        berth.stderr()
    );
    // The request went through the worker to the container's own ping endpoint.
    assert_eq!(http(&addr, "/ping", &[]), (200, "pong".into()));
    assert_eq!(app.containers().await.len(), 1);

    // `return container.fetch(request)` tunnels a WebSocket both ways.
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect to berth");
    let (mut socket, response) = tokio::time::timeout(
        Duration::from_secs(60),
        tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream),
    )
    .await
    .expect("the upgrade in time")
    .expect("a WebSocket through the JS worker");
    assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..5 {
        let message = Message::text(format!("message {i}"));
        socket.send(message.clone()).await.expect("send");
        let echo = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .expect("an echo in time")
            .expect("an answer")
            .expect("a message");
        assert_eq!(echo, message);
    }
    socket.close(None).await.expect("close");
}

const WORKER: &str = r#"import { getContainer } from "@cloudflare/containers";
import type { worker } from "../alchemy.run.ts";

export { MyContainer } from "./container.ts";

function fail(what: string): never {
  throw new Error(`boom at ${what}`);
}

export default {
  async fetch(request: Request, env: typeof worker.Env): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === "/throw") fail(url.pathname);
    if (url.pathname === "/loop") {
      while (true) {}
    }
    if (url.pathname === "/sleep") {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      return new Response("slept");
    }
    if (url.pathname === "/oom") {
      const kept: string[] = [];
      // Big pieces, so that the cap is reached in a few steps and not after a CPU budget
      // spent in the collector on a busy machine.
      for (let i = 0; ; i++) kept.push("x".repeat(16e6) + i);
    }
    if (url.pathname === "/clone") {
      // A request's body and a container's answer, each read through a clone as well.
      const copy = request.clone();
      const [mine, theirs] = [await request.text(), await copy.text()];
      const echo = new Request("http://container/echo", { method: "POST", body: mine });
      const answer = await getContainer(env.MY_CONTAINER, "container").fetch(echo);
      const again = answer.clone();
      const lengths = [mine, theirs, await answer.text(), await again.text()].map((t) => t.length);
      return new Response(lengths.join("|"));
    }
    if (url.pathname === "/break") {
      // A timer's callback that loops: it is cut off, and with it its runtime's timers.
      setTimeout(() => {
        while (true) {}
      }, 0);
      return new Response("breaking");
    }
    if (url.pathname === "/upper") {
      // Each chunk of the request, upper-cased, as it comes: a stream of the worker's own.
      const reader = request.body!.getReader();
      const stream = new ReadableStream({
        async pull(controller) {
          const { done, value } = await reader.read();
          if (done) controller.close();
          else controller.enqueue(new TextEncoder().encode(new TextDecoder().decode(value).toUpperCase()));
        },
      });
      return new Response(stream, { headers: { "content-type": "text/plain" } });
    }
    if (url.pathname === "/broken") {
      let sent = false;
      // The failure comes a little later, so the part is on its way first.
      const stream = new ReadableStream({
        async pull(controller) {
          if (sent) {
            await new Promise((resolve) => setTimeout(resolve, 200));
            throw new Error("the source went away");
          }
          sent = true;
          controller.enqueue("a part");
        },
      });
      return new Response(stream);
    }
    if (url.pathname === "/log") {
      console.log("the worker says", new TextEncoder().encode("hi").length);
      return new Response("logged", { status: 201 });
    }
    return getContainer(env.MY_CONTAINER, "container").fetch(request);
  },
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_js_worker_that_throws_loops_or_allocates_answers_500_and_others_are_still_served() {
    let app = alchemy_app("failures", Some(WORKER));
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();

    let (status, body) = http(&addr, "/throw", &[]);
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("Error: boom at /throw"), "{body}");
    let worker = app.dir.join("src/worker.ts");
    // Lines of the TypeScript as written: `throw` on line 7, the call on line 13.
    for place in [":7:", ":13:"] {
        let at = format!("{}{place}", worker.display());
        assert!(body.contains(&at), "{at} in {body}");
    }

    // Many requests in flight in one worker: 8 that each wait 1 s take far less than
    // the 4 s that one at a time per runtime would.
    let started = Instant::now();
    let sleepers: Vec<_> = (0..8)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || http(&addr, "/sleep", &[]))
        })
        .collect();
    for sleeper in sleepers {
        assert_eq!(sleeper.join().expect("a sleeper"), (200, "slept".into()));
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    assert_eq!(http(&addr, "/log", &[]), (201, "logged".into()));
    let log = berth.stderr_with("the worker says 2");
    assert!(log.contains("the worker says 2"), "{log}");

    let looping = {
        let addr = addr.clone();
        std::thread::spawn(move || (http(&addr, "/loop", &[]), Instant::now()))
    };
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = http(&addr, "/", &[]);
    let served = Instant::now();
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("I was passed in via the container class!"));
    let ((status, body), cut_off) = looping.join().expect("the looping request");
    assert!(
        served < cut_off,
        "the other request waited for the loop to be cut off"
    );
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("ran JavaScript for more than 5s"), "{body}");
    // The worker still serves after the interruption.
    assert_eq!(http(&addr, "/log", &[]).0, 201);

    let (status, body) = http(&addr, "/oom", &[]);
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("ran out of the worker's 128 MiB"), "{body}");
    assert_eq!(http(&addr, "/log", &[]).0, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_whose_timers_broke_is_replaced() {
    let app = alchemy_app("timers", Some(WORKER));
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    let cut_off = "a timer's callback ran JavaScript for more than";
    let replaced = "was replaced by a new one";
    // Each runtime in turn gets a timer that loops: the first one, then the one that
    // requests go to while the first is broken (or its replacement).
    for n in 1..=2 {
        assert_eq!(http(&addr, "/break", &[]), (200, "breaking".into()));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut log = berth.stderr();
        while log.matches(replaced).count() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            log = berth.stderr();
        }
        assert_eq!(log.matches(cut_off).count(), n, "{log}");
        assert_eq!(log.matches(replaced).count(), n, "{log}");
    }
    // Timers fire again: a request that waits for one is answered.
    assert_eq!(http(&addr, "/sleep", &[]), (200, "slept".into()));
    assert_eq!(http(&addr, "/log", &[]).0, 201);
}

/// The peak resident memory of process `pid` (`VmHWM`), in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("berth's status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    kib * 1024
}

/// POSTs `chunks` MiB (zeros, 1 MiB per write) to `path`; status and body of the answer.
fn upload(addr: &str, path: &str, chunks: usize) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to berth");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        chunks << 20
    );
    stream.write_all(head.as_bytes()).expect("send the head");
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..chunks {
        stream.write_all(&chunk).expect("send the body");
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    status_and_body(&response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_through_a_js_worker_in_bounded_memory() {
    let app = alchemy_app("streams", Some(WORKER));
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    assert_eq!(http(&addr, "/ping", &[]), (200, "pong".into()));

    // 512 MiB through `return getContainer(…).fetch(request)` to a container that counts
    // them: berth holds a few chunks at a time, never the upload.
    let (status, body) = upload(&addr, "/count", 512);
    assert_eq!(status, 200, "{body}\n{}", berth.stderr());
    assert!(body.contains(&(512u64 << 20).to_string()), "{body}");
    let peak = peak_memory(berth.pid());
    eprintln!(
        "berth's peak memory (VmHWM) after a 512 MiB upload: {} MiB",
        peak >> 20
    );
    assert!(
        peak < 200 << 20,
        "berth's peak memory was {} MiB for a 512 MiB upload",
        peak >> 20
    );

    // clone() splits a body that streams, for requests and answers alike.
    let (status, body) = upload(&addr, "/clone", 1);
    assert_eq!(
        (status, body.as_str()),
        (200, "1048576|1048576|1048576|1048576")
    );

    // The container's first line reaches the client while the container still holds back
    // its last one (for 60 s): the answer is passed on as it is produced.
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect to berth");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream
        .write_all(b"GET /drip HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&seen).contains("first line") && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(
        seen.contains("first line") && !seen.contains("last line"),
        "{seen}"
    );

    // A stream the worker makes reaches the client chunk by chunk: the first chunk of the
    // answer comes back while the request has sent only its first, so the answer cannot
    // have been read whole before it left.
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect to berth");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream
        .write_all(b"POST /upper HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .expect("send the first chunk");
    let seen = read_until(&mut stream, "HELLO");
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(
        seen.contains("HELLO"),
        "the first chunk did not come back alone: {seen}"
    );
    stream
        .write_all(b"6\r\n world\r\n0\r\n\r\n")
        .expect("send the last chunk");
    let rest = read_until(&mut stream, "\r\n0\r\n\r\n");
    assert!(rest.contains(" WORLD"), "{rest}");
    assert!(
        rest.ends_with("\r\n0\r\n\r\n"),
        "the answer did not end: {rest}"
    );

    // A stream that fails breaks the answer off: what was sent arrives, but not the end
    // of a whole chunked body.
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect to berth");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream
        .write_all(b"GET /broken HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let seen = read_until(&mut stream, "\r\n0\r\n\r\n");
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("a part"), "{seen}");
    assert!(
        !seen.contains("\r\n0\r\n\r\n"),
        "a broken stream was sent as a whole body: {seen}"
    );
}

/// What `stream` gives until `needle` is among it, the connection ends, or 30 s pass.
fn read_until(stream: &mut std::net::TcpStream, needle: &str) -> String {
    use std::io::Read;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&seen).contains(needle) && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn a_worker_that_imports_an_unknown_module_is_named_in_the_error() {
    let worker = "import { Hono } from \"hono\";\nexport { MyContainer } from \"./container.ts\";\nexport default new Hono();\n";
    let app = alchemy_app("unknown-import", Some(worker));
    let (code, stderr) = run_to_end(&["dev", "--port", "0"], &app.dir, &[]);
    assert_ne!(code, Some(0));
    let worker = Path::new(&app.dir).join("src/worker.ts");
    assert!(stderr.contains("\"hono\""), "{stderr}");
    assert!(stderr.contains(&worker.display().to_string()), "{stderr}");
}

/// Berth's standard error once it holds `needle`, or after `limit`.
fn stderr_within(berth: &Berth, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let log = berth.stderr();
        if log.contains(needle) || Instant::now() >= deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Rewrites the example's `src/container.ts` with `edits` (each a text and what replaces
/// it), and checks that each of `needles` is in the result.
fn edit_class(app: &AppDir, edits: &[(&str, &str)], needles: &[&str]) {
    edit(app, "src/container.ts", edits, needles);
}

/// Replaces, in the example's worker, its one line that sends to the container with
/// `calls` (which ends by sending what it does not answer), and checks it for `needle`.
fn edit_worker(app: &AppDir, calls: &str, needle: &str) {
    let sends = "const container = getContainer(env.MY_CONTAINER, \"container\");\n    return container.fetch(request);";
    edit(app, "src/worker.ts", &[(sends, calls)], &[needle]);
}

/// Edits `file` of the app (each `from` replaced by its `to`), and checks that it then
/// holds each of `needles`.
fn edit(app: &AppDir, file: &str, edits: &[(&str, &str)], needles: &[&str]) {
    let path = app.dir.join(file);
    let mut source = std::fs::read_to_string(&path).expect(file);
    for (from, to) in edits {
        source = source.replace(from, to);
    }
    for needle in needles {
        assert!(source.contains(needle), "{needle} in {source}");
    }
    std::fs::write(&path, source).expect(file);
}

const ON_START: &str = r#"field = "unset";
  override async onStart() {
    this.field = "set by onStart";
    await this.ctx.storage.put("mark", { by: "onStart", id: String(this.ctx.id) });
"#;

const ON_STOP: &str = r#"override async onStop(params: { exitCode: number; reason: string }) {
    const mark = await this.ctx.storage.get("mark");
    console.log(`hook state: ${this.field}; storage: ${mark.by} ${mark.id === String(this.ctx.id)}; reason: ${params.reason}`);
"#;

const BLOCKING: &str = r#"constructor(ctx: any, env: any) {
    super(ctx, env);
    ctx.blockConcurrencyWhile(async () => {
      await new Promise((resolve) => setTimeout(resolve, 300));
      this.loaded = "what the constructor loaded";
    });
  }

  loaded = "nothing yet";

  override onStart() {
    console.log(`onStart sees ${this.loaded}`);
    try {
      this.ctx.storage.sql.exec("select 1");
    } catch (error) {
      console.log(`sql: ${error.message}`);
    }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_concurrency_while_holds_the_hooks_until_it_settles() {
    let app = alchemy_app("block", None);
    edit_class(
        &app,
        &[("override onStart() {", BLOCKING)],
        &["blockConcurrencyWhile"],
    );
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    let (status, body) = http(&addr, "/", &[]);
    assert_eq!(status, 200, "{body}\n{}", berth.stderr());
    let log = stderr_within(&berth, "onStart sees", Duration::from_secs(30));
    assert!(
        log.contains("onStart sees what the constructor loaded"),
        "{log}"
    );
    // Cloudflare's SQL API is not there, and says so.
    let log = stderr_within(&berth, "sql: ", Duration::from_secs(30));
    assert!(
        log.contains("sql: this.ctx.storage.sql: berth keeps"),
        "{log}"
    );
}

const KEEP_AWAKE: &str = r#"override onStart() {
    void this.keepAwake();
  }

  // Renews the activity timeout each second for 6 s, three times the sleepAfter of 2 s.
  async keepAwake() {
    for (let n = 1; n <= 6; n++) {
      this.renewActivityTimeout();
      console.log(`kept awake ${n}`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  started() {"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_activity_timeout_keeps_an_idle_container_awake() {
    let app = alchemy_app("renew", None);
    edit_class(
        &app,
        &[
            ("sleepAfter = \"3m\"", "sleepAfter = \"2s\""),
            ("override onStart() {", KEEP_AWAKE),
        ],
        &["sleepAfter = \"2s\"", "keepAwake"],
    );
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    let (status, body) = http(&addr, "/", &[]);
    assert_eq!(status, 200, "{body}\n{}", berth.stderr());
    // No request after the first: only the renewals keep it awake, and then it sleeps.
    let stopped = "Container successfully shut down";
    let log = stderr_within(&berth, stopped, Duration::from_secs(90));
    let at = |needle: &str| log.find(needle).unwrap_or(usize::MAX);
    assert!(at("kept awake 6") < at(stopped), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_class_hooks_run_in_javascript() {
    let app = alchemy_app("hooks", None);
    // Also: onStart's instance keeps its fields until onStop, and ctx.storage keeps
    // what onStart put.
    edit_class(
        &app,
        &[
            ("sleepAfter = \"3m\"", "sleepAfter = \"2s\""),
            ("override onStart() {", ON_START),
            ("override onStop() {", ON_STOP),
        ],
        &["sleepAfter = \"2s\"", "storage.put", "storage.get"],
    );
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    let (status, body) = http(&addr, "/", &[]);
    assert_eq!(status, 200, "{body}\n{}", berth.stderr());

    let started = "Container successfully started";
    let log = stderr_within(&berth, started, Duration::from_secs(30));
    assert!(log.contains(started), "{log}");
    // Idle for sleepAfter, the container sleeps, and onStop says so.
    let stopped = "Container successfully shut down";
    let log = stderr_within(&berth, stopped, Duration::from_secs(90));
    assert!(log.contains(stopped), "{log}");
    let at = |needle: &str| log.find(needle).unwrap_or(usize::MAX);
    assert!(at(started) < at(stopped), "onStart before onStop:\n{log}");
    let state = "hook state: set by onStart; storage: onStart true; reason: runtime_signal";
    assert!(log.contains(state), "{state} in:\n{log}");
    // The container that slept is gone; berth logs reads what it wrote from the folder.
    let logs = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("logs")
        .arg(&app.dir)
        .output()
        .expect("berth logs");
    let out = String::from_utf8_lossy(&logs.stdout);
    assert!(
        logs.status.success(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    assert!(
        out.lines().any(|l| l.contains(" MyContainer ")
            && l.contains(" stderr | berth-test-server: listening on")),
        "{out}"
    );
}

const ON_PAUSE: &str = r#"override onPause() {
    console.log(`paused, and still: ${this.field}`);
  }

  override onStop() {"#;

/// `sleepMode = "pause"`: the JS class's `onPause` runs on the instance `onStart` made,
/// and a request thaws the same container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_pause_runs_in_javascript_when_the_container_is_paused() {
    let app = alchemy_app("pause-hook", None);
    edit_class(
        &app,
        &[
            (
                "sleepAfter = \"3m\"",
                "sleepAfter = \"2s\";\n  sleepMode = \"pause\"",
            ),
            ("override onStart() {", ON_START),
            ("override onStop() {", ON_PAUSE),
        ],
        &["sleepMode = \"pause\"", "onPause", "storage.put"],
    );
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    let (status, body) = http(&addr, "/", &[]);
    assert_eq!(status, 200, "{body}\n{}", berth.stderr());
    let paused = "paused, and still: set by onStart";
    let log = stderr_within(&berth, paused, Duration::from_secs(60));
    assert!(log.contains(paused), "{log}");
    assert!(
        !log.contains("Container successfully shut down"),
        "a pause is no stop:\n{log}"
    );
    let (status, body) = http(&addr, "/", &[]);
    assert_eq!(status, 200, "{body}\n{}", berth.stderr());
    let thawed = "thawed in";
    let log = stderr_within(&berth, thawed, Duration::from_secs(10));
    assert!(log.contains(thawed), "{log}");
}

const EXPIRY: &str = r#"expiries = 0;
  override async onActivityExpired() {
    this.expiries++;
    console.log(`activity expired ${this.expiries}`);
    if (this.expiries >= 2) await this.stop();
  }

  override onStop() {"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_loops_is_cut_off_and_on_activity_expired_keeps_the_container_awake() {
    let app = alchemy_app("hook-expiry", None);
    edit_class(
        &app,
        &[
            ("sleepAfter = \"3m\"", "sleepAfter = \"2s\""),
            (
                "override onStart() {",
                "override onStart() {\n    while (true) {}",
            ),
            ("override onStop() {", EXPIRY),
        ],
        &["sleepAfter = \"2s\"", "while (true)", "onActivityExpired"],
    );
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    let (status, body) = http(&addr, "/", &[]);
    assert_eq!(status, 200, "{body}\n{}", berth.stderr());

    let cut_off = "MyContainer.onStart()";
    let log = stderr_within(
        &berth,
        "ran JavaScript for more than 5s",
        Duration::from_secs(60),
    );
    assert!(log.contains(cut_off), "{log}");
    // The container is served after its onStart was cut off.
    assert_eq!(http(&addr, "/ping", &[]), (200, "pong".into()));

    // The first expiry keeps it awake; the second stops it.
    let stopped = "Container successfully shut down";
    let log = stderr_within(&berth, stopped, Duration::from_secs(120));
    let at = |needle: &str| log.find(needle).unwrap_or(usize::MAX);
    assert!(at("activity expired 1") < at("activity expired 2"), "{log}");
    assert!(at("activity expired 2") < at(stopped), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_crashes_reaches_on_error_then_on_stop() {
    let app = alchemy_app("hook-crash", None);
    let state = "override async onStop() {\n    const s = await this.getState();\n    console.log(`state then: ${s.status} ${s.exitCode}`);";
    // As Cloudflare's own onError, and its examples', this one rethrows what it is given.
    let rethrows = "console.log(\"Container error:\", error);\n    throw error;";
    edit_class(
        &app,
        &[
            ("override onStop() {", state),
            ("console.log(\"Container error:\", error);", rethrows),
        ],
        &["state then", "throw error;"],
    );
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    assert_eq!(http(&addr, "/ping", &[]), (200, "pong".into()));
    // The test server exits with code 3 as it answers; what the request gets back is
    // not this test's concern, so it is sent and not read.
    let mut exit = std::net::TcpStream::connect(&addr).expect("connect to berth");
    let request = "GET /exit/3 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    std::io::Write::write_all(&mut exit, request.as_bytes()).expect("send");

    let stopped = "Container successfully shut down";
    let log = stderr_within(&berth, stopped, Duration::from_secs(60));
    let at = |needle: &str| log.find(needle).unwrap_or(usize::MAX);
    let error = "Container error: Error: container exited with code 3";
    assert!(at("Container successfully started") < at(error), "{log}");
    assert!(at(error) < at(stopped), "{log}");
    // getState() gives the exit code, as Cloudflare's does.
    assert!(log.contains("state then: stopped_with_code 3"), "{log}");
    // The error it rethrew is the one berth reported: not a failure of the hook.
    assert!(!log.contains("onError() of"), "{log}");
    drop(exit);
}

const SCHEDULE: &str = r#"override async onStart() {
    const state = await this.getState();
    const pong = await (await this.containerFetch("http://container/ping")).text();
    console.log(`own methods: ${state.status} ${pong}`);
    const task = await this.schedule(1, "tick", { n: 1 });
    console.log(`scheduled ${task.type} ${(await this.getSchedules()).length}`);
    await this.stop();
  }

  async tick(payload: { n: number }) {
    const before = (await this.getState()).status;
    // The current library's form: one object of ports and start options.
    await this.startAndWaitForPorts({ ports: 8080, startOptions: { envVars: { TICKED: "yes" } } });
    const pong = await (await this.containerFetch("http://container/ping")).text();
    const env = await (await this.containerFetch("http://container/env")).json();
    console.log(`tick ${payload.n}: was ${before}, then ${pong}, with TICKED=${env.TICKED}`);
  }

  started() {"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_class_reaches_its_container_from_hooks_and_schedules() {
    let app = alchemy_app("schedule", None);
    edit_class(
        &app,
        &[("override onStart() {", SCHEDULE)],
        &["this.schedule(1"],
    );
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    assert_eq!(http(&addr, "/ping", &[]), (200, "pong".into()));

    // onStart reads the state, calls the container, schedules a tick and stops it; the
    // tick, a second later, finds it stopped and starts it again.
    let ticked = "tick 1: was stopped";
    let log = stderr_within(&berth, ticked, Duration::from_secs(60));
    let at = |needle: &str| log.find(needle).unwrap_or(usize::MAX);
    assert!(
        at("own methods: healthy pong") < at("scheduled delayed 1"),
        "{log}"
    );
    assert!(at("scheduled delayed 1") < at(ticked), "{log}");
    let log = stderr_within(&berth, "then pong", Duration::from_secs(60));
    assert!(
        log.contains("tick 1: was stopped, then pong, with TICKED=yes"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_outlives_a_restart_of_berth() {
    let app = alchemy_app("schedule-kept", None);
    let schedule = SCHEDULE.replace("this.schedule(1,", "this.schedule(10,");
    edit_class(
        &app,
        &[("override onStart() {", &schedule)],
        &["this.schedule(10"],
    );
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    assert_eq!(http(&addr, "/ping", &[]), (200, "pong".into()));
    let scheduled = "scheduled delayed 1";
    let log = stderr_within(&berth, scheduled, Duration::from_secs(60));
    assert!(log.contains(scheduled), "{log}");
    // berth stops well within the 10 s, with the tick still to come.
    berth.signal("INT");
    assert_eq!(berth.wait(Duration::from_secs(60)), Some(0));
    let log = berth.stderr();
    assert!(
        !log.contains("tick 1"),
        "the tick came before berth stopped, so this run shows nothing: {log}"
    );

    // A new berth on the same folder runs it, without a request to wake anything.
    let berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let ticked = "tick 1: was stopped, then pong";
    let log = stderr_within(&berth, ticked, Duration::from_secs(60));
    assert!(log.contains(ticked), "{log}");
}

const THROWING_SCHEDULE: &str = r#"override async onStart() {
    await this.schedule(1, "boom", {});
    const after = await this.schedule(4, "after", {});
    console.log(`two scheduled; after at ${after.time}`);
  }

  boom = async () => {
    console.log("boom ran");
    throw new Error("boom failed on purpose");
  };

  async after() {
    // Its own schedule is still listed while it runs, as Cloudflare's is, at the time
    // it was set for.
    const left = await this.getSchedules();
    console.log(`after ran; left: ${left.map((task) => task.callback).join(",")}`);
    console.log(`listed at ${left.map((task) => task.time).join(",")}`);
  }

  started() {"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_whose_method_throws_is_logged_and_not_run_again() {
    let app = alchemy_app("schedule-throws", None);
    edit_class(
        &app,
        &[("override onStart() {", THROWING_SCHEDULE)],
        &["boom = async"],
    );
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    assert_eq!(http(&addr, "/ping", &[]), (200, "pong".into()));
    // "boom" (a field holding an arrow function) is due at 1 s and throws; as on
    // Cloudflare its schedule is then done. A retry, had there been one, would come 1 s
    // later, before "after" at 4 s.
    let after = "after ran; left: after\n";
    let log = stderr_within(&berth, after, Duration::from_secs(60));
    assert!(log.contains(after), "{log}");
    assert_eq!(log.matches("boom ran").count(), 1, "{log}");
    assert!(log.contains("Error: boom failed on purpose"), "{log}");
    let number_after = |marker: &str| {
        let log = stderr_within(&berth, "listed at ", Duration::from_secs(10));
        let at = log.find(marker).map(|i| &log[i + marker.len()..]);
        at.and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{marker:?} and a time in: {log}"))
    };
    assert_eq!(number_after("listed at "), number_after("after at "));
}

const TWO_AT_ONCE: &str = r#"override async onStart() {
    await this.schedule(1, "slow", {});
    await this.schedule(1, "quick", {});
    console.log("both scheduled");
  }

  async slow() {
    console.log("slow began");
    await new Promise((resolve) => setTimeout(resolve, 1500));
    console.log("slow done");
  }

  async quick() {
    console.log("quick ran");
  }

  started() {"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_objects_schedules_due_together_run_one_at_a_time_in_order() {
    let app = alchemy_app("schedule-turns", None);
    edit_class(
        &app,
        &[("override onStart() {", TWO_AT_ONCE)],
        &["async quick()"],
    );
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    assert_eq!(http(&addr, "/ping", &[]), (200, "pong".into()));
    let log = stderr_within(&berth, "quick ran", Duration::from_secs(60));
    let at = |line: &str| {
        log.find(line)
            .unwrap_or_else(|| panic!("{line:?} in: {log}"))
    };
    // Due 1 s after onStart, a moment apart: "quick" waits until "slow" has ended.
    assert!(at("slow began") < at("slow done"), "{log}");
    assert!(at("slow done") < at("quick ran"), "{log}");
}

/// The routing example's object names, as berth's container labels give them.
async fn object_names(app: &AppDir) -> Vec<String> {
    let mut names: Vec<String> = app
        .containers()
        .await
        .iter()
        .map(|c| c.labels[berth::runtime::docker::labels::OBJECT_NAME].clone())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routing_example_spreads_round_robin_over_three_and_gives_each_user_one() {
    let name = format!("cli-alchemy-routing-{}", std::process::id());
    let dir = std::env::temp_dir().join("berth-cli-tests").join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).expect("app dir");
    let example = root().join("examples/alchemy-routing");
    for file in ["Dockerfile", "src/container.ts", "src/worker.ts"] {
        std::fs::copy(example.join(file), dir.join(file)).expect(file);
    }
    let program = std::fs::read_to_string(example.join("alchemy.run.ts")).expect("program");
    let program = program.replace("alchemy(\"routing\")", &format!("alchemy({name:?})"));
    assert!(program.contains(&name), "{program}");
    std::fs::write(dir.join("alchemy.run.ts"), program).expect("alchemy.run.ts");
    std::fs::copy(server_binary(), dir.join("server")).expect("server");
    let app = AppDir { dir, name };
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();

    // The worker passes the path on as it is; the container's own 404 says it got it.
    let from_container = (404, "not found: /rr/ping".to_string());
    for _ in 0..6 {
        let answer = http(&addr, "/rr/ping", &[]);
        assert_eq!(answer, from_container, "{}", berth.stderr());
    }
    assert_eq!(
        object_names(&app).await,
        ["instance-0", "instance-1", "instance-2"]
    );
    for _ in 0..3 {
        assert_eq!(
            http(&addr, "/ping", &[("cookie", "theme=dark; user=erin")]),
            (200, "pong".into())
        );
    }
    let (status, body) = http(&addr, "/ping", &[]);
    assert_eq!(status, 400, "{body}");
    for _ in 0..5 {
        let answer = http(&addr, "/random/ping", &[]);
        assert_eq!(answer, (404, "not found: /random/ping".into()));
    }
    // getRandom picks within the same pool; erin has one container of her own.
    assert_eq!(
        object_names(&app).await,
        ["instance-0", "instance-1", "instance-2", "user-erin"]
    );
}

const DO_ALARM: &str = r#"override async onStart() {
    await this.ctx.storage.setAlarm(Date.now() + 60_000);
    // Set again: one alarm per object, the last time set.
    await this.ctx.storage.setAlarm(new Date(Date.now() + 500));
    console.log(`alarm set: ${(await this.ctx.storage.getAlarm()) !== null}; schedules: ${(await this.getSchedules()).length}`);
  }

  async alarm(info: { retryCount: number; isRetry: boolean }) {
    // As a class written for Cloudflare's Container does: there, it runs the schedules.
    await super.alarm();
    const n = ((await this.ctx.storage.get("alarms")) ?? 0) + 1;
    await this.ctx.storage.put("alarms", n);
    console.log(`alarm ran ${n}, retry ${info.retryCount}`);
    if (n === 1) throw new Error("the first alarm fails on purpose");
    await this.ctx.storage.deleteAll();
    console.log(`after the alarm: ${await this.ctx.storage.getAlarm()}, ${(await this.ctx.storage.list()).size} keys`);
  }

  started() {"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durable_object_alarm_runs_alarm_and_retries_it_when_it_throws() {
    let app = alchemy_app("do-alarm", None);
    edit_class(
        &app,
        &[("override onStart() {", DO_ALARM)],
        &["async alarm("],
    );
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    assert_eq!(http(&addr, "/ping", &[]), (200, "pong".into()));
    let done = "after the alarm: null, 0 keys";
    let log = stderr_within(&berth, done, Duration::from_secs(60));
    assert!(log.contains("alarm set: true; schedules: 0"), "{log}");
    let at = |line: &str| {
        log.find(line)
            .unwrap_or_else(|| panic!("{line:?} in: {log}"))
    };
    // The one alarm set last runs; its throw is retried; the second run ends it.
    assert!(
        at("alarm ran 1, retry 0") < at("alarm ran 2, retry 1"),
        "{log}"
    );
    assert!(at("alarm ran 2, retry 1") < at(done), "{log}");
    assert_eq!(log.matches("alarm ran").count(), 2, "{log}");
}

const SCHEDULED: &str = r#"import { getContainer } from "@cloudflare/containers";
export { MyContainer } from "./container.ts";

export default {
  async fetch(request: Request, env: any): Promise<Response> {
    return getContainer(env.MY_CONTAINER, "container").fetch(request);
  },
  async scheduled(controller: any, env: any) {
    const pong = await (await getContainer(env.MY_CONTAINER, "container").fetch("http://container/ping")).text();
    console.log(`tick ${controller.cron} due ${new Date(controller.scheduledTime).toISOString()}: ${pong}`);
  },
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_cron_trigger_runs_its_scheduled_handler_and_one_missed_runs_at_start() {
    let app = alchemy_app("crons", Some(SCHEDULED));
    let program = app.dir.join("alchemy.run.ts");
    let source = std::fs::read_to_string(&program).expect("alchemy.run.ts");
    let edited = source.replace(
        "  name: \"my-worker\",\n",
        "  name: \"my-worker\",\n  crons: [\"0 0 1 1 *\"],\n",
    );
    assert!(edited.contains("crons"), "{edited}");
    std::fs::write(&program, edited).expect("alchemy.run.ts");
    // As if berth had last run on 2 January 2020: the ticks of every 1 January since
    // were missed, and one run, for the latest, stands for them at the start.
    std::fs::create_dir_all(app.dir.join(".berth")).expect(".berth");
    let store = berth::Store::open(app.dir.join(".berth/state.db")).expect("store");
    let key = format!("{}/my-worker/0 0 1 1 *|scheduled", app.name);
    store
        .cron_started(&key, 1_577_923_200_000)
        .await
        .expect("seed the store");
    drop(store);
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    berth.ready();
    let year = std::process::Command::new("date")
        .args(["-u", "+%Y"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .expect("date");
    let tick = format!("tick 0 0 1 1 * due {year}-01-01T00:00:00.000Z: pong");
    let tick = tick.as_str();
    let log = stderr_within(&berth, tick, Duration::from_secs(60));
    assert!(log.contains(tick), "{log}");
    assert_eq!(log.matches("tick 0 0 1 1 *").count(), 1, "{log}");
}

const METHODS: &str = r#"count = 0;
  async greet(name: string) {
    this.count++;
    const pong = await (await this.containerFetch("http://container/ping")).text();
    return { hello: name, count: this.count, pong };
  }

  async refuse() {
    throw new Error("refused on purpose");
  }

  async answer() {
    return this.containerFetch("/echo", { method: "POST", body: "\u00e9t\u00e9 \u2713" });
  }

  override onStop() {"#;

const CALLER: &str = r#"const container = getContainer(env.MY_CONTAINER, "container");
    const path = new URL(request.url).pathname;
    const called = async (call: () => Promise<unknown>) => {
      try {
        return JSON.stringify(await call());
      } catch (error) {
        return `threw: ${error instanceof Error ? error.message : error}`;
      }
    };
    if (path === "/greet") return new Response(await called(() => (container as any).greet("you")));
    if (path === "/refuse") return new Response(await called(() => (container as any).refuse()));
    if (path === "/missing") return new Response(await called(() => (container as any).missing()));
    if (path === "/answer") {
      const answer = await (container as any).answer();
      return new Response(`${answer.status} ${answer.headers.get("content-length")} ${await answer.text()}`);
    }
    return container.fetch(request);"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stub_calls_the_methods_of_the_class_in_the_objects_instance() {
    let app = alchemy_app("methods", None);
    edit_class(&app, &[("override onStop() {", METHODS)], &["async greet("]);
    edit_worker(&app, CALLER, "/greet");
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    // The method runs in the object's one instance (its field counts on), reaches the
    // container, and its answer comes back as it was.
    let first = http(&addr, "/greet", &[]);
    assert_eq!(
        first,
        (200, r#"{"hello":"you","count":1,"pong":"pong"}"#.into()),
        "{}",
        berth.stderr()
    );
    assert_eq!(
        http(&addr, "/greet", &[]),
        (200, r#"{"hello":"you","count":2,"pong":"pong"}"#.into())
    );
    assert_eq!(http(&addr, "/ping", &[]), (200, "pong".into()));
    // A method's Response comes back as one: status, headers and body (bytes as they were).
    assert_eq!(
        http(&addr, "/answer", &[]),
        (200, "200 9 été ✓".into()),
        "{}",
        berth.stderr()
    );
    // What the method throws, and a method the class lacks, are thrown to the caller.
    // What a method throws is thrown to the caller as it was: its message, no more.
    assert_eq!(
        http(&addr, "/refuse", &[]),
        (200, "threw: refused on purpose".into())
    );
    let (_, text) = http(&addr, "/missing", &[]);
    assert!(
        text.contains("MyContainer has no method missing()"),
        "{text}"
    );
}

const RESETS: &str = r#"instance = 0;
  constructor(ctx: any, env: any) {
    super(ctx, env);
    made += 1;
    this.instance = made;
    ctx.blockConcurrencyWhile(async () => {
      if (this.instance === 1) throw new Error("the first load failed");
    });
  }

  async which() {
    return this.instance;
  }

  async portReady() {
    await this.stop();
    let before;
    try {
      await this.waitForPort({ portToCheck: 8080 });
    } catch (error) {
      before = error.message;
    }
    await this.start();
    await this.waitForPort({ portToCheck: 8080 });
    const pong = await (await this.containerFetch("http://container/ping")).text();
    return `${before} | then ${pong}`;
  }

  override onStop() {"#;

const RESETS_CALLER: &str = r#"const container = getContainer(env.MY_CONTAINER, "container");
    const path = new URL(request.url).pathname;
    if (path === "/which") return new Response(String(await (container as any).which()));
    if (path === "/ready") return new Response(String(await (container as any).portReady()));
    return container.fetch(request);"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_block_concurrency_while_resets_the_object_and_wait_for_port_waits() {
    let app = alchemy_app("resets", None);
    // The class's instances are counted in its module.
    let counted = "let made = 0;\nexport class MyContainer";
    edit_class(
        &app,
        &[
            ("override onStop() {", RESETS),
            ("export class MyContainer", counted),
        ],
        &["the first load failed", counted],
    );
    edit_worker(&app, RESETS_CALLER, "/which");
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    // The container starts, and onStart makes the object's first instance, whose load
    // fails: onStart goes on in it, and the next event gets a new instance, whose load
    // succeeds and which stays while the container runs.
    assert_eq!(http(&addr, "/ping", &[]), (200, "pong".into()));
    let started = "Container successfully started";
    let log = stderr_within(&berth, started, Duration::from_secs(30));
    assert!(log.contains(started), "{log}");
    assert_eq!(
        http(&addr, "/which", &[]),
        (200, "2".into()),
        "{}",
        berth.stderr()
    );
    assert_eq!(http(&addr, "/which", &[]), (200, "2".into()));
    let log = berth.stderr();
    assert!(
        log.contains("blockConcurrencyWhile's callback failed: Error: the first load failed"),
        "{log}"
    );
    // waitForPort refuses a container that does not run, and waits for one that does.
    let (status, body) = http(&addr, "/ready", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("waitForPort: the container is stopped, not running"),
        "{body}"
    );
    assert!(body.ends_with(" | then pong"), "{body}");
}

const OWN_FETCH: &str = r#"count = 0;
  override async fetch(request: Request): Promise<Response> {
    if (new URL(request.url).pathname === "/denied") {
      return new Response("denied by the class", { status: 403 });
    }
    this.count++;
    // A key never written reads as undefined.
    const stored = ((await this.ctx.storage.get("stored")) ?? 0) + 1;
    await this.ctx.storage.put("stored", stored);
    const answer = await this.containerFetch(request);
    return new Response(`${this.count}/${stored}: ${await answer.text()}`, { status: answer.status });
  }

  override onStop() {"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_with_a_fetch_of_its_own_answers_for_its_objects() {
    let app = alchemy_app("own-fetch", None);
    edit_class(
        &app,
        &[("override onStop() {", OWN_FETCH)],
        &["containerFetch(request)"],
    );
    // Cloudflare's containerFetch goes to the container, not through the class's fetch.
    edit_worker(
        &app,
        r#"const container = getContainer(env.MY_CONTAINER, "container");
    if (request.headers.has("x-direct")) return container.containerFetch(request);
    return container.fetch(request);"#,
        "x-direct",
    );
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();

    // The class answers without its container, and none is started for it.
    let answer = http(&addr, "/denied", &[]);
    assert_eq!(
        answer,
        (403, "denied by the class".into()),
        "{}",
        berth.stderr()
    );
    assert!(app.containers().await.is_empty());
    // Through the class to the container; one instance of the class for the object.
    assert_eq!(http(&addr, "/ping", &[]), (200, "1/1: pong".into()));
    assert_eq!(http(&addr, "/ping", &[]), (200, "2/2: pong".into()));
    assert_eq!(app.containers().await.len(), 1);
    assert_eq!(
        http(&addr, "/ping", &[("x-direct", "1")]),
        (200, "pong".into())
    );
    assert_eq!(http(&addr, "/ping", &[]), (200, "3/3: pong".into()));
}

const WEB_APIS: &str = r#"export default {
  async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const stream = new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode("stre"));
        controller.enqueue(new TextEncoder().encode("amed"));
        controller.close();
      },
    });
    let streamed = "";
    const reader = stream.getReader();
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      streamed += new TextDecoder().decode(read.value);
    }
    return Response.json({
      uuid: /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(crypto.randomUUID()),
      random: crypto.getRandomValues(new Uint8Array(16)).some((b) => b !== 0),
      text: new TextDecoder().decode(new TextEncoder().encode("héllo")),
      query: url.searchParams.get("q"),
      stream: streamed,
    });
  },
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_containers_has_the_web_apis() {
    let name = format!("cli-alchemy-web-{}", std::process::id());
    let dir = std::env::temp_dir().join("berth-cli-tests").join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).expect("app dir");
    // No import of @cloudflare/containers or cloudflare:workers at all.
    let program = "import { Worker } from \"alchemy/cloudflare\";\nawait Worker(\"web\", { entrypoint: \"./src/worker.ts\" });\n";
    std::fs::write(dir.join("alchemy.run.ts"), program).expect("alchemy.run.ts");
    std::fs::write(dir.join("src/worker.ts"), WEB_APIS).expect("worker.ts");
    let app = AppDir { dir, name };
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    let (status, body) = http(&addr, "/?q=a%20b", &[]);
    assert_eq!(status, 200, "{body}\n{}", berth.stderr());
    let seen: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let expected = serde_json::json!({
        "uuid": true, "random": true, "text": "héllo", "query": "a b", "stream": "streamed",
    });
    assert_eq!(seen, expected);
}

/// A class's hooks run where its code is: in the worker whose entrypoint exports it,
/// though another worker bound to it comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_in_the_worker_that_exports_the_class_not_the_first_bound() {
    let app = alchemy_app("hooks-exporter", None);
    let program = r#"import { Container, Worker } from "alchemy/cloudflare";
import type { MyContainer } from "./src/container.ts";
const container = await Container<MyContainer>("my-container", { className: "MyContainer" });
export const front = await Worker("front", {
  entrypoint: "./src/front.ts",
  bindings: { MY_CONTAINER: container },
});
export const worker = await Worker("my-worker", {
  entrypoint: "./src/worker.ts",
  bindings: { MY_CONTAINER: container },
});
"#;
    let front = r#"import { getContainer } from "@cloudflare/containers";
export default {
  async fetch(request: Request, env: any): Promise<Response> {
    return getContainer(env.MY_CONTAINER, "container").fetch(request);
  },
};
"#;
    std::fs::write(app.dir.join("alchemy.run.ts"), program).expect("alchemy.run.ts");
    std::fs::write(app.dir.join("src/front.ts"), front).expect("front.ts");
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    let (status, body) = http(&addr, "/", &[]);
    assert_eq!(status, 200, "{body}\n{}", berth.stderr());
    let started = "Container successfully started";
    let log = stderr_within(&berth, started, Duration::from_secs(30));
    assert!(log.contains(started), "{log}");
    assert!(!log.contains("MyContainer.onStart() of"), "{log}");
}

const RESTARTS: &str = r#"seen = "nothing";
  constructor(ctx: any, env: any) {
    super(ctx, env);
    // The constructor reaches its container already, as on Cloudflare.
    ctx.blockConcurrencyWhile(async () => {
      this.seen = (await this.getState()).status;
    });
  }

  async restartWith(message: string) {
    const seen = this.seen;
    await this.stop("SIGINT");
    this.envVars = { ...this.envVars, MESSAGE: message };
    await this.startAndWaitForPorts();
    const headers = await (await this.containerFetch("/headers")).text();
    const host = headers.split("\n").find((line) => line.startsWith("host:"));
    await this.schedule(3600, "later", { n: 1 });
    await this.schedule(7200, "later", { n: 2 });
    await this.schedule(7200, "other", {});
    const listed = (await this.listSchedules("later")).length;
    // As Cloudflare's (synchronous), a deleteSchedules not awaited comes before what follows.
    this.deleteSchedules("later");
    await this.schedule(60, "later", { n: 3 });
    const left = (await this.getSchedules()).map((task) => task.callback).sort().join(",");
    return `${seen}; ${host}; later: ${listed}, then left: ${left}`;
  }

  async later() {}
  async other() {}

  override onStop() {"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_from_the_class_takes_its_fields_as_they_are_then() {
    let app = alchemy_app("restarts", None);
    edit_class(
        &app,
        &[("override onStop() {", RESTARTS)],
        &["restartWith("],
    );
    edit_worker(
        &app,
        r#"const container = getContainer(env.MY_CONTAINER, "container");
    if (new URL(request.url).pathname === "/restart") return new Response(await (container as any).restartWith("set at run time"));
    return container.fetch(request);"#,
        "/restart",
    );
    // As Cloudflare asks of a worker whose containers' egress it intercepts.
    edit(
        &app,
        "src/worker.ts",
        &[(
            "export { MyContainer }",
            "export { ContainerProxy } from \"@cloudflare/containers\";\nexport { MyContainer }",
        )],
        &["export { ContainerProxy }"],
    );
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    let (status, text) = http(&addr, "/", &[]);
    assert_eq!(status, 200, "{text}\n{}", berth.stderr());
    assert!(
        text.contains("I was passed in via the container class!"),
        "{text}"
    );
    // The method stops the container, changes this.envVars and starts it again: the new
    // container has the new value. Its relative containerFetch reaches it as Cloudflare's
    // would, with the host Cloudflare's library gives it.
    let (status, text) = http(&addr, "/restart", &[]);
    assert_eq!(
        (status, text.as_str()),
        (
            200,
            "healthy; host: container; later: 2, then left: later,other"
        ),
        "{}",
        berth.stderr()
    );
    let (status, text) = http(&addr, "/", &[]);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("set at run time"), "{text}");
}

/// Cloudflare's own example, with its wrangler.jsonc and src/index.ts as they stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrangler_project_runs_as_written() {
    let app = wrangler_app("dev");
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    let (status, text) = http(&addr, "/", &[]);
    assert_eq!(status, 200, "{text}\n{}", berth.stderr());
    assert!(
        text.starts_with("Call /container to start a container"),
        "{text}"
    );
    let greeting =
        "Hi, I'm a container and this is my message: I was passed in via the container class!";
    // getRandom(env.MY_CONTAINER, 3), as Cloudflare names the instances.
    for _ in 0..30 {
        assert_eq!(http(&addr, "/lb", &[]), (200, greeting.into()));
    }
    stderr_within(
        &berth,
        "Container successfully started",
        Duration::from_secs(10),
    );
    let names = object_names(&app).await;
    assert!(
        (2..=3).contains(&names.len()) && names.iter().all(|n| n.starts_with("instance-")),
        "30 requests over getRandom(3): {names:?}"
    );
    // max_instances = 3 of wrangler.jsonc holds: a fourth name waits for a free slot.
    let (status, text) = http(&addr, "/container", &[]);
    if names.len() == 3 {
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("maximum of 3 instances"), "{text}");
    } else {
        assert_eq!((status, text.as_str()), (200, greeting));
    }
    let (code, stdout, stderr) = berth_in(&app.dir, &["ps"], b"");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("MyContainer"), "{stdout}");
    assert!(stdout.contains("instance-"), "{stdout}");
}

#[test]
fn a_syntax_error_in_wrangler_jsonc_names_its_line_and_column() {
    let app = wrangler_app("syntax");
    edit(
        &app,
        "wrangler.jsonc",
        &[("\"main\": \"src/index.ts\",", "\"main\": \"src/index.ts\"")],
        &["\"main\": \"src/index.ts\"\n"],
    );
    let (code, stderr) = run_to_end(&["dev", "--port", "0"], &app.dir, &[]);
    assert_ne!(code, Some(0));
    let place = format!(
        "{}:6:3: syntax error",
        app.dir.join("wrangler.jsonc").display()
    );
    assert!(stderr.contains(&place), "{stderr}");
}

/// As Cloudflare's examples/websocket: the worker opens a WebSocket to its container,
/// sends and reads messages itself, then closes it.
const SOCKET_CLIENT: &str = r#"const container = getContainer(env.MY_CONTAINER, "container");
    // A client's WebSocket, answered by the worker itself with a WebSocketPair.
    if (new URL(request.url).pathname === "/own" && request.headers.get("Upgrade") === "websocket") {
      const [client, server] = Object.values(new WebSocketPair()) as any[];
      server.accept();
      server.addEventListener("message", (event: any) => {
        if (event.data === "bye") server.close(1000, "asked to");
        else server.send(`the worker heard ${typeof event.data === "string" ? event.data : event.data.byteLength + " bytes"}`);
      });
      return new Response(null, { status: 101, webSocket: client });
    }
    if (new URL(request.url).pathname === "/talk") {
      const answer = await container.fetch(new Request("http://container/ws", { headers: { Upgrade: "websocket" } }));
      const socket = answer.webSocket;
      if (!socket) return new Response(`no WebSocket: ${answer.status}`, { status: 500 });
      socket.accept();
      const heard: string[] = [];
      const closed = new Promise((resolve) => socket.addEventListener("close", (event: any) => resolve(event.code)));
      const all = new Promise<void>((resolve) => {
        socket.addEventListener("message", (event: any) => {
          heard.push(typeof event.data === "string" ? event.data : `${event.data.byteLength} bytes`);
          if (heard.length === 2) resolve();
        });
      });
      socket.send("ping");
      socket.send(new Uint8Array([1, 2, 3]));
      await all;
      // 1006 is for a connection that broke, never sent: refused, as on Cloudflare.
      let refused = "nothing";
      try {
        socket.close(1006);
      } catch (error: any) {
        refused = error.name;
      }
      socket.close(1000, "done");
      const code = await closed;
      const plain = (await container.fetch(new Request("http://container/ping"))).webSocket;
      return new Response(`${answer.status} ${heard.join(", ")}; closed ${code}; plain ${plain}; 1006 ${refused}`);
    }
    return container.fetch(request);"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_opens_a_websocket_to_its_container_and_answers_a_clients_itself() {
    let app = alchemy_app("socket-client", None);
    edit_worker(&app, SOCKET_CLIENT, "/talk");
    let mut berth = Berth::start(&["dev", "--port", "0"], &app.dir);
    let addr = berth.ready();
    assert_eq!(
        http(&addr, "/talk", &[]),
        (
            200,
            "101 ping, 3 bytes; closed 1000; plain null; 1006 TypeError".into()
        ),
        "{}",
        berth.stderr()
    );
    // And again, on the same container.
    assert_eq!(http(&addr, "/talk", &[]).0, 200, "{}", berth.stderr());

    // A client's WebSocket that the worker answers itself.
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect to berth");
    let (mut socket, response) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::client_async(format!("ws://{addr}/own"), stream),
    )
    .await
    .expect("the upgrade in time")
    .unwrap_or_else(|e| {
        panic!(
            "a WebSocket answered by the worker: {e}\n{}",
            berth.stderr()
        )
    });
    assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    for (sent, heard) in [
        (Message::text("hello"), "the worker heard hello"),
        (Message::binary(vec![0u8; 5]), "the worker heard 5 bytes"),
    ] {
        socket.send(sent).await.expect("send");
        let answer = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("an answer in time")
            .expect("an answer")
            .expect("a message");
        assert_eq!(answer, Message::text(heard));
    }
    socket.send(Message::text("bye")).await.expect("send");
    let close = tokio::time::timeout(Duration::from_secs(30), socket.next())
        .await
        .expect("the close in time")
        .expect("an answer")
        .expect("a message");
    let Message::Close(Some(frame)) = close else {
        panic!("a close frame: {close:?}");
    };
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (1000, "asked to")
    );
    // A plain request to that path is not a WebSocket: the worker sends it on.
    assert_eq!(http(&addr, "/own", &[]).0, 404);
}
