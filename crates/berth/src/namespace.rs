//! Names to ids, and ids to the one live object that owns them.
//!
//! A namespace is bound to one container class. Ids follow the reference scheme so that
//! they need no I/O and cannot be forged across namespaces:
//!
//! * an id is 32 bytes, written as 64 lowercase hex digits;
//! * `key = SHA-256(namespace key)`, where the namespace key is `"<app>/<class>"`;
//! * for [`Namespace::id_from_name`], the first 16 bytes are `HMAC-SHA256(key, name)[..16]`;
//!   for [`Namespace::new_unique_id`] they are random;
//! * the last 16 bytes are `HMAC-SHA256(key, first 16 bytes)[..16]`, which
//!   [`Namespace::id_from_string`] verifies, so an id of another namespace is rejected.
//!
//! Creating an id creates nothing: the object comes into being on first use.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use http::Request;
use sha2::{Digest, Sha256};

use crate::hooks::StopReason;
use crate::object::{Class, Object};
use crate::runtime::Signal;

/// The header that [`switch_port`] sets to make `fetch` use another container port.
pub const TARGET_PORT_HEADER: &str = "berth-container-target-port";

/// The object name [`Namespace::get_container`] uses when given none.
pub const SINGLETON_NAME: &str = "berth-singleton-container";

/// The id of an object: 32 bytes, displayed as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u8; 32]);

impl ObjectId {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 12 hex digits, enough to tell objects apart in names and logs.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_string()
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

/// Why a string is not an id of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{value:?} is not an object id: an id is 64 lowercase hex digits")]
    Malformed { value: String },
    #[error("{value} is not an id of namespace {namespace}: it was made by another namespace")]
    ForeignNamespace { value: String, namespace: String },
}

/// The id arithmetic of one namespace, with no I/O.
#[derive(Clone)]
pub(crate) struct IdScheme {
    key: [u8; 32],
}

impl IdScheme {
    pub(crate) fn new(namespace_key: &str) -> IdScheme {
        IdScheme {
            key: Sha256::digest(namespace_key.as_bytes()).into(),
        }
    }

    fn mac(&self, data: &[u8]) -> [u8; 16] {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(data);
        let full = mac.finalize().into_bytes();
        let mut half = [0u8; 16];
        half.copy_from_slice(&full[..16]);
        half
    }

    fn seal(&self, first: [u8; 16]) -> ObjectId {
        let mut id = [0u8; 32];
        id[..16].copy_from_slice(&first);
        id[16..].copy_from_slice(&self.mac(&first));
        ObjectId(id)
    }

    pub(crate) fn for_name(&self, name: &str) -> ObjectId {
        self.seal(self.mac(name.as_bytes()))
    }

    pub(crate) fn unique(&self) -> ObjectId {
        let mut first = [0u8; 16];
        // The OS random source failing leaves no safe way to make an unguessable id.
        getrandom::fill(&mut first).unwrap_or_else(|e| panic!("the OS random source failed: {e}"));
        self.seal(first)
    }

    pub(crate) fn parse(&self, value: &str, namespace: &str) -> Result<ObjectId, IdError> {
        let malformed = || IdError::Malformed {
            value: value.chars().take(80).collect(),
        };
        if value.len() != 64
            || !value
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(malformed());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&value[2 * i..2 * i + 2], 16).map_err(|_| malformed())?;
        }
        let mut first = [0u8; 16];
        first.copy_from_slice(&bytes[..16]);
        if self.seal(first).0 != bytes {
            return Err(IdError::ForeignNamespace {
                value: value.to_string(),
                namespace: namespace.to_string(),
            });
        }
        Ok(ObjectId(bytes))
    }
}

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
    pub fn new_unique_id(&self) -> ObjectId {
        self.inner.ids.unique()
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
    /// reference's `getContainer`).
    pub fn get_container(&self, name: Option<&str>) -> Object {
        self.get_by_name(name.unwrap_or(SINGLETON_NAME))
    }

    /// The object `instance-<k>` for a random `k` in `0..instances` (the reference's
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
        self.inner
            .class
            .image
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
            .or_insert_with(|| Object::new(self.inner.class.clone(), id));
        if let Some(name) = name {
            object.learn_name(name);
        }
        object.clone()
    }
}

/// Makes `fetch` send `request` to `port` of the container instead of the default port.
pub fn switch_port<B>(request: &mut Request<B>, port: u16) {
    request
        .headers_mut()
        .insert(TARGET_PORT_HEADER, http::HeaderValue::from(port));
}

pub(crate) fn random_below(n: usize) -> usize {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Not security-relevant: fall back to the clock.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        return nanos as usize % n;
    }
    (u64::from_le_bytes(bytes) % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_stable_distinct_ids() {
        let ids = IdScheme::new("app/Class");
        assert_eq!(ids.for_name("alpha"), ids.for_name("alpha"));
        assert_ne!(ids.for_name("alpha"), ids.for_name("beta"));
        let text = ids.for_name("alpha").to_string();
        assert_eq!(text.len(), 64);
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn ids_round_trip_and_other_namespaces_are_rejected() {
        let mine = IdScheme::new("app/Class");
        let theirs = IdScheme::new("app/Other");
        for id in [mine.for_name("alpha"), mine.unique()] {
            assert_eq!(mine.parse(&id.to_string(), "app/Class"), Ok(id));
            assert!(matches!(
                theirs.parse(&id.to_string(), "app/Other"),
                Err(IdError::ForeignNamespace { .. })
            ));
        }
        assert_ne!(mine.for_name("alpha"), theirs.for_name("alpha"));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        let ids = IdScheme::new("app/Class");
        let good = ids.for_name("alpha").to_string();
        for bad in [
            String::new(),
            "xyz".to_string(),
            good.to_uppercase(),
            good[..63].to_string(),
            format!("{good}0"),
            format!("{}g", &good[..63]),
        ] {
            assert!(
                matches!(ids.parse(&bad, "app/Class"), Err(IdError::Malformed { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn unique_ids_differ() {
        let ids = IdScheme::new("app/Class");
        assert_ne!(ids.unique(), ids.unique());
    }
}
