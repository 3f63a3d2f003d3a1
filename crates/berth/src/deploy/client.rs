//! A small HTTP/1.1 client for the control API of `berth serve`, and for asking a
//! registry whether it already has an image.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::ErrorBody;

use super::DeployError;

/// The control API of one server, with its token.
#[derive(Clone)]
pub struct ControlClient {
    /// `host:port`, or the path of a unix socket (`unix:PATH`).
    authority: String,
    token: String,
}

impl ControlClient {
    /// A client of the server at `url`: `http://host:port`, or `unix:PATH` for a control
    /// API on a unix socket.
    pub fn new(url: &str, token: &str) -> Result<ControlClient, DeployError> {
        let authority = if url.starts_with("unix:") {
            url.to_string()
        } else {
            url.strip_prefix("http://")
                .unwrap_or(url)
                .trim_end_matches('/')
                .to_string()
        };
        let socket = authority.starts_with("unix:");
        if authority.is_empty()
            || (!socket && authority.contains('/'))
            || url.starts_with("https://")
        {
            return Err(DeployError::Server {
                url: url.to_string(),
                reason: "give the control API as http://host:port or unix:PATH".into(),
            });
        }
        Ok(ControlClient {
            authority,
            token: token.to_string(),
        })
    }

    pub fn url(&self) -> String {
        if self.authority.starts_with("unix:") {
            self.authority.clone()
        } else {
            format!("http://{}", self.authority)
        }
    }

    /// Calls `method path` with an optional JSON body and reads a JSON answer; an error
    /// answer becomes [`DeployError::Refused`] with the server's message.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, DeployError> {
        let body = match body {
            Some(value) => serde_json::to_vec(value).map_err(|e| self.failed(e.to_string()))?,
            None => Vec::new(),
        };
        let (status, bytes) = send(
            &self.authority,
            method,
            path,
            &[
                ("authorization", format!("Bearer {}", self.token)),
                ("content-type", "application/json".into()),
            ],
            body,
        )
        .await
        .map_err(|e| self.failed(e))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| self.failed(format!("an answer berth does not understand: {e}")));
        }
        Err(self.refused(status, &bytes))
    }

    /// Calls `GET path` and hands `each` every line of the answer as it arrives (a stream
    /// of events or logs), until the answer ends or `each` says to stop.
    pub async fn each_line(
        &self,
        path: &str,
        mut each: impl FnMut(&str) -> bool,
    ) -> Result<(), DeployError> {
        let headers = [("authorization", format!("Bearer {}", self.token))];
        let response = open(&self.authority, Method::GET, path, &headers, Vec::new())
            .await
            .map_err(|e| self.failed(e))?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(self.refused(status, &bytes));
        }
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.failed(format!("the answer broke off: {e}")))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line[..end]);
                if !each(text.trim_end_matches('\r')) {
                    return Ok(());
                }
            }
        }
        if !pending.is_empty() {
            each(&String::from_utf8_lossy(&pending));
        }
        Ok(())
    }

    /// The error an answer of `status` with `body` means.
    fn refused(&self, status: StatusCode, body: &[u8]) -> DeployError {
        if status == StatusCode::UNAUTHORIZED {
            return DeployError::Unauthorized { url: self.url() };
        }
        let message = serde_json::from_slice::<ErrorBody>(body)
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
        DeployError::Refused {
            status: status.as_u16(),
            message,
        }
    }

    fn failed(&self, reason: String) -> DeployError {
        DeployError::Server {
            url: self.url(),
            reason,
        }
    }
}

/// The digest under which the registry at `registry` (`host:port`) holds
/// `repository:tag`, if it holds it.
pub async fn registry_digest(registry: &str, repository: &str, tag: &str) -> Option<String> {
    let accept = [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
    .join(", ");
    let path = format!("/v2/{repository}/manifests/{tag}");
    let (status, _, headers) = exchange(
        registry,
        Method::HEAD,
        &path,
        &[("accept", accept)],
        Vec::new(),
    )
    .await
    .ok()?;
    let digest = headers.get("docker-content-digest")?.to_str().ok()?;
    status.is_success().then(|| digest.to_string())
}

async fn send(
    authority: &str,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<(StatusCode, Bytes), String> {
    let (status, bytes, headers) = exchange(authority, method, path, headers, body).await?;
    // A change a cluster's router made but could not relay to every other router.
    if let Some(failed) = headers
        .get("berth-routers-failed")
        .and_then(|v| v.to_str().ok())
    {
        tracing::warn!("not every router of the cluster made this change ({failed}); once they answer, deploy again (where the deployment is already made, it changes nothing), or repeat a destroy or a stop through each router that failed");
    }
    Ok((status, bytes))
}

/// One request on a fresh connection; the answer's status, body and headers.
async fn exchange(
    authority: &str,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<(StatusCode, Bytes, http::HeaderMap), String> {
    let response = open(authority, method, path, headers, body).await?;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, bytes, headers))
}

/// One request on a fresh connection, answered as far as its head.
async fn open(
    authority: &str,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    let (mut sender, host) = match authority.strip_prefix("unix:") {
        Some(socket) => {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            (handshake(stream).await?, "localhost")
        }
        None => {
            let stream = tokio::net::TcpStream::connect(authority)
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            (handshake(stream).await?, authority)
        }
    };
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, host);
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            request = request.header(*name, value);
        }
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}
