//! Durable state: one SQLite file per app.
//!
//! It keeps each object's lifecycle state (so `state()` and `berth ps` survive a restart
//! of berth, and containers left by a crashed berth can be found again) and each object's
//! private key-value storage. Writes happen on lifecycle transitions, never per request.
//!
//! SQLite blocks: a write may wait for a lock held by another process up to the busy
//! timeout. So every query runs on Tokio's blocking pool, never on the threads that serve
//! requests, one at a time (the connection serves one anyway): a burst of a thousand
//! starts queues its writes instead of waking a thousand threads. The store is a cheap
//! handle to share.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OptionalExtension};

mod deployments;
mod schedules;
pub mod shared;

pub use deployments::{Deployment, DeploymentStatus};
pub use schedules::AlarmRecord;

use crate::id::ObjectId;
use crate::lifecycle::State;

/// How long a write waits for another process's lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A failure of the state store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {path}: {reason}; check that the folder exists and is writable")]
    Open { path: PathBuf, reason: String },
    #[error("the state database {path} is damaged or is not a berth database ({reason}); move it away and berth starts an empty one, losing the objects' storage")]
    Corrupt { path: PathBuf, reason: String },
    #[error("the state database {path} failed: {reason}; check the disk, and that no other program holds the file")]
    Query { path: PathBuf, reason: String },
    #[error("the state database {path} could not be reached: {reason}")]
    Interrupted { path: PathBuf, reason: String },
    #[error("the cluster's store (berth store) failed: {reason}; check that its service runs and that this router reaches it")]
    Shared { reason: String },
}

/// What the store keeps of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectRecord {
    pub namespace: String,
    pub id: String,
    pub name: Option<String>,
    pub state: State,
    /// The container the object owned when the state was recorded.
    pub container_id: Option<String>,
    /// When the current container started, in milliseconds since the Unix epoch.
    pub started_at_ms: Option<i64>,
    /// When the state last changed, in milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
}

/// The app's SQLite database. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// This store's own random id, kept in it: what berth labels the volumes it makes
    /// with, so that it never removes another berth's (see [`Store::owner`]).
    owner: String,
    conn: Mutex<Connection>,
    /// One query at a time on the blocking pool.
    turn: Arc<tokio::sync::Semaphore>,
    /// Where objects' storage and alarms live, if not here (see [`shared`]).
    remote: std::sync::OnceLock<Arc<dyn shared::Remote>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT,
    state TEXT NOT NULL,
    exit_code INTEGER,
    container_id TEXT,
    started_at_ms INTEGER,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (namespace, id)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS storage (
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (namespace, id, key)
);
";

/// The store's owner id, made (16 random bytes, in hex) the first time.
fn owner(conn: &Connection) -> rusqlite::Result<String> {
    let made = crate::id::random_bytes::<16>()
        .map(|bytes| crate::id::hex(&bytes))
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('owner', ?1)",
        [&made],
    )?;
    conn.query_row("SELECT value FROM meta WHERE key = 'owner'", [], |row| {
        row.get(0)
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    crate::cron::to_ms(SystemTime::now())
}

impl Store {
    /// Opens (creating if needed) the database at `path`. It blocks: call it before
    /// serving, or from a blocking thread.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                StoreError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                }
            }
            _ => StoreError::Open {
                path: path.clone(),
                reason: e.to_string(),
            },
        };
        let conn = Connection::open(&path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        conn.execute_batch(deployments::SCHEMA).map_err(open_err)?;
        conn.execute_batch(schedules::SCHEMA).map_err(open_err)?;
        deployments::migrate(&conn).map_err(open_err)?;
        let owner = owner(&conn).map_err(open_err)?;
        Ok(Store::from_connection(path, owner, conn))
    }

    /// A store that lives only as long as the process (for tests and throwaway apps).
    pub fn in_memory() -> Result<Store, StoreError> {
        let path = PathBuf::from(":memory:");
        let open_err = |e: rusqlite::Error| StoreError::Open {
            path: path.clone(),
            reason: e.to_string(),
        };
        let conn = Connection::open_in_memory().map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        conn.execute_batch(deployments::SCHEMA).map_err(open_err)?;
        conn.execute_batch(schedules::SCHEMA).map_err(open_err)?;
        deployments::migrate(&conn).map_err(open_err)?;
        let owner = owner(&conn).map_err(open_err)?;
        Ok(Store::from_connection(path, owner, conn))
    }

    fn from_connection(path: PathBuf, owner: String, conn: Connection) -> Store {
        Store {
            inner: Arc::new(Inner {
                path,
                owner,
                conn: Mutex::new(conn),
                turn: Arc::new(tokio::sync::Semaphore::new(1)),
                remote: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The store's own id, made at its creation: two berths on one engine (a dev folder
    /// and a server, or two checkouts) keep apart what each made, even under one app name.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Runs `query` on the blocking pool.
    async fn run<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        let path = self.inner.path.clone();
        let turn = self.inner.turn.clone().acquire_owned().await.ok();
        tokio::task::spawn_blocking(move || {
            // Held until the query ends, even if the caller stops waiting for it.
            let _turn = turn;
            let conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
            query(&conn).map_err(|e| StoreError::Query {
                path: inner.path.clone(),
                reason: e.to_string(),
            })
        })
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Interrupted {
                path,
                reason: e.to_string(),
            })
        })
    }

    pub async fn save_object(&self, record: ObjectRecord) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                "INSERT INTO objects (namespace, id, name, state, exit_code, container_id, started_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (namespace, id) DO UPDATE SET
                   name = coalesce(excluded.name, objects.name), state = excluded.state,
                   exit_code = excluded.exit_code, container_id = excluded.container_id,
                   started_at_ms = excluded.started_at_ms, updated_at_ms = excluded.updated_at_ms",
                params![
                    record.namespace,
                    record.id,
                    record.name,
                    record.state.as_str(),
                    record.state.exit_code(),
                    record.container_id,
                    record.started_at_ms,
                    record.updated_at_ms,
                ],
            )
            .map(drop)
        })
        .await
    }

    /// Records that a container is gone (removed outside any object's lifecycle).
    pub async fn forget_container(&self, container_id: &str) -> Result<(), StoreError> {
        let container_id = container_id.to_string();
        self.run(move |c| {
            c.execute(
                "UPDATE objects SET state = 'stopped', exit_code = NULL, container_id = NULL,
                   started_at_ms = NULL, updated_at_ms = ?2
                 WHERE container_id = ?1",
                params![container_id, now_ms()],
            )
            .map(drop)
        })
        .await
    }

    /// The object that records `container_id` as its container, if one does: how a spare
    /// of a standby pool, whose labels name no object, is found again after a restart.
    pub async fn object_with_container(
        &self,
        container_id: &str,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        let container_id = container_id.to_string();
        self.run(move |c| {
            c.query_row(
                "SELECT namespace, id, name, state, exit_code, container_id, started_at_ms, updated_at_ms
                 FROM objects WHERE container_id = ?1 LIMIT 1",
                params![container_id],
                row_to_record,
            )
            .optional()
        })
        .await
    }

    pub async fn load_object(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        let (namespace, id) = (namespace.to_string(), id.to_string());
        self.run(move |c| {
            c.query_row(
                "SELECT namespace, id, name, state, exit_code, container_id, started_at_ms, updated_at_ms
                 FROM objects WHERE namespace = ?1 AND id = ?2",
                params![namespace, id],
                row_to_record,
            )
            .optional()
        })
        .await
    }

    /// Every object recorded, in namespace then name order.
    pub async fn objects(&self) -> Result<Vec<ObjectRecord>, StoreError> {
        self.objects_of(None).await
    }

    /// The objects of `app` (every object when `None`), in namespace then name order.
    pub async fn objects_of(&self, app: Option<&str>) -> Result<Vec<ObjectRecord>, StoreError> {
        // Namespaces are `<app>/<class>`; app names hold no '/'.
        let prefix = app.map(|a| format!("{a}/"));
        self.run(move |c| {
            let mut stmt = c.prepare(
                "SELECT namespace, id, name, state, exit_code, container_id, started_at_ms, updated_at_ms
                 FROM objects WHERE ?1 IS NULL OR substr(namespace, 1, length(?1)) = ?1
                 ORDER BY namespace, name, id",
            )?;
            let rows = stmt.query_map(params![prefix], row_to_record)?;
            rows.collect()
        })
        .await
    }

    /// Forgets every object of `app`, with its storage and alarms, and the app's cron
    /// schedules' last runs. Returns how many objects.
    pub async fn forget_app(&self, app: &str) -> Result<usize, StoreError> {
        // What the cluster's store keeps goes as well as it can: a store that cannot be
        // reached must not leave the app half destroyed here.
        if let Some(Err(e)) = self
            .shared::<()>(shared::Call::ForgetApp {
                app: app.to_string(),
            })
            .await
        {
            tracing::warn!("app {app} is destroyed, but its objects' storage and alarms stay in the cluster's store: {e}; destroy the app again once the store answers");
        }
        let prefix = format!("{app}/");
        self.run(move |c| {
            let n = c.execute(
                "DELETE FROM objects WHERE substr(namespace, 1, length(?1)) = ?1",
                params![prefix],
            )?;
            for table in ["storage", "alarms"] {
                c.execute(
                    &format!("DELETE FROM {table} WHERE substr(namespace, 1, length(?1)) = ?1"),
                    params![prefix],
                )?;
            }
            c.execute(
                "DELETE FROM crons WHERE substr(key, 1, length(?1)) = ?1",
                params![prefix],
            )?;
            Ok(n)
        })
        .await
    }
}

impl Store {
    /// Forgets the storage and alarms of every object of `app`.
    async fn forget_shared_here(&self, app: &str) -> Result<(), StoreError> {
        let prefix = format!("{app}/");
        self.run(move |c| {
            for table in ["storage", "alarms"] {
                c.execute(
                    &format!("DELETE FROM {table} WHERE substr(namespace, 1, length(?1)) = ?1"),
                    params![prefix],
                )?;
            }
            Ok(())
        })
        .await
    }
}

/// An object's private durable storage: keys to bytes, kept in the app's SQLite file (or
/// in the cluster's store, see [`shared`]).
#[derive(Clone)]
pub struct Storage {
    store: Store,
    namespace: Arc<str>,
    id: Arc<str>,
}

impl Storage {
    /// The storage of object `id` of namespace `namespace` (`<app>/<class>`) in `store`,
    /// for tools that reach it from outside the app (objects have [`crate::Object::storage`]).
    pub fn new(store: Store, namespace: &str, id: ObjectId) -> Storage {
        Storage {
            store,
            namespace: namespace.into(),
            id: id.to_string().into(),
        }
    }

    fn of(store: &Store, namespace: &str, id: &str) -> Storage {
        Storage {
            store: store.clone(),
            namespace: namespace.into(),
            id: id.into(),
        }
    }

    fn call(&self, key: Option<&str>) -> (String, String, String) {
        (
            self.namespace.to_string(),
            self.id.to_string(),
            key.unwrap_or_default().to_string(),
        )
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (namespace, id, key_) = self.call(Some(key));
        let call = shared::Call::Get {
            namespace,
            id,
            key: key_,
        };
        if let Some(answer) = self.store.shared::<Option<String>>(call).await {
            return answer?
                .map(|hex| {
                    shared::unhex(&hex).ok_or_else(|| StoreError::Shared {
                        reason: "a value that is not hex".into(),
                    })
                })
                .transpose();
        }
        self.get_here(key).await
    }

    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let (namespace, id, key_) = self.call(Some(key));
        let call = shared::Call::Put {
            namespace,
            id,
            key: key_,
            value: crate::id::hex(value),
        };
        if let Some(answer) = self.store.shared::<()>(call).await {
            return answer;
        }
        self.put_here(key, value).await
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let (namespace, id, key_) = self.call(Some(key));
        let call = shared::Call::Delete {
            namespace,
            id,
            key: key_,
        };
        if let Some(answer) = self.store.shared(call).await {
            return answer;
        }
        self.delete_here(key).await
    }

    /// The object's keys, in order.
    pub async fn keys(&self) -> Result<Vec<String>, StoreError> {
        let (namespace, id, _) = self.call(None);
        if let Some(answer) = self
            .store
            .shared(shared::Call::Keys { namespace, id })
            .await
        {
            return answer;
        }
        self.keys_here().await
    }

    async fn get_here(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (ns, id, key) = (self.namespace.clone(), self.id.clone(), key.to_string());
        self.store
            .run(move |c| {
                c.query_row(
                    "SELECT value FROM storage WHERE namespace = ?1 AND id = ?2 AND key = ?3",
                    params![&*ns, &*id, key],
                    |row| row.get(0),
                )
                .optional()
            })
            .await
    }

    async fn put_here(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let (ns, id, key) = (self.namespace.clone(), self.id.clone(), key.to_string());
        let value = value.to_vec();
        self.store
            .run(move |c| {
                c.execute(
                    "INSERT INTO storage (namespace, id, key, value) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (namespace, id, key) DO UPDATE SET value = excluded.value",
                    params![&*ns, &*id, key, value],
                )
                .map(drop)
            })
            .await
    }

    async fn delete_here(&self, key: &str) -> Result<bool, StoreError> {
        let (ns, id, key) = (self.namespace.clone(), self.id.clone(), key.to_string());
        self.store
            .run(move |c| {
                c.execute(
                    "DELETE FROM storage WHERE namespace = ?1 AND id = ?2 AND key = ?3",
                    params![&*ns, &*id, key],
                )
                .map(|n| n > 0)
            })
            .await
    }

    async fn keys_here(&self) -> Result<Vec<String>, StoreError> {
        let (ns, id) = (self.namespace.clone(), self.id.clone());
        self.store
            .run(move |c| {
                let mut stmt = c.prepare(
                    "SELECT key FROM storage WHERE namespace = ?1 AND id = ?2 ORDER BY key",
                )?;
                let rows = stmt.query_map(params![&*ns, &*id], |row| row.get(0))?;
                rows.collect()
            })
            .await
    }
}

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<ObjectRecord> {
    let state: String = row.get(3)?;
    let exit_code: Option<i64> = row.get(4)?;
    Ok(ObjectRecord {
        namespace: row.get(0)?,
        id: row.get(1)?,
        name: row.get(2)?,
        state: State::from_parts(&state, exit_code).unwrap_or(State::Stopped),
        container_id: row.get(5)?,
        started_at_ms: row.get(6)?,
        updated_at_ms: row.get(7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::IdScheme;

    fn record(state: State) -> ObjectRecord {
        ObjectRecord {
            namespace: "app/Class".into(),
            id: "ab".repeat(32),
            name: Some("alpha".into()),
            state,
            container_id: Some("c1".into()),
            started_at_ms: Some(1),
            updated_at_ms: 2,
        }
    }

    fn temp_db(test: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("berth-store-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("state.db");
        (dir, path)
    }

    #[tokio::test]
    async fn object_state_and_storage_survive_reopening_the_file() {
        let (dir, path) = temp_db("reopen");
        let id = IdScheme::new("app/Class").for_name("x");
        {
            let store = Store::open(&path).expect("open");
            store
                .save_object(record(State::Healthy))
                .await
                .expect("save");
            store
                .save_object(ObjectRecord {
                    name: None,
                    ..record(State::StoppedWithCode(3))
                })
                .await
                .expect("save again");
            let storage = Storage::new(store.clone(), "app/Class", id);
            storage.put("k", b"v").await.expect("put");
        }
        let store = Store::open(&path).expect("reopen");
        let loaded = store
            .load_object("app/Class", &"ab".repeat(32))
            .await
            .expect("load")
            .expect("present");
        assert_eq!(loaded.state, State::StoppedWithCode(3));
        assert_eq!(
            loaded.name.as_deref(),
            Some("alpha"),
            "a missing name keeps the known one"
        );
        let storage = Storage::new(store.clone(), "app/Class", id);
        assert_eq!(storage.get("k").await.expect("get"), Some(b"v".to_vec()));
        assert!(storage.delete("k").await.expect("delete"));
        assert_eq!(storage.keys().await.expect("keys"), Vec::<String>::new());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_is_not_a_database_says_so_once() {
        let (dir, path) = temp_db("corrupt");
        std::fs::write(&path, vec![7u8; 8192]).expect("write garbage");
        let e = Store::open(&path).err().expect("an error").to_string();
        assert!(e.contains("is damaged or is not a berth database"), "{e}");
        assert!(e.contains("move it away"), "{e}");
        assert_eq!(e.matches("not a database").count(), 1, "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A write that waits for another process's lock must not stall the thread that
    /// serves requests: here, the only thread of the runtime.
    #[tokio::test(flavor = "current_thread")]
    async fn a_locked_database_does_not_stall_the_async_thread() {
        let (dir, path) = temp_db("locked");
        let store = Store::open(&path).expect("open");
        let other = Connection::open(&path).expect("second connection");
        other
            .execute_batch("BEGIN EXCLUSIVE")
            .expect("the other process takes the lock");
        let write = tokio::spawn({
            let store = store.clone();
            async move { store.save_object(record(State::Healthy)).await }
        });
        // With the write blocking this thread, neither this timer nor anything else on
        // the thread would run until the busy timeout ended.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!write.is_finished(), "the write waits for the lock");
        other.execute_batch("COMMIT").expect("release the lock");
        write.await.expect("join").expect("the write goes through");
        let loaded = store
            .load_object("app/Class", &"ab".repeat(32))
            .await
            .expect("load");
        assert_eq!(loaded.map(|r| r.state), Some(State::Healthy));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
