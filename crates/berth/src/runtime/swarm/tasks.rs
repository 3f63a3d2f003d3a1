//! What Swarm's task list says of a service: whether its task ended, and how to reach it.

use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use bollard::models::{Service, Task, TaskState};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::runtime::ExitStatus;

/// The replicas a service asks for.
pub(super) fn replicas(service: &Service) -> Option<i64> {
    service
        .spec
        .as_ref()?
        .mode
        .as_ref()?
        .replicated
        .as_ref()?
        .replicas
}

/// Whether Swarm gave up on `task` of `service`: it wants the task shut down while the
/// service still asks for a replica, which is what a lost node does to a service that is
/// never restarted. Such a task may still be reported running, on the lost node.
pub(super) fn given_up(service: &Service, task: &Task) -> bool {
    task.desired_state
        .is_some_and(|desired| desired != TaskState::RUNNING)
        && replicas(service).unwrap_or(0) > 0
}

/// How long Swarm waits between SIGTERM and SIGKILL when it stops the service's tasks:
/// the grace it was created with, or Swarm's default of 10 s.
pub(super) fn stop_grace(service: &Service) -> Duration {
    service
        .spec
        .as_ref()
        .and_then(|s| {
            s.task_template
                .as_ref()?
                .container_spec
                .as_ref()?
                .stop_grace_period
        })
        .and_then(|nanos| u64::try_from(nanos).ok())
        .map_or(Duration::from_secs(10), Duration::from_nanos)
}

/// How a task ended, if it has.
pub(super) fn exit_of(task: &Task) -> Option<ExitStatus> {
    let status = task.status.as_ref()?;
    let ended = matches!(
        status.state?,
        TaskState::COMPLETE
            | TaskState::FAILED
            | TaskState::SHUTDOWN
            | TaskState::REJECTED
            | TaskState::ORPHANED
            | TaskState::REMOVE
    );
    ended.then(|| ExitStatus {
        code: status
            .container_status
            .as_ref()
            .and_then(|c| c.exit_code)
            .unwrap_or(-1),
        oom_killed: false,
    })
}

/// The address of task `task` on overlay network `network`, as the engine at `host`
/// (`unix:///path` or `tcp://host:port`) tells it. Read from the engine's JSON by hand:
/// bollard's `Task` has no `NetworksAttachments`. The task's own address, not the
/// overlay's DNS: a lost node's tasks stay in the DNS for minutes, under the same
/// `tasks.<service>` name as the task that replaces them.
pub(super) async fn address(host: &str, task: &str, network: &str) -> io::Result<Option<Ipv4Addr>> {
    let path = format!("/tasks/{task}");
    let body = tokio::time::timeout(std::time::Duration::from_secs(10), get(host, &path))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{host} did not answer {path} within 10 s"),
            )
        })??;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| io::Error::other(format!("the engine's answer to {path} is not JSON: {e}")))?;
    Ok(overlay_address(&value, network))
}

/// The address in `task`'s attachment to `network`, without its prefix length.
fn overlay_address(task: &serde_json::Value, network: &str) -> Option<Ipv4Addr> {
    task["NetworksAttachments"]
        .as_array()?
        .iter()
        .filter(|a| a["Network"]["Spec"]["Name"] == network || a["Network"]["ID"] == network)
        .flat_map(|a| a["Addresses"].as_array().into_iter().flatten())
        .filter_map(|address| address.as_str()?.split('/').next()?.parse().ok())
        .next()
}

/// `GET path` from the engine at `host`; the body of a 200 answer.
async fn get(host: &str, path: &str) -> io::Result<Bytes> {
    let request = http::Request::get(path)
        .header(http::header::HOST, "docker")
        .body(Empty::<Bytes>::new())
        .map_err(io::Error::other)?;
    let response = if let Some(socket) = host.strip_prefix("unix://") {
        let stream = tokio::net::UnixStream::connect(socket).await?;
        send(TokioIo::new(stream), request).await?
    } else {
        let authority = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
            .unwrap_or(host);
        let stream = tokio::net::TcpStream::connect(authority).await?;
        send(TokioIo::new(stream), request).await?
    };
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes();
    if !status.is_success() {
        return Err(io::Error::other(format!(
            "{path}: {status}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    Ok(body)
}

async fn send<T>(
    io: TokioIo<T>,
    request: http::Request<Empty<Bytes>>,
) -> io::Result<http::Response<hyper::body::Incoming>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(connection);
    sender.send_request(request).await.map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_swarm_gave_up_on_is_told_from_one_being_stopped() {
        use bollard::models::{ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated};
        let service = |replicas| Service {
            spec: Some(ServiceSpec {
                mode: Some(ServiceSpecMode {
                    replicated: Some(ServiceSpecModeReplicated {
                        replicas: Some(replicas),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let task = |desired| Task {
            desired_state: Some(desired),
            ..Default::default()
        };
        // Its node lost: Swarm wants it shut down, the service still wants one.
        assert!(given_up(&service(1), &task(TaskState::SHUTDOWN)));
        // Stopped by berth (scaled to 0), or running as it should.
        assert!(!given_up(&service(0), &task(TaskState::SHUTDOWN)));
        assert!(!given_up(&service(1), &task(TaskState::RUNNING)));
    }

    #[test]
    fn the_address_on_the_overlay_is_found_among_the_attachments() {
        let task = serde_json::json!({
            "NetworksAttachments": [
                { "Network": { "ID": "i1", "Spec": { "Name": "ingress" } }, "Addresses": ["10.0.0.9/24"] },
                { "Network": { "ID": "o1", "Spec": { "Name": "berth" } }, "Addresses": ["10.199.3.7/24"] }
            ]
        });
        assert_eq!(
            overlay_address(&task, "berth"),
            Some(Ipv4Addr::new(10, 199, 3, 7))
        );
        assert_eq!(
            overlay_address(&task, "o1"),
            Some(Ipv4Addr::new(10, 199, 3, 7))
        );
        assert_eq!(overlay_address(&task, "other"), None);
        assert_eq!(overlay_address(&serde_json::json!({}), "berth"), None);
    }
}
