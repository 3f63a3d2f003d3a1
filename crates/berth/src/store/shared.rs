//! Objects' storage and alarms kept by another process. On a cluster an object's home
//! moves from router to router, and a router may be lost with its data folder: so one
//! `berth store` keeps what objects write, for every router (see
//! [`crate::cluster_store`]). A router's store sends those calls there and keeps the
//! rest (its deployments, the lifecycle of the objects it holds) in its own file.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{AlarmRecord, Storage, Store, StoreError};

/// One call of the shared part of a store, as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Call {
    Get {
        namespace: String,
        id: String,
        key: String,
    },
    /// `value` in hex.
    Put {
        namespace: String,
        id: String,
        key: String,
        value: String,
    },
    Delete {
        namespace: String,
        id: String,
        key: String,
    },
    Keys {
        namespace: String,
        id: String,
    },
    SaveAlarm {
        alarm: AlarmRecord,
    },
    MoveAlarm {
        id: String,
        expected_ms: i64,
        due_ms: i64,
        attempts: u32,
    },
    FinishAlarm {
        id: String,
        leased_ms: i64,
    },
    AlarmsOf {
        namespace: String,
        object: String,
    },
    NextAlarm {
        namespace: String,
    },
    DeleteAlarm {
        namespace: String,
        object: String,
        id: String,
    },
    /// The storage and alarms of every object of `app`.
    ForgetApp {
        app: String,
    },
}

impl Call {
    /// Whether the call only reads, so that it may be sent again.
    pub fn only_reads(&self) -> bool {
        matches!(
            self,
            Call::Get { .. } | Call::Keys { .. } | Call::AlarmsOf { .. } | Call::NextAlarm { .. }
        )
    }
}

/// Where a store sends its shared calls.
#[async_trait]
pub trait Remote: Send + Sync {
    /// The call's answer, as [`Store::answer`] gives it.
    async fn call(&self, call: &Call) -> Result<serde_json::Value, StoreError>;
}

impl Store {
    /// Sends objects' storage and alarms to `remote` from now on; the rest stays here.
    /// Call it before the store is used; a later call changes nothing.
    pub fn share_through(&self, remote: std::sync::Arc<dyn Remote>) {
        let _ = self.inner.remote.set(remote);
    }

    /// Whether objects' storage and alarms live elsewhere.
    pub fn is_shared(&self) -> bool {
        self.inner.remote.get().is_some()
    }

    /// `call`'s answer from the remote, if there is one; `None` to answer here.
    pub(super) async fn shared<T: serde::de::DeserializeOwned>(
        &self,
        call: Call,
    ) -> Option<Result<T, StoreError>> {
        let remote = self.inner.remote.get()?;
        Some(remote.call(&call).await.and_then(|value| {
            serde_json::from_value(value).map_err(|e| StoreError::Shared {
                reason: format!("an answer berth does not understand: {e}"),
            })
        }))
    }

    /// Answers `call` from this store's own file: what `berth store` does for routers.
    pub async fn answer(&self, call: Call) -> Result<serde_json::Value, StoreError> {
        let json = |value: serde_json::Value| Ok(value);
        match call {
            Call::Get { namespace, id, key } => {
                let value = Storage::of(self, &namespace, &id).get_here(&key).await?;
                json(serde_json::json!(value.map(|v| crate::id::hex(&v))))
            }
            Call::Put {
                namespace,
                id,
                key,
                value,
            } => {
                let bytes = unhex(&value).ok_or_else(|| StoreError::Shared {
                    reason: "a value that is not hex".into(),
                })?;
                Storage::of(self, &namespace, &id)
                    .put_here(&key, &bytes)
                    .await?;
                json(serde_json::Value::Null)
            }
            Call::Delete { namespace, id, key } => {
                let existed = Storage::of(self, &namespace, &id).delete_here(&key).await?;
                json(serde_json::json!(existed))
            }
            Call::Keys { namespace, id } => json(serde_json::json!(
                Storage::of(self, &namespace, &id).keys_here().await?
            )),
            Call::SaveAlarm { alarm } => {
                self.save_alarm_here(alarm).await?;
                json(serde_json::Value::Null)
            }
            Call::MoveAlarm {
                id,
                expected_ms,
                due_ms,
                attempts,
            } => json(serde_json::json!(
                self.move_alarm_here(&id, expected_ms, due_ms, attempts)
                    .await?
            )),
            Call::FinishAlarm { id, leased_ms } => json(serde_json::json!(
                self.finish_alarm_here(&id, leased_ms).await?
            )),
            Call::AlarmsOf { namespace, object } => json(serde_json::json!(
                self.alarms_of_here(&namespace, &object).await?
            )),
            Call::NextAlarm { namespace } => {
                json(serde_json::json!(self.next_alarm_here(&namespace).await?))
            }
            Call::DeleteAlarm {
                namespace,
                object,
                id,
            } => json(serde_json::json!(
                self.delete_alarm_here(&namespace, &object, &id).await?
            )),
            Call::ForgetApp { app } => {
                self.forget_shared_here(&app).await?;
                json(serde_json::Value::Null)
            }
        }
    }
}

/// Bytes from hex; `None` if it is not hex.
pub(super) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A remote that is another store in this process, through the calls' JSON.
    struct Loopback(Store);

    #[async_trait]
    impl Remote for Loopback {
        async fn call(&self, call: &Call) -> Result<serde_json::Value, StoreError> {
            let wire = serde_json::to_string(call).expect("JSON");
            let call: Call = serde_json::from_str(&wire).expect("JSON");
            self.0.answer(call).await
        }
    }

    #[tokio::test]
    async fn storage_and_alarms_live_in_the_shared_store_and_lifecycle_stays_here() {
        let shared = Store::in_memory().expect("store");
        let router = Store::in_memory().expect("store");
        router.share_through(Arc::new(Loopback(shared.clone())));
        let id = crate::ObjectId::parse_hex(&"ab".repeat(32)).expect("id");
        let storage = Storage::new(router.clone(), "app/C", id);
        storage.put("k", &[0, 1, 255]).await.expect("put");
        assert_eq!(storage.get("k").await.expect("get"), Some(vec![0, 1, 255]));
        let there = Storage::new(shared.clone(), "app/C", id);
        assert_eq!(there.get("k").await.expect("get"), Some(vec![0, 1, 255]));
        assert_eq!(storage.keys().await.expect("keys"), ["k"]);
        assert!(storage.delete("k").await.expect("delete"));
        assert_eq!(there.get("k").await.expect("get"), None);

        let alarm = AlarmRecord {
            id: "a1".into(),
            namespace: "app/C".into(),
            object: id.to_string(),
            name: None,
            due_ms: 10,
            payload: "{}".into(),
            attempts: 0,
        };
        router.save_alarm(alarm.clone()).await.expect("save");
        assert_eq!(
            shared.next_alarm("app/C").await.expect("next"),
            Some(alarm.clone())
        );
        assert!(router.move_alarm("a1", 10, 20, 1).await.expect("move"));
        assert!(!router
            .move_alarm("a1", 10, 30, 1)
            .await
            .expect("moved once"));
        assert_eq!(
            router
                .alarms_of("app/C", &alarm.object)
                .await
                .expect("of")
                .len(),
            1
        );
        assert!(router.finish_alarm("a1", 20).await.expect("finish"));
        assert_eq!(router.next_alarm("app/C").await.expect("next"), None);

        storage.put("gone", b"x").await.expect("put");
        router.forget_app("app").await.expect("forget");
        assert_eq!(there.get("gone").await.expect("get"), None);
    }

    #[test]
    fn hex_comes_back_as_it_went() {
        assert_eq!(unhex(&crate::id::hex(&[0, 9, 255])), Some(vec![0, 9, 255]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("+f"), None);
    }
}
