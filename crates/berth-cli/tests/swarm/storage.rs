//! The objects' storage on the cluster's store (`berth store`), and their class's own
//! `fetch` on their home: a JavaScript class that counts its requests in
//! `this.ctx.storage` and in a field counts on, whichever router took the request, and
//! (in storage) after every router was replaced by one with an empty data folder.

use crate::cluster::{self, Cluster};
use crate::routers::{request, Routers, CONTROL_PORT};

const HOST: &str = "web.counted.localhost";

/// The app: a class whose own `fetch` counts in its storage and in a field (its
/// instance lives while its container runs, which it starts).
fn program(image: &str) -> serde_json::Value {
    let run = format!(
        r#"import {{ Container, Worker }} from "alchemy/cloudflare";
import type {{ Counter }} from "./src/counter.ts";

const counter = await Container<Counter>("counter", {{ className: "Counter", image: "{image}" }});

export const worker = await Worker("web", {{
  name: "web",
  entrypoint: "./src/worker.ts",
  bindings: {{ COUNTER: counter }},
}});
"#
    );
    let counter = r#"import { Container } from "@cloudflare/containers";

export class Counter extends Container {
  defaultPort = 8080;

  override async fetch(request: Request): Promise<Response> {
    const path = new URL(request.url).pathname;
    // A WebSocket, passed on to the container by the class, on the object's home.
    if (path === "/ws") return this.containerFetch(request);
    if (path === "/schedule") {
      await this.schedule(1, "ring");
      return new Response("scheduled");
    }
    if (path === "/rung") {
      return new Response(String((await this.ctx.storage.get("rung")) ?? 0));
    }
    const count = ((await this.ctx.storage.get("count")) ?? 0) + 1;
    await this.ctx.storage.put("count", count);
    // The instance lives while the container runs: its field counts along.
    this.hits = (this.hits ?? 0) + 1;
    await this.containerFetch(new Request("http://container/hit"));
    return new Response(`${count} ${this.hits}`);
  }

  hits?: number;

  // Called on a stub (RPC): answered by the object's one instance, on its home.
  async hitCount() {
    return { hits: this.hits ?? 0 };
  }

  async ring() {
    const rung = ((await this.ctx.storage.get("rung")) ?? 0) + 1;
    await this.ctx.storage.put("rung", rung);
  }
}
"#;
    let worker = r#"import { getContainer } from "@cloudflare/containers";
export { Counter } from "./counter.ts";

export default {
  async fetch(request: Request, env: any): Promise<Response> {
    const stub = getContainer(env.COUNTER, request.headers.get("x-name") ?? "one");
    if (new URL(request.url).pathname === "/hits") {
      return Response.json(await (stub as any).hitCount());
    }
    return stub.fetch(request);
  },
};
"#;
    serde_json::json!({
        "manifest": "",
        "program": {
            "alchemy.run.ts": run,
            "src/counter.ts": counter,
            "src/worker.ts": worker,
        },
        "images": {},
        "source": "swarm-test-js",
    })
}

/// The count of object `name` in its storage, and in its instance of the class, through
/// router `router`.
async fn count(cluster: &Cluster, routers: &Routers, router: usize, name: &str) -> (u32, u32) {
    let answer = request(
        &routers.public[router],
        "GET",
        "/",
        &[("Host", HOST), ("x-name", name)],
        "",
    )
    .await;
    match answer {
        Ok((200, body)) => {
            let numbers: Vec<u32> = body
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            match numbers[..] {
                [stored, hits] => (stored, hits),
                _ => panic!("two counts: {body}"),
            }
        }
        other => {
            let mut logs = String::new();
            for service in [crate::routers::SERVICE, crate::routers::STORE_SERVICE] {
                logs += &cluster::run(
                    cluster
                        .manager()
                        .docker()
                        .args(["service", "logs", "--tail", "30", service]),
                )
                .await;
            }
            panic!("router {router} counts {name}: {other:?}\n{logs}")
        }
    }
}

/// Deploys the app through a router; each router that answers (an earlier scenario killed
/// one) adds one to the count of one object in turn: one count, 1 then 2 (then 3), in
/// storage and in the object's one instance of the class. Returns the count.
pub async fn an_objects_storage_is_one_whichever_router_runs_it(
    cluster: &Cluster,
    routers: &Routers,
) -> u32 {
    let alive = crate::routers::answering(routers).await;
    assert!(alive.len() >= 2, "routers answer: {alive:?}");
    // Homes are one only once the routers' lists agree (an earlier scenario killed one).
    let auth = format!("Bearer {}", routers.token);
    crate::routers::wait_for_routers(cluster, &auth).await;
    let body = program(&cluster::app_image().await).to_string();
    let control = format!("{}:{CONTROL_PORT}", cluster.nodes[alive[0]].ip);
    let (status, answer) = request(
        &control,
        "POST",
        "/v1/apps/counted/deployments",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
    .await
    .expect("deploy");
    assert!(status < 300, "deploy: {status} {answer}");
    let mut counts = Vec::new();
    for &router in &alive {
        counts.push(count(cluster, routers, router, "shared").await);
    }
    // One count in storage, and one instance of the class (on the object's home) that
    // counts along: the class's own fetch runs there, whichever router took the request.
    let expected: Vec<(u32, u32)> = (1..=alive.len() as u32).map(|n| (n, n)).collect();
    assert_eq!(counts, expected, "one count through routers {alive:?}");
    // A method called on a stub through any router runs in that same instance.
    let hits = format!("{{\"hits\":{}}}", alive.len());
    for &router in &alive {
        let called = get(routers, router, "shared", "/hits").await;
        assert_eq!(
            called,
            Ok((200, hits.clone())),
            "RPC through router {router}"
        );
    }
    // A WebSocket through any router reaches the container through the class's own
    // fetch on the object's home, both ways.
    for &router in &alive {
        echoes(&routers.public[router], "shared").await;
    }

    // An alarm set through one router is delivered once (by the object's home), and what
    // it writes is read through another.
    let (first, last) = (alive[0], alive[alive.len() - 1]);
    let scheduled = get(routers, first, "ringer", "/schedule").await;
    assert_eq!(scheduled, Ok((200, "scheduled".to_string())));
    let rung = cluster::eventually(|| async {
        match get(routers, last, "ringer", "/rung").await {
            Ok((200, body)) if body.trim() == "1" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(rung.is_ok(), "the alarm rang: {rung:?}");
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(
        get(routers, first, "ringer", "/rung").await,
        Ok((200, "1".to_string())),
        "once"
    );
    counts.len() as u32
}

/// Opens a WebSocket to `/ws` of object `name` through the router at `addr`, and sees
/// three messages echoed.
async fn echoes(addr: &str, name: &str) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let limit = std::time::Duration::from_secs(60);
    let mut ask = format!("ws://{HOST}/ws")
        .into_client_request()
        .expect("a WebSocket request");
    ask.headers_mut().insert(
        "x-name",
        http::HeaderValue::from_str(name).expect("a header value"),
    );
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let (mut socket, _) = tokio::time::timeout(limit, tokio_tungstenite::client_async(ask, stream))
        .await
        .unwrap_or_else(|_| panic!("the upgrade through {addr} in time"))
        .unwrap_or_else(|e| panic!("a WebSocket through {addr}: {e}"));
    for i in 0..3 {
        let message = Message::text(format!("through {addr}: {i}"));
        socket.send(message.clone()).await.expect("send");
        let echo = tokio::time::timeout(limit, socket.next())
            .await
            .expect("an echo in time")
            .expect("an answer")
            .expect("a message");
        assert_eq!(echo, message);
    }
    let _ = socket.close(None).await;
}

/// `GET path` for object `name`, through router `router`.
async fn get(
    routers: &Routers,
    router: usize,
    name: &str,
    path: &str,
) -> Result<(u16, String), String> {
    request(
        &routers.public[router],
        "GET",
        path,
        &[("Host", HOST), ("x-name", name)],
        "",
    )
    .await
}

/// After every router was replaced (with empty data folders), the count goes on from
/// `before`, through each router.
pub async fn an_objects_storage_outlives_every_router(
    cluster: &Cluster,
    routers: &Routers,
    before: u32,
) {
    let alive = crate::routers::answering(routers).await;
    let mut counts = Vec::new();
    for &router in &alive {
        counts.push(count(cluster, routers, router, "shared").await.0);
    }
    let expected: Vec<u32> = (before + 1..=before + alive.len() as u32).collect();
    assert_eq!(
        counts, expected,
        "the count goes on through routers {alive:?}"
    );
}
