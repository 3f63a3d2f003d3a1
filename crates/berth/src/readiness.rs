//! Knowing the moment a container can serve.
//!
//! Cloudflare's library polls every 300 ms. berth tries connects with a backoff that
//! starts at 1 ms and is capped at 5 ms, so an opening port is seen within a few
//! milliseconds; a refused connect to a local bridge address costs microseconds. Then, if
//! the class has a ping endpoint, one HTTP request must get any answer; or, if it has a
//! `ready` check, the check's path must answer one of its statuses, asked every interval.

use std::time::Duration;

use tokio::time::{sleep, timeout, Instant};

use crate::class::ReadyCheck;
use crate::proxy::Pool;

const FIRST_BACKOFF: Duration = Duration::from_millis(1);
const MAX_BACKOFF: Duration = Duration::from_millis(5);
const CONNECT_ATTEMPT: Duration = Duration::from_millis(500);
const PROBE_ATTEMPT: Duration = Duration::from_secs(5);

/// Why a container did not become ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotReady {
    /// The port was never reachable.
    Port(u16),
    /// The port opened but the ping endpoint never answered over HTTP.
    Probe { port: u16, endpoint: String },
    /// The port opened but the `ready` check's path never answered a status it takes;
    /// `last` is the last status it answered, if any.
    Check {
        port: u16,
        path: String,
        last: Option<u16>,
    },
}

/// What must answer over HTTP once the ports open.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Probe<'a> {
    /// The ping endpoint: any answer.
    Ping { port: u16, endpoint: &'a str },
    /// The class's `ready` check.
    Ready { port: u16, check: &'a ReadyCheck },
}

/// Waits until every port of the pool's container accepts a connection and the probe
/// (if any) passes, or `deadline` passes.
pub(crate) async fn wait_until_ready(
    pool: &Pool,
    ports: &[u16],
    probe: Option<Probe<'_>>,
    deadline: Instant,
) -> Result<(), NotReady> {
    for port in ports {
        retry(deadline, || async {
            matches!(
                timeout(CONNECT_ATTEMPT, pool.endpoint().connect(*port)).await,
                Ok(Ok(_))
            )
        })
        .await
        .map_err(|()| NotReady::Port(*port))?;
    }
    match probe {
        None => Ok(()),
        Some(Probe::Ping { port, endpoint }) => {
            let (host, path) = split_endpoint(endpoint);
            retry(deadline, || ping(pool, port, &host, &path))
                .await
                .map_err(|()| NotReady::Probe {
                    port,
                    endpoint: endpoint.to_string(),
                })
        }
        Some(Probe::Ready { port, check }) => checked(pool, port, check, deadline).await,
    }
}

/// Asks the check's path every interval until it answers a status the check takes.
async fn checked(
    pool: &Pool,
    port: u16,
    check: &ReadyCheck,
    deadline: Instant,
) -> Result<(), NotReady> {
    let (host, path) = split_endpoint(&check.path);
    let mut last = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = timeout(PROBE_ATTEMPT.min(left), pool.status(port, &host, &path))
            .await
            .ok()
            .flatten();
        if let Some(status) = answer {
            if check.accepts(status) {
                return Ok(());
            }
            last = Some(status);
        }
        if Instant::now()
            .checked_add(check.interval)
            .is_none_or(|next| next >= deadline)
        {
            return Err(NotReady::Check {
                port,
                path: check.path.clone(),
                last,
            });
        }
        sleep(check.interval).await;
    }
}

async fn retry<F, Fut>(deadline: Instant, mut attempt: F) -> Result<(), ()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        if attempt().await {
            return Ok(());
        }
        if Instant::now() + backoff >= deadline {
            return Err(());
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn ping(pool: &Pool, port: u16, host: &str, path: &str) -> bool {
    timeout(PROBE_ATTEMPT, pool.status(port, host, path))
        .await
        .is_ok_and(|status| status.is_some())
}

/// `ping` → (`ping`, `/`); `localhost/health?x=1` → (`localhost`, `/health?x=1`).
fn split_endpoint(endpoint: &str) -> (String, String) {
    if endpoint.starts_with('/') {
        return ("localhost".to_string(), endpoint.to_string());
    }
    let trimmed = endpoint.trim_start_matches("http://");
    match trimmed.split_once('/') {
        Some((host, path)) => (host.to_string(), format!("/{path}")),
        None => (trimmed.to_string(), "/".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::split_endpoint;

    #[test]
    fn ping_endpoints_split_into_host_and_path() {
        assert_eq!(split_endpoint("ping"), ("ping".into(), "/".into()));
        assert_eq!(
            split_endpoint("localhost/health?x=1"),
            ("localhost".into(), "/health?x=1".into())
        );
        assert_eq!(split_endpoint("http://a/b"), ("a".into(), "/b".into()));
        assert_eq!(
            split_endpoint("/health"),
            ("localhost".into(), "/health".into())
        );
    }
}
