//! `berth events`: what happens to the apps of a `berth serve`, from its control API's
//! stream of server-sent events.

use berth::api::PREFIX;
use berth::http::percent_encode;

use crate::remote::Server;

pub async fn run(
    app: Option<String>,
    follow: bool,
    json: bool,
    server: Server,
) -> anyhow::Result<()> {
    let client = server.client()?;
    let mut path = format!("{PREFIX}/events?follow={follow}");
    if let Some(app) = &app {
        path.push_str("&app=");
        path.push_str(&percent_encode(app));
    }
    let mut lagged = false;
    client
        .each_line(&path, |line| {
            if line == "event: lagged" {
                lagged = true;
                return true;
            }
            let Some(data) = line.strip_prefix("data: ") else {
                return true;
            };
            if std::mem::take(&mut lagged) {
                eprintln!("warning: {data} events were missed: this client fell behind");
            } else if json {
                println!("{data}");
            } else {
                match serde_json::from_str::<serde_json::Value>(data) {
                    Ok(event) => println!("{}", text(&event)),
                    Err(e) => {
                        eprintln!("warning: an event berth does not understand ({e}): {data}")
                    }
                }
            }
            true
        })
        .await?;
    Ok(())
}

/// `2026-11-26T05:30:35.123Z shop App "alice": healthy after 120 ms`
fn text(event: &serde_json::Value) -> String {
    let field = |name: &str| event[name].as_str().unwrap_or_default();
    let time = field("time");
    let millis = match time.get(..23) {
        Some(head) => format!("{head}Z"),
        None => time.to_string(),
    };
    format!("{millis} {} {}", field("app"), field("text"))
}
