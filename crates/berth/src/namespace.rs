//! Names to ids, and ids to the one live object that owns them.
//!
//! A namespace is bound to one container class. Creating an id creates nothing: the
//! object comes into being on first use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::id::{random_below, IdError, IdScheme, ObjectId};
use crate::lifecycle::StopReason;
use crate::object::{Class, Object};
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

/// The live objects, and the ids of the names seen, so that a name is hashed once.
#[derive(Default)]
struct Objects {
    by_id: HashMap<ObjectId, Object>,
    by_name: HashMap<String, ObjectId>,
}

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

    /// The class's name.
    pub fn class_name(&self) -> &str {
        &self.inner.class.options.name
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

    /// The one live object for `id`, created on first use.
    pub fn get(&self, id: ObjectId) -> Object {
        self.object(id, None)
    }

    /// The one live object called `name`.
    pub fn get_by_name(&self, name: &str) -> Object {
        {
            let objects = self.lock();
            if let Some(object) = objects
                .by_name
                .get(name)
                .and_then(|id| objects.by_id.get(id))
            {
                return object.clone();
            }
        }
        let id = self.id_from_name(name);
        let object = self.object(id, Some(name));
        self.lock().by_name.insert(name.to_string(), id);
        object
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
        *self
            .inner
            .class
            .image
            .write()
            .unwrap_or_else(|p| p.into_inner()) = image.to_string();
    }

    /// The image new containers of the class run.
    pub fn image(&self) -> String {
        self.inner.class.image()
    }

    /// Stops every running container of the namespace (SIGTERM, then SIGKILL after the
    /// grace period), all at once. Returns how many were stopped.
    pub async fn stop_all(&self, reason: StopReason) -> usize {
        // Every object, not only those that look active: one may be starting right now.
        let objects = self.objects();
        let results = futures_util::future::join_all(
            objects.iter().map(|o| o.stop_with(reason, Signal::Term)),
        )
        .await;
        let mut stopped = 0;
        for (object, result) in objects.iter().zip(results) {
            match result {
                Ok(true) => stopped += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(object = %object.describe(), "stop failed: {e}"),
            }
        }
        stopped
    }

    /// The objects that are live in this process.
    pub fn objects(&self) -> Vec<Object> {
        self.lock().by_id.values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Objects> {
        self.inner.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn object(&self, id: ObjectId, name: Option<&str>) -> Object {
        let mut objects = self.lock();
        let object = objects
            .by_id
            .entry(id)
            .or_insert_with(|| Object::new(self.inner.class.clone(), id, name));
        if let Some(name) = name {
            object.learn_name(name);
        }
        object.clone()
    }
}
