use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// A folder `berth-js-<test>-<pid>` holding `files`, emptied first.
pub(super) fn app(test: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-js-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("create folder");
        std::fs::write(path, text).expect("write file");
    }
    dir
}

pub(super) fn quick() -> Limits {
    Limits {
        time: Duration::from_millis(500),
        memory_bytes: 32 << 20,
    }
}

pub(super) const CLASS: &str = r#"import { Container } from "@cloudflare/containers";
export class Web extends Container { defaultPort = 3000; }
"#;

/// An app whose alchemy.run.ts is `program`, with a worker that exports `Web`.
pub(super) fn program(
    test: &str,
    program: &str,
    extra: &[(&str, &str)],
) -> Result<Manifest, ScriptError> {
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

pub(super) const DECLARE: &str = r#"import { Container, Worker } from "alchemy/cloudflare";
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
fn the_constructors_options_set_fields_and_container_proxy_exports_as_on_cloudflare() {
    let class = r#"import { Container, ContainerProxy, outboundParams } from "@cloudflare/containers";
export { ContainerProxy };
export class Web extends Container {
  sleepAfter = 1.5;
  constructor(ctx: any, env: any) {
    super(ctx, env, { defaultPort: 3000, envVars: { A: "a" }, entrypoint: ["/run"], enableInternet: false });
  }
}
export const params = outboundParams(() => new Response(""), { n: 1 });
"#;
    let manifest = program("ctor", DECLARE, &[("web.ts", class)]).expect("loads");
    let class = &manifest.containers[0].class;
    assert_eq!(class.default_port, Some(3000));
    assert_eq!(class.env_vars.get("A").map(String::as_str), Some("a"));
    assert_eq!(class.entrypoint.as_deref(), Some(&["/run".to_string()][..]));
    assert!(!class.enable_internet);
    assert_eq!(class.sleep_after, Duration::from_millis(1500));

    let class = r#"import { Container } from "@cloudflare/containers";
export class Web extends Container {
  static outboundByHost = { "api.example.com": () => new Response("no") };
}
"#;
    let err = program("outbound", DECLARE, &[("web.ts", class)]).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("class Web"), "{text}");
    assert!(text.contains("the class sets outboundByHost"), "{text}");
    assert!(text.contains("allowedHosts"), "{text}");
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
fn a_class_reads_the_workers_vars_and_secrets_from_env() {
    let text = r#"import alchemy from "alchemy";
import { Container, Worker } from "alchemy/cloudflare";
const web = await Container("web", { className: "Web" });
await Worker("site", { entrypoint: "./worker.ts", bindings: { WEB: web, GREETING: "hi", KEY: alchemy.secret("s3cret") } });
const other = await Container("other", { className: "Other" });
await Worker("second", { entrypoint: "./second.ts", bindings: { OTHER: other } });
"#;
    let class = r#"import { Container } from "@cloudflare/containers";
import { env } from "cloudflare:workers";
export class Web extends Container {
  defaultPort = 8080;
  envVars = { FIELD: env.GREETING, PROCESS: process.env.GREETING, PATH: process.env.PATH ?? "none" };
  constructor(ctx: any, env: any) {
    super(ctx, env);
    this.envVars = { ...this.envVars, SECRET: env.KEY };
  }
}
"#;
    // A second worker, which binds no KEY: its class sees none of the first's.
    let second = r#"import { Container } from "@cloudflare/containers";
import { env } from "cloudflare:workers";
export class Other extends Container {
  defaultPort = 8080;
  envVars = { LEAKED: env.KEY ?? "none" };
}
export default {};
"#;
    // berth's own PATH is not the class's to read.
    assert!(
        std::env::var_os("PATH").is_some(),
        "the test needs PATH set"
    );
    let files = [("web.ts", class), ("second.ts", second)];
    let manifest = program("class-env", text, &files).expect("loads");
    let vars = &manifest.containers[0].class.env_vars;
    let var = |name: &str| vars.get(name).map(String::as_str);
    assert_eq!(var("FIELD"), Some("hi"), "{vars:?}");
    assert_eq!(var("PROCESS"), Some("hi"), "{vars:?}");
    assert_eq!(var("PATH"), Some("none"), "{vars:?}");
    assert_eq!(var("SECRET"), Some("s3cret"), "{vars:?}");
    let other = &manifest.containers[1].class.env_vars;
    let leaked = other.get("LEAKED").map(String::as_str);
    assert_eq!(leaked, Some("none"), "{other:?}");
}

#[test]
fn a_bad_env_var_names_its_key_and_shows_no_value() {
    let text = r#"import alchemy from "alchemy";
import { Container, Worker } from "alchemy/cloudflare";
const web = await Container("web", { className: "Web" });
await Worker("site", { entrypoint: "./worker.ts", bindings: { WEB: web, KEY: alchemy.secret("s3cret") } });
"#;
    let class = r#"import { Container } from "@cloudflare/containers";
import { env } from "cloudflare:workers";
export class Web extends Container {
  envVars = { KEY: env.KEY, PORT: 8080 };
}
"#;
    let error = program("bad-env", text, &[("web.ts", class)]).expect_err("refused");
    let text = error.to_string();
    assert!(
        text.contains("envVars: {KEY, PORT} has PORT = 8080"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
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

/// A worker whose entrypoint is `worker`, with no bindings.
pub(super) async fn js_worker(test: &str, worker: &str, limits: WorkerLimits) -> JsWorker {
    js_worker_with(test, worker, crate::worker::Env::new(), limits).await
}

/// A worker whose entrypoint is `worker`, with `env`'s bindings.
pub(super) async fn js_worker_with(
    test: &str,
    worker: &str,
    env: crate::worker::Env,
    limits: WorkerLimits,
) -> JsWorker {
    let dir = app(test, &[("worker.js", worker)]);
    let script = crate::manifest::WorkerScript {
        entrypoint: dir.join("worker.js"),
        vars: Default::default(),
        json_vars: Default::default(),
        crons: Vec::new(),
    };
    JsWorker::start(test, &script, env, limits)
        .await
        .expect("the worker starts")
}

/// `request` through `worker`, with its status and body read (at most 10 s).
pub(super) async fn through(
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
pub(super) fn shipped(dir: &Path) -> Vec<String> {
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
pub(super) fn get_root() -> http::Request<crate::http::Body> {
    http::Request::get("http://site/")
        .body(crate::http::full(""))
        .expect("a request")
}

/// A request body of `chunks` chunks of `size` bytes, each sent as its own frame.
pub(super) fn chunked(chunks: usize, size: usize) -> crate::http::Body {
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

pub(super) fn post(path: &str, body: crate::http::Body) -> http::Request<crate::http::Body> {
    http::Request::post(format!("http://site{path}"))
        .header("host", "site")
        .body(body)
        .expect("a request")
}

mod packages;
mod serving;
mod web;
mod wrangler;
