//! Names to ids, and ids to the one live object that owns them.
//!
//! A namespace is bound to one container class. Creating an id creates nothing: the
//! object comes into being on first use.

mod homes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::cron::{from_ms, to_ms};
use crate::object::ALARM_LEASE as LEASE;

use crate::class::ContainerClass;
use crate::id::{random_below, IdError, IdScheme, ObjectId};
use crate::lifecycle::StopReason;
use crate::object::{Class, Object, WeakObject};
use crate::runtime::Signal;

/// The object name [`Namespace::get_container`] uses when given none.
pub const SINGLETON_NAME: &str = "berth-singleton-container";

/// All objects of one container class. Cheap to clone; clones share the objects.
#[derive(Clone)]
pub struct Namespace {
    inner: Arc<NamespaceInner>,
}

struct NamespaceInner {
    class: Arc<Class>,
    ids: IdScheme,
    objects: Mutex<Objects>,
}

/// The live objects by id. An object lives while anything holds it: a request, a start,
/// the monitor of its container, a caller's handle. Once nothing does, it is freed and its
/// entry is swept out, so names that come and go leave nothing behind in memory; its state,
/// if it ever ran, is in the store for the next time.
#[derive(Default)]
struct Objects {
    by_id: HashMap<ObjectId, WeakObject>,
    /// Entries at which dead ones are swept out next: twice the live ones at the last
    /// sweep, so that sweeping costs O(1) per new object.
    sweep_at: usize,
}

/// Entries below which the index is never swept.
const SWEEP_FLOOR: usize = 1024;

impl Namespace {
    pub(crate) fn new(class: Arc<Class>) -> Namespace {
        let ids = IdScheme::new(&class.namespace_key);
        Namespace {
            inner: Arc::new(NamespaceInner {
                class,
                ids,
                objects: Mutex::new(Objects::default()),
            }),
        }
    }

    /// Starts the class's alarm task, which delivers each object's due alarms for as
    /// long as the namespace lives.
    pub(crate) fn watch_alarms(&self) {
        let weak = Arc::downgrade(&self.inner);
        let notify = self.inner.class.alarms.clone();
        self.inner.class.app.spawn(watch_alarms(weak, notify));
    }

    /// Starts the task that, on a cluster's router, takes over the running containers of
    /// the objects that became its own (see [`homes`]). Not on a single host:
    /// [`crate::App::use_peers`] comes before the first namespace.
    pub(crate) fn keep_homes(&self) {
        if self.inner.class.app.peers.get().is_none() {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        self.inner.class.app.spawn(homes::keep_homes(weak));
    }

    /// Starts the task that keeps the class's standby pool full (`standby = N`).
    pub(crate) fn keep_standby(&self) {
        let class = &self.inner.class;
        let keeper = crate::object::keep_standby(Arc::downgrade(class), class.standby.wake.clone());
        class.app.spawn(keeper);
    }

    /// Tells the metrics which share (0 to 1) of the class's running instances a rollout
    /// has replaced.
    pub(crate) fn report_rollout(&self, share: f64) {
        let class = &self.inner.class;
        class.app.metrics.rollout_progress(&class.labels, share);
    }

    /// The class as metrics label it.
    pub(crate) fn labels(&self) -> &crate::metrics::ClassLabels {
        &self.inner.class.labels
    }

    pub fn class_name(&self) -> &str {
        &self.inner.class.name
    }

    /// The key the ids of this namespace derive from: `"<app>/<class>"`.
    pub fn key(&self) -> &str {
        &self.inner.class.namespace_key
    }

    /// The id of the object called `name`: the same name always gives the same id.
    pub fn id_from_name(&self, name: &str) -> ObjectId {
        self.inner.ids.for_name(name)
    }

    /// Parses an id made by this namespace; rejects malformed ids and ids of others.
    pub fn id_from_string(&self, value: &str) -> Result<ObjectId, IdError> {
        self.inner.ids.parse(value, self.key())
    }

    /// A new random id, unguessable and verifiable by this namespace.
    pub fn new_unique_id(&self) -> Result<ObjectId, IdError> {
        Ok(self.inner.ids.unique()?)
    }

    /// The app's store.
    pub fn store(&self) -> &crate::store::Store {
        &self.inner.class.app.store
    }

    /// Whether this router is the home of the object called `name` (always, but on a
    /// cluster), without making the object: what is done once for the cluster is done
    /// there.
    pub fn is_home_of_name(&self, name: &str) -> bool {
        let Some(peers) = self.inner.class.app.peers.get() else {
            return true;
        };
        matches!(
            peers.home(&self.id_from_name(name)),
            crate::peers::Home::Here
        )
    }

    /// The one live object for `id`, created on first use.
    pub fn get(&self, id: ObjectId) -> Object {
        self.object(id, None::<fn() -> String>)
    }

    /// The one live object called `name`.
    pub fn get_by_name(&self, name: &str) -> Object {
        self.object(self.id_from_name(name), Some(|| name.to_string()))
    }

    /// The object for `id`, which is called `name()`; the name is made only when a new
    /// object needs it.
    pub(crate) fn get_named(&self, id: ObjectId, name: impl FnOnce() -> String) -> Object {
        self.object(id, Some(name))
    }

    /// Takes the class out of service: from now on no container starts for it (a
    /// request that would need one gets a 503 `class-removed`). What runs is left to
    /// [`Namespace::stop_all`].
    pub fn retire(&self) {
        self.inner
            .class
            .retired
            .store(true, std::sync::atomic::Ordering::Release);
        self.inner.class.standby.wake.notify_one();
    }

    /// Whether `other` is this very namespace (not merely one of the same class).
    pub fn same(&self, other: &Namespace) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The live object for `id`, if there is one; never creates one.
    pub(crate) fn peek(&self, id: ObjectId) -> Option<Object> {
        self.lock().by_id.get(&id).and_then(WeakObject::upgrade)
    }

    /// The object called `name`, or the class's singleton when `name` is `None` (the
    /// `getContainer` of Cloudflare's library).
    pub fn get_container(&self, name: Option<&str>) -> Object {
        self.get_by_name(name.unwrap_or(SINGLETON_NAME))
    }

    /// The object `instance-<k>` for a random `k` in `0..instances` (Cloudflare's
    /// `getRandom`): a simple way to spread load over a pool.
    pub fn get_random(&self, instances: usize) -> Object {
        let k = random_below(instances.max(1));
        self.get_by_name(&format!("instance-{k}"))
    }

    /// Makes new containers of the class run `image` (after a rebuild).
    pub fn set_image(&self, image: &str) {
        let mut options = self.inner.class.current().options.clone();
        options.image = image.to_string();
        self.inner.class.set_options(options);
    }

    /// Makes new containers of the class start with `options` (a new deployment); the
    /// class keeps its name. Running containers of the older version go on until
    /// [`Namespace::replace_all`] or a rollout replaces them.
    pub fn set_options(&self, options: ContainerClass) {
        self.inner.class.set_options(options);
    }

    /// The options new containers of the class start with.
    pub fn options(&self) -> ContainerClass {
        self.inner.class.current().options.clone()
    }

    /// How many spares of the standby pool (`standby = N`) are ready right now.
    pub fn standby_ready(&self) -> usize {
        self.inner.class.standby.ready()
    }

    /// The image new containers of the class run.
    pub fn image(&self) -> String {
        self.inner.class.image()
    }

    /// Stops every running container of the namespace (SIGTERM, then SIGKILL after the
    /// grace period), all at once, and removes the spares of its standby pool. Returns how
    /// many were stopped or removed.
    pub async fn stop_all(&self, reason: StopReason) -> usize {
        let class = &self.inner.class;
        let spares = class.standby.drain(class).await;
        // Every object, not only those that look active: one may be starting right now.
        let objects = self.objects();
        let results = futures_util::future::join_all(
            objects.iter().map(|o| o.stop_with(reason, Signal::Term)),
        )
        .await;
        let mut stopped = spares;
        for (object, result) in objects.iter().zip(results) {
            match result {
                Ok(true) => stopped += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(object = %object.describe(), "stop failed: {e}"),
            }
        }
        stopped
    }

    /// Replaces every container that runs an image other than the class's (after
    /// [`Namespace::set_image`]), all at once: each lets its requests in flight finish for
    /// up to `drain`, then stops; requests that arrive meanwhile wait for a container of
    /// the new image. Returns how many were replaced.
    pub async fn replace_all(&self, drain: std::time::Duration) -> usize {
        let objects = self.objects();
        let results =
            futures_util::future::join_all(objects.iter().map(|o| o.replace(drain))).await;
        let mut replaced = 0;
        for (object, result) in objects.iter().zip(results) {
            match result {
                Ok(true) => replaced += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(object = %object.describe(), "replacement failed: {e}"),
            }
        }
        replaced
    }

    /// The objects that are live in this process.
    pub fn objects(&self) -> Vec<Object> {
        self.lock()
            .by_id
            .values()
            .filter_map(WeakObject::upgrade)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Objects> {
        self.inner.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn object(&self, id: ObjectId, name: Option<impl FnOnce() -> String>) -> Object {
        let mut objects = self.lock();
        if let Some(object) = objects.by_id.get(&id).and_then(WeakObject::upgrade) {
            if let Some(name) = name.filter(|_| object.name().is_none()) {
                object.learn_name(&name());
            }
            return object;
        }
        let name = name.map(|name| name());
        let object = Object::new(self.inner.class.clone(), id, name.as_deref());
        objects.by_id.insert(id, object.downgrade());
        if objects.by_id.len() >= objects.sweep_at {
            objects.by_id.retain(|_, object| object.is_alive());
            objects.sweep_at = (objects.by_id.len() * 2).max(SWEEP_FLOOR);
        }
        object
    }
}

/// The longest the alarm task sleeps at once: it looks again at least this often, to
/// follow a change of the machine's clock and to end once its namespace is gone.
const ALARM_NAP: Duration = Duration::from_secs(60);
/// The same, with the cluster's store.
const SHARED_ALARM_NAP: Duration = Duration::from_secs(5);
/// How long a due alarm waits for its home, with the cluster's store, before any router
/// delivers it.
const HOME_GRACE: Duration = Duration::from_secs(10);

/// Delivers the alarms of a namespace's objects when due, each on a task of its own.
async fn watch_alarms(weak: Weak<NamespaceInner>, notify: Arc<Notify>) {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Some(inner) = weak.upgrade() else { return };
        let namespace = Namespace { inner };
        let wait = namespace.next_alarm().await;
        drop(namespace);
        if let Some(wait) = wait {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = notified => {}
            }
        }
    }
}

impl Namespace {
    /// Delivers the soonest alarm if it is due, and says how long to wait otherwise
    /// (`None`: look again at once).
    async fn next_alarm(&self) -> Option<Duration> {
        let class = &self.inner.class;
        let store = &class.app.store;
        // Alarms that other routers add to the cluster's store are seen only by looking.
        let nap = if store.is_shared() {
            SHARED_ALARM_NAP
        } else {
            ALARM_NAP
        };
        let record = match store.next_alarm(&class.namespace_key).await {
            Ok(Some(record)) => record,
            Ok(None) => return Some(nap),
            Err(e) => {
                tracing::warn!("alarms of {}: {e}", class.namespace_key);
                return Some(Duration::from_secs(5));
            }
        };
        let now = class.app.clock().now();
        if let Ok(ahead) = from_ms(record.due_ms).duration_since(now) {
            if !ahead.is_zero() {
                return Some(ahead.min(nap));
            }
        }
        let Ok(id) = ObjectId::parse_hex(&record.object) else {
            let _ = store
                .delete_alarm(&record.namespace, &record.object, &record.id)
                .await;
            return None;
        };
        // With the cluster's store, every router sees every alarm: the object's home
        // delivers it, as it runs the object's lifecycle, and a router that has not found
        // itself among the routers delivers none. One that no home took within
        // HOME_GRACE (its home is gone, or lacks the app) is delivered by whoever sees it:
        // the soonest alarm must not hold up the others for good.
        if store.is_shared() {
            let mine = class.app.peers.get().is_some_and(|peers| {
                peers.knows_itself() && peers.home(&id) == crate::peers::Home::Here
            });
            let overdue = now
                .duration_since(from_ms(record.due_ms))
                .is_ok_and(|late| late > HOME_GRACE);
            if !mine && !overdue {
                return Some(Duration::from_secs(1));
            }
        }
        // Leased: no one delivers it again while this delivery runs (which renews it).
        let leased = to_ms(now + LEASE);
        match store
            .move_alarm(&record.id, record.due_ms, leased, record.attempts)
            .await
        {
            Ok(true) => {}
            // Deleted or moved meanwhile: look again.
            Ok(false) => return None,
            Err(e) => {
                tracing::warn!("alarms of {}: {e}", class.namespace_key);
                return Some(Duration::from_secs(5));
            }
        }

        let object = match record.name.clone() {
            Some(name) => self.get_named(id, || name),
            None => self.get(id),
        };
        class
            .app
            .spawn(async move { object.deliver_alarm(record, leased).await });
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::app::App;
    use crate::class::ContainerClass;
    use crate::object::NoHooks;
    use crate::runtime::fake::FakeRuntime;
    use crate::store::Store;

    #[tokio::test]
    async fn names_that_come_and_go_leave_a_bounded_index() {
        let app =
            App::new("ns", FakeRuntime::new(), Store::in_memory().expect("store")).expect("app");
        let ns = app.namespace(ContainerClass::new("C", "none"), Arc::new(NoHooks));
        let kept = ns.get_by_name("kept");
        for i in 0..20_000 {
            let object = ns.get_by_name(&format!("visitor-{i}"));
            assert_eq!(object.name(), Some(format!("visitor-{i}").as_str()));
        }
        assert_eq!(ns.objects().len(), 1, "only the object still held is live");
        let entries = ns.lock().by_id.len();
        assert!(
            entries <= super::SWEEP_FLOOR,
            "{entries} entries for 1 live object"
        );
        let again = ns.get_by_name("kept");
        assert_eq!(ns.objects().len(), 1, "the same object, not a second one");
        drop((kept, again));
        assert!(ns.objects().is_empty());
    }
}
