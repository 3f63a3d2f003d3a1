//! Request handling in front of objects: Cloudflare's `export default { fetch }`.
//!
//! A [`Worker`] takes a request and the worker's bindings ([`Env`]) and answers. The
//! declarative router of `berth.toml` is one worker; an async Rust function
//! ([`worker_fn`]) is another. Requests and responses carry berth's [`Body`], so a worker
//! can build requests of its own, and so can anything that calls one.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use http::{Request, Response};

use crate::http::Body;
use crate::metrics::{Metrics, WorkerCounters, WorkerLabels};
use crate::namespace::Namespace;

/// What a binding gives the worker.
#[derive(Clone)]
#[non_exhaustive]
pub enum Binding {
    /// The namespace of a container class: its objects, by name or id.
    Container(Namespace),
}

/// A worker's bindings, by name. Cheap to clone.
#[derive(Clone, Default)]
pub struct Env {
    bindings: Arc<BTreeMap<String, Binding>>,
}

impl Env {
    pub fn new() -> Env {
        Env::default()
    }

    /// Binds `binding` as `name`, replacing what was bound there.
    pub fn bind(&mut self, name: impl Into<String>, binding: Binding) {
        Arc::make_mut(&mut self.bindings).insert(name.into(), binding);
    }

    /// What is bound as `name`.
    pub fn get(&self, name: &str) -> Option<&Binding> {
        self.bindings.get(name)
    }

    /// The container namespace bound as `name`, if that is what `name` binds.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        match self.bindings.get(name)? {
            Binding::Container(namespace) => Some(namespace),
        }
    }

    /// The names of every binding, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.bindings.keys().map(String::as_str)
    }
}

/// Request handling in front of objects.
#[async_trait]
pub trait Worker: Send + Sync + 'static {
    async fn fetch(&self, request: Request<Body>, env: &Env) -> Response<Body>;
}

/// A [`Worker`] from an async function, for custom routing:
///
/// ```no_run
/// # use berth::worker::{worker_fn, Env};
/// # use berth::Body;
/// # use http::{Request, Response};
/// async fn fetch(request: Request<Body>, env: Env) -> Response<Body> {
///     let Some(containers) = env.namespace("MY_CONTAINER") else {
///         return berth::http::error_response(http::StatusCode::INTERNAL_SERVER_ERROR, "unbound", "MY_CONTAINER is not bound");
///     };
///     containers.get_container(Some("container")).fetch(request).await
/// }
/// let worker = worker_fn(fetch);
/// ```
pub fn worker_fn<F, Fut>(f: F) -> FnWorker<F>
where
    F: Fn(Request<Body>, Env) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    FnWorker(f)
}

/// See [`worker_fn`].
pub struct FnWorker<F>(F);

#[async_trait]
impl<F, Fut> Worker for FnWorker<F>
where
    F: Fn(Request<Body>, Env) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    async fn fetch(&self, request: Request<Body>, env: &Env) -> Response<Body> {
        (self.0)(request, env.clone()).await
    }
}

/// A worker whose answers are counted in [`Metrics`]: requests by status code, and the
/// time to each answer's head (a streamed body may go on after).
pub struct Counted {
    worker: Arc<dyn Worker>,
    counters: WorkerCounters,
    metrics: Arc<Metrics>,
}

impl Counted {
    /// `worker`, as worker `name` of `app`.
    pub fn new(worker: Arc<dyn Worker>, app: &str, name: &str, metrics: Arc<Metrics>) -> Counted {
        let labels = WorkerLabels {
            app: app.to_string(),
            worker: name.to_string(),
        };
        Counted {
            worker,
            counters: metrics.worker(labels),
            metrics,
        }
    }
}

#[async_trait]
impl Worker for Counted {
    async fn fetch(&self, request: Request<Body>, env: &Env) -> Response<Body> {
        let began = std::time::Instant::now();
        let response = self.worker.fetch(request, env).await;
        let code = response.status().as_u16();
        self.counters.answered(&self.metrics, code, began.elapsed());
        response
    }
}

/// A worker that answers `GET /metrics` with the scrape of `metrics` (what `berth dev
/// --metrics` serves; `berth serve` answers on its control API instead).
pub fn metrics_worker(metrics: Arc<Metrics>) -> impl Worker {
    worker_fn(move |request: Request<Body>, _env| {
        let metrics = metrics.clone();
        async move { metrics_response(&metrics, &request) }
    })
}

/// The answer to a scrape: the metrics on `GET /metrics`, 404 or 405 otherwise.
pub fn metrics_response<B>(metrics: &Metrics, request: &Request<B>) -> Response<Body> {
    use crate::http::error_response;
    use http::{header, Method, StatusCode};
    if request.uri().path() != "/metrics" {
        let message = "berth serves its metrics at /metrics";
        return error_response(StatusCode::NOT_FOUND, "not-found", message);
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "use GET",
        );
        let allow = header::HeaderValue::from_static("GET, HEAD");
        response.headers_mut().insert(header::ALLOW, allow);
        return response;
    }
    match metrics.encode() {
        Ok(text) => {
            let mut response = Response::new(crate::http::full(text));
            let content_type = header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE);
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
            response
        }
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics",
            &format!("the metrics could not be written: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_counted_worker_counts_each_answer_by_its_code() {
        let metrics = Arc::new(Metrics::new());
        let inner = worker_fn(|request: Request<Body>, _env| async move {
            let status = match request.uri().path() {
                "/" => http::StatusCode::OK,
                _ => http::StatusCode::NOT_FOUND,
            };
            let mut response = Response::new(crate::http::full(""));
            *response.status_mut() = status;
            response
        });
        let counted = Counted::new(Arc::new(inner), "shop", "api", metrics.clone());
        for path in ["/", "/", "/nowhere"] {
            let request = Request::get(path).body(crate::http::full(""));
            let request = request.unwrap_or_else(|_| Request::new(crate::http::full("")));
            counted.fetch(request, &Env::new()).await;
        }
        let text = metrics.encode().unwrap_or_default();
        for line in [
            "berth_requests_total{app=\"shop\",worker=\"api\",code=\"200\"} 2",
            "berth_requests_total{app=\"shop\",worker=\"api\",code=\"404\"} 1",
            "berth_request_duration_seconds_count{app=\"shop\",worker=\"api\"} 3",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn a_scrape_is_answered_at_metrics_only_and_by_get() {
        let metrics = Metrics::new();
        let request = |method: &str, path: &str| {
            let request = Request::builder().method(method).uri(path).body(());
            request.unwrap_or_else(|_| Request::new(()))
        };
        let scrape = metrics_response(&metrics, &request("GET", "/metrics"));
        assert_eq!(scrape.status(), http::StatusCode::OK);
        let content_type = scrape.headers().get(http::header::CONTENT_TYPE);
        assert_eq!(
            content_type.and_then(|v| v.to_str().ok()),
            Some(crate::metrics::CONTENT_TYPE)
        );
        let elsewhere = metrics_response(&metrics, &request("GET", "/"));
        assert_eq!(elsewhere.status(), http::StatusCode::NOT_FOUND);
        let post = metrics_response(&metrics, &request("POST", "/metrics"));
        assert_eq!(post.status(), http::StatusCode::METHOD_NOT_ALLOWED);
    }
}
