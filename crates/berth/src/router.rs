//! The router: the declarative [`Worker`] of `berth.toml`. It picks, for each request, the
//! binding and the object name that serve it, by the first route whose path matches.
//!
//! A route sends a request to a fixed name, to a name taken from the request (a path
//! parameter, a header, a query parameter or a cookie), or across a pool of N objects
//! named `instance-<k>` (random, round-robin, least-in-flight, or a consistent hash of a
//! request key). Library users who want their own routing implement [`Worker`] instead.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use http::{Request, Response, StatusCode};

use crate::http::{error_response, full, percent_decode, Body};
use crate::id::{random_below, ObjectId};
use crate::namespace::Namespace;
use crate::object::{FetchError, Object, StartOptions};
use crate::worker::{Env, Worker};

mod path;
mod schedules;

pub use path::PathPattern;
pub use schedules::{CronSchedule, Delivery, Planned, Running, SCHEDULE_HEADER};

/// Where in a request a key (an object name, or a hash key) is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A `:param` of the route's path.
    Path(String),
    Header(String),
    Query(String),
    Cookie(String),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Path(p) => write!(f, "path parameter :{p}"),
            KeySource::Header(h) => write!(f, "header {h}"),
            KeySource::Query(q) => write!(f, "query parameter {q}"),
            KeySource::Cookie(c) => write!(f, "cookie {c}"),
        }
    }
}

/// How a pool route picks one of its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    Random,
    RoundRobin,
    /// The object with the fewest requests in flight (ties spread over the pool).
    LeastInFlight,
    /// A consistent hash of a request key: the same key always reaches the same
    /// object, and growing the pool moves only a share of the keys.
    Hash(KeySource),
}

/// Which object a route sends a request to (the `instance` key of a route in
/// `berth.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Always the object with this name.
    Fixed(String),
    /// The object named by a part of the request.
    From(KeySource),
    /// One of `size` objects named `instance-0` … `instance-<size-1>`.
    Pool { size: usize, strategy: Strategy },
}

/// One route of a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub path: PathPattern,
    /// The binding (a name in the worker's `bindings`) whose namespace serves the route.
    pub binding: String,
    pub target: Target,
    /// Send the container only what the final `*` matched: `/lb/x` becomes `/x`.
    pub strip_prefix: bool,
    /// Start the object's container (if none runs) and answer 202 without proxying:
    /// how a class with no port, such as a batch job, is run from a route.
    pub start_only: bool,
    /// `false`: never start a sleeping instance. A request for one is answered 503
    /// (`berth-error: sleeping`), or goes on to the next route if `fallback`.
    pub wake: bool,
    /// With `wake = false`: a request whose instance sleeps goes on to the next route
    /// that matches, as if this one did not.
    pub fallback: bool,
    /// A pool route that keeps all its instances running from the start, and starts
    /// again any that stops.
    pub keep_warm: bool,
}

impl Route {
    /// A route of `path` (as `/users/:user/*`) to `binding`'s `target`; the other
    /// settings at their defaults (no prefix stripped, proxied, wakes its instance).
    pub fn new(path: PathPattern, binding: &str, target: Target) -> Route {
        Route {
            path,
            binding: binding.to_string(),
            target,
            strip_prefix: false,
            start_only: false,
            wake: true,
            fallback: false,
            keep_warm: false,
        }
    }
}

/// The most objects a pool may have: every object of a pool may run a container.
pub const MAX_POOL: usize = 10_000;

/// The longest object name a route takes from a request, in bytes. Names are kept in
/// memory while their objects live, and in the store once they ran.
pub const MAX_NAME_BYTES: usize = 1024;

/// Why a router could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RouterError {
    #[error(
        "route {path} uses binding {binding:?}, which the worker does not have; bindings: {known}"
    )]
    UnknownBinding {
        path: String,
        binding: String,
        known: String,
    },
    #[error("route {path} has a pool of {size}; a pool has at most {MAX_POOL} objects")]
    PoolTooLarge { path: String, size: usize },
    #[error("schedule {cron} {path}: no route matches the path; give the path of one of the worker's routes")]
    UnroutedSchedule { cron: String, path: String },
    #[error("schedule {cron} {path}: route {route} takes the object's name from the request; give the schedule an instance, as in instance = \"reporter\"")]
    ScheduleNeedsInstance {
        cron: String,
        path: String,
        route: String,
    },
}

struct Compiled {
    route: Route,
    namespace: Namespace,
    next: AtomicUsize,
    /// The object of a fixed-name route, looked up once.
    fixed: Option<Object>,
    /// The ids of a pool's objects, by index, worked out once.
    pool: Vec<ObjectId>,
}

/// A [`Worker`] that follows a list of routes.
pub struct Router {
    routes: Vec<Compiled>,
    /// The tasks that keep the pools of `keep_warm` routes running, for as long as the
    /// router lives.
    warmers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Router {
    fn drop(&mut self) {
        for task in &self.warmers {
            task.abort();
        }
    }
}

/// Why a request matched no object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// No route matches the path.
    NoRoute,
    /// The route needs a key the request lacks.
    MissingKey(KeySource),
    /// The name the request gives is longer than [`MAX_NAME_BYTES`].
    NameTooLong { source: KeySource, bytes: usize },
}

impl Router {
    pub fn new(routes: Vec<Route>, env: &Env) -> Result<Router, RouterError> {
        let routes = routes
            .into_iter()
            .map(|route| {
                let namespace = env.namespace(&route.binding).cloned().ok_or_else(|| {
                    RouterError::UnknownBinding {
                        path: route.path.as_str().to_string(),
                        binding: route.binding.clone(),
                        known: env.names().collect::<Vec<_>>().join(", "),
                    }
                })?;
                let fixed = match &route.target {
                    Target::Fixed(name) => Some(namespace.get_by_name(name)),
                    _ => None,
                };
                let pool = match &route.target {
                    Target::Pool { size, .. } if *size > MAX_POOL => {
                        return Err(RouterError::PoolTooLarge {
                            path: route.path.as_str().to_string(),
                            size: *size,
                        })
                    }
                    Target::Pool { size, .. } => (0..(*size).max(1))
                        .map(|k| namespace.id_from_name(&pool_name(k)))
                        .collect(),
                    _ => Vec::new(),
                };
                Ok(Compiled {
                    route,
                    namespace,
                    next: AtomicUsize::new(0),
                    fixed,
                    pool,
                })
            })
            .collect::<Result<Vec<Compiled>, _>>()?;
        let warmers = routes
            .iter()
            .filter(|c| c.route.keep_warm)
            .filter_map(|c| {
                let objects: Vec<Object> = (0..c.pool.len())
                    .map(|k| c.namespace.get_named(c.pool[k], || pool_name(k)))
                    .collect();
                let handle = tokio::runtime::Handle::try_current().ok()?;
                Some(handle.spawn(keep_warm(objects, c.route.path.as_str().to_string())))
            })
            .collect();
        Ok(Router { routes, warmers })
    }

    /// The object that serves `request`. A route with `strip_prefix` rewrites the
    /// request's path to what its `*` matched.
    pub fn pick<B>(&self, request: &mut Request<B>) -> Result<Object, Miss> {
        self.pick_route(request).map(|(object, _)| object)
    }

    /// [`Router::pick`], with the route that matched.
    fn pick_route<B>(&self, request: &mut Request<B>) -> Result<(Object, &Route), Miss> {
        self.pick_from(request, 0)
            .map(|(object, route, _)| (object, route))
    }

    /// The first route from the `from`-th on that matches: its object, the route, and
    /// its index.
    fn pick_from<B>(
        &self,
        request: &mut Request<B>,
        from: usize,
    ) -> Result<(Object, &Route, usize), Miss> {
        let path = request.uri().path();
        let Some((at, compiled, params, rest)) = self
            .routes
            .iter()
            .enumerate()
            .skip(from)
            .find_map(|(at, c)| {
                c.route
                    .path
                    .match_with_rest(path)
                    .map(|(params, rest)| (at, c, params, rest))
            })
        else {
            return Err(Miss::NoRoute);
        };
        let key = |source: &KeySource| {
            read_key(request, &params, source).ok_or_else(|| Miss::MissingKey(source.clone()))
        };
        let ns = &compiled.namespace;
        let object = match (&compiled.fixed, &compiled.route.target) {
            (Some(object), _) => object.clone(),
            (None, Target::Fixed(name)) => ns.get_by_name(name),
            (None, Target::From(source)) => {
                let name = key(source)?;
                if name.len() > MAX_NAME_BYTES {
                    return Err(Miss::NameTooLong {
                        source: source.clone(),
                        bytes: name.len(),
                    });
                }
                ns.get_by_name(&name)
            }
            (None, Target::Pool { strategy, .. }) => {
                let ids = &compiled.pool;
                let size = ids.len().max(1);
                let k = match strategy {
                    Strategy::Random => random_below(size),
                    Strategy::RoundRobin => compiled.next.fetch_add(1, Ordering::Relaxed) % size,
                    Strategy::LeastInFlight => least_in_flight(ns, ids, &compiled.next),
                    Strategy::Hash(source) => jump_hash(fnv1a(key(source)?.as_bytes()), size),
                };
                match ids.get(k) {
                    Some(id) => ns.get_named(*id, || pool_name(k)),
                    None => ns.get_by_name(&pool_name(k)),
                }
            }
        };
        let stripped = compiled.route.strip_prefix.then(|| {
            let path = if rest.is_empty() { "/" } else { rest };
            match request.uri().query() {
                Some(query) => format!("{path}?{query}"),
                None => path.to_string(),
            }
        });
        if let Some(uri) = stripped.and_then(|u| u.parse().ok()) {
            *request.uri_mut() = uri;
        }
        Ok((object, &compiled.route, at))
    }

    /// The answer for a request that matched no object.
    pub fn miss_response(&self, miss: &Miss) -> Response<Body> {
        match miss {
            Miss::NoRoute => {
                let routes: Vec<&str> = self.routes.iter().map(|c| c.route.path.as_str()).collect();
                error_response(
                    StatusCode::NOT_FOUND,
                    "no-route",
                    &format!("no route matches this path; routes: {}", routes.join(", ")),
                )
            }
            Miss::MissingKey(source) => error_response(
                StatusCode::BAD_REQUEST,
                "missing-key",
                &format!("this route picks its instance by {source}, which the request lacks"),
            ),
            Miss::NameTooLong { source, bytes } => error_response(
                StatusCode::BAD_REQUEST,
                "name-too-long",
                &format!(
                    "the object name in {source} is {bytes} bytes long; names are at most {MAX_NAME_BYTES} bytes"
                ),
            ),
        }
    }
}

#[async_trait]
impl Worker for Router {
    async fn fetch(&self, mut request: Request<Body>, _env: &Env) -> Response<Body> {
        let uri = request.uri().clone();
        let mut from = 0;
        let mut asleep = None;
        loop {
            match self.pick_from(&mut request, from) {
                Ok((object, route, _)) if route.start_only => return start_only(&object).await,
                Ok((object, route, at)) if !route.wake => {
                    match object.fetch_if_serving(request).await {
                        Ok(Ok(response)) => return response,
                        Ok(Err(e)) => return e.into_response(),
                        Err(back) if route.fallback => {
                            // The next route sees the request as it came.
                            request = back;
                            *request.uri_mut() = uri.clone();
                            from = at + 1;
                            asleep = Some(object);
                        }
                        Err(_) => return sleeping(&object),
                    }
                }
                Ok((object, _, _)) => return object.fetch(request).await,
                Err(Miss::NoRoute) if asleep.is_some() => {
                    return asleep
                        .as_ref()
                        .map_or_else(|| self.miss_response(&Miss::NoRoute), sleeping)
                }
                Err(miss) => return self.miss_response(&miss),
            }
        }
    }
}

/// The answer of a `wake = false` route whose instance sleeps.
fn sleeping(object: &Object) -> Response<Body> {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "sleeping",
        &format!(
            "{} sleeps, and this route does not wake it (wake = false)",
            object.describe()
        ),
    )
}

/// Keeps `objects` (a `keep_warm` pool) running: starts each one that does not run, at
/// once and whenever one stops, until the router is dropped. The objects never sleep.
async fn keep_warm(objects: Vec<Object>, route: String) {
    for object in &objects {
        object.keep_awake();
    }
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut failed = false;
        for object in &objects {
            // On a cluster, each object is kept warm by its home, which runs it.
            if !object.is_home() || object.container_state().is_some_and(|s| s.is_active()) {
                continue;
            }
            if let Err(e) = object.start(StartOptions::default()).await {
                failed = true;
                tracing::warn!(
                    route,
                    "keep_warm could not start {}: {e}",
                    object.describe()
                );
            }
        }
        backoff = if failed {
            (backoff * 2).min(Duration::from_secs(30))
        } else {
            Duration::from_secs(1)
        };
        tokio::time::sleep(backoff).await;
    }
}

/// Starts the object's container, if none runs, and says so: 202, because the container
/// goes on running (until it exits or sleeps) after the answer.
async fn start_only(object: &Object) -> Response<Body> {
    match object.start(StartOptions::default()).await {
        Ok(()) => {
            let mut response = Response::new(full(format!("started {}\n", object.describe())));
            *response.status_mut() = StatusCode::ACCEPTED;
            response
        }
        Err(e) => FetchError::Start(e).into_response(),
    }
}

/// The name of the `k`-th object of a pool, as Cloudflare's `getRandom` names them.
pub fn pool_name(k: usize) -> String {
    format!("instance-{k}")
}

/// The index of the pool's object with the fewest requests in flight. An object that is
/// not live has none, so the scan stops at the first such one: it costs O(live objects),
/// and it creates none. It starts at a rotating index so that ties spread out.
fn least_in_flight(ns: &Namespace, ids: &[ObjectId], next: &AtomicUsize) -> usize {
    let size = ids.len().max(1);
    let start = next.fetch_add(1, Ordering::Relaxed) % size;
    let mut best = (u32::MAX, start);
    for k in (0..size).map(|i| (start + i) % size) {
        let in_flight = ids
            .get(k)
            .and_then(|id| ns.peek(*id))
            .map_or(0, |o| o.in_flight());
        if in_flight < best.0 {
            best = (in_flight, k);
            if in_flight == 0 {
                break;
            }
        }
    }
    best.1
}

fn read_key<B>(
    request: &Request<B>,
    params: &[(&str, &str)],
    source: &KeySource,
) -> Option<String> {
    let value = match source {
        KeySource::Path(name) => params
            .iter()
            .find(|(p, _)| p == name)
            .map(|(_, v)| percent_decode(v)),
        KeySource::Header(name) => request
            .headers()
            .get(name.as_str())
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        // A query string is form-encoded: `+` is a space there (not in paths).
        KeySource::Query(name) => request.uri().query().and_then(|q| {
            q.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let form = |text: &str| percent_decode(&text.replace('+', " "));
                (form(k) == *name).then(|| form(v))
            })
        }),
        KeySource::Cookie(name) => request
            .headers()
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                // A cookie's value may be quoted; the quotes are not part of it.
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                (k == name).then(|| percent_decode(v))
            }),
    }?;
    (!value.is_empty()).then_some(value)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x100000001b3)
    })
}

/// Lamping and Veach's jump consistent hash: `key` → a bucket in `0..buckets`.
fn jump_hash(mut key: u64, buckets: usize) -> usize {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2862933555777941757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::app::App;
    use crate::class::ContainerClass;
    use crate::object::NoHooks;
    use crate::runtime::fake::FakeRuntime;
    use crate::store::Store;
    use crate::worker::Binding;

    fn router(target: Target) -> Result<(Router, Namespace), RouterError> {
        let app =
            App::new("r", FakeRuntime::new(), Store::in_memory().expect("store")).expect("app");
        let ns = app.namespace(ContainerClass::new("C", "none"), Arc::new(NoHooks));
        let mut env = Env::new();
        env.bind("APP", Binding::Container(ns.clone()));
        let route = Route::new(PathPattern::parse("/*").expect("pattern"), "APP", target);
        Ok((Router::new(vec![route], &env)?, ns))
    }

    #[tokio::test]
    async fn a_name_from_the_request_is_at_most_1024_bytes() {
        let (router, ns) =
            router(Target::From(KeySource::Header("x-user".into()))).expect("router");
        let mut ok = Request::get("/")
            .header("x-user", "a".repeat(MAX_NAME_BYTES))
            .body(())
            .expect("request");
        assert!(router.pick(&mut ok).is_ok());
        let mut long = Request::get("/")
            .header("x-user", "a".repeat(MAX_NAME_BYTES + 1))
            .body(())
            .expect("request");
        let miss = router.pick(&mut long).expect_err("too long");
        let response = router.miss_response(&miss);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()["berth-error"], "name-too-long");
        assert!(ns.objects().is_empty(), "no object for a refused name");
    }

    #[tokio::test]
    async fn pools_are_bounded_and_least_in_flight_creates_no_objects() {
        let too_large = router(Target::Pool {
            size: MAX_POOL + 1,
            strategy: Strategy::Random,
        });
        assert!(matches!(too_large, Err(RouterError::PoolTooLarge { .. })));
        let (router, ns) = router(Target::Pool {
            size: MAX_POOL,
            strategy: Strategy::LeastInFlight,
        })
        .expect("router");
        let picked: Vec<Object> = (0..100)
            .map(|_| {
                router
                    .pick(&mut Request::get("/").body(()).expect("request"))
                    .expect("object")
            })
            .collect();
        assert_eq!(ns.objects().len(), 100, "one object per pick, no more");
        assert!(picked
            .iter()
            .all(|o| o.name().is_some_and(|n| n.starts_with("instance-"))));
    }

    #[test]
    fn keys_come_from_each_part_of_the_request() {
        let request = Request::get("/u/al%20ice?user=bob&x=1")
            .header("x-user", "carol")
            .header("cookie", "a=1; session=dave")
            .body(())
            .expect("request");
        let params = [("user", "al%20ice")];
        let read = |s| read_key(&request, &params, &s);
        assert_eq!(
            read(KeySource::Path("user".into())).as_deref(),
            Some("al ice")
        );
        assert_eq!(
            read(KeySource::Query("user".into())).as_deref(),
            Some("bob")
        );
        assert_eq!(
            read(KeySource::Header("x-user".into())).as_deref(),
            Some("carol")
        );
        assert_eq!(
            read(KeySource::Cookie("session".into())).as_deref(),
            Some("dave")
        );
        assert_eq!(read(KeySource::Header("x-none".into())), None);

        let form = Request::get("/?user=al+ice%2B")
            .header("cookie", "session=\"bob smith\"")
            .body(())
            .expect("request");
        assert_eq!(
            read_key(&form, &[], &KeySource::Query("user".into())).as_deref(),
            Some("al ice+"),
            "+ is a space in a query string"
        );
        assert_eq!(
            read_key(&form, &[], &KeySource::Cookie("session".into())).as_deref(),
            Some("bob smith"),
            "a quoted cookie value loses its quotes"
        );
        assert_eq!(
            read_key(&form, &[("user", "a+b")], &KeySource::Path("user".into())).as_deref(),
            Some("a+b"),
            "+ is a plus in a path"
        );
    }

    #[test]
    fn the_consistent_hash_is_stable_and_moves_few_keys_when_the_pool_grows() {
        let keys: Vec<u64> = (0..10_000u64).map(|k| fnv1a(&k.to_le_bytes())).collect();
        let at = |n| keys.iter().map(|k| jump_hash(*k, n)).collect::<Vec<_>>();
        let (five, six) = (at(5), at(6));
        assert!(five.iter().all(|b| *b < 5));
        let moved = five.iter().zip(&six).filter(|(a, b)| a != b).count();
        // Ideally 1/6 of the keys move; allow some slack.
        assert!(moved < 2_200, "{moved} of 10000 keys moved");
        assert_eq!(at(5), five, "stable");
        let mut counts = [0usize; 5];
        five.iter().for_each(|b| counts[*b] += 1);
        assert!(counts.iter().all(|c| *c > 1_500), "{counts:?}");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]

            /// Patterns and paths of any text: no panic, and the rest is the path's tail.
            #[test]
            fn patterns_and_paths(pattern in "\\PC{0,40}", path in "\\PC{0,80}") {
                if let Ok(p) = PathPattern::parse(&pattern) {
                    if let Some((_, rest)) = p.match_with_rest(&path) {
                        prop_assert!(path.ends_with(rest));
                    }
                }
                let _ = percent_decode(&path);
            }

            /// Keys are read from any header, query and cookie bytes without a panic.
            #[test]
            fn keys_from_any_request(query in "[ -~]{0,60}", cookie in "[ -~]{0,60}", header in "[ -~]{0,60}") {
                let uri = format!("/x?{}", query.replace(['#', ' '], ""));
                if let Ok(request) = Request::get(uri).header("cookie", cookie.trim()).header("x-k", header.trim()).body(()) {
                    for source in [
                        KeySource::Query("k".into()),
                        KeySource::Cookie("k".into()),
                        KeySource::Header("x-k".into()),
                        KeySource::Path("k".into()),
                    ] {
                        let _ = read_key(&request, &[("k", "v%zz")], &source);
                    }
                }
            }
        }
    }
}
