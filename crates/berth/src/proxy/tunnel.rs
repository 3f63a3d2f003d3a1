//! An upgraded connection (a WebSocket, or any HTTP/1.1 upgrade) between a client and a
//! container: bytes copied both ways. As in Cloudflare's library, an open socket is a
//! request in flight until it closes, so the container does not sleep under a quiet one;
//! each chunk renews the activity too, and the close does.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::activity::{InFlight, Renewer};

/// Copies bytes both ways between the client's and the container's upgraded connections
/// until both sides have closed.
pub(super) async fn tunnel(client: OnUpgrade, container: OnUpgrade, in_flight: InFlight) {
    let (client, container) = match tokio::try_join!(client, container) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!("upgrade failed: {e}");
            return;
        }
    };
    let renewer = in_flight.renewer();
    let (client_read, client_write) = tokio::io::split(TokioIo::new(client));
    let (container_read, container_write) = tokio::io::split(TokioIo::new(container));
    tokio::join!(
        copy(client_read, container_write, &renewer),
        copy(container_read, client_write, &renewer),
    );
    drop(in_flight);
}

/// Copies `from` into `to` until `from` ends or either fails, then closes `to`'s side.
async fn copy(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    renewer: &Renewer,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                renewer.renew();
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}
