//! The objects' volumes on the Docker Engine: made with berth's labels before the first
//! container that mounts them, listed with their size, removed with their object.

use std::collections::HashMap;

use bollard::models::{Mount, MountType, VolumeCreateRequest};
use bollard::query_parameters::{ListVolumesOptionsBuilder, RemoveVolumeOptionsBuilder};

use super::labels::{self, APP, CLASS, OBJECT_ID, OBJECT_NAME};
use super::DockerRuntime;
use crate::runtime::{ContainerSpec, RuntimeError, Selector, VolumeInfo};

/// The label that says which path of its object a volume holds.
pub const VOLUME_PATH: &str = "berth.volume-path";

/// The label that says which berth (by its store's id) made a volume.
pub const OWNER: &str = "berth.owner";

impl DockerRuntime {
    /// Makes the spec's volumes (an existing one is kept as it is) and returns their
    /// mounts.
    pub(super) async fn volume_mounts(
        &self,
        spec: &ContainerSpec,
    ) -> Result<Vec<Mount>, RuntimeError> {
        let mut mounts = Vec::new();
        for volume in &spec.volumes {
            let mut labels: HashMap<String, String> = labels::render(&spec.identity, &spec.labels)
                .into_iter()
                .filter(|(k, _)| [APP, CLASS, OBJECT_ID, OBJECT_NAME].contains(&k.as_str()))
                .collect();
            labels.insert(VOLUME_PATH.to_string(), volume.path.clone());
            labels.insert(OWNER.to_string(), volume.owner.clone());
            let request = VolumeCreateRequest {
                name: Some(volume.name.clone()),
                labels: Some(labels),
                ..VolumeCreateRequest::default()
            };
            self.docker
                .create_volume(request)
                .await
                .map_err(|e| self.error("create volume", &volume.name, e))?;
            mounts.push(Mount {
                target: Some(volume.path.clone()),
                source: Some(volume.name.clone()),
                typ: Some(MountType::VOLUME),
                ..Mount::default()
            });
        }
        Ok(mounts)
    }

    /// The volumes `selector` and `owner` select; with their size if `sizes`.
    pub(super) async fn list_volumes(
        &self,
        selector: &Selector,
        owner: &str,
        sizes: bool,
    ) -> Result<Vec<VolumeInfo>, RuntimeError> {
        let everyone = Selector {
            session: None,
            ..selector.clone()
        };
        let mut wanted = labels::filters(&everyone);
        wanted.push(format!("{OWNER}={owner}"));
        let filters = HashMap::from([("label", wanted)]);
        let options = ListVolumesOptionsBuilder::new().filters(&filters).build();
        let listed = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(|e| self.error("list the volumes of app", &selector.app, e))?;
        let mut found = Vec::new();
        for volume in listed.volumes.unwrap_or_default() {
            let label = |key: &str| volume.labels.get(key).cloned().unwrap_or_default();
            let Some(path) = volume.labels.get(VOLUME_PATH).cloned() else {
                continue;
            };
            let name = label(OBJECT_NAME);
            let size_bytes = if sizes {
                let mountpoint = volume.mountpoint.clone();
                tokio::task::spawn_blocking(move || size_of(&mountpoint))
                    .await
                    .ok()
                    .flatten()
            } else {
                None
            };
            found.push(VolumeInfo {
                size_bytes,
                name: volume.name.clone(),
                app: label(APP),
                class: label(CLASS),
                object_id: label(OBJECT_ID),
                object_name: (!name.is_empty()).then_some(name),
                path,
            });
        }
        found.sort_by(|a, b| {
            (&a.class, &a.object_id, &a.path).cmp(&(&b.class, &b.object_id, &b.path))
        });
        Ok(found)
    }

    pub(super) async fn remove_selected_volumes(
        &self,
        selector: &Selector,
        owner: &str,
    ) -> Result<usize, RuntimeError> {
        let mut removed = 0;
        for volume in self.list_volumes(selector, owner, false).await? {
            let options = RemoveVolumeOptionsBuilder::new().force(false).build();
            match self.docker.remove_volume(&volume.name, Some(options)).await {
                Ok(()) => removed += 1,
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => tracing::warn!(
                    "volume {} of app {} stays: {}",
                    volume.name,
                    volume.app,
                    self.error("remove volume", &volume.name, e)
                ),
            }
        }
        Ok(removed)
    }
}

/// The bytes under a local volume's mount point, when this process may read it (the
/// engine's own figure, `docker system df -v`, is not in every API version).
fn size_of(mountpoint: &str) -> Option<u64> {
    if mountpoint.is_empty() {
        return None;
    }
    let mut total = 0u64;
    let mut pending = vec![std::path::PathBuf::from(mountpoint)];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).ok()? {
            let entry = entry.ok()?;
            let meta = entry.metadata().ok()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total = total.saturating_add(meta.len());
            }
        }
    }
    Some(total)
}
