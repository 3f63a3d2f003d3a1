//! The Web APIs a worker has, against a local upstream server.

use super::*;

/// A local HTTP/1.1 server for `fetch()` from a worker: it answers each request with
/// status 203, an `x-upstream` header and the request's method and body as its body; a
/// request for `/moved` with a redirect to `/`.
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
            let moved = line.split(' ').nth(1) == Some("/moved");
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
            if moved {
                let _ = write!(
                    stream,
                    "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{port}/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                continue;
            }
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
    if (path === "/redirects") {
      // A client's request is sent on with redirect "manual", as on Cloudflare: the
      // redirect comes back; a URL fetched by itself follows it.
      const passed = await fetch(new Request(`${UPSTREAM}moved`, request));
      const own = await fetch(`${UPSTREAM}moved`);
      const cloned = await fetch(new Request(`${UPSTREAM}moved`, request.clone()));
      // A client's GET has no body, and its clone is a GET too.
      const shape = `${request.body} ${request.clone().method}`;
      return new Response(`${request.redirect} ${passed.status} ${passed.headers.get("location")} ${own.status} ${cloned.status} ${shape}`);
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
    let port = upstream();
    let worker = WEB_APIS.replace("PORT", &port.to_string());
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
    let moved = format!("manual 302 http://127.0.0.1:{port}/ 203 302 null GET");
    assert_eq!(
        text(through(&worker, get("/redirects")).await),
        (200, moved)
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
