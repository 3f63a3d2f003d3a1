//! Requests and responses as they cross between Rust and a worker's JavaScript.
//!
//! They are built here, in Rust, as the worker's own `Request` and `Response`: LLRT's
//! objects, made without a call into JavaScript, with serve.js's prototypes (as serve.js's
//! `ours` gives them). Their headers move between LLRT's `Headers` and an
//! [`http::HeaderMap`] directly. Going through JavaScript instead (`[name, value]` arrays,
//! serve.js's constructors, a spread of the headers) cost a worker more than its own
//! `fetch` did: see "Lean requests" in BENCHMARKS.md.

use http::{HeaderMap, HeaderName, HeaderValue};
use llrt_fetch::headers::{Headers, HeadersGuard};
use rquickjs::prelude::Opt;
use rquickjs::{Class, Ctx, Object, Value};

/// `message`, just made by LLRT, as an instance of the worker's class `class` (`Request`
/// or `Response`, which serve.js leaves on `__berth` for this module), with `headers`.
fn adopt<'js>(
    ctx: &Ctx<'js>,
    message: Object<'js>,
    class: &str,
    (headers, guard): (&HeaderMap, HeadersGuard),
) -> rquickjs::Result<Object<'js>> {
    let berth: Object = ctx.globals().get("__berth")?;
    let prototype: Object = berth.get::<_, Object>(class)?.get("prototype")?;
    message.set_prototype(Some(&prototype))?;
    fill(&message, headers, guard)?;
    Ok(message)
}

/// Replaces the headers of a message LLRT just made (it made them empty), as LLRT's
/// `Headers` holds them when made from `[name, value]` pairs: sorted by name, and the
/// values of one name joined into one (`, `; `; ` for `cookie`), but for `set-cookie`,
/// whose values stay apart. A value LLRT's `Headers` refuses (bytes beyond printable
/// ASCII) is left out, as every copy of the message (`new Request(request, init)`,
/// `new Headers(request.headers)`, `clone()`) would throw on it.
fn fill<'js>(
    message: &Object<'js>,
    headers: &HeaderMap,
    guard: HeadersGuard,
) -> rquickjs::Result<()> {
    let mut names: Vec<&HeaderName> = headers.keys().collect();
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    let mut held = HeaderMap::with_capacity(names.len());
    for name in names {
        let mut values = headers
            .get_all(name)
            .iter()
            .filter(|value| acceptable(value.as_bytes()));
        if name == http::header::SET_COOKIE {
            for value in values {
                held.append(name.clone(), value.clone());
            }
            continue;
        }
        let Some(first) = values.next() else { continue };
        let mut joined = first.as_bytes().to_vec();
        let between: &[u8] = if name == http::header::COOKIE {
            b"; "
        } else {
            b", "
        };
        for value in values {
            joined.extend_from_slice(between);
            joined.extend_from_slice(value.as_bytes());
        }
        // Joined from valid values with valid separators, so valid itself.
        if let Ok(value) = HeaderValue::from_bytes(&joined) {
            held.insert(name.clone(), value);
        }
    }
    let own: Class<Headers> = message.get("headers")?;
    *own.try_borrow_mut()? = Headers::from_http_headers(&held, guard)?;
    Ok(())
}

/// Whether LLRT's `Headers` takes a value: tab, space, form feed and printable ASCII
/// (its `is_http_header_value`, which it does not export).
fn acceptable(value: &[u8]) -> bool {
    value
        .iter()
        .all(|b| matches!(b, b'\t' | b' ' | 0x0c | 0x21..=0x7e))
}

/// The worker's `Request` for `method url`, with `headers`; its body is serve.js's to add.
pub(super) fn request<'js>(
    ctx: &Ctx<'js>,
    method: &str,
    url: &str,
    headers: &HeaderMap,
) -> rquickjs::Result<Object<'js>> {
    let init = match method {
        "GET" => None,
        _ => {
            let init = Object::new(ctx.clone())?;
            init.set("method", method)?;
            Some(init.into_value())
        }
    };
    let url = rquickjs::String::from_str(ctx.clone(), url)?.into_value();
    let made = llrt_fetch::request::Request::new(ctx.clone(), url, Opt(init))?;
    let request = Class::instance(ctx.clone(), made)?.into_inner();
    adopt(ctx, request, "Request", (headers, HeadersGuard::Request))
}

/// The worker's `Response` with `status` and `headers`, and no body of LLRT's.
pub(super) fn response<'js>(
    ctx: &Ctx<'js>,
    status: u16,
    headers: &HeaderMap,
) -> rquickjs::Result<Object<'js>> {
    let init = Object::new(ctx.clone())?;
    init.set("status", status)?;
    let made = llrt_fetch::response::Response::new(ctx.clone(), Opt(None), Opt(Some(init)))?;
    let response = Class::instance(ctx.clone(), made)?.into_inner();
    adopt(ctx, response, "Response", (headers, HeadersGuard::Response))
}

/// The headers of a message, as HTTP carries them: LLRT's `Headers` are read directly,
/// anything else iterable of `[name, value]` (a `Headers` of another library) through
/// JavaScript. A header HTTP cannot carry is left out.
pub(super) fn headers<'js>(ctx: &Ctx<'js>, value: Value<'js>) -> rquickjs::Result<HeaderMap> {
    let mut map = HeaderMap::new();
    let mut add = |name: &str, value: &str| {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.try_append(name, value).map_err(|_| {
                rquickjs::Exception::throw_type(
                    ctx,
                    "too many headers for HTTP (over 32,768); send fewer",
                )
            })?;
        }
        Ok::<_, rquickjs::Error>(())
    };
    if let Some(own) = value.as_object().and_then(Class::<Headers>::from_object) {
        let own = own.try_borrow()?;
        for (name, value) in own.iter() {
            add(name, value)?;
        }
        return Ok(map);
    }
    let from: rquickjs::Function = ctx.globals().get::<_, Object>("Array")?.get("from")?;
    let pairs: Vec<Vec<String>> = from.call((value,))?;
    for pair in pairs {
        if let [name, value] = pair.as_slice() {
            add(name, value)?;
        }
    }
    Ok(map)
}
