//! An object's alarms: `schedule(at, payload)` as Cloudflare's library has it, kept in
//! the app's store so that they survive restarts, and handed to [`Hooks::on_alarm`] when
//! due. The class's alarm task (see `Namespace`) finds the due ones.
//!
//! [`Hooks::on_alarm`]: super::Hooks::on_alarm

use std::time::{Duration, SystemTime};

use super::Object;
use crate::cron::{from_ms, to_ms};
use crate::event::EventKind;
use crate::store::{AlarmRecord, StoreError};

/// Retries of a failing alarm before it is given up, as Cloudflare's alarms.
pub(crate) const MAX_RETRIES: u32 = 6;

/// How long a delivery may run before another process (after a crash of this one) may
/// deliver the alarm again.
pub(crate) const LEASE: Duration = Duration::from_secs(300);

/// One alarm of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    pub id: String,
    /// When it is due.
    pub at: SystemTime,
    pub payload: String,
    /// Deliveries that failed so far.
    pub attempts: u32,
}

impl From<&AlarmRecord> for Alarm {
    fn from(record: &AlarmRecord) -> Alarm {
        Alarm {
            id: record.id.clone(),
            at: from_ms(record.due_ms),
            payload: record.payload.clone(),
            attempts: record.attempts,
        }
    }
}

impl Object {
    /// Adds an alarm, due at `at` (at once if that has passed), that calls the class's
    /// [`on_alarm`](super::Hooks::on_alarm) with `payload`.
    pub async fn schedule(
        &self,
        at: SystemTime,
        payload: impl Into<String>,
    ) -> Result<Alarm, StoreError> {
        let id = crate::id::random_bytes::<16>()
            .map(|bytes| crate::id::hex(&bytes))
            .unwrap_or_else(|_| format!("{:x}", to_ms(SystemTime::now())));
        let record = AlarmRecord {
            id,
            namespace: self.inner.class.namespace_key.clone(),
            object: self.inner.id.to_string(),
            name: self.name().map(str::to_string),
            due_ms: to_ms(at),
            payload: payload.into(),
            attempts: 0,
        };
        let alarm = Alarm::from(&record);
        self.store().save_alarm(record).await?;
        self.inner.class.alarms.notify_one();
        Ok(alarm)
    }

    /// The object's alarms, soonest first.
    pub async fn list_schedules(&self) -> Result<Vec<Alarm>, StoreError> {
        let records = self
            .store()
            .alarms_of(&self.inner.class.namespace_key, &self.inner.id.to_string())
            .await?;
        Ok(records.iter().map(Alarm::from).collect())
    }

    /// Removes one of the object's alarms; whether it had it.
    pub async fn delete_schedule(&self, id: &str) -> Result<bool, StoreError> {
        self.store()
            .delete_alarm(
                &self.inner.class.namespace_key,
                &self.inner.id.to_string(),
                id,
            )
            .await
    }

    /// Hands a due alarm to the class's hooks, then forgets it, or keeps it for a retry.
    /// The store holds it leased, due at `leased` (a [`LEASE`] ahead); the lease is
    /// renewed while the hook runs, and an alarm deleted meanwhile is not brought back.
    pub(crate) async fn deliver_alarm(&self, record: AlarmRecord, leased: i64) {
        let alarm = Alarm::from(&record);
        let store = self.store().clone();
        let clock = self.inner.class.app.clock();
        let hooks = self.inner.class.hooks.clone();
        let mut leased = leased;
        let outcome = {
            let hook = hooks.on_alarm(self, &alarm);
            tokio::pin!(hook);
            loop {
                tokio::select! {
                    outcome = &mut hook => break outcome,
                    _ = tokio::time::sleep(LEASE / 3) => {
                        let renewed = to_ms(clock.now() + LEASE);
                        if let Ok(true) = store.move_alarm(&record.id, leased, renewed, record.attempts).await {
                            leased = renewed;
                        }
                    }
                }
            }
        };
        let saved = match outcome {
            Ok(()) => store.finish_alarm(&record.id, leased).await.map(drop),
            Err(why) if record.attempts >= MAX_RETRIES => {
                self.emit(
                    "",
                    EventKind::Error {
                        message: format!(
                            "alarm {} failed {} times and is given up: {why}",
                            record.id,
                            record.attempts + 1
                        ),
                    },
                );
                store.finish_alarm(&record.id, leased).await.map(drop)
            }
            Err(why) => {
                let wait = Duration::from_secs(1 << record.attempts.min(8));
                tracing::warn!(
                    "alarm {} of {}: {why}; retrying in {wait:?}",
                    record.id,
                    self.describe()
                );
                let retry = to_ms(clock.now() + wait);
                store
                    .move_alarm(&record.id, leased, retry, record.attempts + 1)
                    .await
                    .map(drop)
            }
        };
        if let Err(e) = saved {
            tracing::warn!(
                "alarm of {}: {e}; it may be delivered again",
                self.describe()
            );
        }
        self.inner.class.alarms.notify_one();
    }
}
