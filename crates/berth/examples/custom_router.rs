//! Custom routing in Rust: Cloudflare's `worker.ts`, as a library user writes it.
//!
//! Requests to `/lb/...` are spread over a pool of three instances with `get_random`;
//! `/admin/...` goes to port 9000 of the singleton with `switch_port` (both without their
//! prefix); everything else goes to the singleton named `container` with `get_container`.
//!
//! Run it with an image whose server listens on 8080 (and 9000 for `/admin`), for example
//! the one `berth dev examples/hello` builds:
//!
//! ```sh
//! cargo run -p berth --example custom_router -- berth-dev/my-container:<tag>
//! curl localhost:8788/
//! ```

use std::sync::Arc;
use std::time::Duration;

use berth::worker::worker_fn;
use berth::{switch_port, App, Binding, Body, ContainerClass, DockerRuntime, Env, NoHooks, Store};
use http::{Request, Response};

/// The worker's `fetch`: pick an object by name, and let it proxy the request.
pub async fn fetch(mut request: Request<Body>, env: Env) -> Response<Body> {
    let Some(containers) = env.namespace("MY_CONTAINER") else {
        return berth::http::error_response(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "unbound",
            "the worker has no MY_CONTAINER binding",
        );
    };
    if strip_prefix(&mut request, "/lb") {
        // One of instance-0, instance-1, instance-2, at random.
        return containers.get_random(3).fetch(request).await;
    }
    if strip_prefix(&mut request, "/admin") {
        switch_port(&mut request, 9000);
    }
    containers
        .get_container(Some("container"))
        .fetch(request)
        .await
}

/// Removes a leading path segment, so the container sees `/x` for `/lb/x`.
fn strip_prefix<B>(request: &mut Request<B>, prefix: &str) -> bool {
    let Some(rest) = request.uri().path().strip_prefix(prefix) else {
        return false;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return false;
    }
    let rest = match (rest, request.uri().query()) {
        ("", None) => "/".to_string(),
        ("", Some(q)) => format!("/?{q}"),
        (path, None) => path.to_string(),
        (path, Some(q)) => format!("{path}?{q}"),
    };
    *request.uri_mut() = rest.parse().unwrap_or_default();
    true
}

/// The container class, as Cloudflare's `MyContainer` example declares it.
pub fn my_container(image: &str) -> ContainerClass {
    let mut class = ContainerClass::new("MyContainer", image);
    class.default_port = Some(8080);
    class.sleep_after = Duration::from_secs(180);
    class.env_vars.insert(
        "MESSAGE".into(),
        "I was passed in via the container class!".into(),
    );
    class.env_vars.insert("EXTRA_PORTS".into(), "9000".into());
    class
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let image = std::env::args()
        .nth(1)
        .ok_or("usage: custom_router IMAGE (an image whose server listens on port 8080)")?;
    let runtime = Arc::new(DockerRuntime::connect().await?);
    let app = App::new("custom-router", runtime, Store::in_memory()?)?;
    let mut env = Env::new();
    env.bind(
        "MY_CONTAINER",
        Binding::Container(app.namespace(my_container(&image), Arc::new(NoHooks))),
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:8788").await?;
    println!("Ready on http://{}", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    berth::server::serve(
        listener,
        Arc::new(worker_fn(fetch)),
        env,
        shutdown,
        Duration::from_secs(10),
    )
    .await;
    let stopped = app.shutdown().await?;
    println!("stopped {stopped} container(s)");
    Ok(())
}
