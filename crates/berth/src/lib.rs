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
//! let app = App::new("hello", runtime, Store::open(".berth/state.db")?)?;
//! let mut class = ContainerClass::new("MyContainer", "berth-dev/hello:latest");
//! class.default_port = Some(8080);
//! let namespace = app.namespace(class, Arc::new(NoHooks));
//! let response = namespace.get_container(Some("container")).fetch(request).await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

// Imports point down this list; a module and its own children may refer to each other.
// Floor 1: the shared vocabulary.
pub mod activity;
pub mod api;
pub mod class;
pub mod cron;
pub mod egress;
pub mod http;
pub mod id;
pub mod lease;
pub mod lifecycle;
pub mod metrics;
pub mod runtime;
pub mod store;
pub mod timestamp;
pub mod tls;
// Floor 2: events and forwarding.
pub mod event;
pub mod logbook;
pub mod peers;
pub mod proxy;
// Floor 3: what objects rely on.
mod context;
mod readiness;
// Floor 4: the object.
pub mod object;
// Floor 5: names to objects.
pub mod namespace;
// Floor 6: apps and workers.
pub mod app;
pub mod worker;
// Floor 7: what stands in front.
pub mod build;
pub mod cluster_store;
pub mod hosts;
pub mod manifest;
pub mod router;
pub mod server;
// Floor 8: what the commands run.
pub mod control;
pub mod deploy;
pub mod js;
pub mod platform;
pub mod serve;
pub mod session;

pub use app::App;
pub use build::Builder;
pub use class::{parse_duration, ContainerClass, InstanceType};
pub use event::{Event, EventKind};
pub use http::{
    switch_port, Body, BoxError, OBJECT_ID_HEADER, OBJECT_NAME_HEADER, TARGET_PORT_HEADER,
};
pub use id::{IdError, ObjectId};
pub use lifecycle::{State, StopReason};
pub use namespace::Namespace;
pub use object::{
    Alarm, ErrorKind, Expiry, FetchError, Hooks, NoHooks, Object, ObjectError, StartError,
    StartOptions, StopParams,
};
pub use router::Router;
pub use runtime::docker::{DockerRuntime, Reach};
pub use runtime::swarm::SwarmRuntime;
pub use runtime::{ExitStatus, Runtime, RuntimeError, Signal};
pub use store::{Storage, Store};
pub use worker::{Binding, Env, Worker};
