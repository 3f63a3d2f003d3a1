//! Request and response bodies that stay in Rust until JavaScript reads them.
//!
//! A body berth hands to JavaScript (the client's request body, a container's response
//! body) is a [`RustBody`] handle: a JS object that owns the Rust body, never its bytes.
//! When JavaScript passes it on unread (`stub.fetch(request)`, `return response`), the
//! stub's fetch or the worker's reply takes the body out of the handle and sends it on
//! as it comes, so a body of any size passes through a worker in bounded memory and a
//! slow one as it is produced. Only when JavaScript reads it (`request.body` as a
//! `ReadableStream`, `text()`, `json()`, `arrayBuffer()`) do its bytes enter the JS heap:
//! `native.read` pulls one chunk at a time, `native.readAll` all of it (see serve.js,
//! which decides which of the two applies). A handle that JavaScript drops unread drops
//! its body with it, when QuickJS collects the handle.
//!
//! A body that JavaScript makes as it goes (a `ReadableStream` of its own, or one it
//! read from and passes on) leaves through a pipe (`native.pipe`): serve.js writes each
//! chunk into its sink as the stream gives it, and the other end is a [`RustBody`] that
//! berth sends on like any other, so the client sees each chunk as it is made. The pipe
//! holds a few chunks: a writer faster than its reader waits (`native.write` settles
//! once the chunk is taken in), and one whose reader went away gets an error, which ends
//! its stream.

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hyper::body::Frame;
use tokio::sync::mpsc;

use http_body_util::BodyExt;
use rquickjs::class::Trace;
use rquickjs::prelude::Async;
use rquickjs::{Class, Ctx, Function, JsLifetime, Object, TypedArray};

use super::bindings::throw;
use crate::http::{Body, BoxError};

/// Chunks a pipe holds before its writer waits.
const PIPE_CHUNKS: usize = 4;

/// A body in Rust, as JavaScript holds it. Empty once taken (passed on or read to its end).
#[derive(Trace, JsLifetime)]
#[rquickjs::class(rename = "BerthBody")]
pub(super) struct RustBody {
    #[qjs(skip_trace)]
    body: Option<Body>,
}

impl RustBody {
    /// `body` as a new handle in `ctx`.
    pub fn handle<'js>(ctx: &Ctx<'js>, body: Body) -> rquickjs::Result<Class<'js, RustBody>> {
        Class::instance(ctx.clone(), RustBody { body: Some(body) })
    }

    /// The body, for sending on; `None` once taken.
    pub fn take(&mut self) -> Option<Body> {
        self.body.take()
    }
}

/// Sets `native.read(handle)` (a promise of the next chunk, or undefined at the end) and
/// `native.readAll(handle)` (a promise of the rest as one Uint8Array) on `native`.
pub(super) fn install<'js>(
    ctx: &Ctx<'js>,
    native: &Object<'js>,
    pipes: &Pipes,
) -> rquickjs::Result<()> {
    let read = |ctx: Ctx<'js>, handle: Class<'js, RustBody>| async move {
        let Some(mut body) = handle.borrow_mut().take() else {
            return Ok(None);
        };
        loop {
            match body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(throw(&ctx, broke_off(&e))),
                Some(Ok(frame)) => {
                    // Trailers carry no bytes: skip them, as an empty chunk.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    handle.borrow_mut().body = Some(body);
                    return TypedArray::<u8>::new(ctx.clone(), data.to_vec()).map(Some);
                }
            }
        }
    };
    native.set("read", Function::new(ctx.clone(), Async(read))?)?;
    let read_all = |ctx: Ctx<'js>, handle: Class<'js, RustBody>| async move {
        let taken = handle.borrow_mut().take();
        let bytes = match taken {
            Some(body) => body
                .collect()
                .await
                .map_err(|e| throw(&ctx, broke_off(&e)))?
                .to_bytes(),
            None => bytes::Bytes::new(),
        };
        TypedArray::<u8>::new(ctx.clone(), bytes.to_vec())
    };
    native.set("readAll", Function::new(ctx.clone(), Async(read_all))?)?;
    install_pipe(ctx, native, pipes)
}

/// A pipe's state, shared by its two ends and its runtime's [`Pipes`].
#[derive(Default)]
struct PipeState {
    /// How it ended: `None` while it is open.
    ending: Mutex<Option<Result<(), String>>>,
    /// The reader's, woken when the runtime ends the pipe (see [`Pipes::end_all`]).
    reader: AtomicWaker,
}

impl PipeState {
    fn ending(&self) -> std::sync::MutexGuard<'_, Option<Result<(), String>>> {
        self.ending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The pipes of one runtime. When the runtime's thread ends (a new version of the app, or
/// the runtime was replaced), JavaScript writes into them no more, and they end with an
/// error instead of leaving their clients waiting.
#[derive(Clone, Default)]
pub(super) struct Pipes(Arc<Mutex<Vec<Weak<PipeState>>>>);

impl Pipes {
    fn add(&self, pipe: &Arc<PipeState>) {
        let mut pipes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        pipes.retain(|p| p.upgrade().is_some_and(|p| p.ending().is_none()));
        pipes.push(Arc::downgrade(pipe));
    }

    /// How many are still being written.
    pub fn open(&self) -> usize {
        let pipes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let open = pipes.iter().filter_map(Weak::upgrade);
        open.filter(|p| p.ending().is_none()).count()
    }

    /// A new pipe of this runtime: its sink, and the body it feeds.
    fn new_pipe(&self) -> (Sink, Piped) {
        let (chunks, taken) = mpsc::channel(PIPE_CHUNKS);
        let state = Arc::<PipeState>::default();
        self.add(&state);
        let piped = Piped {
            chunks: taken,
            state: state.clone(),
        };
        let sink = Sink {
            chunks: Some(chunks),
            state,
        };
        (sink, piped)
    }

    /// Ends the open ones with `why` as their error.
    pub fn end_all(&self, why: &str) {
        let pipes = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        for pipe in pipes.iter().filter_map(Weak::upgrade) {
            pipe.ending().get_or_insert_with(|| Err(why.to_string()));
            pipe.reader.wake();
        }
    }
}

/// The writing end of a pipe, as JavaScript holds it. A sink that JavaScript drops
/// unclosed breaks its body off, so the client cannot take a cut body for a whole one.
#[derive(Trace, JsLifetime)]
#[rquickjs::class(rename = "BerthSink")]
pub(super) struct Sink {
    #[qjs(skip_trace)]
    chunks: Option<mpsc::Sender<Bytes>>,
    #[qjs(skip_trace)]
    state: Arc<PipeState>,
}

impl Sink {
    /// Ends the pipe: its body ends after the chunks written, or breaks off with `how`'s
    /// error. Only the first ending counts.
    fn end(&mut self, how: Result<(), String>) {
        if self.chunks.is_none() {
            return;
        }
        // The ending first: the reader looks at it once the channel closes.
        self.state.ending().get_or_insert(how);
        self.chunks = None;
    }
}

/// The reading end of a pipe: a body of the chunks written, which ends when the sink is
/// closed and breaks off when it fails or is dropped unclosed.
struct Piped {
    chunks: mpsc::Receiver<Bytes>,
    state: Arc<PipeState>,
}

impl hyper::body::Body for Piped {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.chunks.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(None) => Poll::Ready(match self.state.ending().clone() {
                Some(Ok(())) => None,
                Some(Err(message)) => Some(Err(message.into())),
                None => Some(Err("the worker dropped its stream before its end".into())),
            }),
            Poll::Pending => {
                // Ended by its runtime while its writer is stuck there: an error now.
                self.state.reader.register(cx.waker());
                match self.state.ending().clone() {
                    Some(Err(message)) => Poll::Ready(Some(Err(message.into()))),
                    _ => Poll::Pending,
                }
            }
        }
    }
}

/// Sets `native.pipe()` (`{ body, sink }`: a body handle and the sink that feeds it),
/// `native.write(sink, chunk)` (a promise, settled once the pipe has taken the chunk;
/// rejected when the body's reader went away), `native.close(sink)` and
/// `native.fail(sink, message)`.
fn install_pipe<'js>(ctx: &Ctx<'js>, native: &Object<'js>, pipes: &Pipes) -> rquickjs::Result<()> {
    let pipes = pipes.clone();
    let pipe = move |ctx: Ctx<'js>| {
        let (sink, piped) = pipes.new_pipe();
        let pipe = Object::new(ctx.clone())?;
        pipe.set("body", RustBody::handle(&ctx, crate::http::body(piped))?)?;
        pipe.set("sink", Class::instance(ctx.clone(), sink)?)?;
        Ok::<_, rquickjs::Error>(pipe)
    };
    native.set("pipe", Function::new(ctx.clone(), pipe)?)?;
    let write = |ctx: Ctx<'js>, sink: Class<'js, Sink>, chunk: TypedArray<'js, u8>| {
        let chunks = sink.borrow().chunks.clone();
        let bytes = chunk.as_bytes().map(Bytes::copy_from_slice);
        async move {
            let Some(chunks) = chunks else {
                return Err(throw(&ctx, "the stream was already closed".into()));
            };
            // One chunk per turn of the runtime: a long stream to a fast client would
            // otherwise be written in one turn, and run past a turn's CPU budget.
            tokio::task::yield_now().await;
            let bytes =
                bytes.ok_or_else(|| throw(&ctx, "the chunk's buffer is detached".into()))?;
            chunks.send(bytes).await.map_err(|_| {
                throw(
                    &ctx,
                    "the body's reader went away (the client closed the connection)".into(),
                )
            })
        }
    };
    native.set("write", Function::new(ctx.clone(), Async(write))?)?;
    let close = |sink: Class<'js, Sink>| sink.borrow_mut().end(Ok(()));
    native.set("close", Function::new(ctx.clone(), close)?)?;
    let fail = |sink: Class<'js, Sink>, message: String| sink.borrow_mut().end(Err(message));
    native.set("fail", Function::new(ctx.clone(), fail)?)
}

fn broke_off(error: &crate::http::BoxError) -> String {
    format!("the body broke off while JavaScript read it: {error}; the client or the container closed the connection")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frames of `body` until it ends: its data, and its error if it broke off.
    async fn read(mut body: Piped) -> (Vec<u8>, Option<String>) {
        let mut data = Vec::new();
        loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    data.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..]))
                }
                Some(Err(e)) => return (data, Some(e.to_string())),
                None => return (data, None),
            }
        }
    }

    #[tokio::test]
    async fn a_pipe_its_runtime_ends_breaks_off_after_what_was_written_and_says_why() {
        let pipes = Pipes::default();
        let (sink, body) = pipes.new_pipe();
        let (_closed, closed_body) = {
            let (mut sink, body) = pipes.new_pipe();
            sink.end(Ok(()));
            (sink, body)
        };
        let chunks = sink.chunks.clone().expect("open");
        chunks
            .send(Bytes::from_static(b"before"))
            .await
            .expect("taken");
        // The writer is stuck (its runtime's thread is ending): the reader is not left
        // waiting.
        let reading = tokio::spawn(read(body));
        tokio::task::yield_now().await;
        assert_eq!(pipes.open(), 1, "the closed pipe is not counted");
        pipes.end_all("the runtime ended");
        let read_within = tokio::time::timeout(std::time::Duration::from_secs(5), reading);
        let (data, error) = read_within.await.expect("woken, within 5 s").expect("read");
        assert_eq!(data, b"before");
        assert_eq!(error.as_deref(), Some("the runtime ended"));
        // One closed before is whole, not broken off.
        assert_eq!(read(closed_body).await, (Vec::new(), None));
        drop(sink);
    }
}
