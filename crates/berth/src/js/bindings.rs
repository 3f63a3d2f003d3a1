//! `__berth.native`: what a worker's container stubs (builtins/serve.js) call in Rust.
//! Each call names its object by binding, id and (when addressed by name) name, and runs
//! on berth's own Tokio runtime (the one `berth dev` serves on): the JS thread only waits
//! for the answer, so other requests run meanwhile.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use hyper::body::Body as _;
use rquickjs::prelude::Async;
use rquickjs::{Class, Ctx, Exception, FromJs, Function, Object, TypedArray, Value};
use tokio::runtime::Handle;

use super::bodies::RustBody;
use super::upgrade::{Upgrades, TOKEN_HEADER};
use crate::http::full;
use crate::namespace::Namespace;
use crate::object::{Object as Container, StartOptions};
use crate::runtime::Signal;
use crate::worker::Env;

/// Which object a stub stands for, as serve.js passes it.
pub(super) struct Target {
    binding: String,
    id: String,
    name: Option<String>,
    /// The stub of a class's own code (builtins/hooks.js): its fetch goes to the
    /// container, not back through the class's own `fetch`.
    direct: bool,
}

impl Target {
    pub(super) fn read(target: &Object<'_>) -> rquickjs::Result<Target> {
        Ok(Target {
            binding: target.get("binding")?,
            id: target.get("id")?,
            name: target.get("name")?,
            direct: target.get::<_, Option<bool>>("direct")?.unwrap_or(false),
        })
    }

    /// The object, or why there is none (as text for a JS error).
    pub(super) fn object(&self, env: &Env) -> Result<Container, String> {
        let namespace = namespace(env, &self.binding)?;
        // The id the stub holds is the name's already: the name is not hashed again.
        let id = namespace
            .id_from_string(&self.id)
            .map_err(|e| format!("{}: {e}", self.binding))?;
        Ok(match &self.name {
            Some(name) => namespace.get_named(id, || name.clone()),
            None => namespace.get(id),
        })
    }
}

fn namespace<'a>(env: &'a Env, binding: &str) -> Result<&'a Namespace, String> {
    env.namespace(binding)
        .ok_or_else(|| format!("env.{binding} is not a container binding"))
}

/// A Rust failure as a JS exception.
pub(super) fn throw(ctx: &Ctx<'_>, message: String) -> rquickjs::Error {
    Exception::throw_message(ctx, &message)
}

/// Runs `work` on berth's runtime and waits for it from the JS thread. Dropping the wait
/// (the request timed out, or its client went away) aborts the work.
pub(super) async fn on_berth<T: Send + 'static>(
    main: &Handle,
    work: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    let mut task = AbortOnDrop(main.spawn(work));
    (&mut task.0)
        .await
        .map_err(|e| format!("berth's task failed: {e}"))?
}

/// A native call on the object `target` names: `work` runs with it on berth's runtime
/// (see [`on_berth`]), and a failure, of either, is a JS exception. The target is read at
/// once, while the call's arguments are at hand.
pub(super) fn on_object<'js, T, W, F>(
    ctx: &Ctx<'js>,
    env: &Env,
    main: &Handle,
    target: &Object<'js>,
    work: W,
) -> impl std::future::Future<Output = rquickjs::Result<T>> + 'js
where
    W: FnOnce(Container) -> F,
    F: std::future::Future<Output = Result<T, String>> + Send + 'static,
    T: Send + 'static,
{
    let object = Target::read(target).and_then(|t| t.object(env).map_err(|m| throw(ctx, m)));
    let work = object.map(work);
    let (ctx, main) = (ctx.clone(), main.clone());
    async move {
        let done = on_berth(&main, work?).await;
        done.map_err(|m| throw(&ctx, m))
    }
}

/// A task on berth's runtime that nothing waits for any more is aborted.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A container's answer, its body as it comes (`None`: it has none), and the socket of
/// a 101 to a request the worker sent with `Upgrade: websocket`.
struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: Option<crate::http::Body>,
    socket: Option<super::sockets::Upgrade>,
}

/// Sends a request to the object, by its default port (or the one the request's
/// `switchPort` header names) or by `port`.
/// An upgrade (a WebSocket) is passed on (see [`super::upgrade`]): the client's connection
/// goes with the request, and the container's 101 is parked for the worker to answer with.
async fn send(
    object: Container,
    mut request: Request<crate::http::Body>,
    (port, direct): (Option<u16>, bool),
    upgrade: Option<(u64, Upgrades)>,
) -> Result<Reply, String> {
    if let Some(extensions) = upgrade.as_ref().and_then(|(t, u)| u.take_request(*t)) {
        *request.extensions_mut() = extensions;
    }
    let response = match port {
        Some(port) => object
            .container_fetch(request, port)
            .await
            .unwrap_or_else(|e| e.into_response()),
        None if direct => object.fetch_container(request).await,
        None => object.fetch(request).await,
    };
    if let (Some((token, upgrades)), StatusCode::SWITCHING_PROTOCOLS) = (upgrade, response.status())
    {
        upgrades.park_response(token, response);
        let mut headers = http::HeaderMap::new();
        headers.insert(TOKEN_HEADER, http::HeaderValue::from(token));
        return Ok(Reply {
            status: StatusCode::SWITCHING_PROTOCOLS.as_u16(),
            headers,
            body: None,
            socket: None,
        });
    }
    Ok(reply(response))
}

/// Sends a plain request (no upgrade, the default port) from this thread when the
/// container serves already: two thread hops fewer than through berth's runtime (the
/// connections this opens to the container are this thread's). A container that must be started
/// first is started from berth's runtime, where the tasks that watch it outlive this
/// worker (see [`Container::fetch_if_serving`]).
async fn fetch_here_or_on_berth(
    main: &Handle,
    object: Container,
    request: Request<crate::http::Body>,
    direct: bool,
) -> Result<Reply, String> {
    match object.fetch_if_serving(request).await {
        Ok(response) => Ok(reply(response.unwrap_or_else(|e| e.into_response()))),
        Err(request) => on_berth(main, send(object, request, (None, direct), None)).await,
    }
}

/// The largest body of a container's answer whose pieces are taken ahead (see [`reply`]).
const SMALL_BODY: u64 = 64 << 10;

/// A container's response as a [`Reply`]. Of a body of a known length of at most
/// [`SMALL_BODY`], what has arrived already is taken here, on the thread that sent the
/// request, without waiting for more: the answer of a small body mostly comes whole with
/// its head. Taken by another thread (the server's, which sends the worker's answer),
/// each piece, and the body's end, would wake this one, and then the other. The rest of
/// the body, if any, follows as it comes; should it break off, the client gets what
/// arrived and then the break, as it would have.
fn reply(mut response: http::Response<crate::http::Body>) -> Reply {
    let socket = match response.status() {
        StatusCode::SWITCHING_PROTOCOLS => super::sockets::upgrade(&mut response),
        _ => None,
    };
    let (parts, body) = response.into_parts();
    let body = match body.size_hint().exact() {
        Some(length) if length <= SMALL_BODY => read_ahead(body),
        _ => body,
    };
    let body = (!body.is_end_stream()).then_some(body);
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
        socket,
    }
}

/// The pieces of `body` that are here now, then the rest as it comes.
fn read_ahead(mut body: crate::http::Body) -> crate::http::Body {
    use futures_util::FutureExt;
    use futures_util::StreamExt;
    use http_body_util::BodyExt;
    use hyper::body::Frame;
    let mut read = bytes::BytesMut::new();
    let rest = loop {
        match body.frame().now_or_never() {
            Some(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    read.extend_from_slice(&data);
                }
                if body.is_end_stream() {
                    return full(read.freeze());
                }
            }
            Some(None) => return full(read.freeze()),
            Some(Some(Err(e))) => break futures_util::stream::iter([Err(e)]).left_stream(),
            None if read.is_empty() => return body,
            None => break http_body_util::BodyStream::new(body).right_stream(),
        }
    };
    let first = futures_util::stream::iter([Ok(Frame::data(read.freeze()))]);
    crate::http::body(http_body_util::StreamBody::new(first.chain(rest)))
}

/// Takes the upgrade token out of a request's headers.
fn take_token(headers: &mut http::HeaderMap) -> Option<u64> {
    headers.remove(TOKEN_HEADER)?.to_str().ok()?.parse().ok()
}

/// Builds the request a stub's fetch sends.
fn request(
    method: &str,
    url: &str,
    headers: http::HeaderMap,
    body: crate::http::Body,
) -> Result<Request<crate::http::Body>, String> {
    let method = Method::from_bytes(method.as_bytes()).map_err(|e| format!("{method:?}: {e}"))?;
    let uri: Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Sets `__berth.native` in `ctx`.
pub(super) fn install(
    ctx: &Ctx<'_>,
    env: &Env,
    main: &Handle,
    (upgrades, pipes, sockets): (&Upgrades, &super::bodies::Pipes, &super::sockets::Sockets),
) -> rquickjs::Result<()> {
    let native = Object::new(ctx.clone())?;
    let e = env.clone();
    let id_from_name = move |ctx: Ctx<'_>, binding: String, name: String| {
        let namespace = namespace(&e, &binding).map_err(|m| throw(&ctx, m))?;
        Ok::<_, rquickjs::Error>(namespace.id_from_name(&name).to_string())
    };
    native.set("idFromName", Function::new(ctx.clone(), id_from_name)?)?;
    let e = env.clone();
    let id_from_string = move |ctx: Ctx<'_>, binding: String, hex: String| {
        let namespace = namespace(&e, &binding).map_err(|m| throw(&ctx, m))?;
        let id = namespace.id_from_string(&hex);
        let id = id.map_err(|err| throw(&ctx, format!("{binding}.idFromString: {err}")))?;
        Ok::<_, rquickjs::Error>(id.to_string())
    };
    native.set("idFromString", Function::new(ctx.clone(), id_from_string)?)?;
    let e = env.clone();
    let new_unique_id = move |ctx: Ctx<'_>, binding: String| {
        let namespace = namespace(&e, &binding).map_err(|m| throw(&ctx, m))?;
        let id = namespace.new_unique_id();
        let id = id.map_err(|err| throw(&ctx, format!("{binding}.newUniqueId: {err}")))?;
        Ok::<_, rquickjs::Error>(id.to_string())
    };
    native.set("newUniqueId", Function::new(ctx.clone(), new_unique_id)?)?;
    install_fetch(ctx, &native, env, main, (upgrades, sockets))?;
    super::bodies::install(ctx, &native, pipes)?;
    install_lifecycle(ctx, &native, env, main)?;
    super::sockets::install(ctx, &native, sockets)?;
    super::schedules::install(ctx, &native, env, main)?;
    super::storage::install(ctx, &native, env, main)?;
    let berth: Object = ctx.globals().get("__berth")?;
    berth.set("native", native)
}

/// `native.fetch(target, method, url, headers, body, port)`: a promise of
/// `{ status, response, body }`, `response` the worker's `Response` with the container's
/// status and headers (see [`super::messages`]). The headers sent are a `Headers`; the
/// body sent is bytes, a [`RustBody`] handle (sent on as it comes, see
/// [`super::bodies`]) or null; the body answered is a handle, or null when the container
/// answered none.
fn install_fetch<'js>(
    ctx: &Ctx<'js>,
    native: &Object<'js>,
    env: &Env,
    main: &Handle,
    (upgrades, sockets): (&Upgrades, &super::sockets::Sockets),
) -> rquickjs::Result<()> {
    let (env, main, upgrades) = (env.clone(), main.clone(), upgrades.clone());
    let sockets = sockets.clone();
    #[allow(clippy::type_complexity)]
    let fetch = move |ctx: Ctx<'js>,
                      target: Object<'js>,
                      method: String,
                      url: String,
                      headers: Value<'js>,
                      body: Option<Value<'js>>,
                      port: Option<u16>| {
        let prepared = Target::read(&target).and_then(|target| {
            let object = target.object(&env).map_err(|m| throw(&ctx, m))?;
            let mut headers = super::messages::headers(&ctx, headers)?;
            let upgrade = take_token(&mut headers).map(|token| (token, upgrades.clone()));
            if upgrade.is_none() {
                super::sockets::prepare(&mut headers);
            }
            let body = outgoing(&ctx, body)?;
            let request = request(&method, &url, headers, body).map_err(|m| throw(&ctx, m))?;
            Ok((object, request, target.direct, upgrade))
        });
        let (main, sockets) = (main.clone(), sockets.clone());
        async move {
            let (object, request, direct, upgrade) = prepared?;
            // A class with a fetch of its own gets the request first, on berth's runtime.
            let reply = match (port, upgrade) {
                (None, None) if direct || !object.has_class_fetch() => {
                    fetch_here_or_on_berth(&main, object, request, direct).await
                }
                (port, upgrade) => {
                    on_berth(&main, send(object, request, (port, direct), upgrade)).await
                }
            };
            let reply = reply.map_err(|m| throw(&ctx, m))?;
            let answer = Object::new(ctx.clone())?;
            answer.set("status", reply.status)?;
            let response = super::messages::response(&ctx, reply.status, &reply.headers)?;
            answer.set("response", response)?;
            match reply.body {
                Some(body) => answer.set("body", RustBody::handle(&ctx, body)?)?,
                None => answer.set("body", rquickjs::Null)?,
            }
            if let Some(upgrade) = reply.socket {
                let socket = upgrade.open(&main, &sockets);
                answer.set(
                    "socket",
                    super::sockets::SocketHandle::handle(&ctx, socket)?,
                )?;
            }
            Ok::<_, rquickjs::Error>(answer)
        }
    };
    native.set("fetch", Function::new(ctx.clone(), Async(fetch))?)
}

/// A body JavaScript sends: bytes, a [`RustBody`] handle, or nothing.
pub(super) fn outgoing<'js>(
    ctx: &Ctx<'js>,
    body: Option<Value<'js>>,
) -> rquickjs::Result<crate::http::Body> {
    let Some(body) = body.filter(|b| !b.is_null() && !b.is_undefined()) else {
        return Ok(full(Bytes::new()));
    };
    if let Some(handle) = body.as_object().and_then(Class::<RustBody>::from_object) {
        let taken = handle.borrow_mut().take();
        return taken.ok_or_else(|| {
            throw(
                ctx,
                "the body was already read or sent; clone the request or response before using its body twice".into(),
            )
        });
    }
    let bytes = TypedArray::<u8>::from_js(ctx, body)?;
    Ok(full(
        bytes.as_bytes().map(<[u8]>::to_vec).unwrap_or_default(),
    ))
}

/// `native.start(target, wait, ports, envVars, entrypoint, enableInternet)`,
/// `native.stop(target, signal)` (`"SIGTERM"`, `"SIGINT"` or `"SIGKILL"`) and
/// `native.state(target)` (JSON: `{ status, lastChange, exitCode? }`): promises.
fn install_lifecycle<'js>(
    ctx: &Ctx<'js>,
    native: &Object<'js>,
    env: &Env,
    main: &Handle,
) -> rquickjs::Result<()> {
    let (e, m) = (env.clone(), main.clone());
    let start = move |ctx: Ctx<'js>,
                      target: Object<'js>,
                      wait: bool,
                      ports: Vec<u16>,
                      env_vars: BTreeMap<String, String>,
                      entrypoint: Option<Vec<String>>,
                      enable_internet: Option<bool>| {
        let options = StartOptions {
            env_vars,
            entrypoint,
            enable_internet,
        };
        on_object(&ctx, &e, &m, &target, move |object| async move {
            let options = object.beyond_class(options);
            let started = match wait {
                true => object.start_and_wait_for_ports(&ports, options).await,
                false => object.start(options).await,
            };
            started.map_err(|e| e.to_string())
        })
    };
    native.set("start", Function::new(ctx.clone(), Async(start))?)?;
    let (e, m) = (env.clone(), main.clone());
    let stop = move |ctx: Ctx<'js>, target: Object<'js>, signal: String| {
        let signal = Signal::from_name(&signal).unwrap_or_default();
        on_object(&ctx, &e, &m, &target, move |object| async move {
            object.stop(signal).await.map_err(|e| e.to_string())
        })
    };
    native.set("stop", Function::new(ctx.clone(), Async(stop))?)?;
    let (e, m) = (env.clone(), main.clone());
    // Cloudflare's destroy(): the container killed, and here the object's volumes gone.
    let destroy = move |ctx: Ctx<'js>, target: Object<'js>| {
        on_object(&ctx, &e, &m, &target, |object| async move {
            object.destroy().await.map_err(|e| e.to_string())
        })
    };
    native.set("destroy", Function::new(ctx.clone(), Async(destroy))?)?;
    let (e, m) = (env.clone(), main.clone());
    let state = move |ctx: Ctx<'js>, target: Object<'js>| {
        on_object(&ctx, &e, &m, &target, |object| async move {
            let state = object.state().await.map_err(|e| e.to_string())?;
            let changed = crate::cron::to_ms(object.last_change());
            let mut answer = serde_json::json!({ "status": state.as_str(), "lastChange": changed });
            if let crate::lifecycle::State::StoppedWithCode(code) = state {
                answer["exitCode"] = code.into();
            }
            Ok(answer.to_string())
        })
    };
    native.set("state", Function::new(ctx.clone(), Async(state))?)?;
    let (e, m) = (env.clone(), main.clone());
    // `native.renew(target)`: Cloudflare's renewActivityTimeout().
    let renew = move |ctx: Ctx<'js>, target: Object<'js>| {
        on_object(&ctx, &e, &m, &target, |object| async move {
            object.renew().await.map_err(|e| e.to_string())
        })
    };
    native.set("renew", Function::new(ctx.clone(), Async(renew))?)?;
    let (e, m) = (env.clone(), main.clone());
    // `native.call(target, method, args)`: a method of the object's class (RPC), its
    // arguments and answer as JSON.
    let call = move |ctx: Ctx<'js>, target: Object<'js>, method: String, args: String| {
        on_object(&ctx, &e, &m, &target, move |object| async move {
            object.call(&method, args).await
        })
    };
    native.set("call", Function::new(ctx.clone(), Async(call))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A container's answer: it writes `first`, then `then` once `go` is told (or at
    /// once without one), and closes; through a real HTTP/1.1 connection, with the
    /// connection's task.
    async fn answer(
        first: String,
        then: Option<(&'static str, tokio::sync::oneshot::Receiver<()>)>,
    ) -> (
        http::Response<crate::http::Body>,
        tokio::task::JoinHandle<hyper::Result<()>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await;
            let _ = stream.write_all(first.as_bytes()).await;
            if let Some((rest, go)) = then {
                let _ = go.await;
                let _ = stream.write_all(rest.as_bytes()).await;
            }
        });
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, crate::http::Body>(
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .expect("handshake");
        let connection = tokio::spawn(connection);
        let request = http::Request::get("/")
            .header("host", "test")
            .body(full(Bytes::new()))
            .expect("request");
        let response = sender.send_request(request).await.expect("an answer");
        (response.map(crate::http::body), connection)
    }

    async fn text(body: crate::http::Body) -> String {
        let bytes = body.collect().await.expect("the whole body").to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn a_small_answer_is_taken_ahead_without_waiting_and_the_rest_follows() {
        let head = |length: usize| format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\n\r\n");

        // Whole with its head: taken, it needs the connection no more.
        let (response, connection) = answer(format!("{}hello", head(5)), None).await;
        let whole = reply(response);
        connection.abort();
        let _ = connection.await;
        assert_eq!(text(whole.body.expect("a body")).await, "hello");

        // More than one piece: what was taken, then the rest, in order.
        let long = "0123456789".repeat(6_000);
        let (response, _connection) = answer(format!("{}{long}", head(60_000)), None).await;
        assert_eq!(text(reply(response).body.expect("a body")).await, long);

        // The rest not sent yet: the answer is given at once, and the rest follows.
        let (go, wait) = tokio::sync::oneshot::channel();
        let (response, _connection) = answer(format!("{}hel", head(5)), Some(("lo", wait))).await;
        let mut body = reply(response).body.expect("a body");
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data"), "hel");
        let _ = go.send(());
        assert_eq!(text(body).await, "lo");

        // Broken off: the client gets what arrived, then the break.
        let (response, _connection) = answer(format!("{}hello", head(10)), None).await;
        let mut body = reply(response).body.expect("a body");
        let first = body
            .frame()
            .await
            .expect("a frame")
            .expect("the part that came");
        assert_eq!(first.into_data().expect("data"), "hello");
        let rest = body.frame().await.expect("the break");
        assert!(rest.is_err(), "the client sees the body break off");
    }
}
