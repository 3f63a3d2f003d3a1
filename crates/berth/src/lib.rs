//! berth: self-hosted, on-demand containers addressed by name.
//!
//! Every request goes to an [`Object`] picked by name from a [`Namespace`]. There is one
//! live object per name; it owns at most one container, starts it the first time a
//! request needs it, waits until it is ready, proxies to it, and stops it after it has
//! been idle for `sleep_after`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use berth::{App, ContainerClass, DockerRuntime, NoHooks, Store};
//!
//! # async fn demo(request: http::Request<berth::Body>) -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Arc::new(DockerRuntime::connect().await?);
//! let app = App::new("hello", runtime, Store::open(".berth/state.db")?);
//! let mut class = ContainerClass::new("MyContainer", "berth-dev/hello:latest");
//! class.default_port = Some(8080);
//! let namespace = app.namespace(class, Arc::new(NoHooks));
//! let response = namespace.get_container(Some("container")).fetch(request).await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod app;
pub mod build;
pub mod class;
pub mod dev;
pub mod event;
pub mod hooks;
pub mod http;
pub mod id;
pub mod lifecycle;
pub mod manifest;
pub mod namespace;
pub mod object;
pub mod proxy;
mod readiness;
pub mod router;
pub mod runtime;
pub mod server;
pub mod store;

pub use app::App;
pub use class::{parse_duration, ContainerClass, InstanceType};
pub use event::{Event, EventKind};
pub use hooks::{Expiry, Hooks, NoHooks, ObjectError, StopParams};
pub use http::{switch_port, Body, BoxError, TARGET_PORT_HEADER};
pub use id::{IdError, ObjectId};
pub use lifecycle::{State, StopReason};
pub use namespace::Namespace;
pub use object::{FetchError, Object, StartError, StartOptions};
pub use router::{Env, Router, Worker};
pub use runtime::docker::{DockerRuntime, Reach};
pub use runtime::{ExitStatus, Runtime, RuntimeError, Signal};
pub use store::{Storage, Store};
