//! `GET /v1/events`: lifecycle events as server-sent events, one JSON object per event,
//! for as long as the client listens.

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde::Serialize;
use tokio::sync::broadcast::{error::RecvError, Receiver};

use crate::event::{Event, EventKind};
use crate::http::{Body, BoxError};
use crate::platform::AppEvent;

/// One event as the stream sends it.
#[derive(Serialize)]
struct Sent<'a> {
    app: &'a str,
    class: &'a str,
    object: &'a str,
    container_id: &'a str,
    /// `started`, `adopted`, `healthy`, `sleeping`, `killed`, `stopped` or `error`.
    kind: &'static str,
    /// The event as `berth dev` prints it.
    text: String,
}

fn kind(event: &Event) -> &'static str {
    match event.kind {
        EventKind::Started { .. } => "started",
        EventKind::Adopted => "adopted",
        EventKind::Healthy { .. } => "healthy",
        EventKind::Sleeping { .. } => "sleeping",
        EventKind::Killed { .. } => "killed",
        EventKind::Stopped { .. } => "stopped",
        EventKind::Error { .. } => "error",
    }
}

/// The response that streams `events` (of `app` only, if given). A client too slow to
/// keep up is told how many events it missed, and the stream goes on.
pub(super) fn stream(events: Receiver<AppEvent>, app: Option<String>) -> Response<Body> {
    let frames =
        futures_util::stream::unfold((events, app, true), |(mut events, app, first)| async move {
            if first {
                // A comment at once, so that the client knows the stream is open.
                let hello = Bytes::from_static(b": berth events\n\n");
                return Some((Ok::<_, BoxError>(Frame::data(hello)), (events, app, false)));
            }
            loop {
                let text = match events.recv().await {
                    Ok(e) if app.as_ref().is_some_and(|a| *a != e.app) => continue,
                    Ok(e) => {
                        let sent = Sent {
                            app: &e.app,
                            class: &e.event.class,
                            object: &e.event.object,
                            container_id: &e.event.container_id,
                            kind: kind(&e.event),
                            text: e.event.to_string(),
                        };
                        format!(
                            "data: {}\n\n",
                            serde_json::to_string(&sent).unwrap_or_default()
                        )
                    }
                    Err(RecvError::Lagged(n)) => format!("event: lagged\ndata: {n}\n\n"),
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(Frame::data(Bytes::from(text))), (events, app, false)));
            }
        });
    let mut response = Response::new(StreamBody::new(frames).boxed());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
