//! On a cluster, an object's lifecycle runs on its home router only (see
//! [`crate::peers`]): a request is sent there, and so is any other change of its
//! container. A router that is not the home asks the home to start, stop or destroy the
//! object, to take its running container over, or to tell whether it serves, so that two
//! routers never each run one object's lifecycle.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::{FetchError, Object, StartError, StartOptions};
use crate::http::{error_response, full, Body};
use crate::peers::{Addressed, Peers};
use crate::runtime::{RuntimeError, Signal};

/// What a router asks an object's home to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "kebab-case")]
pub enum Lifecycle {
    /// Start the container (with these overrides); with `wait`, until `ports` (the
    /// class's when empty) answer.
    Start {
        wait: bool,
        ports: Vec<u16>,
        env_vars: BTreeMap<String, String>,
        entrypoint: Option<Vec<String>>,
        enable_internet: Option<bool>,
    },
    Stop {
        kill: bool,
        /// The signal by name (`SIGINT`); routers before it sent only `kill`.
        #[serde(default)]
        signal: Option<String>,
    },
    Destroy,
    /// Push the container's sleep back by `sleep_after` from now (renewActivityTimeout).
    Renew,
    /// Whether a healthy container takes requests now (a `wake = false` route).
    Serving,
    /// Take over the running container of this class version, which the asking router,
    /// no longer the home, lets go of.
    TakeOver {
        version: String,
    },
    /// Call a method of the object's class (RPC) in its instance there; `args` is JSON.
    Call {
        method: String,
        args: String,
    },
}

impl Lifecycle {
    pub(super) fn start(wait: bool, ports: &[u16], options: StartOptions) -> Lifecycle {
        Lifecycle::Start {
            wait,
            ports: ports.to_vec(),
            env_vars: options.env_vars,
            entrypoint: options.entrypoint,
            enable_internet: options.enable_internet,
        }
    }
}

/// The hint of a stop or destroy that the home could not be asked for.
const HOME_HINT: &str =
    "retry: the routers leave a router that does not answer out of homes for 30 s";

impl Object {
    /// [`Object::renew_activity_timeout`] where the object's lifecycle runs: on a
    /// cluster's router, the object's home does it.
    pub async fn renew(&self) -> Result<(), RuntimeError> {
        if let Some((peers, home)) = self.elsewhere() {
            return self.stop_at_home(&peers, home, Lifecycle::Renew).await;
        }
        self.renew_activity_timeout();
        Ok(())
    }

    /// Asks router `home` for `what`: its status and, for a failure, its message.
    pub(super) async fn at_home(
        &self,
        peers: &Peers,
        home: Ipv4Addr,
        what: &Lifecycle,
    ) -> Result<(StatusCode, String), String> {
        let object = Addressed {
            app: &self.inner.class.app.name,
            class: self.class_name(),
            id: self.inner.id,
            name: self.name(),
            port: 0,
        };
        match peers.lifecycle(home, object, what).await {
            Ok((status, body)) => {
                // A failure's message, from its error body; a success's answer as it is.
                let error = (!status.is_success())
                    .then(|| serde_json::from_slice::<crate::api::ErrorBody>(&body).ok())
                    .flatten();
                let text = error
                    .map(|e| e.message)
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                Ok((status, text))
            }
            Err(e) => {
                peers.mark_down(home);
                Err(e)
            }
        }
    }

    /// A start asked of the home.
    pub(super) async fn start_at_home(
        &self,
        peers: &Peers,
        home: Ipv4Addr,
        what: Lifecycle,
    ) -> Result<(), Arc<StartError>> {
        let failed = |message: String| {
            Arc::new(StartError::AtHome {
                object: self.describe(),
                router: home,
                message,
            })
        };
        match self.at_home(peers, home, &what).await {
            Ok((status, _)) if status.is_success() => Ok(()),
            Ok((_, message)) => Err(failed(message)),
            Err(e) => Err(failed(format!("it did not answer: {e}"))),
        }
    }

    /// A stop, destroy or renewal asked of the home.
    pub(super) async fn stop_at_home(
        &self,
        peers: &Peers,
        home: Ipv4Addr,
        what: Lifecycle,
    ) -> Result<(), RuntimeError> {
        let failed = |reason: String| RuntimeError::Unreachable {
            engine: format!("router {home}, the home of {}", self.describe()),
            reason,
            hint: HOME_HINT,
        };
        match self.at_home(peers, home, &what).await {
            Ok((status, _)) if status.is_success() => Ok(()),
            Ok((_, message)) => Err(failed(message)),
            Err(e) => Err(failed(format!("it did not answer: {e}"))),
        }
    }

    /// Does `what`, asked by another router, here: this router is the object's home, or
    /// the routers' lists differ for a moment (then it is done here rather than sent on,
    /// so that no request goes back and forth).
    pub async fn lifecycle_here(&self, what: Lifecycle) -> Response<Body> {
        let done = || Response::new(full("done"));
        match what {
            Lifecycle::Start {
                wait,
                ports,
                env_vars,
                entrypoint,
                enable_internet,
            } => {
                let options = StartOptions {
                    env_vars,
                    entrypoint,
                    enable_internet,
                };
                let started = if wait {
                    self.start_and_wait_here(&ports, options).await
                } else {
                    self.start_here(options).await
                };
                match started {
                    Ok(()) => done(),
                    Err(e) => FetchError::Start(e).into_response(),
                }
            }
            Lifecycle::Stop { kill, signal } => {
                let asked = signal.as_deref().and_then(Signal::from_name);
                let signal = asked.unwrap_or(if kill { Signal::Kill } else { Signal::Term });
                match self.stop_here(signal).await {
                    Ok(()) => done(),
                    Err(e) => runtime_failure(&e),
                }
            }
            Lifecycle::Destroy => match self.destroy_here().await {
                Ok(()) => done(),
                Err(e) => runtime_failure(&e),
            },
            Lifecycle::Renew => {
                self.renew_activity_timeout();
                done()
            }
            Lifecycle::Serving => {
                Response::new(full(self.phase().serving().is_some().to_string()))
            }
            Lifecycle::Call { method, args } => match self.call_here(&method, args).await {
                Ok(answer) => Response::new(full(answer)),
                Err(message) => {
                    error_response(StatusCode::UNPROCESSABLE_ENTITY, "call-failed", &message)
                }
            },
            Lifecycle::TakeOver { version } => match self.take_over_at(&version).await {
                Ok(true) => Response::new(full("taken over")),
                Ok(false) => error_response(
                    StatusCode::CONFLICT,
                    "other-version",
                    "this router runs another version of the class: the container's router puts it to sleep",
                ),
                Err(e) => FetchError::Start(e).into_response(),
            },
        }
    }
}

fn runtime_failure(e: &RuntimeError) -> Response<Body> {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "engine-error",
        &e.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_router_asks_travels_as_json() {
        let asks = [
            Lifecycle::start(true, &[8080], StartOptions::default()),
            Lifecycle::Stop {
                kill: true,
                signal: None,
            },
            Lifecycle::Destroy,
            Lifecycle::Serving,
            Lifecycle::TakeOver {
                version: "v1".into(),
            },
            Lifecycle::Call {
                method: "greet".into(),
                args: "[\"you\"]".into(),
            },
        ];
        for ask in asks {
            let wire = serde_json::to_string(&ask).expect("JSON");
            assert_eq!(serde_json::from_str::<Lifecycle>(&wire).ok(), Some(ask));
        }
    }
}
