//! The routers of a cluster (`berth serve --engine swarm`), and which one is an object's
//! home. Any router takes any request; the object's lifecycle (start, readiness, activity,
//! sleep) runs on one router only, its home, so a request that reaches another router is
//! sent on to the home over the overlay network.
//!
//! The home is chosen by rendezvous hashing of the object id over the live routers: every
//! router computes the same home from the same list, and when a router comes or goes only
//! the objects homed on it move. The list is the A records of `tasks.<router service>`
//! in the overlay's DNS, read again every second. A new home adopts the object's running
//! service (its create meets the service and takes it), so a move restarts nothing.
//!
//! Between routers, a request carries the object it is for and the cluster's token in
//! `berth-peer-*` headers, on a listener of its own: the public listener never reads
//! them, and the home removes them before the container sees the request.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::activity::InFlight;
use crate::http::{Body, BoxError};
use crate::id::ObjectId;
use crate::proxy::{self, Pool, ProxyFailure};
use crate::runtime::swarm::dns;
use crate::runtime::Endpoint;

/// The app of the object a request between routers is for.
pub const APP_HEADER: HeaderName = HeaderName::from_static("berth-peer-app");
/// Its class.
pub const CLASS_HEADER: HeaderName = HeaderName::from_static("berth-peer-class");
/// Its id, in hex.
pub const OBJECT_HEADER: HeaderName = HeaderName::from_static("berth-peer-object");
/// Its name, percent-encoded, if it has one.
pub const NAME_HEADER: HeaderName = HeaderName::from_static("berth-peer-name");
/// The container port the request goes to.
pub const PORT_HEADER: HeaderName = HeaderName::from_static("berth-peer-port");
/// The cluster's token: only routers may send requests to objects they do not hold.
pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("berth-peer-token");
/// Marks a change to the control API (a deploy, a rollback, a destroy, a stop) that the
/// router which took it relays to the others, so that every router makes it.
pub const CONTROL_HEADER: HeaderName = HeaderName::from_static("berth-peer-control");
/// Asks the home router to do something to an object besides sending it a request (its
/// body says what: `object::Lifecycle`).
pub const LIFECYCLE_HEADER: HeaderName = HeaderName::from_static("berth-peer-lifecycle");
/// Asks a router for the deployments its apps run (see [`Peers::deployments_of`]).
pub const SYNC_HEADER: HeaderName = HeaderName::from_static("berth-peer-sync");

/// What a request relayed by another router carries in its extensions (a client cannot
/// set one): the control API makes the change here and relays it no further.
#[derive(Debug, Clone, Copy)]
pub struct Relayed;

/// Whether `method path` changes an app through the control API: what routers relay to
/// each other, and the only control requests a peer listener takes (the peer key reads
/// nothing there).
pub fn is_control_change(method: &http::Method, path: &str) -> bool {
    method != http::Method::GET
        && method != http::Method::HEAD
        && path
            .strip_prefix(crate::api::PREFIX)
            .is_some_and(|rest| rest.starts_with("/apps/"))
}

/// How long a relayed control request may take on another router: a destroy waits for
/// the containers it stops.
const RELAY_LIMIT: Duration = Duration::from_secs(300);

const REFRESH: Duration = Duration::from_secs(1);
/// How long a router that refused a connection is left out of homes.
const DOWN_FOR: Duration = Duration::from_secs(30);

/// This router and the others, as the overlay's DNS lists them.
pub struct Peers {
    /// The routers' service: `tasks.<service>` lists them.
    service: String,
    /// The port every router's peer listener uses.
    port: u16,
    dns: SocketAddr,
    /// The cluster's peer key (derived from the control token), never logged.
    token: String,
    /// Routers a connection failed to lately, left out of homes until `DOWN_FOR` passed:
    /// a lost node's router stays in the overlay's DNS for minutes.
    down: Mutex<HashMap<Ipv4Addr, std::time::Instant>>,
    /// Whether the last look found this router in the list (warned about once).
    lost: std::sync::atomic::AtomicBool,
    view: RwLock<View>,
    /// A pool of connections per router, for the requests sent to it.
    pools: Mutex<HashMap<Ipv4Addr, Arc<Pool>>>,
}

#[derive(Default, Clone)]
struct View {
    me: Option<Ipv4Addr>,
    routers: Vec<Ipv4Addr>,
}

/// Where an object lives now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// Here: this router runs its lifecycle.
    Here,
    /// Another router, at this address on the overlay.
    Router(Ipv4Addr),
}

/// What a request sent to the home says about its object.
pub struct Addressed<'a> {
    pub app: &'a str,
    pub class: &'a str,
    pub id: ObjectId,
    pub name: Option<&'a str>,
    pub port: u16,
}

impl Peers {
    /// Peers of the routers of service `service`, whose peer listeners are on `port`;
    /// reads the list at once, then every second for as long as the returned value lives.
    pub async fn start(service: &str, port: u16, token: String) -> Arc<Peers> {
        Peers::start_with_dns(service, port, token, dns::EMBEDDED_DNS).await
    }

    pub async fn start_with_dns(
        service: &str,
        port: u16,
        token: String,
        dns: SocketAddr,
    ) -> Arc<Peers> {
        let peers = Arc::new(Peers {
            service: service.to_string(),
            port,
            dns,
            token,
            view: RwLock::default(),
            pools: Mutex::default(),
            down: Mutex::default(),
            lost: std::sync::atomic::AtomicBool::new(false),
        });
        peers.refresh().await;
        let weak = Arc::downgrade(&peers);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let Some(peers) = weak.upgrade() else { return };
                peers.refresh().await;
            }
        });
        peers
    }

    /// Reads the routers' list again. A failed lookup keeps the last list: a DNS hiccup
    /// must not move every object home to the router that saw it.
    async fn refresh(&self) {
        let name = format!("tasks.{}", self.service);
        let mut routers = match dns::lookup_a(self.dns, &name).await {
            Ok(routers) if !routers.is_empty() => routers,
            Ok(_) => {
                self.warn_lost(&format!("the overlay's DNS knows no {name}; is --swarm-routers the routers' service name?"));
                return;
            }
            Err(e) => {
                self.warn_lost(&format!("cannot list the routers ({name}): {e}"));
                return;
            }
        };
        routers.sort();
        let me = self.view().me.or_else(|| own_address(&routers));
        if me.is_none() {
            self.warn_lost(&format!("this router is not among the {} that {name} lists; it serves every object itself until it is", routers.len()));
        } else if self.lost.swap(false, std::sync::atomic::Ordering::Relaxed) {
            tracing::info!(
                "this router sees {} routers, itself among them",
                routers.len()
            );
        }
        if let Ok(mut view) = self.view.write() {
            *view = View { me, routers };
        }
    }

    /// Warns once until the router finds itself again: until then every object is
    /// served here, so two routers may each run one object's lifecycle.
    fn warn_lost(&self, why: &str) {
        if !self.lost.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!("{why}");
        }
    }

    /// Leaves `router` out of homes for a while: a connection to it failed.
    pub fn mark_down(&self, router: Ipv4Addr) {
        if let Ok(mut down) = self.down.lock() {
            down.insert(router, std::time::Instant::now());
        }
        if let Ok(mut pools) = self.pools.lock() {
            pools.remove(&router);
        }
    }

    fn view(&self) -> View {
        self.view.read().map(|v| v.clone()).unwrap_or_default()
    }

    /// Whether this router has found itself among the routers: until it has, every
    /// object is its own to serve, but none is its own to take over.
    pub fn knows_itself(&self) -> bool {
        self.view().me.is_some()
    }

    /// The routers listed now, this one included.
    pub fn routers(&self) -> Vec<Ipv4Addr> {
        self.view().routers
    }

    /// Where object `id` lives. Here while this router does not know itself or its
    /// peers yet: serving it is better than sending it nowhere.
    pub fn home(&self, id: &ObjectId) -> Home {
        self.home_of(id.as_bytes())
    }

    /// Where what `key` names lives (an object's id, or a cron trigger's name).
    pub fn home_of(&self, key: &[u8]) -> Home {
        let view = self.view();
        let Some(me) = view.me else {
            return Home::Here;
        };
        let live: Vec<Ipv4Addr> = match self.down.lock() {
            Ok(mut down) => {
                down.retain(|_, since| since.elapsed() < DOWN_FOR);
                view.routers
                    .into_iter()
                    .filter(|r| *r == me || !down.contains_key(r))
                    .collect()
            }
            Err(_) => view.routers,
        };
        match rendezvous_of(key, &live) {
            Some(home) if home != me => Home::Router(home),
            _ => Home::Here,
        }
    }

    /// Whether `headers` carry the cluster's token.
    pub fn authentic(&self, headers: &HeaderMap) -> bool {
        headers
            .get(TOKEN_HEADER)
            .is_some_and(|v| same(self.token.as_bytes(), v.as_bytes()))
    }

    /// Sends `request` for `object` to its home router `home`, and its answer back.
    pub async fn send<B>(
        &self,
        home: Ipv4Addr,
        object: Addressed<'_>,
        mut request: http::Request<B>,
        in_flight: InFlight,
    ) -> Result<http::Response<Body>, ProxyFailure>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let headers = request.headers_mut();
        remove_peer_headers(headers);
        self.address(headers, &object);
        let pool = self.pool(home);
        proxy::forward(&pool, request, self.port, in_flight).await
    }

    /// The other routers, as listed now.
    pub fn others(&self) -> Vec<Ipv4Addr> {
        let view = self.view();
        view.routers
            .into_iter()
            .filter(|r| Some(*r) != view.me)
            .collect()
    }

    /// Sends the control request `request` (its body read whole) to router `router`,
    /// which makes the change too; its status and body, or why it could not be sent.
    pub async fn relay(
        &self,
        router: Ipv4Addr,
        mut request: http::Request<Body>,
    ) -> Result<(http::StatusCode, bytes::Bytes), String> {
        let headers = request.headers_mut();
        remove_peer_headers(headers);
        if let Ok(token) = HeaderValue::from_str(&self.token) {
            headers.insert(TOKEN_HEADER, token);
        }
        headers.insert(CONTROL_HEADER, HeaderValue::from_static("1"));
        self.ask(router, request, RELAY_LIMIT).await
    }

    /// Asks `home` to do `what` (an `object::Lifecycle`, as JSON) to `object`: the
    /// answer's status and body, or why it could not be asked.
    pub async fn lifecycle(
        &self,
        home: Ipv4Addr,
        object: Addressed<'_>,
        what: &impl serde::Serialize,
    ) -> Result<(http::StatusCode, bytes::Bytes), String> {
        let body = serde_json::to_vec(what).map_err(|e| e.to_string())?;
        let mut request = http::Request::new(crate::http::full(body));
        *request.method_mut() = http::Method::POST;
        let headers = request.headers_mut();
        self.address(headers, &object);
        headers.insert(LIFECYCLE_HEADER, HeaderValue::from_static("1"));
        self.ask(home, request, RELAY_LIMIT).await
    }

    /// Puts `object` and the cluster's token in `headers`, for the home's peer listener.
    fn address(&self, headers: &mut HeaderMap, object: &Addressed<'_>) {
        let mut set = |name: HeaderName, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        };
        set(APP_HEADER, object.app);
        set(CLASS_HEADER, object.class);
        set(OBJECT_HEADER, &object.id.to_string());
        set(PORT_HEADER, &object.port.to_string());
        set(TOKEN_HEADER, &self.token);
        if let Some(name) = object.name {
            set(NAME_HEADER, &crate::http::encode_object_name(name));
        }
    }

    /// The deployments router `router` runs now (the JSON of the store's live ones).
    pub async fn deployments_of(&self, router: Ipv4Addr) -> Result<bytes::Bytes, String> {
        let mut request = http::Request::new(crate::http::full(bytes::Bytes::new()));
        *request.uri_mut() = http::Uri::from_static("/v1/cluster/deployments");
        let headers = request.headers_mut();
        if let Ok(token) = HeaderValue::from_str(&self.token) {
            headers.insert(TOKEN_HEADER, token);
        }
        headers.insert(SYNC_HEADER, HeaderValue::from_static("1"));
        match self.ask(router, request, RELAY_LIMIT).await? {
            (status, body) if status.is_success() => Ok(body),
            (status, body) => Err(format!("{status}: {}", String::from_utf8_lossy(&body))),
        }
    }

    async fn ask(
        &self,
        router: Ipv4Addr,
        request: http::Request<Body>,
        limit: Duration,
    ) -> Result<(http::StatusCode, bytes::Bytes), String> {
        use http_body_util::BodyExt;
        let pool = self.pool(router);
        let exchange = async {
            let response = proxy::forward(&pool, request, self.port, InFlight::untracked())
                .await
                .map_err(|e| match e {
                    ProxyFailure::Connect(e)
                    | ProxyFailure::Dropped(e)
                    | ProxyFailure::ClientBody(e) => crate::http::error_chain(e.as_ref()),
                })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| crate::http::error_chain(e.as_ref()))?
                .to_bytes();
            Ok((status, body))
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {limit:?}")),
        }
    }

    fn pool(&self, router: Ipv4Addr) -> Arc<Pool> {
        let mut pools = match self.pools.lock() {
            Ok(pools) => pools,
            Err(poisoned) => poisoned.into_inner(),
        };
        pools
            .entry(router)
            .or_insert_with(|| Arc::new(Pool::new(Endpoint::Bridge(IpAddr::V4(router)))))
            .clone()
    }
}

/// Removes every `berth-peer-*` header: what a client sent, or a router before.
pub fn remove_peer_headers(headers: &mut HeaderMap) {
    for name in [
        APP_HEADER,
        CLASS_HEADER,
        OBJECT_HEADER,
        NAME_HEADER,
        PORT_HEADER,
        TOKEN_HEADER,
        CONTROL_HEADER,
        SYNC_HEADER,
        LIFECYCLE_HEADER,
    ] {
        headers.remove(name);
    }
}

/// Compares in constant time for equal lengths, so that timing tells nothing of the token.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The router with the highest score for `id`: a hash of the id and the router's address.
pub fn rendezvous(id: &ObjectId, routers: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    rendezvous_of(id.as_bytes(), routers)
}

/// [`rendezvous`] for any key.
fn rendezvous_of(key: &[u8], routers: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    use sha2::{Digest, Sha256};
    routers.iter().copied().max_by_key(|router| {
        let mut hash = Sha256::new();
        hash.update(key);
        hash.update(router.octets());
        let digest = hash.finalize();
        let mut score = [0u8; 8];
        score.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(score), *router)
    })
}

/// Which of `routers` is this machine: the address it would send from to reach them.
/// A UDP socket that connects sends nothing.
fn own_address(routers: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    let first = routers.first()?;
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((*first, 9)).ok()?;
    match socket.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if routers.contains(&ip) => Some(ip),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ObjectId {
        use sha2::{Digest, Sha256};
        let hex: String = Sha256::digest(n.to_be_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        ObjectId::parse_hex(&hex).expect("an id")
    }

    fn routers(n: u8) -> Vec<Ipv4Addr> {
        (1..=n).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect()
    }

    #[test]
    fn every_router_computes_the_same_home_whatever_the_order() {
        let mut reversed = routers(3);
        reversed.reverse();
        for n in 0..100 {
            assert_eq!(
                rendezvous(&id(n), &routers(3)),
                rendezvous(&id(n), &reversed)
            );
        }
        assert_eq!(rendezvous(&id(0), &[]), None);
    }

    #[test]
    fn homes_spread_and_only_a_leaving_routers_objects_move() {
        let three = routers(3);
        let homes: Vec<Ipv4Addr> = (0..3000)
            .map(|n| rendezvous(&id(n), &three).expect("a home"))
            .collect();
        for router in &three {
            let count = homes.iter().filter(|h| *h == router).count();
            assert!((800..1200).contains(&count), "{router}: {count} of 3000");
        }
        let two = &three[..2];
        for (n, home) in homes.iter().enumerate() {
            let after = rendezvous(&id(n as u32), two).expect("a home");
            if *home != three[2] {
                assert_eq!(after, *home, "object {n} stayed where it was");
            }
        }
    }

    #[test]
    fn only_changes_to_apps_are_relayed() {
        use http::Method;
        assert!(is_control_change(&Method::POST, "/v1/apps/a/deployments"));
        assert!(is_control_change(&Method::DELETE, "/v1/apps/a"));
        assert!(is_control_change(
            &Method::POST,
            "/v1/apps/a/instances/C/00/stop"
        ));
        assert!(!is_control_change(&Method::GET, "/v1/apps/a/logs"));
        assert!(!is_control_change(&Method::HEAD, "/v1/apps/a"));
        assert!(!is_control_change(&Method::POST, "/v1/session"));
        assert!(!is_control_change(&Method::DELETE, "/v1/appsx"));
        assert!(!is_control_change(&Method::POST, "/metrics"));
    }

    #[test]
    fn a_client_cannot_pass_peer_headers_on() {
        let mut headers = HeaderMap::new();
        headers.insert(TOKEN_HEADER, HeaderValue::from_static("guess"));
        headers.insert(OBJECT_HEADER, HeaderValue::from_static("00"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        remove_peer_headers(&mut headers);
        assert_eq!(headers.len(), 1);
    }
}
