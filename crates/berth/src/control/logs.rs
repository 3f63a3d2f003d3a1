//! `GET /v1/apps/{app}/logs`: what the app's containers wrote, kept after they are gone,
//! as JSON lines; with `follow=true`, for as long as the client listens.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::Answer;
use crate::http::{percent_decode, Body, BoxError};
use crate::logbook::{follow, parse_since, Entry, Logbook, Query};

/// What the query string asks for, checked.
pub(super) struct Asked {
    query: Query,
    follow: bool,
}

/// Reads `class`, `object`, `since` (a duration back from now, as `10m`, or an RFC 3339
/// time), `tail` and `follow` from the query string.
pub(super) fn asked(app: &str, query_string: &str) -> Result<Asked, Answer> {
    let bad = |message: String| Answer::new(StatusCode::BAD_REQUEST, "bad-query", message);
    let mut asked = Asked {
        query: Query {
            app: app.to_string(),
            ..Query::default()
        },
        follow: false,
    };
    for pair in query_string.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(&value.replace('+', " "));
        match key {
            "class" => asked.query.class = Some(value).filter(|v| !v.is_empty()),
            "object" => asked.query.object = Some(value).filter(|v| !v.is_empty()),
            "since" => asked.query.since = Some(parse_since(&value).map_err(bad)?),
            "tail" => {
                let tail = value
                    .parse::<usize>()
                    .map_err(|_| bad(format!("tail={value:?}: give a whole number of lines")))?;
                asked.query.tail = Some(tail);
            }
            _ => {}
        }
    }
    asked.follow = super::flag(query_string, "follow")?.unwrap_or(false);
    Ok(asked)
}

fn line(entry: &Entry) -> Bytes {
    let mut text = serde_json::to_string(entry).unwrap_or_default();
    text.push('\n');
    Bytes::from(text)
}

/// The kept lines, or the stream of them while the client listens.
pub(super) async fn answer(logbook: &Logbook, asked: Asked) -> Result<Response<Body>, Answer> {
    let mut response = if asked.follow {
        let (tx, rx) = tokio::sync::mpsc::channel::<Entry>(256);
        let (book, query) = (logbook.clone(), asked.query);
        tokio::spawn(async move {
            if let Err(e) = follow(book, query, tx).await {
                tracing::warn!("a client following logs was cut off: {e}");
            }
        });
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            let entry = rx.recv().await?;
            Some((Ok::<_, BoxError>(Frame::data(line(&entry))), rx))
        });
        Response::new(StreamBody::new(frames).boxed())
    } else {
        let (book, query) = (logbook.clone(), asked.query);
        let entries = tokio::task::spawn_blocking(move || book.read(&query))
            .await
            .map_err(|e| {
                Answer::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("reading the logs failed: {e}"),
                )
            })?
            .map_err(|e| Answer::new(StatusCode::INTERNAL_SERVER_ERROR, "logs", e.to_string()))?;
        let body: Vec<u8> = entries.iter().flat_map(|e| line(e).to_vec()).collect();
        Response::new(crate::http::full(body))
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
