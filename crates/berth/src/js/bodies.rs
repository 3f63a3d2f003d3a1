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

use http_body_util::BodyExt;
use rquickjs::class::Trace;
use rquickjs::prelude::Async;
use rquickjs::{Class, Ctx, Function, JsLifetime, Object, TypedArray};

use super::bindings::throw;
use crate::http::Body;

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
pub(super) fn install<'js>(ctx: &Ctx<'js>, native: &Object<'js>) -> rquickjs::Result<()> {
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
    native.set("readAll", Function::new(ctx.clone(), Async(read_all))?)
}

fn broke_off(error: &crate::http::BoxError) -> String {
    format!("the body broke off while JavaScript read it: {error}; the client or the container closed the connection")
}
