//! On a cluster, each router holds the running containers of the objects whose home it
//! is (see [`crate::peers`]). Homes move when routers come or go. A request adopts the
//! object's running container on its new home; but an idle object gets no request, and
//! its container would stay awake for good, held by a router that is no longer its home
//! (which never stops what it does not own) or by one that is gone. So every router
//! looks, every [`LOOK_EVERY`], for the running containers of its objects that it does not
//! hold, and takes them over: their idle clock starts on the new home, and they sleep as
//! any other. The old home lets go of them once idle (see `Object::release`).

use std::sync::Weak;
use std::time::Duration;

use super::{Namespace, NamespaceInner};
use crate::peers::Home;
use crate::runtime::Selector;

/// How often a router looks for containers whose object it became the home of.
pub(crate) const LOOK_EVERY: Duration = Duration::from_secs(10);

/// Takes over, for as long as the namespace lives, the running containers of its objects
/// homed on this router that it does not hold.
pub(super) async fn keep_homes(weak: Weak<NamespaceInner>) {
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        let Some(inner) = weak.upgrade() else { return };
        Namespace { inner }.take_over_homed().await;
    }
}

impl Namespace {
    /// One look: each container of this class's current version whose object's home is
    /// this router, and which this router does not hold, is taken over on a task of its
    /// own.
    async fn take_over_homed(&self) {
        let class = &self.inner.class;
        // A router that has not found itself takes every object for its own: it would
        // take over, then put to sleep, what the others serve.
        let Some(peers) = class.app.peers.get().filter(|p| p.knows_itself()) else {
            return;
        };
        if class.app.closing() || class.retired.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let version = class.current().version.clone();
        let found = match class
            .app
            .runtime
            .identities(&Selector::app(&class.app.name))
            .await
        {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(
                    "cannot look for the containers of {}: {e}",
                    class.namespace_key
                );
                return;
            }
        };
        for (container_id, identity) in found {
            let ours = identity.class == class.name
                && !identity.standby
                && identity.version == version
                && peers.home(&identity.object_id) == Home::Here;
            if !ours {
                continue;
            }
            // The name the labels keep is for display; it names the object only if it
            // gives back its id.
            let object = match identity.object_name.as_deref() {
                Some(name) if self.id_from_name(name) == identity.object_id => {
                    self.get_by_name(name)
                }
                _ => self.get(identity.object_id),
            };
            if object.holds(&container_id) {
                continue;
            }
            // One whose task ended (its node was lost) is started again by the object's
            // next request, as any: a look adopts, it never starts.
            match class.app.runtime.inspect(&container_id).await {
                Ok(info) if info.running => {}
                _ => continue,
            }
            class.app.spawn(async move {
                if let Err(e) = object.take_over().await {
                    tracing::warn!(object = %object.describe(), "could not take container {container_id} over: {e}");
                }
            });
        }
    }
}
