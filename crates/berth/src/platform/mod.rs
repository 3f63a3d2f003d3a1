//! `berth serve`: many apps on one engine. Each request reaches an app's worker by its
//! `Host`; each app runs its live deployment, which a new deployment replaces by a
//! rollout. Deployments are kept in the store, so that a restarted server brings every
//! app back and re-adopts the containers the last process left running.

mod catch_up;
mod changes;
mod hosted;
mod journal;
pub mod peer;
mod release;
mod rollout;

use journal::Journal;
pub use journal::{AppEvent, AppEventKind, BACKLOG};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use http::{Request, Response, StatusCode};

use crate::api::{AppView, DeploymentView, InstanceView, RolloutView, StartTimingsView};
use crate::app::App;
use crate::build::{BuildError, Builder};
use crate::hosts::{best_match, request_host, HostPattern};
use crate::http::{error_response, Body};
use crate::lease::LeaseError;
use crate::logbook::Logbook;
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::runtime::{Runtime, RuntimeError, Signal};
use crate::store::{Deployment, DeploymentStatus, Store, StoreError};
use crate::worker::{Env, Worker};

pub(crate) use changes::redeploy;
use hosted::{Hosted, HostedWorker};
use release::Release;

/// Why the platform refused or failed a request. Each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("{0}")]
    Invalid(String),
    #[error("no app called {0} is deployed here")]
    NoApp(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(
        "cannot get image {image}: {error}; check that the registry is reachable from the server"
    )]
    Image {
        image: String,
        error: Box<BuildError>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data folder failed (a program's files could not be written).
    #[error("{0}; check the data folder's free space and permissions")]
    Io(String),
    #[error(transparent)]
    Engine(#[from] RuntimeError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

impl PlatformError {
    pub fn status(&self) -> StatusCode {
        match self {
            PlatformError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            PlatformError::NoApp(_) | PlatformError::NotFound(_) => StatusCode::NOT_FOUND,
            PlatformError::Conflict(_) => StatusCode::CONFLICT,
            PlatformError::Image { .. } => StatusCode::BAD_GATEWAY,
            PlatformError::Store(_)
            | PlatformError::Io(_)
            | PlatformError::Engine(_)
            | PlatformError::Lease(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable kind a client can match on.
    pub fn kind(&self) -> &'static str {
        match self {
            PlatformError::Invalid(_) => "invalid",
            PlatformError::NoApp(_) | PlatformError::NotFound(_) => "not-found",
            PlatformError::Conflict(_) => "conflict",
            PlatformError::Image { .. } => "image-unavailable",
            PlatformError::Store(_) => "store-failed",
            PlatformError::Io(_) => "data-failed",
            PlatformError::Engine(_) => "engine-unavailable",
            PlatformError::Lease(_) => "lease-failed",
        }
    }
}

/// The apps one `berth serve` hosts.
pub struct Platform {
    runtime: Arc<dyn Runtime>,
    images: Arc<dyn Builder>,
    store: Store,
    /// Where programs (apps of `alchemy.run.ts`) are written to run: `<app>/<digest>/`.
    programs: PathBuf,
    /// Where the apps' containers' output is kept.
    logbook: Logbook,
    apps: RwLock<BTreeMap<String, Arc<Hosted>>>,
    /// Every worker's hosts, rebuilt whenever an app changes.
    hosts: RwLock<Vec<(HostPattern, Arc<HostedWorker>)>>,
    /// Held while the apps served change (see [`Platform::publish`]).
    publishing: std::sync::Mutex<()>,
    /// Per app, one change (deploy, rollback, destroy) at a time; a rollout holds its
    /// app's turn to its end.
    turns: std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    journal: Arc<Journal>,
    /// What every app's objects and workers count, served at the control API's /metrics.
    metrics: Arc<Metrics>,
    /// The cluster's routers, when this server is one of them.
    peers: Option<Arc<Peers>>,
}

impl Platform {
    /// Brings back every app's live deployment, and re-adopts what still runs. Programs
    /// are written under `<files>/programs`, and containers' output under `<files>/logs`.
    pub async fn start(
        runtime: Arc<dyn Runtime>,
        images: Arc<dyn Builder>,
        store: Store,
        files: PathBuf,
    ) -> Result<Arc<Platform>, PlatformError> {
        Platform::start_with_peers(runtime, images, store, files, None).await
    }

    /// [`Platform::start`] for one of a cluster's routers: every app's objects live on
    /// their home routers (see [`crate::peers`]).
    pub async fn start_with_peers(
        runtime: Arc<dyn Runtime>,
        images: Arc<dyn Builder>,
        store: Store,
        files: PathBuf,
        peers: Option<Arc<Peers>>,
    ) -> Result<Arc<Platform>, PlatformError> {
        let platform = Arc::new(Platform {
            runtime,
            images,
            store,
            programs: files.join("programs"),
            logbook: Logbook::new(files.join("logs")),
            apps: RwLock::default(),
            hosts: RwLock::default(),
            publishing: std::sync::Mutex::new(()),
            turns: Default::default(),
            journal: Arc::new(Journal::new()),
            metrics: Arc::default(),
            peers,
        });
        for deployment in platform.store.live_deployments().await? {
            let deployment = platform.settle_interrupted(deployment).await?;
            // One app that cannot come back must not keep the others down.
            if let Err(e) = platform.restore(&deployment).await {
                tracing::error!(
                    app = %deployment.app,
                    deployment = deployment.number,
                    "cannot restore the app: {e}; deploy it again, or destroy it"
                );
            }
        }
        Ok(platform)
    }

    /// A deployment whose rollout a stop of berth serve cut short was never proven: it
    /// is marked failed and the app comes back on the deployment before it (recovery then
    /// replaces what ran the new version). A first deployment has nothing before it, and
    /// stands.
    async fn settle_interrupted(
        &self,
        deployment: Deployment,
    ) -> Result<Deployment, PlatformError> {
        if deployment.status != DeploymentStatus::RollingOut {
            return Ok(deployment);
        }
        let (app, number) = (deployment.app.clone(), deployment.number);
        let history = self.store.deployments(&app).await?;
        let previous = history.into_iter().find(|d| {
            d.number < number
                && matches!(
                    d.status,
                    DeploymentStatus::Active | DeploymentStatus::Superseded
                )
        });
        let Some(previous) = previous else {
            let note = "stands: berth serve restarted before its rollout ended";
            self.store
                .set_deployment_status(&app, number, DeploymentStatus::Active, note)
                .await?;
            return Ok(deployment);
        };
        let message = format!(
            "berth serve restarted before its rollout ended; deployment {} restored; deploy again",
            previous.number
        );
        self.store
            .set_deployment_status(&app, number, DeploymentStatus::Failed, &message)
            .await?;
        self.store
            .set_deployment_status(&app, previous.number, DeploymentStatus::Active, "restored")
            .await?;
        Ok(previous)
    }

    async fn restore(&self, deployment: &Deployment) -> Result<(), PlatformError> {
        let release = Release::load(
            &deployment.app,
            &deployment.manifest,
            &deployment.program,
            &deployment.images,
            &self.programs,
        )
        .await?;
        // An image removed from the engine while berth was down comes back from the registry.
        for class in &release.classes {
            self.ensure_image(&class.class.image).await?;
        }
        let hosted = self
            .make_hosted(&deployment.app, release, deployment.number)
            .await?;
        let recovery = hosted.app.recover().await?;
        self.publish(|apps| {
            apps.insert(deployment.app.clone(), hosted.clone());
            Ok(())
        })?;
        tracing::info!(
            app = %deployment.app,
            deployment = deployment.number,
            adopted = recovery.adopted,
            removed = recovery.removed,
            "app restored"
        );
        Ok(())
    }

    /// The hosted app `name` running `release`, not yet published to its hosts.
    async fn make_hosted(
        &self,
        name: &str,
        release: Release,
        number: i64,
    ) -> Result<Arc<Hosted>, PlatformError> {
        let (runtime, store) = (self.runtime.clone(), self.store.clone());
        let app = App::with_metrics(name, runtime, store, self.metrics.clone())?;
        app.keep_logs(self.logbook.clone());
        if let Some(peers) = &self.peers {
            app.use_peers(peers.clone());
        }
        let hosted = Arc::new(Hosted::new(app, release, number).await?);
        let (mut events, journal, name) =
            (hosted.app.events(), self.journal.clone(), name.to_string());
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => journal.record(&name, AppEventKind::Object(event)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                }
            }
        });
        Ok(hosted)
    }

    /// Changes which apps and workers are served, and rebuilds the host table in the
    /// same turn: one change at a time, so that two deploys cannot both claim a host and
    /// an older table never replaces a newer one.
    fn publish<T>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, Arc<Hosted>>) -> Result<T, PlatformError>,
    ) -> Result<T, PlatformError> {
        let _turn = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        let mut apps = self.apps.write().unwrap_or_else(|p| p.into_inner());
        let result = change(&mut apps);
        let table = apps
            .values()
            .flat_map(|hosted| hosted.workers())
            .flat_map(|worker| {
                worker
                    .hosts
                    .clone()
                    .into_iter()
                    .map(move |host| (host, worker.clone()))
            })
            .collect();
        drop(apps);
        *self.hosts.write().unwrap_or_else(|p| p.into_inner()) = table;
        result
    }

    fn hosted(&self, app: &str) -> Result<Arc<Hosted>, PlatformError> {
        self.apps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(app)
            .cloned()
            .ok_or_else(|| PlatformError::NoApp(app.to_string()))
    }

    fn all(&self) -> Vec<Arc<Hosted>> {
        self.apps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// What every app counts.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Lifecycle events of every app, from now on.
    /// Where the apps' containers' output is kept.
    pub fn logbook(&self) -> &Logbook {
        &self.logbook
    }

    /// The latest events of every app (oldest first), and the events from then on.
    pub fn events(&self) -> (Vec<AppEvent>, tokio::sync::broadcast::Receiver<AppEvent>) {
        self.journal.listen()
    }

    /// Every app with the deployment it runs.
    pub async fn apps(&self) -> Result<Vec<AppView>, PlatformError> {
        let mut views = Vec::new();
        for hosted in self.all() {
            views.push(self.view(&hosted).await?);
        }
        Ok(views)
    }

    pub async fn app(&self, app: &str) -> Result<AppView, PlatformError> {
        let hosted = self.hosted(app)?;
        self.view(&hosted).await
    }

    async fn view(&self, hosted: &Hosted) -> Result<AppView, PlatformError> {
        let name = hosted.app.name();
        let deployment = self
            .store
            .deployment(name, hosted.deployment())
            .await?
            .ok_or_else(|| PlatformError::NoApp(name.to_string()))?;
        let rollout = match deployment.status {
            DeploymentStatus::RollingOut => Some(self.rollout(&deployment).await?),
            _ => None,
        };
        let release = hosted.release();
        Ok(AppView {
            name: name.to_string(),
            deployment: deployment_view(deployment),
            hosts: release
                .workers
                .iter()
                .map(|w| {
                    (
                        w.name.clone(),
                        w.hosts.iter().map(|h| h.to_string()).collect(),
                    )
                })
                .collect(),
            classes: release
                .classes
                .iter()
                .map(|c| c.class.name.clone())
                .collect(),
            rollout,
        })
    }

    /// The rollout of `deployment`, which is rolling out: the deployment it replaces is
    /// the newest before it that is still active.
    async fn rollout(&self, deployment: &Deployment) -> Result<RolloutView, PlatformError> {
        let history = self.store.deployments(&deployment.app).await?;
        let replacing = history
            .iter()
            .find(|d| d.number < deployment.number && d.status == DeploymentStatus::Active)
            .map(|d| d.number);
        Ok(RolloutView {
            deployment: deployment.number,
            replacing,
            message: deployment.message.clone(),
            started_at_ms: deployment.created_at_ms,
        })
    }

    /// The deployments of `app`, newest first.
    pub async fn deployments(&self, app: &str) -> Result<Vec<DeploymentView>, PlatformError> {
        let all = self.store.deployments(app).await?;
        if all.is_empty() {
            return Err(PlatformError::NoApp(app.to_string()));
        }
        Ok(all.into_iter().map(deployment_view).collect())
    }

    pub async fn deployment(
        &self,
        app: &str,
        number: i64,
    ) -> Result<DeploymentView, PlatformError> {
        self.store
            .deployment(app, number)
            .await?
            .map(deployment_view)
            .ok_or_else(|| PlatformError::NotFound(format!("app {app} has no deployment {number}")))
    }

    /// The objects of `app`, with their containers.
    pub async fn instances(&self, app: &str) -> Result<Vec<InstanceView>, PlatformError> {
        let hosted = self.hosted(app)?;
        let namespaces = hosted.namespaces();
        let objects = hosted.app.objects().await?;
        Ok(objects
            .into_iter()
            .map(|o| {
                let namespace = namespaces.iter().find(|ns| ns.class_name() == o.class);
                let live = namespace.and_then(|ns| {
                    let id = ns.id_from_string(&o.id).ok()?;
                    ns.peek(id)
                });
                let running = live.as_ref().and_then(|object| object.running_image());
                let next = || namespace.map(|ns| ns.image()).unwrap_or_default();
                let millis =
                    |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                InstanceView {
                    image: running.unwrap_or_else(next),
                    last_start: live
                        .as_ref()
                        .and_then(|object| object.last_start())
                        .map(|t| StartTimingsView {
                            create_ms: millis(t.create),
                            start_ms: millis(t.start),
                            ready_ms: t.ready.map(millis),
                        }),
                    in_flight: live.as_ref().map_or(0, |object| object.in_flight()),
                    class: o.class,
                    name: o.name,
                    id: o.id,
                    state: o.state,
                    exit_code: o.exit_code,
                    uptime_seconds: o.uptime_seconds,
                    container_id: o.container_id,
                }
            })
            .collect())
    }

    /// Stops (SIGTERM, then SIGKILL after the grace) or destroys one object's container.
    pub async fn stop_instance(
        &self,
        app: &str,
        class: &str,
        id: &str,
        destroy: bool,
    ) -> Result<(), PlatformError> {
        let hosted = self.hosted(app)?;
        let namespace = hosted
            .namespaces()
            .into_iter()
            .find(|ns| ns.class_name() == class)
            .ok_or_else(|| PlatformError::NotFound(format!("app {app} has no class {class}")))?;
        let id = namespace
            .id_from_string(id)
            .map_err(|e| PlatformError::NotFound(e.to_string()))?;
        let object = namespace.get(id);
        if destroy {
            object.destroy().await?;
        } else {
            object.stop(Signal::Term).await?;
        }
        Ok(())
    }

    /// Lets requests in flight end (the server drains them first), then either stops
    /// every container (`stop`) or leaves them running for the next start to re-adopt.
    pub async fn shutdown(&self, stop: bool) {
        for hosted in self.all() {
            if stop {
                if let Err(e) = hosted.app.shutdown().await {
                    tracing::warn!(app = %hosted.app.name(), "shutdown: {e}");
                }
            } else {
                hosted.app.detach();
            }
        }
    }
}

fn deployment_view(d: Deployment) -> DeploymentView {
    DeploymentView {
        app: d.app,
        number: d.number,
        status: d.status.as_str().to_string(),
        message: d.message,
        images: d.images,
        source: d.source,
        created_at_ms: d.created_at_ms,
        updated_at_ms: d.updated_at_ms,
    }
}

/// The public listener's worker: a request goes to the worker that answers its host.
#[async_trait]
impl Worker for Platform {
    async fn fetch(&self, request: Request<Body>, _env: &Env) -> Response<Body> {
        let Some(host) = request_host(&request) else {
            return error_response(
                StatusCode::BAD_REQUEST,
                "no-host",
                "the request names no host; send a Host header",
            );
        };
        let worker = {
            let hosts = self.hosts.read().unwrap_or_else(|p| p.into_inner());
            best_match(&host, hosts.iter().map(|(p, w)| (p, w.clone())))
        };
        match worker {
            Some(worker) => worker.worker.fetch(request, &worker.env).await,
            // Other apps' hosts are nobody else's business: the answer names none.
            None => error_response(
                StatusCode::NOT_FOUND,
                "no-app",
                &format!("no app here answers host {host}"),
            ),
        }
    }
}
