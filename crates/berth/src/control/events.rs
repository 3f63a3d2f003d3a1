//! `GET /v1/events`: lifecycle events as server-sent events, one JSON object per event:
//! first the latest ones (up to [`crate::platform::BACKLOG`]), then each new one for as long as the client
//! listens (or, with `follow=false`, none: the stream ends after the latest).

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde::Serialize;
use tokio::sync::broadcast::{error::RecvError, Receiver};

use crate::event::{Event, EventKind};
use crate::http::{Body, BoxError};
use crate::platform::{AppEvent, AppEventKind};

/// One event as the stream sends it.
#[derive(Serialize)]
struct Sent<'a> {
    /// RFC 3339, UTC.
    time: String,
    app: &'a str,
    /// Empty for a deployment's events.
    class: &'a str,
    object: &'a str,
    container_id: &'a str,
    /// `started`, `adopted`, `healthy`, `sleeping`, `paused`, `thawed`, `killed`, `stopped`, `error` or `egress-denied` for an
    /// object; `rollout` for a step of a rollout, `deployment` for its outcome.
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment: Option<i64>,
    /// A deployment's outcome: `active` or `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    /// The event as `berth dev` prints it.
    text: String,
}

fn kind(event: &Event) -> &'static str {
    match event.kind {
        EventKind::Started { .. } => "started",
        EventKind::Standby { .. } => "standby",
        EventKind::Assigned { .. } => "assigned",
        EventKind::Adopted => "adopted",
        EventKind::Healthy { .. } => "healthy",
        EventKind::Sleeping { .. } => "sleeping",
        EventKind::Paused { .. } => "paused",
        EventKind::Thawed { .. } => "thawed",
        EventKind::Killed { .. } => "killed",
        EventKind::Stopped { .. } => "stopped",
        EventKind::Error { .. } => "error",
        EventKind::EgressDenied { .. } => "egress-denied",
    }
}

fn frame(e: &AppEvent) -> String {
    let mut sent = Sent {
        time: crate::timestamp::format(e.time),
        app: &e.app,
        class: "",
        object: "",
        container_id: "",
        kind: "",
        exit_code: None,
        deployment: None,
        status: None,
        text: e.to_string(),
    };
    match &e.kind {
        AppEventKind::Object(event) => {
            sent.class = &event.class;
            sent.object = &event.object;
            sent.container_id = &event.container_id;
            sent.kind = kind(event);
            if let EventKind::Stopped { exit_code, .. } = event.kind {
                sent.exit_code = Some(exit_code);
            }
        }
        AppEventKind::Rollout { deployment, .. } => {
            sent.kind = "rollout";
            sent.deployment = Some(*deployment);
        }
        AppEventKind::Deployment {
            deployment, status, ..
        } => {
            sent.kind = "deployment";
            sent.deployment = Some(*deployment);
            sent.status = Some(status.as_str());
        }
    }
    format!(
        "data: {}\n\n",
        serde_json::to_string(&sent).unwrap_or_default()
    )
}

/// The query of the stream: `app` to keep one app's events, `follow=false` to end after the
/// latest.
pub(super) struct Asked {
    pub(super) app: Option<String>,
    pub(super) follow: bool,
}

/// The response that streams `recent`, then `events` while `follow` (of `app` only, if
/// given). A client too slow to keep up is told how many events it missed, and the stream
/// goes on.
pub(super) fn stream(
    (recent, events): (Vec<AppEvent>, Receiver<AppEvent>),
    asked: Asked,
) -> Response<Body> {
    let Asked { app, follow } = asked;
    let ours = move |e: &AppEvent| app.as_ref().is_none_or(|a| *a == e.app);
    // A comment at once, so that the client knows the stream is open, then the backlog.
    let mut first = String::from(": berth events\n\n");
    for e in recent.iter().filter(|e| ours(e)) {
        first.push_str(&frame(e));
    }
    let opening =
        futures_util::stream::once(
            async move { Ok::<_, BoxError>(Frame::data(Bytes::from(first))) },
        );
    let live = futures_util::stream::unfold(follow.then_some(events), move |events| {
        let ours = ours.clone();
        async move {
            let mut events = events?;
            loop {
                let text = match events.recv().await {
                    Ok(e) if !ours(&e) => continue,
                    Ok(e) => frame(&e),
                    Err(RecvError::Lagged(n)) => format!("event: lagged\ndata: {n}\n\n"),
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(Frame::data(Bytes::from(text))), Some(events)));
            }
        }
    });
    let frames = futures_util::StreamExt::chain(opening, live);
    let mut response = Response::new(StreamBody::new(frames).boxed());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
