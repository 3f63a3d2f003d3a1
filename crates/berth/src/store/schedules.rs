//! What the store keeps of schedules: when each cron schedule of a worker last ran, and
//! each object's pending alarms (`Object::schedule`), so that both survive a restart.

use rusqlite::{params, OptionalExtension};

use super::shared::Call;
use super::{Store, StoreError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS crons (
    key TEXT PRIMARY KEY,
    last_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alarms (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    object TEXT NOT NULL,
    name TEXT,
    due_ms INTEGER NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS alarms_due ON alarms (namespace, due_ms);
";

/// An object's alarm as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlarmRecord {
    pub id: String,
    pub namespace: String,
    /// The object's id, in hex.
    pub object: String,
    pub name: Option<String>,
    /// When it is due, in milliseconds since the Unix epoch.
    pub due_ms: i64,
    pub payload: String,
    /// Deliveries that failed so far.
    pub attempts: u32,
}

fn row_to_alarm(row: &rusqlite::Row<'_>) -> rusqlite::Result<AlarmRecord> {
    Ok(AlarmRecord {
        id: row.get(0)?,
        namespace: row.get(1)?,
        object: row.get(2)?,
        name: row.get(3)?,
        due_ms: row.get(4)?,
        payload: row.get(5)?,
        attempts: row.get(6)?,
    })
}

const ALARM_COLUMNS: &str = "id, namespace, object, name, due_ms, payload, attempts";

impl Store {
    /// When the cron schedule `key` last ran. The first call records `now_ms` and returns
    /// it: a schedule is counted from when berth first saw it, so that a tick missed
    /// while berth was down is still run at the next start.
    pub async fn cron_started(&self, key: &str, now_ms: i64) -> Result<i64, StoreError> {
        let key = key.to_string();
        self.run(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO crons (key, last_ms) VALUES (?1, ?2)",
                params![key, now_ms],
            )?;
            c.query_row("SELECT last_ms FROM crons WHERE key = ?1", [key], |row| {
                row.get(0)
            })
        })
        .await
    }

    /// Records that the cron schedule `key` ran for its tick at `tick_ms`.
    pub async fn cron_ran(&self, key: &str, tick_ms: i64) -> Result<(), StoreError> {
        let key = key.to_string();
        self.run(move |c| {
            c.execute(
                "INSERT INTO crons (key, last_ms) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET last_ms = max(last_ms, excluded.last_ms)",
                params![key, tick_ms],
            )
            .map(drop)
        })
        .await
    }

    /// Adds (or replaces, by id) an alarm.
    pub async fn save_alarm(&self, alarm: AlarmRecord) -> Result<(), StoreError> {
        if let Some(answer) = self
            .shared(Call::SaveAlarm {
                alarm: alarm.clone(),
            })
            .await
        {
            return answer;
        }
        self.save_alarm_here(alarm).await
    }

    pub(super) async fn save_alarm_here(&self, alarm: AlarmRecord) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO alarms (id, namespace, object, name, due_ms, payload, attempts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    alarm.id,
                    alarm.namespace,
                    alarm.object,
                    alarm.name,
                    alarm.due_ms,
                    alarm.payload,
                    alarm.attempts
                ],
            )
            .map(drop)
        })
        .await
    }

    /// Moves alarm `id` to `due_ms` (and `attempts`) if it is still due at `expected_ms`:
    /// a delivery's lease, its renewal, or its retry. Whether it did: an alarm deleted,
    /// or leased by another, meanwhile is left alone.
    pub async fn move_alarm(
        &self,
        id: &str,
        expected_ms: i64,
        due_ms: i64,
        attempts: u32,
    ) -> Result<bool, StoreError> {
        let call = Call::MoveAlarm {
            id: id.to_string(),
            expected_ms,
            due_ms,
            attempts,
        };
        if let Some(answer) = self.shared(call).await {
            return answer;
        }
        self.move_alarm_here(id, expected_ms, due_ms, attempts)
            .await
    }

    pub(super) async fn move_alarm_here(
        &self,
        id: &str,
        expected_ms: i64,
        due_ms: i64,
        attempts: u32,
    ) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.run(move |c| {
            c.execute(
                "UPDATE alarms SET due_ms = ?3, attempts = ?4 WHERE id = ?1 AND due_ms = ?2",
                params![id, expected_ms, due_ms, attempts],
            )
            .map(|n| n > 0)
        })
        .await
    }

    /// Removes alarm `id` once delivered, if it is still the one leased at `leased_ms`.
    pub async fn finish_alarm(&self, id: &str, leased_ms: i64) -> Result<bool, StoreError> {
        let call = Call::FinishAlarm {
            id: id.to_string(),
            leased_ms,
        };
        if let Some(answer) = self.shared(call).await {
            return answer;
        }
        self.finish_alarm_here(id, leased_ms).await
    }

    pub(super) async fn finish_alarm_here(
        &self,
        id: &str,
        leased_ms: i64,
    ) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.run(move |c| {
            c.execute(
                "DELETE FROM alarms WHERE id = ?1 AND due_ms = ?2",
                params![id, leased_ms],
            )
            .map(|n| n > 0)
        })
        .await
    }

    /// The alarms of one object, soonest first.
    pub async fn alarms_of(
        &self,
        namespace: &str,
        object: &str,
    ) -> Result<Vec<AlarmRecord>, StoreError> {
        let call = Call::AlarmsOf {
            namespace: namespace.to_string(),
            object: object.to_string(),
        };
        if let Some(answer) = self.shared(call).await {
            return answer;
        }
        self.alarms_of_here(namespace, object).await
    }

    pub(super) async fn alarms_of_here(
        &self,
        namespace: &str,
        object: &str,
    ) -> Result<Vec<AlarmRecord>, StoreError> {
        let (namespace, object) = (namespace.to_string(), object.to_string());
        self.run(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {ALARM_COLUMNS} FROM alarms WHERE namespace = ?1 AND object = ?2 ORDER BY due_ms, id"
            ))?;
            let rows = stmt.query_map(params![namespace, object], row_to_alarm)?;
            rows.collect()
        })
        .await
    }

    /// The soonest alarm of `namespace`, due or not.
    pub async fn next_alarm(&self, namespace: &str) -> Result<Option<AlarmRecord>, StoreError> {
        let call = Call::NextAlarm {
            namespace: namespace.to_string(),
        };
        if let Some(answer) = self.shared(call).await {
            return answer;
        }
        self.next_alarm_here(namespace).await
    }

    pub(super) async fn next_alarm_here(
        &self,
        namespace: &str,
    ) -> Result<Option<AlarmRecord>, StoreError> {
        let namespace = namespace.to_string();
        self.run(move |c| {
            c.query_row(
                &format!("SELECT {ALARM_COLUMNS} FROM alarms WHERE namespace = ?1 ORDER BY due_ms, id LIMIT 1"),
                [namespace],
                row_to_alarm,
            )
            .optional()
        })
        .await
    }

    /// Removes an alarm of an object; whether there was one.
    pub async fn delete_alarm(
        &self,
        namespace: &str,
        object: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let call = Call::DeleteAlarm {
            namespace: namespace.to_string(),
            object: object.to_string(),
            id: id.to_string(),
        };
        if let Some(answer) = self.shared(call).await {
            return answer;
        }
        self.delete_alarm_here(namespace, object, id).await
    }

    pub(super) async fn delete_alarm_here(
        &self,
        namespace: &str,
        object: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let (namespace, object, id) = (namespace.to_string(), object.to_string(), id.to_string());
        self.run(move |c| {
            c.execute(
                "DELETE FROM alarms WHERE namespace = ?1 AND object = ?2 AND id = ?3",
                params![namespace, object, id],
            )
            .map(|n| n > 0)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cron_counts_from_when_it_was_first_seen_and_only_moves_forward() {
        let store = Store::in_memory().expect("store");
        assert_eq!(store.cron_started("k", 1_000).await.ok(), Some(1_000));
        assert_eq!(store.cron_started("k", 9_000).await.ok(), Some(1_000));
        store.cron_ran("k", 5_000).await.expect("ran");
        store.cron_ran("k", 4_000).await.expect("an older tick");
        assert_eq!(store.cron_started("k", 9_000).await.ok(), Some(5_000));
    }

    #[tokio::test]
    async fn alarms_are_kept_per_object_soonest_first() {
        let store = Store::in_memory().expect("store");
        let alarm = |id: &str, object: &str, due_ms| AlarmRecord {
            id: id.into(),
            namespace: "app/C".into(),
            object: object.into(),
            name: None,
            due_ms,
            payload: "{}".into(),
            attempts: 0,
        };
        for a in [
            alarm("b", "o1", 20),
            alarm("a", "o1", 10),
            alarm("c", "o2", 5),
        ] {
            store.save_alarm(a).await.expect("save");
        }
        let ids = |v: Vec<AlarmRecord>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.alarms_of("app/C", "o1").await.expect("list")),
            ["a", "b"]
        );
        assert_eq!(
            store
                .next_alarm("app/C")
                .await
                .expect("next")
                .map(|a| a.id)
                .as_deref(),
            Some("c")
        );
        assert!(
            !store
                .delete_alarm("app/C", "o1", "c")
                .await
                .expect("delete"),
            "not o1's"
        );
        assert!(store
            .delete_alarm("app/C", "o2", "c")
            .await
            .expect("delete"));
        assert_eq!(
            store
                .next_alarm("app/C")
                .await
                .expect("next")
                .map(|a| a.id)
                .as_deref(),
            Some("a")
        );
    }
}
