//! A JS worker serving: bodies, timeouts, broken runtimes and cron ticks.

use std::time::Duration;

use super::*;

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
        json_vars: Default::default(),
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
        json_vars: Default::default(),
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
        json_vars: Default::default(),
        crons: vec![cron],
    };
    let refused = JsWorker::start("crons-none", &script, crate::worker::Env::new(), limits).await;
    let error = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("no scheduled handler"), "{error}");
}

#[tokio::test]
async fn headers_cross_both_ways_as_http_has_them() {
    let worker = r#"export default {
  async fetch(request) {
    const seen = [request.method, request.headers.get("x-twice"), request.headers.get("X-Case"), request.headers.has("x-none"), [...request.headers.keys()].join(), new Headers(request.headers).has("x-case")];
    const answer = new Response(seen.join("|"), { status: 201, headers: { "x-answer": "yes" } });
    answer.headers.append("set-cookie", "a=1");
    answer.headers.append("set-cookie", "b=2");
    return answer;
  },
};
"#;
    let worker = js_worker("headers", worker, WorkerLimits::default()).await;
    let request = http::Request::put("http://site/")
        .header("x-twice", "1")
        .header("x-twice", "2")
        .header("x-case", "kept")
        // A value LLRT's Headers refuses is left out (a copy of the request would throw);
        // the upgrade token is berth's own, never a client's.
        .header(
            "x-latin",
            http::HeaderValue::from_bytes(b"caf\xe9").expect("obs-text"),
        )
        .header("berth-upgrade-token", "1")
        .body(crate::http::full("body"))
        .expect("a request");
    let (status, headers, body) = through(&worker, request).await;
    assert_eq!(status, http::StatusCode::CREATED);
    // Sorted by name, as LLRT keeps headers made from pairs.
    assert_eq!(body, "PUT|1, 2|kept|false|x-case,x-twice|true");
    assert_eq!(
        headers.get("x-answer").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );
    let cookies: Vec<_> = headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"], "{headers:?}");
}

const IDS: &str = r#"export default {
  async fetch(request, env) {
    const path = new URL(request.url).pathname;
    try {
      if (path === "/same") {
        const stub = env.A.get(env.ALSO_A.idFromName("x"));
        return new Response(stub.id.equals(env.A.idFromName("x")) ? "the same object" : "another object");
      }
      if (path === "/foreign") env.OTHER.get(env.A.idFromName("x"));
      if (path === "/unique") env.A.get(env.OTHER.newUniqueId());
      return new Response("no error");
    } catch (error) {
      return new Response(`${error.name}: ${error.message}`, { status: 400 });
    }
  },
};
"#;

#[tokio::test]
async fn an_id_of_another_namespace_is_refused_by_get() {
    use crate::class::ContainerClass;
    use crate::object::NoHooks;
    use crate::worker::Binding;
    let app = crate::app::App::new(
        "ids",
        crate::runtime::fake::FakeRuntime::new(),
        crate::store::Store::in_memory().expect("a store"),
    )
    .expect("an app");
    let hooks = std::sync::Arc::new(NoHooks);
    let a = app.namespace(ContainerClass::new("A", "none"), hooks.clone());
    let other = app.namespace(ContainerClass::new("Other", "none"), hooks);
    let mut env = crate::worker::Env::new();
    env.bind("A", Binding::Container(a.clone()));
    env.bind("ALSO_A", Binding::Container(a));
    env.bind("OTHER", Binding::Container(other));
    let worker = super::js_worker_with("ids", IDS, env, WorkerLimits::default()).await;
    let get = |path: &str| post(path, crate::http::full(""));
    let (status, _, body) = through(&worker, get("/same")).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"the same object"[..]));
    for path in ["/foreign", "/unique"] {
        let (status, _, body) = through(&worker, get(path)).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status.as_u16(), 400, "{path}: {text}");
        assert!(text.starts_with("TypeError: "), "{path}: {text}");
        assert!(text.contains("made by another namespace"), "{path}: {text}");
    }
}

const REJECTIONS: &str = r#"const logged = [];
console.error = (...args) => logged.push(args.map(String).join(" "));
const fails = async (message) => {
  throw new Error(message);
};
export default {
  // Not async: what it throws fails the request (a 500), and is not also logged as
  // unhandled.
  fetch(request, env, ctx) {
    const path = new URL(request.url).pathname;
    if (path === "/throw") throw new Error("thrown by fetch itself");
    return answer(path, ctx);
  },
};
const answer = async (path, ctx) => {
  {
    if (path === "/later") {
      ctx.waitUntil((async () => {
        await null;
        throw new Error("the work after the answer failed");
      })());
      return new Response("answered");
    }
    if (path === "/caught") {
      try {
        await fails("caught by an await");
      } catch {}
      await Promise.reject(new Error("caught by catch")).catch(() => {});
      return new Response("caught");
    }
    return new Response(logged.join("\n"));
  }
};
"#;

#[tokio::test]
async fn a_rejection_nobody_handles_is_logged_and_a_caught_one_is_not() {
    // One runtime: the log the worker keeps is its own.
    let limits = WorkerLimits {
        runtimes: 1,
        ..WorkerLimits::default()
    };
    let worker = js_worker("rejections", REJECTIONS, limits).await;
    let get = |path: &str| post(path, crate::http::full(""));
    let (_, _, body) = through(&worker, get("/caught")).await;
    assert_eq!(&body[..], b"caught");
    let (status, _, _) = through(&worker, get("/throw")).await;
    assert_eq!(status.as_u16(), 500);
    let (_, _, body) = through(&worker, get("/later")).await;
    assert_eq!(&body[..], b"answered");
    // The report comes once the jobs of the moment have run, on a timer.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let logged = loop {
        let (_, _, body) = through(&worker, get("/logged")).await;
        let text = String::from_utf8_lossy(&body).into_owned();
        if text.contains("failed") || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        logged.contains("Uncaught (in promise) Error: the work after the answer failed"),
        "{logged}"
    );
    assert!(!logged.contains("caught by"), "{logged}");
    assert!(!logged.contains("thrown by fetch itself"), "{logged}");
}

#[tokio::test]
async fn process_env_holds_the_workers_vars_not_berths_environment_and_cf_is_there() {
    let worker = r#"const atLoad = process.env.GREETING;
export default {
  async fetch(request, env) {
    return Response.json({ atLoad, keys: Object.keys(process.env), path: process.env.PATH ?? null, country: request.cf.country ?? null, limits: env.LIMITS.max, debug: env.DEBUG });
  },
};
"#;
    let dir = super::app("process-env", &[("worker.js", worker)]);
    let script = crate::manifest::WorkerScript {
        entrypoint: dir.join("worker.js"),
        vars: [
            ("GREETING".to_string(), "hello".to_string()),
            ("LIMITS".to_string(), r#"{"max":3}"#.to_string()),
            ("DEBUG".to_string(), "false".to_string()),
        ]
        .into(),
        // Wrangler's vars that are not text: env holds their values.
        json_vars: ["LIMITS".to_string(), "DEBUG".to_string()].into(),
        crons: Vec::new(),
    };
    assert!(
        std::env::var_os("PATH").is_some(),
        "the test needs PATH set"
    );
    let env = crate::worker::Env::new();
    let worker = JsWorker::start("process-env", &script, env, WorkerLimits::default())
        .await
        .expect("the worker starts");
    let (_, _, body) = through(&worker, post("/", crate::http::full(""))).await;
    assert_eq!(
        String::from_utf8_lossy(&body),
        r#"{"atLoad":"hello","keys":["DEBUG","GREETING","LIMITS"],"path":null,"country":null,"limits":3,"debug":false}"#
    );
}

const LIFECYCLE: &str = r#"export default {
  async fetch(request, env) {
    const path = new URL(request.url).pathname;
    const stub = env.A.getByName("x");
    try {
      if (path === "/start") {
        await stub.start({ envVars: { EXTRA: "from start" }, entrypoint: ["/serve", "--quiet"], enableInternet: false, labels: { team: "a" } });
      }
      if (path === "/plain") await stub.startAndWaitForPorts({ startOptions: { envVars: { CLASS: "class" } } });
      if (path === "/bad-entrypoint") await stub.start({ entrypoint: "/serve" });
      if (path === "/interrupt") await stub.stop("SIGINT");
      if (path === "/kill") await stub.stop(9);
      if (path === "/bad-signal") await stub.stop("SIGSTOP");
      return new Response(JSON.stringify(await stub.getState()));
    } catch (error) {
      return new Response(`${error.name}: ${error.message}`, { status: 400 });
    }
  },
};
"#;

#[tokio::test]
async fn start_options_reach_the_container_and_stop_sends_the_signal_asked_for() {
    use crate::class::ContainerClass;
    use crate::object::NoHooks;
    use crate::runtime::Signal;
    use crate::worker::Binding;
    let fake = crate::runtime::fake::FakeRuntime::new();
    fake.image("none", Default::default());
    let app = crate::app::App::new(
        "lifecycle",
        fake.clone(),
        crate::store::Store::in_memory().expect("a store"),
    )
    .expect("an app");
    let mut class = ContainerClass::new("A", "none");
    class.default_port = Some(8080);
    class.env_vars.insert("CLASS".into(), "class".into());
    let a = app.namespace(class, std::sync::Arc::new(NoHooks));
    let mut env = crate::worker::Env::new();
    env.bind("A", Binding::Container(a));
    let worker = super::js_worker_with("lifecycle", LIFECYCLE, env, WorkerLimits::default()).await;
    let call = |path: &str| post(path, crate::http::full(""));
    let said = |body: &bytes::Bytes| String::from_utf8_lossy(body).into_owned();

    let (status, _, body) = through(&worker, call("/start")).await;
    assert_eq!(status.as_u16(), 200, "{}", said(&body));
    let running = fake.running();
    assert_eq!(running.len(), 1, "one container runs");
    let spec = fake.spec(&running[0]).expect("its spec");
    assert_eq!(
        spec.env.get("EXTRA").map(String::as_str),
        Some("from start")
    );
    assert_eq!(spec.env.get("CLASS").map(String::as_str), Some("class"));
    assert_eq!(
        spec.entrypoint,
        Some(vec!["/serve".into(), "--quiet".into()])
    );
    assert!(
        !spec.egress.is_open(),
        "enableInternet: false closes its egress"
    );
    // lastChange is when the container started, not when the state was asked for.
    let changed = |body: &bytes::Bytes| {
        let state: serde_json::Value = serde_json::from_slice(body).expect("a state");
        assert_eq!(state["status"], "running", "{state}");
        state["lastChange"].as_i64().expect("lastChange")
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, _, body) = through(&worker, call("/")).await;
    let healthy = changed(&body);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let (_, _, body) = through(&worker, call("/")).await;
    assert_eq!(changed(&body), healthy);

    let (status, _, body) = through(&worker, call("/interrupt")).await;
    assert_eq!(status.as_u16(), 200, "{}", said(&body));
    assert_eq!(fake.signals(&running[0]), vec![Signal::Int]);
    assert!(fake.running().is_empty(), "{}", said(&body));

    // The class's own values, passed again, change nothing.
    let (status, _, body) = through(&worker, call("/plain")).await;
    assert_eq!(status.as_u16(), 200, "{}", said(&body));
    let running = fake.running();
    let spec = fake.spec(&running[0]).expect("its spec");
    assert_eq!(spec.entrypoint, None);
    assert!(spec.egress.is_open());
    let (status, _, body) = through(&worker, call("/kill")).await;
    assert_eq!(status.as_u16(), 200, "{}", said(&body));
    assert_eq!(fake.signals(&running[0]), vec![Signal::Kill]);

    for (path, needle) in [
        (
            "/bad-entrypoint",
            "TypeError: start: entrypoint is an array of strings",
        ),
        (
            "/bad-signal",
            "TypeError: stop(signal): a container stops with SIGTERM, SIGINT or SIGKILL",
        ),
    ] {
        let (status, _, body) = through(&worker, call(path)).await;
        assert_eq!(status.as_u16(), 400, "{path}: {}", said(&body));
        assert!(said(&body).starts_with(needle), "{path}: {}", said(&body));
    }
}
