//! Durable state: one SQLite file per app.
//!
//! It keeps each object's lifecycle state (so `state()` and `berth ps` survive a restart
//! of berth, and containers left by a crashed berth can be found again) and each object's
//! private key-value storage. Writes happen on lifecycle transitions, never per request.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use crate::id::ObjectId;
use crate::lifecycle::State;

/// A failure of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {path}: {source}; check that the folder exists and is writable")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the state database {path} failed: {source}")]
    Query {
        path: PathBuf,
        source: rusqlite::Error,
    },
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

/// The app's SQLite database.
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
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
CREATE TABLE IF NOT EXISTS storage (
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (namespace, id, key)
);
";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        Ok(Store {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// A store that lives only as long as the process (for tests and throwaway apps).
    pub fn in_memory() -> Result<Store, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        conn.execute_batch(SCHEMA)
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        Ok(Store {
            path,
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|source| StoreError::Query {
            path: self.path.clone(),
            source,
        })
    }

    pub fn save_object(&self, record: &ObjectRecord) -> Result<(), StoreError> {
        self.with(|c| {
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
    }

    /// Records that a container is gone (removed outside any object's lifecycle).
    pub fn forget_container(&self, container_id: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE objects SET state = 'stopped', exit_code = NULL, container_id = NULL,
                   started_at_ms = NULL, updated_at_ms = ?2
                 WHERE container_id = ?1",
                params![container_id, now_ms()],
            )
            .map(drop)
        })
    }

    pub fn load_object(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT namespace, id, name, state, exit_code, container_id, started_at_ms, updated_at_ms
                 FROM objects WHERE namespace = ?1 AND id = ?2",
                params![namespace, id],
                row_to_record,
            )
            .optional()
        })
    }

    /// Every object the app has recorded, in namespace then name order.
    pub fn objects(&self) -> Result<Vec<ObjectRecord>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT namespace, id, name, state, exit_code, container_id, started_at_ms, updated_at_ms
                 FROM objects ORDER BY namespace, name, id",
            )?;
            let rows = stmt.query_map([], row_to_record)?;
            rows.collect()
        })
    }

    pub fn storage_get(
        &self,
        namespace: &str,
        id: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT value FROM storage WHERE namespace = ?1 AND id = ?2 AND key = ?3",
                params![namespace, id, key],
                |row| row.get(0),
            )
            .optional()
        })
    }

    pub fn storage_put(
        &self,
        namespace: &str,
        id: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO storage (namespace, id, key, value) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (namespace, id, key) DO UPDATE SET value = excluded.value",
                params![namespace, id, key, value],
            )
            .map(drop)
        })
    }

    /// Deletes a key; returns whether it existed.
    pub fn storage_delete(&self, namespace: &str, id: &str, key: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM storage WHERE namespace = ?1 AND id = ?2 AND key = ?3",
                params![namespace, id, key],
            )
            .map(|n| n > 0)
        })
    }

    /// The object's keys, in order.
    pub fn storage_keys(&self, namespace: &str, id: &str) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT key FROM storage WHERE namespace = ?1 AND id = ?2 ORDER BY key")?;
            let rows = stmt.query_map(params![namespace, id], |row| row.get(0))?;
            rows.collect()
        })
    }
}

/// An object's private durable storage: keys to bytes, kept in the app's SQLite file.
#[derive(Clone)]
pub struct Storage {
    store: Arc<Store>,
    namespace: String,
    id: String,
}

impl Storage {
    pub(crate) fn new(store: Arc<Store>, namespace: &str, id: ObjectId) -> Storage {
        Storage {
            store,
            namespace: namespace.to_string(),
            id: id.to_string(),
        }
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.storage_get(&self.namespace, &self.id, key)
    }

    pub fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.store
            .storage_put(&self.namespace, &self.id, key, value)
    }

    /// Deletes `key`; returns whether it existed.
    pub fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.store.storage_delete(&self.namespace, &self.id, key)
    }

    pub fn keys(&self) -> Result<Vec<String>, StoreError> {
        self.store.storage_keys(&self.namespace, &self.id)
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

    #[test]
    fn object_state_survives_reopening_the_file() {
        let dir = std::env::temp_dir().join(format!("berth-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("state.db");
        let _ = std::fs::remove_file(&path);
        {
            let store = Store::open(&path).expect("open");
            store.save_object(&record(State::Healthy)).expect("save");
            store
                .save_object(&ObjectRecord {
                    name: None,
                    ..record(State::StoppedWithCode(3))
                })
                .expect("save again");
            store.storage_put("app/Class", "x", "k", b"v").expect("put");
        }
        let store = Store::open(&path).expect("reopen");
        let loaded = store
            .load_object("app/Class", &"ab".repeat(32))
            .expect("load")
            .expect("present");
        assert_eq!(loaded.state, State::StoppedWithCode(3));
        assert_eq!(
            loaded.name.as_deref(),
            Some("alpha"),
            "a missing name keeps the known one"
        );
        assert_eq!(
            store.storage_get("app/Class", "x", "k").expect("get"),
            Some(b"v".to_vec())
        );
        assert!(store.storage_delete("app/Class", "x", "k").expect("delete"));
        assert_eq!(
            store.storage_keys("app/Class", "x").expect("keys"),
            Vec::<String>::new()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
