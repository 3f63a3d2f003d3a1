//! A router of a cluster that starts may have missed changes the others relayed while it
//! was down (see `control::relay`), or start with an empty data folder on a new node. So
//! it asks the other routers for the deployments their apps run, and deploys here each
//! one it lacks or that is newer (made later) there than its own. An app destroyed while
//! this router was down is not destroyed here: destroy it through this router.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Platform, PlatformError};
use crate::peers::Peers;
use crate::store::Deployment;

/// How many times the other routers are asked, a few seconds apart: the routers' list
/// may still be filling when this one starts.
const TRIES: u32 = 15;
const BETWEEN_TRIES: Duration = Duration::from_secs(2);

impl Platform {
    /// The deployments this router's apps run.
    pub async fn live_deployments(&self) -> Result<Vec<Deployment>, PlatformError> {
        Ok(self.store.live_deployments().await?)
    }

    /// Takes from the other routers the deployments this one lacks or that are newer
    /// there (see the module's documentation). Every router that answers is asked, and
    /// the newest deployment of each app wins: one router may itself be catching up.
    pub async fn catch_up(self: &Arc<Self>, peers: &Peers) {
        for _ in 0..TRIES {
            let mut newest: HashMap<String, Deployment> = HashMap::new();
            let mut answered = Vec::new();
            for router in peers.others() {
                let theirs = match peers.deployments_of(router).await {
                    Ok(body) => serde_json::from_slice::<Vec<Deployment>>(&body)
                        .map_err(|e| format!("its answer is not a list of deployments: {e}")),
                    Err(e) => Err(e),
                };
                match theirs {
                    Ok(theirs) => {
                        answered.push(router.to_string());
                        for deployment in theirs {
                            let newer = newest
                                .get(&deployment.app)
                                .is_none_or(|d| d.created_at_ms < deployment.created_at_ms);
                            if newer {
                                newest.insert(deployment.app.clone(), deployment);
                            }
                        }
                    }
                    Err(e) => tracing::info!("cannot catch up from router {router}: {e}"),
                }
            }
            if !answered.is_empty() {
                return self.take_newer(&answered.join(", "), newest).await;
            }
            tokio::time::sleep(BETWEEN_TRIES).await;
        }
        tracing::warn!("no other router told what it runs: this router runs what its own data folder holds until the next deploy");
    }

    async fn take_newer(self: &Arc<Self>, routers: &str, theirs: HashMap<String, Deployment>) {
        let mine: HashMap<String, Deployment> = match self.live_deployments().await {
            Ok(mine) => mine.into_iter().map(|d| (d.app.clone(), d)).collect(),
            Err(e) => {
                tracing::warn!("cannot catch up: {e}");
                return;
            }
        };
        let mut taken = 0;
        for deployment in theirs.into_values() {
            let newer = match mine.get(&deployment.app) {
                None => true,
                Some(own) => {
                    own.fingerprint != deployment.fingerprint
                        && own.created_at_ms < deployment.created_at_ms
                }
            };
            if !newer {
                continue;
            }
            let (app, number) = (deployment.app.clone(), deployment.number);
            let request = super::redeploy(&deployment, deployment.source.clone());
            match self.deploy(&app, request).await {
                Ok(_) => {
                    taken += 1;
                    tracing::info!("app {app}: took deployment {number} of routers {routers}");
                }
                Err(e) => tracing::error!(
                    "app {app}: cannot take deployment {number} of routers {routers}: {e}"
                ),
            }
        }
        tracing::info!("caught up with routers {routers}: {taken} app(s) deployed here");
    }
}
