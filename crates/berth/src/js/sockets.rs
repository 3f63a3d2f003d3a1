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
use tokio::sync::{mpsc, Mutex};
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
    events: Arc<Mutex<mpsc::UnboundedReceiver<Event>>>,
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

/// The socket of a container's 101 answer, if it is one: its connection, upgraded, on a
/// task of its own that holds `response` (and so its request in flight) until it ends.
pub(super) fn open(response: &mut http::Response<crate::http::Body>) -> Option<Socket> {
    let upgraded = response
        .extensions()
        .get::<hyper::upgrade::OnUpgrade>()
        .is_some()
        .then(|| hyper::upgrade::on(&mut *response))?;
    let (socket, peer) = pair();
    let held = std::mem::replace(response.body_mut(), crate::http::full(bytes::Bytes::new()));
    tokio::spawn(async move {
        let _held = held;
        match upgraded.await {
            Ok(io) => pump(io, Role::Client, peer).await,
            Err(e) => {
                let reason = format!("the container's connection did not upgrade: {e}");
                let _ = peer.tell.send(Event::Close { code: 1006, reason });
            }
        }
    });
    Some(socket)
}

/// The Rust side of a socket: what JavaScript sends, and where to tell it what came.
pub(super) struct Peer {
    outgoing: mpsc::UnboundedReceiver<Message>,
    tell: mpsc::UnboundedSender<Event>,
}

/// A socket for JavaScript, and its Rust side, not connected yet.
fn pair() -> (Socket, Peer) {
    let (out, outgoing) = mpsc::unbounded_channel::<Message>();
    let (tell, events) = mpsc::unbounded_channel();
    let socket = Socket {
        out,
        events: Arc::new(Mutex::new(events)),
    };
    (socket, Peer { outgoing, tell })
}

/// Connects `peer` to a client's connection, upgraded once the worker's 101 has gone out:
/// the server end of a `WebSocketPair` then talks to the client.
pub(super) fn accept(peer: Peer, client: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        match client.await {
            Ok(io) => pump(io, Role::Server, peer).await,
            Err(e) => {
                let reason = format!("the client's connection did not upgrade: {e}");
                let _ = peer.tell.send(Event::Close { code: 1006, reason });
            }
        }
    });
}

/// Frames `io` as a WebSocket and carries messages between it and `peer` until it closes.
async fn pump(io: hyper::upgrade::Upgraded, role: Role, peer: Peer) {
    let Peer { mut outgoing, tell } = peer;
    let socket = WebSocketStream::from_raw_socket(TokioIo::new(io), role, None).await;
    let (mut sink, mut stream) = socket.split();
    let mut sending = true;
    loop {
        tokio::select! {
            message = outgoing.recv(), if sending => match message {
                Some(message) => {
                    if sink.send(message).await.is_err() {
                        sending = false;
                    }
                }
                // JavaScript dropped the socket: close it.
                None => {
                    let _ = sink.close().await;
                    sending = false;
                }
            },
            incoming = stream.next() => {
                let event = match incoming {
                    Some(Ok(Message::Text(text))) => Event::Text(text.to_string()),
                    Some(Ok(Message::Binary(bytes))) => Event::Binary(bytes),
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame.map_or((1005, String::new()), |f| {
                            (u16::from(f.code), f.reason.to_string())
                        });
                        let _ = tell.send(Event::Close { code, reason });
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        let _ = tell.send(Event::Close { code: 1006, reason: e.to_string() });
                        break;
                    }
                    None => {
                        let reason = "the connection ended".to_string();
                        let _ = tell.send(Event::Close { code: 1006, reason });
                        break;
                    }
                };
                if tell.send(event).is_err() {
                    break;
                }
            }
        }
    }
    // The close handshake's answer, if JavaScript's close is still on its way.
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

/// A peer as a worker's answer carries it to the server (see `serve::dispatch`).
#[derive(Clone)]
pub(super) struct Answered(pub Arc<std::sync::Mutex<Option<Peer>>>);

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub(super) fn accept_key(key: &[u8]) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key)
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
pub(super) fn install<'js>(ctx: &Ctx<'js>, native: &Object<'js>) -> rquickjs::Result<()> {
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
    let make_pair = |ctx: Ctx<'js>| {
        let (socket, peer) = pair();
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
