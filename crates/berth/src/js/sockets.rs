//! A WebSocket a worker opens to its container, as on Cloudflare:
//! `(await stub.fetch(new Request(url, { headers: { Upgrade: "websocket" } }))).webSocket`.
//!
//! The container's upgraded connection stays in Rust, framed by tungstenite, on a task of
//! its own; JavaScript sends through `native.wsSend` and `native.wsClose`, and takes each
//! event (a message, the close) through `native.wsNext`, in serve.js's `WebSocket`.
//! Messages that come before the worker calls `accept()` wait in the task's channel. The
//! container's answer (its body, which counts the request in flight) is held until the
//! socket ends, so the container does not sleep under an open socket.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use rquickjs::class::Trace;
use rquickjs::prelude::Async;
use rquickjs::{Class, Ctx, Function, JsLifetime, Object, TypedArray, Value};
use tokio::sync::{mpsc, watch, Mutex};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::bindings::throw;

/// What the container's side of a socket did.
enum Event {
    Text(String),
    Binary(bytes::Bytes),
    Close { code: u16, reason: String },
}

/// One open socket: what JavaScript sends, and what comes from the container.
pub(super) struct Socket {
    out: mpsc::UnboundedSender<Message>,
    events: Arc<Mutex<mpsc::Receiver<Event>>>,
}

/// A socket as JavaScript holds it.
#[derive(Trace, JsLifetime)]
#[rquickjs::class(rename = "BerthSocket")]
pub(super) struct SocketHandle {
    #[qjs(skip_trace)]
    socket: Socket,
}

/// Adds the handshake's own headers to a request a worker sends with
/// `Upgrade: websocket`, as Cloudflare's runtime does: whether it asks for a socket.
pub(super) fn prepare(headers: &mut http::HeaderMap) -> bool {
    use http::header::{CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
    use http::HeaderValue;
    let asks = headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !asks {
        return false;
    }
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    // Compression berth's framing does not speak: the container must not choose it.
    headers.remove(http::header::SEC_WEBSOCKET_EXTENSIONS);
    if !headers.contains_key(SEC_WEBSOCKET_VERSION) {
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    }
    if !headers.contains_key(SEC_WEBSOCKET_KEY) {
        let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
        if let Ok(value) = HeaderValue::from_str(&key) {
            headers.insert(SEC_WEBSOCKET_KEY, value);
        }
    }
    true
}

/// A container's 101 to a worker's request, before its socket is running.
pub(super) struct Upgrade {
    upgraded: hyper::upgrade::OnUpgrade,
    /// The container's answer: it counts the request in flight while the socket is open.
    held: crate::http::Body,
}

/// The container's 101 answer's upgrade, if it is one, taken out of `response`.
pub(super) fn upgrade(response: &mut http::Response<crate::http::Body>) -> Option<Upgrade> {
    let upgraded = response
        .extensions()
        .get::<hyper::upgrade::OnUpgrade>()
        .is_some()
        .then(|| hyper::upgrade::on(&mut *response))?;
    let held = std::mem::replace(response.body_mut(), crate::http::full(bytes::Bytes::new()));
    Some(Upgrade { upgraded, held })
}

impl Upgrade {
    /// The socket, its connection carried on a task of berth's runtime until it closes
    /// or the worker's runtime ends.
    pub fn open(self, main: &tokio::runtime::Handle, sockets: &Sockets) -> Socket {
        let (socket, peer) = pair(sockets);
        let Upgrade { upgraded, held } = self;
        main.spawn(async move {
            let _held = held;
            match upgraded.await {
                Ok(io) => pump(io, Role::Client, peer).await,
                Err(e) => {
                    let reason = format!("the container's connection did not upgrade: {e}");
                    let _ = peer.tell.send(Event::Close { code: 1006, reason }).await;
                }
            }
        });
        socket
    }
}

/// The sockets of one worker runtime: when it ends (a new version of the app, a replaced
/// runtime), each closes (1001, going away) instead of going on with nobody to answer.
#[derive(Clone)]
pub(super) struct Sockets(Arc<watch::Sender<bool>>);

impl Default for Sockets {
    fn default() -> Sockets {
        Sockets(Arc::new(watch::channel(false).0))
    }
}

impl Sockets {
    pub fn end_all(&self) {
        self.0.send_replace(true);
    }
}

/// Messages from the other side that wait for JavaScript before the socket stops reading.
const WAITING: usize = 64;

/// The Rust side of a socket: what JavaScript sends, where to tell it what came, and
/// when its runtime ends.
pub(super) struct Peer {
    outgoing: mpsc::UnboundedReceiver<Message>,
    tell: mpsc::Sender<Event>,
    ending: watch::Receiver<bool>,
}

/// A socket for JavaScript, and its Rust side, not connected yet.
fn pair(sockets: &Sockets) -> (Socket, Peer) {
    let (out, outgoing) = mpsc::unbounded_channel::<Message>();
    let (tell, events) = mpsc::channel(WAITING);
    let socket = Socket {
        out,
        events: Arc::new(Mutex::new(events)),
    };
    let ending = sockets.0.subscribe();
    (
        socket,
        Peer {
            outgoing,
            tell,
            ending,
        },
    )
}

/// Connects `peer` to a client's connection, upgraded once the worker's 101 has gone out:
/// the server end of a `WebSocketPair` then talks to the client.
pub(super) fn accept(peer: Peer, client: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        match client.await {
            Ok(io) => pump(io, Role::Server, peer).await,
            Err(e) => {
                let reason = format!("the client's connection did not upgrade: {e}");
                let _ = peer.tell.send(Event::Close { code: 1006, reason }).await;
            }
        }
    });
}

/// How long a close waits for the other side's answer.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Frames `io` as a WebSocket and carries messages between it and `peer` until it closes,
/// or the worker's runtime ends. The largest message is Cloudflare's, 32 MiB.
async fn pump(io: hyper::upgrade::Upgraded, role: Role, peer: Peer) {
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    let Peer {
        mut outgoing,
        tell,
        mut ending,
    } = peer;
    let config = WebSocketConfig::default()
        .max_message_size(Some(32 << 20))
        .max_frame_size(Some(32 << 20));
    let socket = WebSocketStream::from_raw_socket(TokioIo::new(io), role, Some(config)).await;
    let (mut sink, mut stream) = socket.split();
    let mut sending = true;
    let mut closing: Option<tokio::time::Instant> = None;
    let far = tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365);
    loop {
        tokio::select! {
            message = outgoing.recv(), if sending => match message {
                Some(message) => {
                    if matches!(message, Message::Close(_)) {
                        closing = Some(tokio::time::Instant::now() + CLOSE_WAIT);
                    }
                    if sink.send(message).await.is_err() {
                        sending = false;
                    }
                }
                // JavaScript dropped the socket: close it.
                None => {
                    let _ = sink.close().await;
                    sending = false;
                    closing = Some(tokio::time::Instant::now() + CLOSE_WAIT);
                }
            },
            _ = ending.changed(), if sending => {
                let frame = CloseFrame {
                    code: CloseCode::Away,
                    reason: "the worker's runtime ended".into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                sending = false;
                closing = Some(tokio::time::Instant::now() + CLOSE_WAIT);
            },
            _ = tokio::time::sleep_until(closing.unwrap_or(far)), if closing.is_some() => break,
            incoming = stream.next() => {
                let event = match incoming {
                    Some(Ok(Message::Text(text))) => Event::Text(text.to_string()),
                    Some(Ok(Message::Binary(bytes))) => Event::Binary(bytes),
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame.map_or((1005, String::new()), |f| {
                            (u16::from(f.code), f.reason.to_string())
                        });
                        let _ = tell.send(Event::Close { code, reason }).await;
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        let _ = tell.send(Event::Close { code: 1006, reason: e.to_string() }).await;
                        break;
                    }
                    None => {
                        let reason = "the connection ended".to_string();
                        let _ = tell.send(Event::Close { code: 1006, reason }).await;
                        break;
                    }
                };
                // Waits while JavaScript is behind: the other side is then held back by
                // the connection itself.
                if tell.send(event).await.is_err() {
                    break;
                }
            }
        }
    }
    // The close handshake's answer, if one is still on its way.
    let _ = sink.flush().await;
}

/// The Rust side of a `WebSocketPair`, as JavaScript holds it (on the pair's client end)
/// until the worker answers with it.
#[derive(Trace, JsLifetime)]
#[rquickjs::class(rename = "BerthPeer")]
pub(super) struct PeerHandle {
    #[qjs(skip_trace)]
    peer: Option<Peer>,
}

impl PeerHandle {
    /// The peer, once: a second answer with the same pair has none.
    pub fn take(&mut self) -> Option<Peer> {
        self.peer.take()
    }
}

/// A peer as a worker's answer carries it to the server (see `serve::dispatch`), in the
/// response's extensions, which hold only what can be cloned.
#[derive(Clone)]
pub(super) struct Answered(Arc<std::sync::Mutex<Option<Peer>>>);

impl Answered {
    pub fn new(peer: Peer) -> Answered {
        Answered(Arc::new(std::sync::Mutex::new(Some(peer))))
    }
}

/// Answers a client's WebSocket with the server end of the worker's `WebSocketPair`: the
/// handshake's 101, and the client's connection, once upgraded, carried to the pair.
pub(super) fn answer(
    answered: http::Response<crate::http::Body>,
    client: http::Extensions,
    key: Option<&http::HeaderValue>,
) -> Option<http::Response<crate::http::Body>> {
    let peer = answered
        .extensions()
        .get::<Answered>()?
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()?;
    let key = key?;
    let mut request = http::Request::new(());
    *request.extensions_mut() = client;
    let upgrade = hyper::upgrade::on(&mut request);
    accept(peer, upgrade);
    let (mut parts, _) = answered.into_parts();
    parts.status = http::StatusCode::SWITCHING_PROTOCOLS;
    let headers = &mut parts.headers;
    headers.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("websocket"),
    );
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    if let Ok(value) = http::HeaderValue::from_str(&accept) {
        headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, value);
    }
    Some(http::Response::from_parts(
        parts,
        crate::http::full(bytes::Bytes::new()),
    ))
}

impl SocketHandle {
    pub fn handle<'js>(
        ctx: &Ctx<'js>,
        socket: Socket,
    ) -> rquickjs::Result<Class<'js, SocketHandle>> {
        Class::instance(ctx.clone(), SocketHandle { socket })
    }
}

/// Sets `native.wsSend(handle, data)` (text, or bytes), `native.wsClose(handle, code,
/// reason)` and `native.wsNext(handle)` (a promise of `{ type: "text" | "binary" |
/// "close", … }`, or null once the close was given), and `native.wsPair()` (`{ socket,
/// peer }`: a `WebSocketPair`'s server end and the Rust side its client end stands for)
/// on `native`.
pub(super) fn install<'js>(
    ctx: &Ctx<'js>,
    native: &Object<'js>,
    sockets: &Sockets,
) -> rquickjs::Result<()> {
    let send = |ctx: Ctx<'js>, handle: Class<'js, SocketHandle>, data: Value<'js>| {
        let message = match data.as_string() {
            Some(text) => Message::text(text.to_string()?),
            None => {
                let bytes = TypedArray::<u8>::from_value(data)?;
                Message::binary(bytes.as_bytes().map(<[u8]>::to_vec).unwrap_or_default())
            }
        };
        handle
            .borrow()
            .socket
            .out
            .send(message)
            .map_err(|_| throw(&ctx, "the WebSocket is closed".into()))
    };
    native.set("wsSend", Function::new(ctx.clone(), send)?)?;
    let close = |handle: Class<'js, SocketHandle>, code: u16, reason: String| {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = handle.borrow().socket.out.send(Message::Close(Some(frame)));
    };
    native.set("wsClose", Function::new(ctx.clone(), close)?)?;
    let next = |ctx: Ctx<'js>, handle: Class<'js, SocketHandle>| {
        let events = handle.borrow().socket.events.clone();
        async move {
            let Some(event) = events.lock().await.recv().await else {
                return Ok::<_, rquickjs::Error>(None);
            };
            let answer = Object::new(ctx.clone())?;
            match event {
                Event::Text(text) => {
                    answer.set("type", "text")?;
                    answer.set("data", text)?;
                }
                Event::Binary(bytes) => {
                    answer.set("type", "binary")?;
                    answer.set("data", TypedArray::<u8>::new(ctx.clone(), bytes.to_vec())?)?;
                }
                Event::Close { code, reason } => {
                    answer.set("type", "close")?;
                    answer.set("code", code)?;
                    answer.set("reason", reason)?;
                }
            }
            Ok(Some(answer))
        }
    };
    native.set("wsNext", Function::new(ctx.clone(), Async(next))?)?;
    let sockets = sockets.clone();
    let make_pair = move |ctx: Ctx<'js>| {
        let (socket, peer) = pair(&sockets);
        let made = Object::new(ctx.clone())?;
        made.set("socket", SocketHandle::handle(&ctx, socket)?)?;
        made.set(
            "peer",
            Class::instance(ctx.clone(), PeerHandle { peer: Some(peer) })?,
        )?;
        Ok::<_, rquickjs::Error>(made)
    };
    native.set("wsPair", Function::new(ctx.clone(), make_pair)?)
}
