//! The changes a client asks of the platform: deploy, roll back, destroy. One change per
//! app at a time; a deployment's rollout holds its app's turn until it ends.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::{DeployRequest, DeployResponse, DestroyReport};
use crate::lease;
use crate::lifecycle::StopReason;
use crate::manifest::valid_app_name;
use crate::runtime::Selector;
use crate::store::{Deployment, DeploymentStatus};

use super::hosted::Hosted;
use super::release::Release;
use super::{rollout, AppEventKind, Platform, PlatformError};

impl Platform {
    /// The turn of `app`, or a conflict if a change of it is under way.
    fn turn(&self, app: &str) -> Result<tokio::sync::OwnedMutexGuard<()>, PlatformError> {
        let lock = self
            .turns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(app.to_string())
            .or_default()
            .clone();
        lock.try_lock_owned().map_err(|_| {
            PlatformError::Conflict(format!(
                "a change of app {app} is under way (a rollout, a rollback or a destroy); wait for it to end"
            ))
        })
    }

    /// Deploys `request` as app `app`: a dry run or an unchanged release only answer
    /// with the plan; otherwise the images are pulled, the deployment recorded, and the
    /// release applied, its rollout going on in the background.
    pub async fn deploy(
        self: &Arc<Self>,
        app: &str,
        request: DeployRequest,
    ) -> Result<DeployResponse, PlatformError> {
        self.deploy_noted(app, request, "").await
    }

    async fn deploy_noted(
        self: &Arc<Self>,
        app: &str,
        request: DeployRequest,
        note: &str,
    ) -> Result<DeployResponse, PlatformError> {
        if !valid_app_name(app) {
            return Err(PlatformError::Invalid(format!(
                "{app:?} is not a valid app name; use lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
            )));
        }
        let turn = self.turn(app)?;
        let release = Release::load(
            app,
            &request.manifest,
            &request.program,
            &request.images,
            &self.programs,
        )
        .await?;
        let current = self.hosted(app).ok();
        if let Some(hosted) = &current {
            self.check_source(app, hosted, &request).await?;
        }
        check_hosts(app, &release, &self.all())?;
        let old = current.as_ref().map(|h| h.release());
        let plan = release.plan(old.as_deref());
        let unchanged = old.is_some_and(|o| o.fingerprint == release.fingerprint);
        let answer = |deployment| DeployResponse {
            app: app.to_string(),
            plan: plan.clone(),
            deployment,
            unchanged,
        };
        if request.dry_run || unchanged {
            return Ok(answer(None));
        }
        for class in &release.classes {
            self.ensure_image(&class.class.image).await?;
        }
        let number = self
            .store
            .add_deployment(Deployment {
                app: app.to_string(),
                number: 0,
                manifest: request.manifest,
                program: request.program,
                images: request.images,
                source: request.source,
                fingerprint: release.fingerprint.clone(),
                status: DeploymentStatus::RollingOut,
                message: note.to_string(),
                created_at_ms: 0,
                updated_at_ms: 0,
            })
            .await?;
        let Some(hosted) = current else {
            // A new app: checked and recovered before any request can reach it.
            let program = release.program.clone();
            let created = self.first_deployment(app, release, number).await;
            if created.is_ok() {
                let keep: Vec<&std::path::Path> = program.iter().map(|p| p.as_path()).collect();
                super::release::prune_programs(&self.programs.join(app), &keep);
            }
            let (status, message) = match &created {
                Ok(()) => (DeploymentStatus::Active, note.to_string()),
                Err(e) => (DeploymentStatus::Failed, e.to_string()),
            };
            self.finish(app, number, status, &message).await;
            return created.map(|()| answer(Some(number)));
        };
        {
            let (previous, previous_number) = (hosted.release(), hosted.deployment());
            let programs = [release.program.clone(), previous.program.clone()];
            let staged = match hosted.stage(release).await {
                Ok(staged) => staged,
                Err(e) => {
                    self.finish(app, number, DeploymentStatus::Failed, &e.to_string())
                        .await;
                    return Err(e);
                }
            };
            let applied = match self.publish(|apps| {
                let others = apps.values().cloned().collect::<Vec<_>>();
                match check_hosts(app, staged.release(), &others) {
                    Ok(()) => Ok(hosted.apply(staged, number)),
                    Err(e) => {
                        hosted.discard(staged);
                        Err(e)
                    }
                }
            }) {
                Ok(applied) => applied,
                Err(e) => {
                    self.finish(app, number, DeploymentStatus::Failed, &e.to_string())
                        .await;
                    return Err(e);
                }
            };
            let platform = self.clone();
            let app = app.to_string();
            let note = note.to_string();
            tokio::spawn(async move {
                let _turn = turn;
                for namespace in &applied.removed {
                    namespace.stop_all(StopReason::Destroyed).await;
                    hosted.app.forget_namespace(namespace);
                }
                let progress = |message: String| {
                    platform.journal.record(
                        &app,
                        AppEventKind::Rollout {
                            deployment: number,
                            step: message.clone(),
                        },
                    );
                    let (store, app) = (platform.store.clone(), app.clone());
                    async move {
                        let status = DeploymentStatus::RollingOut;
                        let _ = store
                            .set_deployment_status(&app, number, status, &message)
                            .await;
                    }
                };
                match rollout::roll_out(&applied.changed, progress).await {
                    Ok(()) => {
                        // The old version's runtimes may still be ending: its folder stays
                        // until the next deploy.
                        let keep: Vec<&std::path::Path> =
                            programs.iter().flatten().map(|p| p.as_path()).collect();
                        super::release::prune_programs(&platform.programs.join(&app), &keep);
                        platform
                            .finish(&app, number, DeploymentStatus::Active, &note)
                            .await;
                        platform
                            .finish(&app, previous_number, DeploymentStatus::Superseded, "")
                            .await;
                    }
                    Err(cause) => {
                        tracing::warn!(app = %app, deployment = number, "rollout halted: {cause}");
                        platform
                            .revert(&hosted, &previous, previous_number, &applied.changed)
                            .await;
                        let message = format!(
                            "rollout halted, deployment {previous_number} restored: {cause}"
                        );
                        platform
                            .finish(&app, number, DeploymentStatus::Failed, &message)
                            .await;
                    }
                }
            });
        }
        Ok(answer(Some(number)))
    }

    /// Hosts a new app: made, checked against other sessions of its name, its leftover
    /// containers recovered, and only then published to its hosts.
    async fn first_deployment(
        &self,
        app: &str,
        release: Release,
        number: i64,
    ) -> Result<(), PlatformError> {
        let hosted = self.make_hosted(app, release, number).await?;
        // A cluster's routers share the engine by design: each one's services are the
        // others' to serve, not a second berth in the way.
        let others = match &self.peers {
            Some(_) => Vec::new(),
            None => hosted.app.other_sessions().await?,
        };
        if let Some(other) = others.first() {
            return Err(PlatformError::Conflict(format!(
                "another berth process runs app {app} on this engine ({other}); stop it, or deploy under another name"
            )));
        }
        hosted.app.recover().await?;
        let release = hosted.release();
        self.publish(|apps| {
            check_hosts(app, &release, &apps.values().cloned().collect::<Vec<_>>())?;
            apps.insert(app.to_string(), hosted.clone());
            Ok(())
        })
    }

    async fn finish(&self, app: &str, number: i64, status: DeploymentStatus, message: &str) {
        if matches!(status, DeploymentStatus::Active | DeploymentStatus::Failed) {
            let kind = AppEventKind::Deployment {
                deployment: number,
                status,
                message: message.to_string(),
            };
            self.journal.record(app, kind);
        }
        if let Err(e) = self
            .store
            .set_deployment_status(app, number, status, message)
            .await
        {
            tracing::warn!(
                app,
                deployment = number,
                "cannot record the deployment's status: {e}"
            );
        }
    }

    /// Goes back to `previous` after a halted rollout: the classes it changed get their
    /// old options again, and instances already started on the new version are replaced.
    async fn revert(
        &self,
        hosted: &Hosted,
        previous: &Release,
        number: i64,
        changed: &[super::hosted::Changed],
    ) {
        let applied = match hosted.stage(previous.clone()).await {
            Ok(staged) => self.publish(|_| Ok(hosted.apply(staged, number))),
            Err(e) => Err(e),
        };
        match applied {
            // Classes only the failed deployment had go, as a deploy removes classes.
            Ok(applied) => {
                for namespace in &applied.removed {
                    namespace.stop_all(StopReason::Destroyed).await;
                    hosted.app.forget_namespace(namespace);
                }
            }
            Err(e) => {
                tracing::warn!(app = %hosted.app.name(), "cannot restore deployment {number}: {e}")
            }
        }
        for class in changed {
            class.namespace.replace_all(class.rollout.grace).await;
        }
    }

    /// An app deployed from one folder is not taken over from another unless asked.
    async fn check_source(
        &self,
        app: &str,
        hosted: &Hosted,
        request: &DeployRequest,
    ) -> Result<(), PlatformError> {
        let live = self.store.deployment(app, hosted.deployment()).await?;
        match live {
            Some(live) if live.source != request.source && !request.adopt => {
                Err(PlatformError::Conflict(format!(
                    "app {app} was deployed from {}, not {}; deploy from there, or pass --adopt to take it over",
                    live.source, request.source
                )))
            }
            _ => Ok(()),
        }
    }

    /// Makes sure the engine has `image`, pulling it if not.
    pub(super) async fn ensure_image(&self, image: &str) -> Result<(), PlatformError> {
        if matches!(self.images.has_image(image).await, Ok(true)) {
            return Ok(());
        }
        self.images
            .pull(image)
            .await
            .map_err(|error| PlatformError::Image {
                image: image.to_string(),
                error: Box::new(error),
            })
    }

    /// Deploys again the deployment before the one `app` runs.
    pub async fn rollback(self: &Arc<Self>, app: &str) -> Result<DeployResponse, PlatformError> {
        let hosted = self.hosted(app)?;
        let current = hosted.deployment();
        let history = self.store.deployments(app).await?;
        let live = history.iter().find(|d| d.number == current);
        let target = history.iter().find(|d| {
            d.number < current
                && d.fingerprint != live.map(|l| l.fingerprint.as_str()).unwrap_or_default()
                && matches!(
                    d.status,
                    DeploymentStatus::Superseded | DeploymentStatus::Active
                )
        });
        let Some(target) = target else {
            return Err(PlatformError::Conflict(format!(
                "app {app} has no earlier deployment to return to"
            )));
        };
        let request = redeploy(target, live.map(|l| l.source.clone()).unwrap_or_default());
        let note = format!("rollback to deployment {}", target.number);
        self.deploy_noted(app, request, &note).await
    }

    /// Removes everything `app` has here: its containers (stopped first), its objects'
    /// records and storage, and its deployments. Images stay in the registry.
    pub async fn destroy(&self, app: &str) -> Result<DestroyReport, PlatformError> {
        if !valid_app_name(app) {
            return Err(PlatformError::NoApp(app.to_string()));
        }
        let _turn = self.turn(app)?;
        let history = self.store.deployments(app).await?;
        let hosted = self.unhost(app);
        if hosted.is_none() && history.is_empty() {
            return Err(PlatformError::NoApp(app.to_string()));
        }
        let mut containers = 0;
        if let Some(hosted) = hosted {
            containers += hosted.app.shutdown().await?;
        }
        // What an earlier process left with the app's name; never a live session's.
        for info in self.runtime.list(&Selector::app(app)).await? {
            let dead = info
                .identity
                .as_ref()
                .is_none_or(|i| lease::liveness(app, &i.session, &i.host) == lease::Liveness::Dead);
            if dead {
                self.runtime.remove(&info.id).await?;
                containers += 1;
            }
        }
        // The containers are gone, so nothing holds the objects' volumes any more.
        let volumes = self
            .runtime
            .remove_volumes(&Selector::app(app), self.store.owner())
            .await?;
        if let Err(e) = self.logbook.forget_app(app) {
            tracing::warn!(app, "{e}");
        }
        // The app's programs are in its deployments only from now on: none.
        let programs = self.programs.join(app);
        if let Err(e) = std::fs::remove_dir_all(&programs) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(app, "cannot remove {}: {e}", programs.display());
            }
        }
        let objects = self.store.forget_app(app).await?;
        let deployments = self.store.forget_deployments(app).await?;
        let images: BTreeMap<&str, ()> = history
            .iter()
            .flat_map(|d| d.images.values())
            .map(|i| (i.as_str(), ()))
            .collect();
        Ok(DestroyReport {
            app: app.to_string(),
            containers,
            volumes,
            objects,
            deployments,
            images_left: images.into_keys().map(str::to_string).collect(),
        })
    }

    /// Stops hosting `app` (its workers answer no more); returns it, if it was hosted.
    fn unhost(&self, app: &str) -> Option<Arc<Hosted>> {
        self.publish(|apps| Ok(apps.remove(app))).ok().flatten()
    }
}

/// A host is served by one app only: `release` of `app` may claim none of the hosts of
/// the other apps in `hosted`.
fn check_hosts(app: &str, release: &Release, hosted: &[Arc<Hosted>]) -> Result<(), PlatformError> {
    for other in hosted.iter().filter(|h| h.app.name() != app) {
        let theirs = other.release();
        if let Some(host) = release.hosts().find(|h| theirs.hosts().any(|t| t == *h)) {
            return Err(PlatformError::Conflict(format!(
                "host {host} is already served by app {}; give this worker other hosts",
                other.app.name()
            )));
        }
    }
    Ok(())
}

/// A deploy of what `deployment` ran, again, as coming from `source`: taking the app over,
/// whatever source it was deployed from since.
pub(crate) fn redeploy(deployment: &Deployment, source: String) -> DeployRequest {
    DeployRequest {
        manifest: deployment.manifest.clone(),
        program: deployment.program.clone(),
        images: deployment.images.clone(),
        source,
        adopt: true,
        dry_run: false,
    }
}
