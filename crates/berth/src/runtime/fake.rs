//! An in-memory container engine that follows a script, for unit tests of the lifecycle.
//!
//! Everything runs on the test's own runtime, with no sockets and no threads: connections
//! to a container are in-memory pipes to a small HTTP app, and every delay is a Tokio
//! timer. So a test under `tokio::time::pause()` is deterministic and takes milliseconds,
//! whatever the delays it scripts. It proves the lifecycle's logic, never the engine's
//! behaviour: that is what the tests against the real Docker Engine are for.
//!
//! An image is registered with a [`Behaviour`]; creating a container of an unknown image
//! fails as a missing image does. The app in each container answers:
//! `/` with `ok <object name>`, `/sleep/<ms>` after that many milliseconds, `/hang` never,
//! and `/exit/<code>` by exiting with that code.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::{
    Conn, ContainerInfo, ContainerSpec, Created, Dial, Endpoint, ExitStatus, Output, Runtime,
    RuntimeError, Selector, Signal, Stream, VolumeInfo,
};
use crate::http::{full, Body};

const ENGINE: &str = "the fake engine";

/// How the containers of one image behave. The defaults take about as long as the Docker
/// Engine and a small server do, so that a race that needs time to happen can happen.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// How long `create` takes. Default 40 ms.
    pub create_delay: Duration,
    /// How long `start` takes. Default 120 ms.
    pub start_delay: Duration,
    /// How long after the start the ports accept connections; `None`: never. Default 5 ms.
    pub ready_after: Option<Duration>,
    /// The ports the app listens on; `None`: the ones the container spec names.
    pub listens_on: Option<Vec<u16>>,
    /// The process exits by itself this long after its start, with this code. With no
    /// delay at all, it exits before the engine can give it an address.
    pub exit_after: Option<(Duration, i64)>,
    /// How long after SIGTERM (or SIGINT) the process exits, with code 0; `None`: it
    /// ignores the signal and only SIGKILL ends it.
    pub term_exit: Option<Duration>,
    /// What the container writes to its log.
    pub logs: Vec<String>,
}

impl Default for Behaviour {
    fn default() -> Behaviour {
        Behaviour {
            create_delay: Duration::from_millis(40),
            start_delay: Duration::from_millis(120),
            ready_after: Some(Duration::from_millis(5)),
            listens_on: None,
            exit_after: None,
            term_exit: Some(Duration::ZERO),
            logs: Vec::new(),
        }
    }
}

/// A scripted, in-memory [`Runtime`].
pub struct FakeRuntime {
    engine: Arc<Mutex<Engine>>,
}

#[derive(Default)]
struct Engine {
    images: HashMap<String, Behaviour>,
    containers: BTreeMap<String, Container>,
    /// The signals each container received, kept after its removal.
    signals: HashMap<String, Vec<Signal>>,
    created: usize,
    serial: u64,
    /// While set, every call fails as if the engine were gone.
    down: bool,
    /// The objects' volumes, by name, with their owner.
    volumes: BTreeMap<String, (String, VolumeInfo)>,
}

struct Container {
    name: String,
    spec: ContainerSpec,
    behaviour: Behaviour,
    started_at: Option<Instant>,
    exit: watch::Sender<Option<ExitStatus>>,
    /// The connections open to the app, closed when it exits.
    connections: Vec<AbortHandle>,
    /// Requests the app has received.
    requests: usize,
    /// Frozen: it takes no new connection until it is thawed.
    paused: bool,
}

impl Container {
    fn running(&self) -> bool {
        self.started_at.is_some() && self.exit.borrow().is_none()
    }
}

impl FakeRuntime {
    pub fn new() -> Arc<FakeRuntime> {
        Arc::new(FakeRuntime {
            engine: Arc::default(),
        })
    }

    /// Makes `image` known, with the behaviour of its containers.
    pub fn image(&self, image: &str, behaviour: Behaviour) {
        self.lock().images.insert(image.to_string(), behaviour);
    }

    /// How many containers were created so far.
    pub fn created(&self) -> usize {
        self.lock().created
    }

    /// The ids of the containers that run now.
    pub fn running(&self) -> Vec<String> {
        let engine = self.lock();
        engine
            .containers
            .iter()
            .filter(|(_, c)| c.running())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How many containers exist (running or not): those not removed.
    pub fn existing(&self) -> usize {
        self.lock().containers.len()
    }

    /// The signals container `id` received while it ran, in order, even once removed.
    pub fn signals(&self, id: &str) -> Vec<Signal> {
        self.lock().signals.get(id).cloned().unwrap_or_default()
    }

    /// What container `id` was made of, while it exists.
    pub fn spec(&self, id: &str) -> Option<ContainerSpec> {
        self.lock().containers.get(id).map(|c| c.spec.clone())
    }

    /// Whether container `id` is paused.
    pub fn is_paused(&self, id: &str) -> bool {
        self.lock().containers.get(id).is_some_and(|c| c.paused)
    }

    /// Requests container `id`'s app received.
    pub fn requests(&self, id: &str) -> usize {
        self.lock()
            .containers
            .get(id)
            .map(|c| c.requests)
            .unwrap_or(0)
    }

    /// Forgets the signals of removed containers, for runs that make very many.
    pub fn forget_history(&self) {
        let mut engine = self.lock();
        let Engine {
            containers,
            signals,
            ..
        } = &mut *engine;
        signals.retain(|id, _| containers.contains_key(id));
    }

    /// Makes container `id` exit now with `code`, as a crash does.
    pub fn crash(&self, id: &str, code: i64) {
        exit(&self.engine, id, code);
    }

    /// Takes the engine away (`true`) or brings it back (`false`).
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    fn lock(&self) -> MutexGuard<'_, Engine> {
        lock(&self.engine)
    }

    fn up(&self) -> Result<MutexGuard<'_, Engine>, RuntimeError> {
        let engine = self.lock();
        if engine.down {
            return Err(RuntimeError::Unreachable {
                engine: ENGINE.to_string(),
                reason: "it was taken down by the test".to_string(),
                hint: "bring it back with set_down(false)",
            });
        }
        Ok(engine)
    }

    fn info(&self, id: &str, c: &Container) -> ContainerInfo {
        let running = c.running();
        ContainerInfo {
            id: id.to_string(),
            name: c.name.clone(),
            identity: Some(c.spec.identity.clone()),
            image: c.spec.image.clone(),
            labels: c.spec.labels.clone(),
            running,
            exit: *c.exit.borrow(),
            endpoint: running.then(|| self.endpoint(id)),
        }
    }

    fn endpoint(&self, id: &str) -> Endpoint {
        Endpoint::Dialer(Arc::new(FakeDialer {
            engine: Arc::downgrade(&self.engine),
            id: id.to_string(),
        }))
    }
}

fn lock(engine: &Mutex<Engine>) -> MutexGuard<'_, Engine> {
    engine.lock().unwrap_or_else(|p| p.into_inner())
}

fn not_found(id: &str) -> RuntimeError {
    RuntimeError::NotFound {
        engine: ENGINE.to_string(),
        container: id.to_string(),
    }
}

/// Records the exit of container `id` (if it runs) and closes its connections.
fn exit(engine: &Mutex<Engine>, id: &str, code: i64) {
    let mut engine = lock(engine);
    let Some(c) = engine.containers.get_mut(id) else {
        return;
    };
    if c.exit.borrow().is_some() {
        return;
    }
    c.exit.send_replace(Some(ExitStatus {
        code,
        oom_killed: false,
    }));
    for connection in c.connections.drain(..) {
        connection.abort();
    }
}

/// Exits container `id` with `code` after `delay`, unless it has exited by then.
fn exit_later(engine: &Arc<Mutex<Engine>>, id: &str, delay: Duration, code: i64) {
    let (engine, id) = (Arc::downgrade(engine), id.to_string());
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if let Some(engine) = engine.upgrade() {
            exit(&engine, &id, code);
        }
    });
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn create(&self, spec: &ContainerSpec) -> Result<Created, RuntimeError> {
        let behaviour = self.up()?.images.get(&spec.image).cloned().ok_or_else(|| {
            RuntimeError::ImageMissing {
                engine: ENGINE.to_string(),
                image: spec.image.clone(),
            }
        })?;
        tokio::time::sleep(behaviour.create_delay).await;
        let mut engine = self.up()?;
        for volume in &spec.volumes {
            let info = VolumeInfo {
                name: volume.name.clone(),
                app: spec.identity.app.clone(),
                class: spec.identity.class.clone(),
                object_id: spec.identity.object_id.to_string(),
                object_name: spec.identity.object_name.clone(),
                path: volume.path.clone(),
                size_bytes: Some(0),
            };
            engine
                .volumes
                .entry(volume.name.clone())
                .or_insert((volume.owner.clone(), info));
        }
        engine.created += 1;
        engine.serial += 1;
        let id = format!("fake{:08}", engine.serial);
        let name = format!("berth-fake-{}", engine.serial);
        engine.containers.insert(
            id.clone(),
            Container {
                name: name.clone(),
                spec: spec.clone(),
                behaviour,
                started_at: None,
                exit: watch::channel(None).0,
                connections: Vec::new(),
                requests: 0,
                paused: false,
            },
        );
        Ok(Created { id, name })
    }

    async fn start(&self, id: &str) -> Result<Endpoint, RuntimeError> {
        let delay = self
            .up()?
            .containers
            .get(id)
            .map(|c| c.behaviour.start_delay)
            .ok_or_else(|| not_found(id))?;
        tokio::time::sleep(delay).await;
        let mut engine = self.up()?;
        let c = engine.containers.get_mut(id).ok_or_else(|| not_found(id))?;
        c.started_at = Some(Instant::now());
        match c.behaviour.exit_after {
            Some((after, code)) if after.is_zero() => {
                drop(engine);
                exit(&self.engine, id, code);
                return Ok(Endpoint::Unreachable);
            }
            Some((after, code)) => exit_later(&self.engine, id, after, code),
            None => {}
        }
        Ok(self.endpoint(id))
    }

    async fn kill(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        let mut engine = self.up()?;
        let c = engine.containers.get(id).ok_or_else(|| not_found(id))?;
        if !c.running() {
            return Ok(());
        }
        let term_exit = c.behaviour.term_exit;
        engine
            .signals
            .entry(id.to_string())
            .or_default()
            .push(signal);
        drop(engine);
        match signal {
            Signal::Kill => exit(&self.engine, id, 137),
            Signal::Term | Signal::Int => {
                if let Some(delay) = term_exit {
                    exit_later(&self.engine, id, delay, 0);
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        let mut engine = self.up()?;
        let c = engine.containers.get_mut(id).ok_or_else(|| not_found(id))?;
        if !c.running() {
            return Err(RuntimeError::Engine {
                engine: "the fake engine".into(),
                operation: "pause container",
                target: id.to_string(),
                message: "it does not run".into(),
            });
        }
        c.paused = true;
        Ok(())
    }

    async fn unpause(&self, id: &str) -> Result<(), RuntimeError> {
        let mut engine = self.up()?;
        if let Some(c) = engine.containers.get_mut(id) {
            c.paused = false;
        }
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError> {
        let mut exited = self
            .up()?
            .containers
            .get(id)
            .map(|c| c.exit.subscribe())
            .ok_or_else(|| not_found(id))?;
        let status = exited
            .wait_for(Option::is_some)
            .await
            .map_err(|_| not_found(id))?;
        status.ok_or_else(|| not_found(id))
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        drop(self.up()?);
        exit(&self.engine, id, 137);
        self.lock().containers.remove(id);
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        let engine = self.up()?;
        let c = engine.containers.get(id).ok_or_else(|| not_found(id))?;
        Ok(self.info(id, c))
    }

    async fn logs(&self, id: &str, lines: usize) -> Result<Vec<String>, RuntimeError> {
        let engine = self.up()?;
        let c = engine.containers.get(id).ok_or_else(|| not_found(id))?;
        let logs = &c.behaviour.logs;
        Ok(logs[logs.len().saturating_sub(lines)..].to_vec())
    }

    async fn follow_logs(
        &self,
        id: &str,
        since: Option<SystemTime>,
        lines: mpsc::Sender<Output>,
    ) -> Result<(), RuntimeError> {
        let (logs, mut exited) = {
            let engine = self.up()?;
            let c = engine.containers.get(id).ok_or_else(|| not_found(id))?;
            (c.behaviour.logs.clone(), c.exit.subscribe())
        };
        // The fake's lines are all written at its start, and bear the time they are read,
        // one nanosecond apart: following from a later time finds none.
        let logs = if since.is_some() { Vec::new() } else { logs };
        let start = SystemTime::now();
        for (n, line) in logs.into_iter().enumerate() {
            let output = Output {
                time: start + Duration::from_nanos(n as u64),
                stream: Stream::Stdout,
                line,
            };
            if lines.send(output).await.is_err() {
                return Ok(());
            }
        }
        let _ = exited.wait_for(Option::is_some).await;
        Ok(())
    }

    async fn volumes(
        &self,
        selector: &Selector,
        owner: &str,
    ) -> Result<Vec<VolumeInfo>, RuntimeError> {
        let engine = self.up()?;
        Ok(engine
            .volumes
            .values()
            .filter(|(o, v)| o == owner && selects_volume(selector, v))
            .map(|(_, v)| v.clone())
            .collect())
    }

    async fn remove_volumes(
        &self,
        selector: &Selector,
        owner: &str,
    ) -> Result<usize, RuntimeError> {
        let mut engine = self.up()?;
        let before = engine.volumes.len();
        engine
            .volumes
            .retain(|_, (o, v)| !(o == owner && selects_volume(selector, v)));
        Ok(before - engine.volumes.len())
    }

    async fn list(&self, selector: &Selector) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let engine = self.up()?;
        Ok(engine
            .containers
            .iter()
            .filter(|(_, c)| selector.matches(&c.spec.identity))
            .map(|(id, c)| self.info(id, c))
            .collect())
    }
}

/// Whether `selector` selects `volume` (sessions aside: volumes outlive them).
fn selects_volume(selector: &Selector, volume: &VolumeInfo) -> bool {
    volume.app == selector.app
        && selector
            .object_id
            .is_none_or(|id| id.to_string() == volume.object_id)
}

/// Opens in-memory connections to the app of one fake container.
struct FakeDialer {
    engine: Weak<Mutex<Engine>>,
    id: String,
}

impl Dial for FakeDialer {
    fn dial(&self, port: u16) -> BoxFuture<'static, io::Result<Conn>> {
        let refused = |why: &str| io::Error::new(io::ErrorKind::ConnectionRefused, why.to_string());
        let opened = (|| {
            let engine = self
                .engine
                .upgrade()
                .ok_or_else(|| refused("the engine is gone"))?;
            let mut guard = lock(&engine);
            let c = guard
                .containers
                .get_mut(&self.id)
                .ok_or_else(|| refused("no such container"))?;
            let started = c
                .started_at
                .filter(|_| c.running())
                .ok_or_else(|| refused("the container does not run"))?;
            if c.paused {
                return Err(refused("the container is paused"));
            }
            let open = c
                .behaviour
                .ready_after
                .is_some_and(|after| started + after <= Instant::now());
            let listens = c.behaviour.listens_on.as_ref().unwrap_or(&c.spec.ports);
            if !open || !listens.contains(&port) {
                return Err(refused("nothing listens on this port yet"));
            }
            let (client, server) = tokio::io::duplex(64 * 1024);
            let app = App {
                engine: Arc::downgrade(&engine),
                id: self.id.clone(),
                name: c.spec.identity.object_name.clone().unwrap_or_default(),
            };
            let service = hyper::service::service_fn(move |request| app.clone().answer(request));
            let connection = tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(server), service)
                    .with_upgrades()
                    .await;
            });
            c.connections.push(connection.abort_handle());
            Ok(Conn::Other(Box::new(client)))
        })();
        Box::pin(async move { opened })
    }
}

/// The HTTP app inside a fake container.
#[derive(Clone)]
struct App {
    engine: Weak<Mutex<Engine>>,
    id: String,
    name: String,
}

impl App {
    async fn answer(self, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        if let Some(engine) = self.engine.upgrade() {
            if let Some(c) = lock(&engine).containers.get_mut(&self.id) {
                c.requests += 1;
            }
        }
        // Like an app of a standby pool: its name from the request, else its own.
        let told = request
            .headers()
            .get(crate::http::OBJECT_NAME_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let path = request.uri().path().to_string();
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (verb, arg) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let text = |status: StatusCode, body: String| {
            let mut response = Response::new(full(Bytes::from(body)));
            *response.status_mut() = status;
            Ok(response)
        };
        match (verb, arg.parse::<u64>()) {
            ("", _) => text(
                StatusCode::OK,
                format!("ok {}", told.as_deref().unwrap_or(&self.name)),
            ),
            ("identity", _) => text(
                StatusCode::OK,
                format!("started as {:?}, told {told:?}", self.name),
            ),
            ("sleep", Ok(ms)) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                text(StatusCode::OK, format!("slept {ms} ms"))
            }
            ("hang", _) => std::future::pending().await,
            ("exit", Ok(code)) => {
                if let Some(engine) = self.engine.upgrade() {
                    exit(&engine, &self.id, i64::try_from(code).unwrap_or(i64::MAX));
                }
                std::future::pending().await
            }
            _ => text(StatusCode::NOT_FOUND, format!("no {path}")),
        }
    }
}
