//! berth's egress proxy: the only way out of the internal network for a container whose
//! class lists `allowed_hosts` or `denied_hosts` (see [`crate::egress`]).
//!
//! It listens on the internal network's gateway address, at a port every berth process
//! knows ([`EGRESS_PORT`]). Whichever berth process on the machine binds it first serves
//! every such container, whoever started it: the policy travels in the container's own
//! label, and the proxy finds the container by the address a connection comes from. The
//! others retry, so that the port is served again soon after its berth process exits,
//! and a container that outlives a restart of berth keeps its way out.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Once};
use std::time::Duration;

use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, OnceCell};

use super::{labels, INTERNAL_NETWORK};
use crate::egress::Policy;
use crate::http::{body, error_response, Body};
use crate::runtime::{EgressRefusal, RuntimeError};

/// The port of the egress proxy on the internal network's gateway address.
pub const EGRESS_PORT: u16 = 47_300;

/// The label that carries a container's [`Policy`], as JSON.
pub(super) const POLICY_LABEL: &str = "berth.egress";

/// How long connecting to an allowed host may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The proxy of one runtime: started on first need, then kept for the process's life.
pub(super) struct EgressProxy {
    docker: Docker,
    gateway: OnceCell<IpAddr>,
    started: Once,
    refusals: broadcast::Sender<EgressRefusal>,
}

impl EgressProxy {
    pub(super) fn new(docker: Docker) -> Arc<EgressProxy> {
        Arc::new(EgressProxy {
            docker,
            gateway: OnceCell::new(),
            started: Once::new(),
            refusals: broadcast::channel(256).0,
        })
    }

    pub(super) fn refusals(&self) -> broadcast::Receiver<EgressRefusal> {
        self.refusals.subscribe()
    }

    /// The variables that point a container's HTTP clients at the proxy, with the proxy
    /// serving (or trying to) from now on.
    pub(super) async fn environment(
        self: &Arc<Self>,
    ) -> Result<Vec<(String, String)>, RuntimeError> {
        let gateway = self.gateway().await?;
        self.serve();
        let url = format!("http://{}", SocketAddr::new(gateway, EGRESS_PORT));
        let local = "localhost,127.0.0.1,::1".to_string();
        Ok([
            ("HTTP_PROXY", url.clone()),
            ("HTTPS_PROXY", url.clone()),
            ("http_proxy", url.clone()),
            ("https_proxy", url),
            ("NO_PROXY", local.clone()),
            ("no_proxy", local),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect())
    }

    /// Starts serving, once: a container seen with a policy (re-adopted after a restart
    /// of berth) needs the proxy as much as a new one.
    pub(super) fn serve(self: &Arc<Self>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.started.call_once(|| {
            let proxy = self.clone();
            handle.spawn(async move { proxy.accept().await });
        });
    }

    async fn gateway(&self) -> Result<IpAddr, RuntimeError> {
        self.gateway
            .get_or_try_init(|| async {
                let network = self
                    .docker
                    .inspect_network(INTERNAL_NETWORK, None)
                    .await
                    .map_err(|e| RuntimeError::Engine {
                        engine: "the Docker Engine".into(),
                        operation: "inspect network",
                        target: INTERNAL_NETWORK.into(),
                        message: e.to_string(),
                    })?;
                network
                    .ipam
                    .and_then(|ipam| ipam.config)
                    .into_iter()
                    .flatten()
                    .filter_map(|config| config.gateway)
                    .find_map(|gateway| gateway.parse::<IpAddr>().ok())
                    .ok_or_else(|| RuntimeError::Engine {
                        engine: "the Docker Engine".into(),
                        operation: "find the gateway of network",
                        target: INTERNAL_NETWORK.into(),
                        message: "it has no gateway address; remove the network (docker network rm berth-internal) and berth makes it again".into(),
                    })
            })
            .await
            .copied()
    }

    async fn accept(self: Arc<Self>) {
        let mut warned = false;
        let listener = loop {
            match self.gateway().await {
                Ok(gateway) => match TcpListener::bind((gateway, EGRESS_PORT)).await {
                    Ok(listener) => break listener,
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                        // Another berth process serves it; take over when it is gone.
                        tokio::time::sleep(Duration::from_millis(250)).await
                    }
                    Err(e) => {
                        if !warned {
                            warned = true;
                            tracing::warn!("egress proxy: cannot listen on {gateway}:{EGRESS_PORT} ({e}); containers with allowed_hosts or denied_hosts reach nothing until it can. The engine's networks must be on this machine (not Docker Desktop or a remote DOCKER_HOST)");
                        }
                        tokio::time::sleep(Duration::from_secs(5)).await
                    }
                },
                Err(e) => {
                    tracing::warn!("egress proxy: {e}");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        };
        tracing::debug!("egress proxy on {:?}", listener.local_addr());
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let proxy = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(request, peer.ip()).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    }

    async fn handle(&self, request: Request<Incoming>, peer: IpAddr) -> Response<Body> {
        let Some((host, port)) = target(&request) else {
            return error_response(
                StatusCode::BAD_REQUEST,
                "egress-bad-request",
                "berth's egress proxy takes `GET http://host/path` or `CONNECT host:port`; this request names no host",
            );
        };
        let Some((policy, container)) = self.container_at(peer).await else {
            return error_response(
                StatusCode::FORBIDDEN,
                "egress-denied",
                &format!("berth's egress proxy serves berth's containers only; {peer} is none"),
            );
        };
        if !policy.permits(&host) {
            if let Some(identity) = container.1 {
                let _ = self.refusals.send(EgressRefusal {
                    identity: identity.clone(),
                    container_id: container.0.clone(),
                    host: host.clone(),
                });
                tracing::info!(
                    "egress to {host} refused for {} {} (allowed_hosts/denied_hosts)",
                    identity.class,
                    identity.object_name.as_deref().unwrap_or("(by id)")
                );
            }
            return error_response(
                StatusCode::FORBIDDEN,
                "egress-denied",
                &format!("{host} is not among the hosts this container may reach; its class's allowed_hosts and denied_hosts decide"),
            );
        }
        let upstream = match connect(&host, port, &policy).await {
            Ok(upstream) => upstream,
            Err(Refused::Local) => {
                return error_response(
                    StatusCode::FORBIDDEN,
                    "egress-denied",
                    &format!("{host} is an address of this machine (its own, loopback or link-local), which containers never reach through berth"),
                )
            }
            Err(Refused::Denied(address)) => {
                return error_response(
                    StatusCode::FORBIDDEN,
                    "egress-denied",
                    &format!("{host} reaches {address}, which the class's denied_hosts refuse"),
                )
            }
            Err(Refused::Unreachable(why)) => {
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "egress-unreachable",
                    &format!("{host}:{port} cannot be reached: {why}"),
                )
            }
        };
        if request.method() == Method::CONNECT {
            tokio::spawn(async move {
                if let Ok(upgraded) = hyper::upgrade::on(request).await {
                    let mut upstream = upstream;
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut upstream)
                            .await;
                }
            });
            return Response::new(crate::http::full(Bytes::new()));
        }
        forward(request, upstream).await
    }

    /// The policy of the berth container at `ip` on the internal network, with its id
    /// and identity.
    async fn container_at(
        &self,
        ip: IpAddr,
    ) -> Option<(Policy, (String, Option<crate::runtime::Identity>))> {
        let filters = HashMap::from([
            ("network", vec![INTERNAL_NETWORK.to_string()]),
            ("label", vec![POLICY_LABEL.to_string()]),
        ]);
        let options = ListContainersOptionsBuilder::new()
            .filters(&filters)
            .build();
        let summaries = self.docker.list_containers(Some(options)).await.ok()?;
        let summary = summaries.into_iter().find(|s| {
            s.network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
                .and_then(|n| n.get(INTERNAL_NETWORK))
                .and_then(|n| n.ip_address.as_deref())
                .and_then(|a| a.parse::<IpAddr>().ok())
                == Some(ip)
        })?;
        let container_labels: std::collections::BTreeMap<String, String> =
            summary.labels.unwrap_or_default().into_iter().collect();
        let policy = serde_json::from_str(container_labels.get(POLICY_LABEL)?).ok()?;
        let identity = labels::parse(&container_labels);
        Some((policy, (summary.id.unwrap_or_default(), identity)))
    }
}

/// The host and port a proxy request is for: the authority of a `CONNECT`, or of an
/// absolute `http://` URI.
fn target<B>(request: &Request<B>) -> Option<(String, u16)> {
    let uri = request.uri();
    let authority = uri.authority()?;
    let host = authority.host().to_string();
    if host.is_empty() {
        return None;
    }
    if request.method() == Method::CONNECT {
        return Some((host, authority.port_u16()?));
    }
    if uri.scheme_str() != Some("http") {
        return None;
    }
    Some((host, authority.port_u16().unwrap_or(80)))
}

enum Refused {
    /// Every address of the host is one of this machine's own.
    Local,
    /// An address of the host is refused by an IP pattern of `denied_hosts`.
    Denied(IpAddr),
    Unreachable(String),
}

/// Connects to `host:port` at an address that is not this machine's own (a container
/// allowed `*` must not reach berth's control API or the engine), and that no IP pattern
/// of `denied_hosts` refuses, whatever form of the address the request gave.
async fn connect(host: &str, port: u16, policy: &Policy) -> Result<TcpStream, Refused> {
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
        .await
        .map_err(|e| Refused::Unreachable(format!("the name does not resolve ({e})")))?
        .collect();
    if let Some(denied) = addresses.iter().find(|a| policy.denies_address(a.ip())) {
        return Err(Refused::Denied(denied.ip()));
    }
    let outside: Vec<SocketAddr> = addresses
        .iter()
        .copied()
        .filter(|a| !local(a.ip()))
        .collect();
    if outside.is_empty() {
        return Err(if addresses.is_empty() {
            Refused::Unreachable("the name has no address".into())
        } else {
            Refused::Local
        });
    }
    let mut last = String::new();
    for address in outside {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("no answer within {CONNECT_TIMEOUT:?}"),
        }
    }
    Err(Refused::Unreachable(last))
}

/// Whether `ip` is this machine's: loopback, link-local (cloud metadata services), or
/// an address of one of its interfaces (the gateways of Docker's networks among them),
/// which a socket can be bound to.
fn local(ip: IpAddr) -> bool {
    special(ip.to_canonical()) || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

fn special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback() || v4.is_unspecified() || v4.is_link_local() || v4.is_multicast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Sends a plain HTTP request on to its host, in origin form, and its answer back.
async fn forward(request: Request<Incoming>, upstream: TcpStream) -> Response<Body> {
    let (mut parts, incoming) = request.into_parts();
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(upstream)).await
    else {
        return error_response(
            StatusCode::BAD_GATEWAY,
            "egress-unreachable",
            "the host closed the connection",
        );
    };
    tokio::spawn(connection);
    // The host judged is the one reached: a `Host` that names another would let a
    // container reach any site behind an allowed one's front (a CDN).
    if let Some(authority) = parts.uri.authority() {
        if let Ok(value) = authority.as_str().parse() {
            parts.headers.insert(header::HOST, value);
        }
    }
    parts.headers.remove(header::PROXY_AUTHORIZATION);
    parts.headers.remove("proxy-connection");
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_default();
    let request = Request::from_parts(parts, body(incoming));
    match sender.send_request(request).await {
        Ok(response) => response.map(|b| b.map_err(Into::into).boxed()),
        Err(e) => error_response(
            StatusCode::BAD_GATEWAY,
            "egress-unreachable",
            &format!("the host did not answer: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_the_connect_authority_or_the_absolute_uri() {
        let request = |method: Method, uri: &str| {
            Request::builder()
                .method(method)
                .uri(uri)
                .body(())
                .expect("request")
        };
        assert_eq!(
            target(&request(Method::CONNECT, "api.github.com:443")),
            Some(("api.github.com".into(), 443))
        );
        assert_eq!(
            target(&request(Method::GET, "http://example.com/x?y")),
            Some(("example.com".into(), 80))
        );
        assert_eq!(
            target(&request(Method::GET, "http://10.0.0.1:8080/")),
            Some(("10.0.0.1".into(), 8080))
        );
        assert_eq!(target(&request(Method::GET, "/x")), None);
        assert_eq!(target(&request(Method::GET, "https://example.com/")), None);
    }

    #[test]
    fn this_machines_own_addresses_are_never_reached() {
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(local(ip.parse().expect("ip")), "{ip}");
        }
        // Addresses on no interface of this machine (documentation ranges).
        for ip in ["192.0.2.7", "198.51.100.3", "2001:db8::1"] {
            assert!(!local(ip.parse().expect("ip")), "{ip}");
        }
        // The address of an interface of this machine, whatever it is.
        let own = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("loopback");
        assert!(local(own.ip()));
    }
}
