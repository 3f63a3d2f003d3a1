use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// A folder `berth-js-<test>-<pid>` holding `files`, emptied first.
fn app(test: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-js-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("create folder");
        std::fs::write(path, text).expect("write file");
    }
    dir
}

fn quick() -> Limits {
    Limits {
        time: Duration::from_millis(500),
        memory_bytes: 32 << 20,
    }
}

const CLASS: &str = r#"import { Container } from "@cloudflare/containers";
export class Web extends Container { defaultPort = 3000; }
"#;

/// An app whose alchemy.run.ts is `program`, with a worker that exports `Web`.
fn program(test: &str, program: &str, extra: &[(&str, &str)]) -> Result<Manifest, ScriptError> {
    let mut files = vec![
        ("alchemy.run.ts", program),
        (
            "worker.ts",
            "export { Web } from \"./web.ts\";\nexport default {};\n",
        ),
        ("web.ts", CLASS),
    ];
    files.extend_from_slice(extra);
    load_script(&app(test, &files), quick())
}

const DECLARE: &str = r#"import { Container, Worker } from "alchemy/cloudflare";
const web = await Container("web", { className: "Web" });
await Worker("site", { entrypoint: "./worker.ts", bindings: { WEB: web } });
"#;

#[test]
fn the_example_reads_into_a_manifest() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/alchemy");
    let manifest = Manifest::load(&dir).expect("the example loads");
    assert_eq!(manifest.name, "alchemy");
    let [container] = manifest.containers.as_slice() else {
        panic!("one container: {manifest:?}");
    };
    assert_eq!(container.id, "my-container");
    assert_eq!(container.class.name, "MyContainer");
    let crate::manifest::ImageSource::Build(build) = &container.image else {
        panic!("a build: {container:?}");
    };
    assert_eq!(
        build.context,
        std::path::absolute(&dir).expect("absolute").join(".")
    );
    assert_eq!(build.dockerfile, "Dockerfile");
    assert_eq!(build.name, "my-container");
    assert_eq!(container.class.default_port, Some(8080));
    assert_eq!(container.class.sleep_after, Duration::from_secs(180));
    assert_eq!(
        container.class.env_vars.get("MESSAGE").map(String::as_str),
        Some("I was passed in via the container class!")
    );
    let [worker] = manifest.workers.as_slice() else {
        panic!("one worker: {manifest:?}");
    };
    assert_eq!(worker.name, "my-worker");
    assert!(worker.routes.is_empty());
    let script = worker.script.as_ref().expect("a script worker");
    assert!(
        script
            .entrypoint
            .ends_with("examples/alchemy/src/worker.ts"),
        "{script:?}"
    );
    assert_eq!(
        worker.bindings.get("MY_CONTAINER").map(String::as_str),
        Some("my-container")
    );
}

/// The second example: routing written as code, an app named by `alchemy(...)`.
#[test]
fn the_routing_example_reads_into_a_manifest() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/alchemy-routing");
    let manifest = Manifest::load(&dir).expect("the example loads");
    assert_eq!(manifest.name, "routing");
    let [container] = manifest.containers.as_slice() else {
        panic!("one container: {manifest:?}");
    };
    assert_eq!(container.class.name, "RoutedContainer");
    assert_eq!(container.class.max_instances, 10);
    assert_eq!(container.class.default_port, Some(8080));
    assert_eq!(container.class.sleep_after, Duration::from_secs(120));
    let [worker] = manifest.workers.as_slice() else {
        panic!("one worker: {manifest:?}");
    };
    assert_eq!(
        worker.bindings.get("ROUTED").map(String::as_str),
        Some("routed-container")
    );
}

#[test]
fn a_syntax_error_names_file_line_and_column() {
    let err = program("syntax", "const a = 1;\nconst b = ;\n", &[]).expect_err("a syntax error");
    let ScriptError::Syntax { at, .. } = &err else {
        panic!("a syntax error: {err}");
    };
    assert!(at.path.ends_with("alchemy.run.ts"), "{err}");
    assert_eq!((at.line, at.column), (2, 11), "{err}");
    assert!(
        err.to_string()
            .contains("alchemy.run.ts:2:11: syntax error"),
        "{err}"
    );
}

#[test]
fn an_unknown_import_names_the_module_and_the_importer() {
    let err = program(
        "unknown",
        "import { S3 } from \"@aws-sdk/client-s3\";\nnew S3();\n",
        &[],
    )
    .expect_err("unknown");
    let ScriptError::UnknownModule { module, importer } = &err else {
        panic!("an unknown module: {err}");
    };
    assert_eq!(module, "@aws-sdk/client-s3");
    assert!(importer.ends_with("alchemy.run.ts"), "{err}");
}

#[test]
fn a_missing_file_lists_what_was_tried() {
    let err = program("missing", "import \"./nothing\";\n", &[]).expect_err("missing");
    assert!(matches!(err, ScriptError::ModuleNotFound { .. }), "{err}");
    assert!(err.to_string().contains("nothing.ts"), "{err}");
}

#[test]
fn an_endless_loop_is_stopped() {
    let err = program("loop", "while (true) {}\n", &[]).expect_err("stopped");
    assert!(matches!(err, ScriptError::TimedOut { .. }), "{err}");
    assert!(err.to_string().contains("still running after"), "{err}");
}

#[test]
fn endless_allocation_is_stopped() {
    let err = program(
        "memory",
        "const a = []; while (true) a.push(new Array(1000).fill(1));\n",
        &[],
    )
    .expect_err("stopped");
    assert!(matches!(err, ScriptError::OutOfMemory { .. }), "{err}");
}

#[test]
fn a_thrown_error_names_the_line_as_written() {
    let err = program("throw", "import type { X } from \"./x\";\n\n// a comment\nconst n: number = 1;\nthrow new Error(`boom ${n}`);\n", &[])
        .expect_err("thrown");
    let ScriptError::Thrown { at, message } = &err else {
        panic!("thrown: {err}");
    };
    assert_eq!(message, "Error: boom 1");
    assert_eq!(at.line, 5, "{err}");
}

#[test]
fn a_missing_secret_names_the_line_that_reads_it() {
    let text = "import alchemy from \"alchemy\";\nimport { Container } from \"alchemy/cloudflare\";\nawait Container(\"web\", { className: \"Web\" });\n\nconst token = alchemy.secret.env.BERTH_TEST_NEVER_SET;\n";
    let err = program("secret-line", text, &[]).expect_err("not set");
    let ScriptError::Thrown { at, message } = &err else {
        panic!("thrown: {err}");
    };
    assert!(message.contains("BERTH_TEST_NEVER_SET is not set"), "{err}");
    assert_eq!((at.line, at.column), (5, 30), "{err}");
}

#[test]
fn types_are_erased_and_imports_resolve_without_extension_or_to_index() {
    let text = r#"import type { Missing } from "./nowhere";
import { port } from "./lib";
import { sleep } from "./config/index.ts";
import { Container, Worker } from "alchemy/cloudflare";
const web = await Container<Missing>("web", { className: "Web" as string });
await Worker("site", { entrypoint: "./worker", bindings: { WEB: web } });
export const settings: { port: number; sleep: string } = { port, sleep };
"#;
    let files = [
        ("lib.ts", "export const port: number = 3000;\n"),
        (
            "config/index.ts",
            "export const sleep = \"1m\" satisfies string;\n",
        ),
    ];
    let manifest = program("resolve", text, &files).expect("loads");
    assert_eq!(manifest.containers[0].class.default_port, Some(3000));
}

#[test]
fn declare_and_override_are_erased_and_fields_become_options() {
    let class = r#"import { Container } from "@cloudflare/containers";
export class Web extends Container {
  declare env: { WEB: unknown };
  override defaultPort = 3000;
  requiredPorts = [3000, 9090];
  sleepAfter = 90;
  enableInternet = false;
  entrypoint = ["/server", "--fast"];
  ready = { path: "/healthz", status: [200, 204], interval: "20ms" };
  logMax = "1MiB";
  volumes = ["/data/"];
  allowedHosts = ["api.github.com", "*.example.com"];
  deniedHosts = ["x.example.com"];
  sleepMode = "pause";
  pauseFor = "30m";
  maxPaused = 3;
  override onStart(): void {}
}
"#;
    let manifest = program("fields", DECLARE, &[("web.ts", class)]).expect("loads");
    let class = &manifest.containers[0].class;
    assert_eq!(class.required_ports, [3000, 9090]);
    assert_eq!(class.sleep_after, Duration::from_secs(90));
    assert!(!class.enable_internet);
    assert_eq!(
        class.entrypoint.as_deref(),
        Some(&["/server".to_string(), "--fast".to_string()][..])
    );
    assert_eq!(class.ping_endpoint.as_deref(), Some("ping"));
    let ready = crate::class::ReadyCheck {
        path: "/healthz".into(),
        status: vec![200, 204],
        interval: Duration::from_millis(20),
    };
    assert_eq!(class.ready.as_ref(), Some(&ready));
    assert_eq!(class.log_max, 1 << 20);
    assert_eq!(class.volumes, ["/data"]);
    assert_eq!(class.allowed_hosts, ["api.github.com", "*.example.com"]);
    assert_eq!(class.denied_hosts, ["x.example.com"]);
    assert_eq!(class.sleep_mode, crate::class::SleepMode::Pause);
    assert_eq!(class.pause_for, Duration::from_secs(1800));
    assert_eq!(class.max_paused, Some(3));
}

#[test]
fn a_bad_option_names_the_class_and_the_field() {
    let class = "import { Container } from \"@cloudflare/containers\";\nexport class Web extends Container { defaultPort = 70000; }\n";
    let err = program("option", DECLARE, &[("web.ts", class)]).expect_err("bad port");
    assert!(
        err.to_string()
            .contains("class Web, field defaultPort: 70000 is not a port"),
        "{err}"
    );
    let class = "import { Container } from \"@cloudflare/containers\";\nexport class Web extends Container { sleepAfter = \"3x\"; }\n";
    let err = program("duration", DECLARE, &[("web.ts", class)]).expect_err("bad duration");
    assert!(err.to_string().contains("field sleepAfter"), "{err}");
    let class = "import { Container } from \"@cloudflare/containers\";\nexport class Web extends Container { ready = { path: \"/h\", status: [99] }; }\n";
    let err = program("ready", DECLARE, &[("web.ts", class)]).expect_err("bad status");
    assert!(err.to_string().contains("field ready"), "{err}");
    assert!(err.to_string().contains("not an HTTP status"), "{err}");
}

#[test]
fn a_class_no_worker_exports_is_an_error() {
    let text = DECLARE.replace("className: \"Web\"", "className: \"Api\"");
    let err = program("noclass", &text, &[]).expect_err("no class");
    assert!(matches!(err, ScriptError::NoClass { .. }), "{err}");
    assert!(err.to_string().contains("alchemy.run.ts:2:"), "{err}");
}

#[test]
fn the_app_name_comes_from_alchemy_or_the_folder() {
    let named = format!("import alchemy from \"alchemy\";\nconst app = await alchemy(\"shop\");\n{DECLARE}await app.finalize();\n");
    assert_eq!(program("named", &named, &[]).expect("loads").name, "shop");
    assert_eq!(
        app_name_from_folder(Path::new("/x/My Project (2)")),
        "my-project-2"
    );
    assert_eq!(app_name_from_folder(Path::new("/x/--")), "app");
}

#[test]
fn images_routes_and_text_bindings_are_read() {
    let text = r#"import alchemy from "alchemy";
import { Container, Worker, DurableObjectNamespace } from "alchemy/cloudflare";
import { Image } from "alchemy/docker";
const image = await Image("img", { name: "web", tag: "v1", build: { context: "./app", dockerfile: "Dockerfile.dev" } });
await Container("web", { className: "Web", image, maxInstances: 3, standby: 2, instanceType: "basic" });
await Worker("site", {
  entrypoint: "./worker.ts",
  bindings: { WEB: DurableObjectNamespace("ns", { className: "Web" }), GREETING: "hi", KEY: alchemy.secret("s3cret") },
  routes: ["api.example.com/*"],
  domains: [{ domainName: "www.example.com" }],
});
"#;
    let manifest = program("props", text, &[]).expect("loads");
    let container = &manifest.containers[0];
    let crate::manifest::ImageSource::Build(build) = &container.image else {
        panic!("a build");
    };
    assert_eq!(
        (build.name.as_str(), build.tag.as_deref()),
        ("web", Some("v1"))
    );
    assert!(build.context.ends_with("app"), "{build:?}");
    assert_eq!(container.class.max_instances, 3);
    assert_eq!(container.class.standby, 2);
    let worker = &manifest.workers[0];
    assert_eq!(worker.bindings.get("WEB").map(String::as_str), Some("web"));
    let vars = &worker.script.as_ref().expect("script").vars;
    assert_eq!(vars.get("KEY").map(String::as_str), Some("s3cret"));
    let hosts: Vec<&str> = worker.hosts.iter().map(|h| h.as_str()).collect();
    assert_eq!(hosts, ["api.example.com", "www.example.com"]);
}

#[test]
fn berth_toml_wins_over_alchemy_run_ts() {
    let toml = "name = \"from-toml\"\n";
    let dir = app(
        "both",
        &[
            ("berth.toml", toml),
            ("alchemy.run.ts", "throw new Error(\"not run\");\n"),
        ],
    );
    assert_eq!(Manifest::load(&dir).expect("loads").name, "from-toml");
    let empty = app("neither", &[]);
    assert!(matches!(
        Manifest::load(&empty),
        Err(LoadError::NoApp { .. })
    ));
}

#[test]
fn a_top_level_await_that_never_settles_is_an_error() {
    let err = program("pending", "await new Promise(() => {});\n", &[]).expect_err("pending");
    assert!(matches!(err, ScriptError::NeverSettled { .. }), "{err}");
}

/// A worker whose entrypoint is `worker`, with no bindings.
async fn js_worker(test: &str, worker: &str, limits: WorkerLimits) -> JsWorker {
    let dir = app(test, &[("worker.js", worker)]);
    let script = crate::manifest::WorkerScript {
        entrypoint: dir.join("worker.js"),
        vars: Default::default(),
        crons: Vec::new(),
    };
    JsWorker::start(test, &script, crate::worker::Env::new(), limits)
        .await
        .expect("the worker starts")
}

/// `request` through `worker`, with its status and body read (at most 10 s).
async fn through(
    worker: &JsWorker,
    request: http::Request<crate::http::Body>,
) -> (http::StatusCode, http::HeaderMap, bytes::Bytes) {
    use crate::worker::Worker;
    use http_body_util::BodyExt;
    let env = crate::worker::Env::new();
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        let response = worker.fetch(request, &env).await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("the body").to_bytes();
        (parts.status, parts.headers, body)
    });
    answered.await.expect("an answer within 10 s")
}

/// The files `berth deploy` would send of the program in `dir`, relative to it, sorted.
fn shipped(dir: &Path) -> Vec<String> {
    let program = load_program(dir, quick()).expect("the program loads");
    let mut names: Vec<String> = program
        .files
        .iter()
        .map(|f| {
            f.strip_prefix(dir)
                .expect("in the app")
                .display()
                .to_string()
        })
        .collect();
    names.sort();
    names
}

/// `GET /` for a worker.
fn get_root() -> http::Request<crate::http::Body> {
    http::Request::get("http://site/")
        .body(crate::http::full(""))
        .expect("a request")
}

/// A request body of `chunks` chunks of `size` bytes, each sent as its own frame.
fn chunked(chunks: usize, size: usize) -> crate::http::Body {
    let frames = (0..chunks).map(move |i| {
        let byte = b'a' + (i % 26) as u8;
        Ok::<_, crate::http::BoxError>(hyper::body::Frame::data(bytes::Bytes::from(vec![
            byte;
            size
        ])))
    });
    crate::http::body(http_body_util::StreamBody::new(futures_util::stream::iter(
        frames,
    )))
}

fn post(path: &str, body: crate::http::Body) -> http::Request<crate::http::Body> {
    http::Request::post(format!("http://site{path}"))
        .header("host", "site")
        .body(body)
        .expect("a request")
}

const BODIES: &str = r#"export default {
  async fetch(request) {
    const path = new URL(request.url).pathname;
    if (path === "/text") return new Response(`${(await request.text()).length} characters`);
    if (path === "/json") return Response.json({ got: (await request.json()).n + 1 });
    if (path === "/stream") {
      const reader = request.body.getReader();
      let chunks = 0, bytes = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks++;
        bytes += value.byteLength;
      }
      return new Response(`${chunks} chunks, ${bytes} bytes, used ${request.bodyUsed}`);
    }
    if (path === "/twice") {
      await request.text();
      try { await request.text(); return new Response("read twice"); } catch (e) { return new Response(String(e), { status: 409 }); }
    }
    if (path === "/mirror") return new Response(request.body, { status: 201, headers: { "x-mirror": "yes" } });
    if (path === "/made") {
      const parts = ["made ", "in ", "JavaScript"];
      const body = new ReadableStream({ pull(c) { parts.length ? c.enqueue(new TextEncoder().encode(parts.shift())) : c.close(); } });
      return new Response(body);
    }
    if (path === "/rewrap") {
      const copy = new Request(request, { headers: { "x-copy": "1" } });
      return new Response(await copy.text());
    }
    return new Response("?", { status: 404 });
  },
};
"#;

#[tokio::test]
async fn javascript_reads_request_bodies_whole_or_in_chunks() {
    let worker = js_worker("bodies", BODIES, WorkerLimits::default()).await;
    let (status, _, body) = through(&worker, post("/text", chunked(3, 1000))).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"3000 characters"[..]));
    let json = crate::http::full(r#"{"n": 41}"#);
    let (_, _, body) = through(&worker, post("/json", json)).await;
    assert_eq!(&body[..], br#"{"got":42}"#);
    let (_, _, body) = through(&worker, post("/stream", chunked(5, 100))).await;
    assert_eq!(&body[..], b"5 chunks, 500 bytes, used true");
    let (status, _, body) = through(&worker, post("/twice", chunked(1, 10))).await;
    assert_eq!(status.as_u16(), 409, "{body:?}");
    let (_, _, body) = through(&worker, post("/made", crate::http::full(""))).await;
    assert_eq!(&body[..], b"made in JavaScript");
    let (_, _, body) = through(&worker, post("/rewrap", chunked(2, 3))).await;
    assert_eq!(&body[..], b"aaabbb");
}

#[tokio::test]
async fn a_body_passed_on_unread_goes_from_rust_to_rust() {
    let worker = js_worker("mirror", BODIES, WorkerLimits::default()).await;
    // 64 MiB: twice the worker's JavaScript heap, so it cannot have gone through it.
    let limits = WorkerLimits {
        memory_bytes: 32 << 20,
        ..WorkerLimits::default()
    };
    let small = js_worker("mirror-small", BODIES, limits).await;
    for worker in [&worker, &small] {
        let (status, headers, body) = through(worker, post("/mirror", chunked(64, 1 << 20))).await;
        assert_eq!(status.as_u16(), 201);
        assert_eq!(
            headers.get("x-mirror").map(|v| v.as_bytes()),
            Some(&b"yes"[..])
        );
        assert_eq!(body.len(), 64 << 20);
        assert_eq!(
            (body[0], body[(1 << 20) + 1], body[body.len() - 1]),
            (b'a', b'b', b'l')
        );
    }
}

#[tokio::test]
async fn a_fetch_that_never_settles_answers_504_and_the_worker_goes_on() {
    let worker = r#"export default {
  async fetch(request) {
    if (new URL(request.url).pathname === "/never") return new Promise(() => {});
    return new Response("still here");
  },
};
"#;
    let limits = WorkerLimits {
        request_timeout: Duration::from_millis(300),
        ..WorkerLimits::default()
    };
    let worker = js_worker("never", worker, limits).await;
    let get = |path: &str| {
        http::Request::get(format!("http://site{path}"))
            .body(crate::http::full(""))
            .expect("a request")
    };
    let (status, headers, body) = through(&worker, get("/never")).await;
    assert_eq!(status, http::StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        headers.get(crate::http::ERROR_HEADER).map(|v| v.as_bytes()),
        Some(&b"request-timeout"[..])
    );
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("did not answer within 300ms"), "{text}");
    for _ in 0..4 {
        let (status, _, body) = through(&worker, get("/")).await;
        assert_eq!((status.as_u16(), &body[..]), (200, &b"still here"[..]));
    }
}

#[test]
fn a_program_ships_what_its_workers_import_at_run_time_by_a_name_written_out() {
    let worker = r#"export { Web } from "./web.ts";
export default {
  async fetch(request: Request) {
    const { answer } = await import("./lazy.ts");
    const computed = "./" + "nowhere.ts";
    if (request.url.endsWith("/never")) await import(computed);
    return new Response(answer());
  },
};
"#;
    let lazy = "import { word } from \"./words/index.ts\";\nimport type { Unused } from \"./types.ts\";\nimport { Shape } from \"../outside.ts\";\nexport const answer = (shape?: Shape): string => word;\n";
    let root = app(
        "later",
        &[
            ("app/alchemy.run.ts", DECLARE),
            ("app/worker.ts", worker),
            ("app/web.ts", CLASS),
            ("app/lazy.ts", lazy),
            ("app/words/index.ts", "export const word = \"later\";\n"),
            ("app/types.ts", "export type Unused = number;\n"),
            ("app/unrelated.ts", "export const no = 1;\n"),
            ("outside.ts", "export interface Shape { n: number }\n"),
        ],
    );
    let dir = root.join("app");
    let names = shipped(&dir);
    // The lazily imported module and what it imports; not the type-only imports (one
    // written as a value import, of a file outside the app, too), not a name computed at
    // run time, not a file nothing imports.
    assert_eq!(
        names,
        [
            "alchemy.run.ts",
            "lazy.ts",
            "web.ts",
            "words/index.ts",
            "worker.ts"
        ]
    );

    let broken = app(
        "later-broken",
        &[
            ("alchemy.run.ts", DECLARE),
            ("worker.ts", "export { Web } from \"./web.ts\";\nexport default { fetch: () => import(\"./bad.ts\") };\n"),
            ("web.ts", CLASS),
            ("bad.ts", "export const = ;\n"),
        ],
    );
    let err = load_program(&broken, quick()).expect_err("a syntax error");
    assert!(
        matches!(&err, ScriptError::Syntax { at, .. } if at.path.ends_with("bad.ts") && at.line == 1),
        "{err}"
    );
}

#[tokio::test]
async fn a_stream_chunk_that_is_neither_text_nor_bytes_breaks_the_body_off_naming_it() {
    use http_body_util::BodyExt;
    let worker = r#"export default {
  async fetch(request) {
    const chunks = ["text, ", new TextEncoder().encode("bytes, "), { not: "bytes" }, "never sent"];
    const body = new ReadableStream({ pull(c) { c.enqueue(chunks.shift()); } });
    return new Response(body);
  },
};
"#;
    let worker = js_worker("chunks", worker, WorkerLimits::default()).await;
    let request = get_root();
    use crate::worker::Worker;
    let response = worker.fetch(request, &crate::worker::Env::new()).await;
    assert_eq!(response.status(), http::StatusCode::OK);
    let mut body = response.into_body();
    let mut got = Vec::new();
    let failure = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    got.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..]))
                }
                Some(Err(e)) => return Some(e.to_string()),
                None => return None,
            }
        }
    })
    .await
    .expect("the body ends within 10 s");
    // What came before the bad chunk is sent; the client cannot take the rest for whole.
    assert_eq!(String::from_utf8_lossy(&got), "text, bytes, ");
    let failure = failure.expect("the body is broken off, not ended");
    assert!(
        failure.contains("its chunks must be text, an ArrayBuffer or a view"),
        "{failure}"
    );
}

#[tokio::test]
async fn a_runtime_whose_timers_keep_breaking_is_replaced_three_times_then_left() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    // Counts the worker's module loads: each fetches this listener at its top level.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let loads = Arc::new(AtomicUsize::new(0));
    let counted = loads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer);
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    let worker = format!(
        r#"await fetch("http://127.0.0.1:{port}/loaded");
// A timer whose callback runs past the CPU budget: it breaks the runtime's timers.
setInterval(() => {{ for (;;) {{}} }}, 1);
export default {{ fetch: () => new Response("served") }};
"#
    );
    let limits = WorkerLimits {
        cpu: Duration::from_millis(50),
        runtimes: 1,
        ..WorkerLimits::default()
    };
    let worker = js_worker("replaced", &worker, limits).await;
    // The first runtime and three fresh ones, each broken by its timer in turn.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while loads.load(Ordering::SeqCst) < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        4,
        "three replacements within 30 s"
    );
    // No fifth: the last runtime's timers broke too, and it is left as it is.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        loads.load(Ordering::SeqCst),
        4,
        "no runtime after the third replacement"
    );
    // It still answers requests: they need no timer.
    let request = get_root();
    let (status, _, body) = through(&worker, request).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"served"[..]));
}

/// A local HTTP/1.1 server for `fetch()` from a worker: it answers each request with
/// status 203, an `x-upstream` header and the request's method and body as its body.
fn upstream() -> u16 {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let method = line.split(' ').next().unwrap_or("").to_string();
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let answer = format!("{method} {}", String::from_utf8_lossy(&body));
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 203 Non-Authoritative Information\r\nx-upstream: yes\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    port
}

const WEB_APIS: &str = r#"const UPSTREAM = "http://127.0.0.1:PORT/";
export default {
  async fetch(request) {
    const path = new URL(request.url).pathname;
    if (path === "/clone") {
      const copy = structuredClone({ list: [1, { deep: true }], when: new Date(0), map: new Map([["k", "v"]]) });
      return new Response(`${JSON.stringify(copy.list)} ${copy.when.getTime()} ${copy.map.get("k")}`);
    }
    if (path === "/events") {
      const target = new EventTarget();
      let got = "";
      target.addEventListener("ping", (event) => (got = `${event.type} ${event.detail}`));
      target.dispatchEvent(new CustomEvent("ping", { detail: 7 }));
      return new Response(`${got} ${navigator.userAgent}`);
    }
    if (path === "/transform") {
      // The Workers pattern: answer with the readable side, write the other meanwhile.
      const { readable, writable } = new TransformStream({
        transform(chunk, controller) {
          controller.enqueue(new TextEncoder().encode(new TextDecoder().decode(chunk).toUpperCase()));
        },
      });
      const writer = writable.getWriter();
      (async () => {
        for (const word of ["one ", "two ", "three"]) {
          await writer.write(new TextEncoder().encode(word));
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
        await writer.close();
      })();
      return new Response(readable);
    }
    if (path === "/decode") {
      // "é" (two bytes) and "€" (three) split across chunks.
      const bytes = new TextEncoder().encode("aé€z");
      const parts = [bytes.slice(0, 2), bytes.slice(2, 4), bytes.slice(4)];
      const source = new ReadableStream({ pull(c) { parts.length ? c.enqueue(parts.shift()) : c.close(); } });
      let text = "";
      for await (const piece of source.pipeThrough(new TextDecoderStream())) text += `[${piece}]`;
      const encoded = new Response("x").body.pipeThrough(new TextDecoderStream()).pipeThrough(new TextEncoderStream());
      return new Response(`${text} ${await new Response(encoded).text()}`);
    }
    if (path === "/bodies") {
      const made = new Response("made in JS");
      const none = new Response(null, { status: 204 });
      const get = new Request("http://x/");
      const post = new Request("http://x/", { method: "POST", body: "posted" });
      const rewrapped = await new Response(made.body, { headers: { "x-a": "1" } }).text();
      const posted = await new Response(post.body).text();
      return new Response(`${rewrapped}|${posted}|${none.body}|${get.body}|${made.bodyUsed}`);
    }
    if (path === "/review") {
      const out = [];
      // A Request made in JS, with a body, sent to another server.
      const sent = await fetch(new Request(UPSTREAM, { method: "PUT", body: "made" }));
      out.push(await sent.text());
      // The URL rewrite: a new Request from the client's keeps its method and body.
      const moved = await fetch(new Request(UPSTREAM, request));
      out.push(await moved.text());
      // A clone of a message LLRT holds the body of has its body as a stream too.
      out.push(await new Response(new Response("cloned").clone().body).text());
      // What a transform throws errors the readable side.
      const failing = new Response("x").body.pipeThrough(new TransformStream({ transform() { throw new Error("no"); } }));
      out.push(await new Response(failing).text().then(() => "read", (e) => `errored: ${e.message ?? e}`));
      out.push(JSON.stringify(structuredClone({ a: 1 }, undefined)));
      try { new TextDecoderStream("utf-16le"); out.push("utf-16 taken"); } catch (e) { out.push(e.name); }
      // A surrogate pair split across two chunks.
      const pair = new ReadableStream({ start(c) { c.enqueue("a\ud83d"); c.enqueue("\ude00b"); c.close(); } });
      out.push(await new Response(pair.pipeThrough(new TextEncoderStream())).text());
      return new Response(out.join("|"));
    }
    if (path === "/upstream") {
      // The proxy pattern: another server's answer passed on with a header of its own.
      const answer = await fetch(UPSTREAM, request);
      const passed = new Response(answer.body, answer);
      passed.headers.set("x-worker", "yes");
      return passed;
    }
    return new Response("?", { status: 404 });
  },
};
"#;

#[tokio::test]
async fn the_web_apis_workers_use_are_there_and_bodies_are_streams() {
    let worker = WEB_APIS.replace("PORT", &upstream().to_string());
    let worker = js_worker("web-apis", &worker, WorkerLimits::default()).await;
    let get = |path: &str| {
        http::Request::get(format!("http://site{path}"))
            .header("host", "site")
            .body(crate::http::full(""))
            .expect("a request")
    };
    let text = |(status, _, body): (http::StatusCode, http::HeaderMap, bytes::Bytes)| {
        (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
    };
    assert_eq!(
        text(through(&worker, get("/clone")).await),
        (200, "[1,{\"deep\":true}] 0 v".into())
    );
    assert_eq!(
        text(through(&worker, get("/events")).await),
        (200, "ping 7 Cloudflare-Workers".into())
    );
    assert_eq!(
        text(through(&worker, get("/transform")).await),
        (200, "ONE TWO THREE".into())
    );
    assert_eq!(
        text(through(&worker, get("/decode")).await),
        (200, "[a][é][€z] x".into())
    );
    assert_eq!(
        text(through(&worker, get("/bodies")).await),
        (200, "made in JS|posted|null|null|true".into())
    );
    let (status, _, body) = through(&worker, post("/review", chunked(1, 4))).await;
    assert_eq!(
        (status.as_u16(), String::from_utf8_lossy(&body).as_ref()),
        (
            200,
            "PUT made|POST aaaa|cloned|errored: no|{\"a\":1}|RangeError|a\u{1F600}b"
        )
    );
    // A client's body goes on to another server through fetch(); its answer comes back
    // with its status, its headers, its body and the worker's header.
    let (status, headers, body) = through(&worker, post("/upstream", chunked(2, 3))).await;
    assert_eq!(
        (status.as_u16(), String::from_utf8_lossy(&body).as_ref()),
        (203, "POST aaabbb")
    );
    assert_eq!(
        headers.get("x-upstream").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );
    assert_eq!(
        headers.get("x-worker").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );
}

#[tokio::test]
async fn packages_of_node_modules_are_imported_shipped_and_served() {
    let worker = r#"import { greet } from "greeter";
import { shout } from "greeter/shout";
import { tiny } from "@acme/tiny";
export { Web } from "./web.ts";
export default { fetch: () => new Response(`${greet("you")} ${shout("hi")} ${tiny}`) };
"#;
    let files = [
        ("alchemy.run.ts", DECLARE),
        ("worker.ts", worker),
        ("web.ts", CLASS),
        (
            "node_modules/greeter/package.json",
            r#"{ "name": "greeter", "exports": { ".": { "types": "./index.d.ts", "require": "./index.cjs", "import": "./esm/index.js" }, "./shout": "./esm/shout.js" } }"#,
        ),
        ("node_modules/greeter/index.cjs", "module.exports = {};\n"),
        (
            "node_modules/greeter/esm/index.js",
            "import { tiny } from \"@acme/tiny\";\nimport { word } from \"./word.js\";\nexport const greet = (name) => `${word}, ${name} (${tiny})`;\n",
        ),
        ("node_modules/greeter/esm/word.js", "export const word = \"hello\";\n"),
        ("node_modules/greeter/esm/shout.js", "export const shout = (s) => s.toUpperCase();\n"),
        ("node_modules/greeter/esm/unused.js", "export const no = 1;\n"),
        (
            "node_modules/@acme/tiny/package.json",
            r#"{ "name": "@acme/tiny", "module": "dist/tiny.mjs", "main": "dist/tiny.cjs" }"#,
        ),
        ("node_modules/@acme/tiny/dist/tiny.mjs", "export const tiny = \"tiny\";\n"),
    ];
    let dir = app("packages", &files);
    let names = shipped(&dir);
    // What the worker imports, with each package's package.json; not the CommonJS build
    // or a file nothing imports.
    assert_eq!(
        names,
        [
            "alchemy.run.ts",
            "node_modules/@acme/tiny/dist/tiny.mjs",
            "node_modules/@acme/tiny/package.json",
            "node_modules/greeter/esm/index.js",
            "node_modules/greeter/esm/shout.js",
            "node_modules/greeter/esm/word.js",
            "node_modules/greeter/package.json",
            "web.ts",
            "worker.ts"
        ]
    );
    let script = crate::manifest::WorkerScript {
        entrypoint: dir.join("worker.ts"),
        vars: Default::default(),
        crons: Vec::new(),
    };
    let worker = JsWorker::start(
        "packages",
        &script,
        crate::worker::Env::new(),
        WorkerLimits::default(),
    )
    .await
    .expect("the worker starts");
    let request = get_root();
    let (status, _, body) = through(&worker, request).await;
    assert_eq!(
        (status.as_u16(), String::from_utf8_lossy(&body).as_ref()),
        (200, "hello, you (tiny) HI tiny")
    );
}

#[test]
fn a_package_that_is_missing_or_commonjs_only_is_named_in_the_error() {
    let missing = program(
        "no-package",
        DECLARE,
        &[(
            "worker.ts",
            "import \"left-pad\";\nexport { Web } from \"./web.ts\";\nexport default {};\n",
        )],
    )
    .expect_err("no such package");
    let text = missing.to_string();
    assert!(
        text.contains("\"left-pad\"") && text.contains("node_modules"),
        "{text}"
    );
    let commonjs = program(
        "cjs-package",
        DECLARE,
        &[
            (
                "worker.ts",
                "import \"old\";\nexport { Web } from \"./web.ts\";\nexport default {};\n",
            ),
            (
                "node_modules/old/package.json",
                r#"{ "main": "index.cjs" }"#,
            ),
            ("node_modules/old/index.cjs", "module.exports = 1;\n"),
        ],
    )
    .expect_err("CommonJS");
    let text = commonjs.to_string();
    assert!(
        text.contains("\"old\"") && text.contains("CommonJS"),
        "{text}"
    );
    // CommonJS in a .js file fails as it runs, and says why.
    let hidden = program(
        "cjs-in-js",
        DECLARE,
        &[
            (
                "worker.ts",
                "import \"older\";\nexport { Web } from \"./web.ts\";\nexport default {};\n",
            ),
            (
                "node_modules/older/package.json",
                r#"{ "main": "index.js" }"#,
            ),
            (
                "node_modules/older/index.js",
                "module.exports = { a: 1 };\n",
            ),
        ],
    )
    .expect_err("CommonJS");
    let text = hidden.to_string();
    assert!(
        text.contains("older/index.js") && text.contains("is CommonJS"),
        "{text}"
    );
}

#[tokio::test]
async fn a_cron_trigger_runs_scheduled_and_a_throw_is_retried_unless_it_said_no_retry() {
    let worker = r#"let ticks = [];
export default {
  fetch: () => new Response(ticks.join(",")),
  async scheduled(controller, env, ctx) {
    ticks.push(`${controller.cron}@${controller.scheduledTime}`);
    if (ticks.length === 2) throw new Error("second tick fails");
    if (ticks.length === 3) { controller.noRetry(); throw new Error("third tick fails, not retried"); }
  },
};
"#;
    let dir = app("crons", &[("worker.js", worker)]);
    let cron: crate::cron::Cron = "*/5 * * * *".parse().expect("cron");
    let script = crate::manifest::WorkerScript {
        entrypoint: dir.join("worker.js"),
        vars: Default::default(),
        crons: vec![cron.clone()],
    };
    let limits = WorkerLimits {
        runtimes: 1,
        ..WorkerLimits::default()
    };
    let worker = JsWorker::start("crons", &script, crate::worker::Env::new(), limits)
        .await
        .expect("the worker starts");
    let at = std::time::UNIX_EPOCH + Duration::from_secs(300);
    assert_eq!(worker.scheduled(&cron, at).await, Ok(()));
    let failed = worker
        .scheduled(&cron, at)
        .await
        .expect_err("the second tick throws");
    assert!(failed.contains("second tick fails"), "{failed}");
    assert_eq!(worker.scheduled(&cron, at).await, Ok(()), "noRetry: done");
    let request = get_root();
    let (_, _, body) = through(&worker, request).await;
    assert_eq!(
        String::from_utf8_lossy(&body),
        "*/5 * * * *@300000,*/5 * * * *@300000,*/5 * * * *@300000"
    );

    // A worker of cron triggers only loads; a request to it is an error.
    let dir = app(
        "crons-only",
        &[("worker.js", "export default { scheduled() {} };\n")],
    );
    let script = crate::manifest::WorkerScript {
        entrypoint: dir.join("worker.js"),
        vars: Default::default(),
        crons: vec![cron.clone()],
    };
    let only = JsWorker::start("crons-only", &script, crate::worker::Env::new(), limits)
        .await
        .expect("a worker of crons only starts");
    assert_eq!(only.scheduled(&cron, at).await, Ok(()));
    let request = get_root();
    let (status, _, body) = through(&only, request).await;
    assert_eq!(status.as_u16(), 500);
    assert!(String::from_utf8_lossy(&body).contains("no fetch handler"));

    // Crons with no handler to run are refused when the worker loads.
    let dir = app(
        "crons-none",
        &[(
            "worker.js",
            "export default { fetch: () => new Response(\"\") };\n",
        )],
    );
    let script = crate::manifest::WorkerScript {
        entrypoint: dir.join("worker.js"),
        vars: Default::default(),
        crons: vec![cron],
    };
    let refused = JsWorker::start("crons-none", &script, crate::worker::Env::new(), limits).await;
    let error = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("no scheduled handler"), "{error}");
}

#[test]
fn a_workers_crons_are_read_and_a_bad_one_names_its_place() {
    let crons = r#"import { Container, Worker } from "alchemy/cloudflare";
const web = await Container("web", { className: "Web" });
await Worker("site", { entrypoint: "./worker.ts", bindings: { WEB: web }, crons: ["*/5 * * * *", "0 3 * * MON"] });
"#;
    let manifest = program("crons-read", crons, &[]).expect("the program loads");
    let script = manifest.workers[0].script.as_ref().expect("a script");
    let read: Vec<String> = script.crons.iter().map(|c| c.to_string()).collect();
    assert_eq!(read, ["*/5 * * * *", "0 3 * * MON"]);
    let bad = crons.replace("0 3 * * MON", "0 25 * * *");
    let err = program("crons-bad", &bad, &[]).expect_err("hour 25");
    let text = err.to_string();
    assert!(
        text.contains("alchemy.run.ts:3:") && text.contains("crons[1]"),
        "{text}"
    );
}
