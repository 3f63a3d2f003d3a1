//! The dashboard: one page, served from the binary at `/` on the control listener, that
//! shows the apps, their instances, events and logs from the JSON API.
//!
//! The page asks for the token once and posts it to `POST /v1/session`, which checks it
//! like any other request and keeps it in an `HttpOnly`, `SameSite=Strict` cookie. The
//! cookie is accepted for GET requests only: it lets the page read (and its `EventSource`,
//! which cannot send headers, listen), while every change still needs the bearer header,
//! which no other site can make a browser send.

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use crate::http::{full, Body};

use super::Token;

/// The page, with its style and script inline: no build step, nothing fetched from
/// elsewhere.
pub const PAGE: &str = include_str!("dashboard.html");

/// The cookie that holds a read-only key derived from the token ([`Token::read_only`]).
pub const COOKIE: &str = "berth_token";

/// How long a browser keeps the cookie: 30 days.
const MAX_AGE_SECONDS: u32 = 30 * 24 * 60 * 60;

/// What the page may load and reach: itself, and nothing else.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
style-src 'unsafe-inline'; connect-src 'self'; img-src data:; form-action 'none'; \
frame-ancestors 'none'; base-uri 'none'";

/// The page, for `GET /` and `GET /dashboard`; `None` for any other request.
pub(super) fn page(request: &Request<Body>) -> Option<Response<Body>> {
    let path = request.uri().path();
    if !matches!(path, "/" | "/dashboard") || request.method() != Method::GET {
        return None;
    }
    let mut response = Response::new(full(PAGE));
    let headers = response.headers_mut();
    let fixed = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Some(response)
}

/// Whether the request carries the token in the dashboard's cookie. Only a GET may use
/// it: the caller checks the method.
pub(super) fn cookie_accepted(token: &Token, headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b';'))
        .filter_map(|pair| {
            let pair = pair.trim_ascii();
            let (name, value) = pair.split_at(pair.iter().position(|b| *b == b'=')?);
            (name == COOKIE.as_bytes()).then(|| &value[1..])
        })
        .any(|value| token.matches_read_only(value))
}

/// `POST /v1/session`, its bearer token already checked: the answer sets the cookie.
pub(super) fn open_session(token: &Token, request: &Request<Body>) -> Response<Body> {
    let secure = if over_https(request) { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={MAX_AGE_SECONDS}{secure}",
        token.read_only()
    );
    no_content(cookie)
}

/// `DELETE /v1/session`: the answer clears the cookie. It needs no token: forgetting
/// one can harm nobody.
pub(super) fn close_session(request: &Request<Body>) -> Response<Body> {
    let secure = if over_https(request) { "; Secure" } else { "" };
    no_content(format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
    ))
}

/// Whether the browser reached the control API over HTTPS, through a proxy in front of
/// it that says so (the listener itself speaks plain HTTP).
fn over_https(request: &Request<Body>) -> bool {
    request
        .headers()
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn no_content(cookie: String) -> Response<Body> {
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        headers.insert(header::SET_COOKIE, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token made in a folder of `test`'s own.
    fn token(test: &str) -> Token {
        let dir =
            std::env::temp_dir().join(format!("berth-dashboard-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let token = Token::load_or_create(&dir).expect("token");
        let _ = std::fs::remove_dir_all(&dir);
        token
    }

    fn with_cookies(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::COOKIE, HeaderValue::from_str(value).expect("value"));
        }
        headers
    }

    #[test]
    fn the_cookie_is_found_among_others_and_checked_exactly() {
        let token = token("cookie");
        // The token itself is no cookie: only the read-only key derived from it is.
        assert!(!cookie_accepted(
            &token,
            &with_cookies(&[&format!("{COOKIE}={}", token.reveal())])
        ));
        let key = token.read_only();
        assert_ne!(key, token.reveal());
        assert_eq!(key.len(), 64);
        let secret = key.as_str();
        let accepted = |values: &[&str]| cookie_accepted(&token, &with_cookies(values));
        assert!(accepted(&[&format!("{COOKIE}={secret}")]));
        assert!(accepted(&[&format!("theme=dark; {COOKIE}={secret}; x=1")]));
        assert!(accepted(&["theme=dark", &format!("{COOKIE}={secret}")]));
        assert!(!accepted(&[]));
        assert!(!accepted(&[&format!("{COOKIE}={}", &secret[1..])]));
        assert!(!accepted(&[&format!("{COOKIE}={secret}x")]));
        assert!(!accepted(&[&format!("other_{COOKIE}={secret}")]));
        assert!(!accepted(&[&format!("{COOKIE}=")]));
        assert!(!accepted(&[COOKIE]));
    }

    #[test]
    fn a_session_sets_a_cookie_scripts_and_other_sites_cannot_use_and_a_logout_clears_it() {
        let token = token("session");
        let request = Request::new(full(""));
        let opened = open_session(&token, &request);
        assert_eq!(opened.status(), StatusCode::NO_CONTENT);
        let cookie = opened.headers()[header::SET_COOKIE].to_str().expect("text");
        assert!(
            cookie.starts_with(&format!("{COOKIE}={};", token.read_only())),
            "{cookie}"
        );
        assert!(
            !cookie.contains(token.reveal()),
            "the token never leaves: {cookie}"
        );
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(attribute), "{attribute} in {cookie}");
        }
        assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
        let mut proxied = Request::new(full(""));
        proxied
            .headers_mut()
            .insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let cookie = open_session(&token, &proxied).headers()[header::SET_COOKIE].clone();
        assert!(cookie.to_str().expect("text").ends_with("; Secure"));
        let closed = close_session(&request);
        let cleared = closed.headers()[header::SET_COOKIE].to_str().expect("text");
        assert!(cleared.starts_with(&format!("{COOKIE}=;")), "{cleared}");
        assert!(cleared.contains("Max-Age=0"), "{cleared}");
    }

    #[test]
    fn the_page_is_served_at_the_root_only_and_loads_nothing_from_elsewhere() {
        let get = |path: &str| {
            let request = Request::builder()
                .uri(path)
                .body(full(""))
                .expect("request");
            page(&request)
        };
        let response = get("/").expect("the page");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(get("/dashboard").is_some());
        assert!(get("/v1/apps").is_none());
        assert!(get("/favicon.ico").is_none());
        let post = Request::builder()
            .method(Method::POST)
            .uri("/")
            .body(full(""))
            .expect("request");
        assert!(page(&post).is_none());
        for outside in ["http://", "https://", "src=\"//", "href=\"//"] {
            assert!(
                !PAGE.contains(outside),
                "the page refers elsewhere: {outside}"
            );
        }
    }
}
