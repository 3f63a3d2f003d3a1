//! A router of a cluster that starts may have missed changes the others relayed while it
//! was down (see `control::relay`), or start with an empty data folder on a new node. So
//! it asks another router for the deployments that router's apps run, and deploys here
//! each one it lacks or that changed there later than its own did. An app destroyed while
//! this router was down is not destroyed here: destroy it again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Platform, PlatformError};
use crate::api::DeployRequest;
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

    /// Takes from the first router that answers the deployments this one lacks or that
    /// are newer there (see the module's documentation).
    pub async fn catch_up(self: &Arc<Self>, peers: &Peers) {
        for _ in 0..TRIES {
            for router in peers.others() {
                let theirs = match peers.deployments_of(router).await {
                    Ok(body) => serde_json::from_slice::<Vec<Deployment>>(&body)
                        .map_err(|e| format!("its answer is not a list of deployments: {e}")),
                    Err(e) => Err(e),
                };
                match theirs {
                    Ok(theirs) => return self.take_newer(router, theirs).await,
                    Err(e) => tracing::info!("cannot catch up from router {router}: {e}"),
                }
            }
            tokio::time::sleep(BETWEEN_TRIES).await;
        }
        tracing::warn!("no other router told what it runs: this router runs what its own data folder holds until the next deploy");
    }

    async fn take_newer(self: &Arc<Self>, router: std::net::Ipv4Addr, theirs: Vec<Deployment>) {
        let mine: HashMap<String, Deployment> = match self.live_deployments().await {
            Ok(mine) => mine.into_iter().map(|d| (d.app.clone(), d)).collect(),
            Err(e) => {
                tracing::warn!("cannot catch up: {e}");
                return;
            }
        };
        let mut taken = 0;
        for deployment in theirs {
            let newer = match mine.get(&deployment.app) {
                None => true,
                Some(own) => {
                    own.fingerprint != deployment.fingerprint
                        && own.updated_at_ms < deployment.updated_at_ms
                }
            };
            if !newer {
                continue;
            }
            let (app, number) = (deployment.app.clone(), deployment.number);
            let request = DeployRequest {
                manifest: deployment.manifest,
                program: deployment.program,
                images: deployment.images,
                source: deployment.source,
                adopt: true,
                dry_run: false,
            };
            match self.deploy(&app, request).await {
                Ok(_) => {
                    taken += 1;
                    tracing::info!("app {app}: took deployment {number} of router {router}");
                }
                Err(e) => tracing::error!(
                    "app {app}: cannot take deployment {number} of router {router}: {e}"
                ),
            }
        }
        tracing::info!("caught up with router {router}: {taken} app(s) deployed here");
    }
}
