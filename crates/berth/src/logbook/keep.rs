//! Keeping a container's output: one task per container, from its start (or re-adoption)
//! until its output ends with it.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{ObjectLog, Stored};
use crate::runtime::{Output, Runtime, RuntimeError};

/// Lines written to the file at once, at most.
const BATCH: usize = 512;

/// Follows the output of `container_id` into `log` until the container stops. A container
/// this process re-adopts was followed before: its lines resume after the last one kept.
pub(crate) async fn keep(
    runtime: Arc<dyn Runtime>,
    container_id: String,
    name: Option<String>,
    log: ObjectLog,
) {
    let instance: String = container_id.chars().take(12).collect();
    let resumed = {
        let instance = instance.clone();
        tokio::task::spawn_blocking(move || {
            let since = log
                .last()
                .filter(|last| last.instance == instance)
                .map(|last| last.time);
            (since, log)
        })
        .await
    };
    let Ok((since, mut log)) = resumed else {
        return;
    };
    let (tx, mut rx) = mpsc::channel::<Output>(BATCH * 2);
    let follower = {
        let id = container_id.clone();
        tokio::spawn(async move { runtime.follow_logs(&id, since, tx).await })
    };
    let stored = |output: Output| Stored {
        time: output.time,
        name: name.clone(),
        instance: instance.clone(),
        stream: output.stream,
        line: output.line,
    };
    let mut warned = false;
    while let Some(output) = rx.recv().await {
        let mut batch = vec![stored(output)];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(output) => batch.push(stored(output)),
                Err(_) => break,
            }
        }
        let written = tokio::task::spawn_blocking(move || {
            let result = log.append(&batch);
            (result, log)
        })
        .await;
        let Ok((result, back)) = written else {
            return;
        };
        log = back;
        if let Err(e) = result {
            // Once per container: a full disk must not flood berth's own log.
            if !warned {
                tracing::warn!("the output of container {container_id} is not kept: {e}");
                warned = true;
            }
        }
    }
    match follower.await {
        Ok(Err(e)) if !matches!(e, RuntimeError::NotFound { .. }) => {
            tracing::warn!("stopped keeping the output of container {container_id}: {e}");
        }
        _ => {}
    }
}
