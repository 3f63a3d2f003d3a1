//! Running a command in a container, as `docker exec` does: for `berth exec`.

use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::ResizeExecOptionsBuilder;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::DockerRuntime;
use crate::runtime::RuntimeError;

/// How a command runs in the container.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub command: Vec<String>,
    /// A pseudo-terminal for the command, of this size (columns, rows): for a person at
    /// a terminal. Its output then comes as one stream.
    pub tty: Option<(u16, u16)>,
}

impl DockerRuntime {
    /// Runs `options.command` in container `id`, with `input` as its standard input and
    /// its output written to `out` and `err` (all to `out` with a terminal); returns its
    /// exit code once it has ended.
    pub async fn exec<I, O, E>(
        &self,
        id: &str,
        options: &ExecOptions,
        mut input: I,
        mut out: O,
        mut err: E,
    ) -> Result<i64, RuntimeError>
    where
        I: AsyncRead + Unpin + Send + 'static,
        O: AsyncWrite + Unpin,
        E: AsyncWrite + Unpin,
    {
        let config = ExecConfig {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(options.tty.is_some()),
            cmd: Some(options.command.clone()),
            ..ExecConfig::default()
        };
        let created = self
            .docker
            .create_exec(id, config)
            .await
            .map_err(|e| self.error("run a command in container", id, e))?;
        let start = StartExecOptions {
            detach: false,
            tty: options.tty.is_some(),
            output_capacity: None,
        };
        let started = self
            .docker
            .start_exec(&created.id, Some(start))
            .await
            .map_err(|e| self.error("run a command in container", id, e))?;
        let StartExecResults::Attached {
            mut output,
            input: mut stdin,
        } = started
        else {
            return Err(self.error(
                "attach to a command in container",
                id,
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 500,
                    message: "the engine ran the command detached".into(),
                },
            ));
        };
        if let Some((columns, rows)) = options.tty {
            let size = ResizeExecOptionsBuilder::new()
                .w(i32::from(columns))
                .h(i32::from(rows))
                .build();
            // The command still runs in a terminal of the engine's default size.
            let _ = self.docker.resize_exec(&created.id, size).await;
        }
        // The input is copied on a task of its own: the command may end before its input.
        let feeding = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut input, &mut stdin).await;
            let _ = stdin.shutdown().await;
        });
        while let Some(chunk) = output.next().await {
            let chunk = chunk.map_err(|e| self.error("read the output of a command in", id, e))?;
            let written = match chunk {
                LogOutput::StdErr { message } => err.write_all(&message).await,
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    out.write_all(&message).await
                }
                LogOutput::StdIn { .. } => Ok(()),
            };
            // The reader went away (a closed pipe): the command's output has nowhere to go.
            if written.is_err() {
                break;
            }
            let _ = out.flush().await;
        }
        feeding.abort();
        let _ = err.flush().await;
        let inspected = self
            .docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| self.error("learn how a command ended in container", id, e))?;
        Ok(inspected.exit_code.unwrap_or(-1))
    }
}
