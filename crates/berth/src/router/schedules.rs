//! A worker's cron schedules: at each tick, a `GET` of the schedule's path goes to the
//! object its route (or its `instance`) names, and wakes it if it sleeps.
//!
//! Delivery is at least once. An answer of 5xx (a failed start among them) is retried,
//! after 1 s, then twice as long each time up to 5 minutes, until the next tick takes
//! over. Each tick that was answered is recorded in the app's store, so that a tick
//! missed while berth was down runs once at the next start, not once per missed tick.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;

use super::{Router, RouterError};
use crate::cron::{from_ms, to_ms, Clock, Cron};
use crate::http::full;
use crate::object::Object;
use crate::store::Store;

/// `{ cron = "*/5 * * * *", path = "/tick", instance = "reporter" }` of a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    pub cron: Cron,
    /// The path (and query) of the request, as a client would send it to the worker.
    pub path: String,
    /// The object that gets it; `None`: the one the route names (a fixed-name route).
    pub instance: Option<String>,
}

impl CronSchedule {
    /// The name under which the store keeps when this schedule of `worker` in `app`
    /// last ran: a changed expression, path or instance is a new schedule.
    pub fn key(&self, app: &str, worker: &str) -> String {
        format!(
            "{app}/{worker}/{}|{}|{}",
            self.cron,
            self.path,
            self.instance.as_deref().unwrap_or("")
        )
    }
}

/// The header that tells a container a request comes from a schedule: its cron.
pub const SCHEDULE_HEADER: &str = "berth-schedule";

/// The first wait after a failed delivery, and the longest.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(300);
/// How many missed ticks are stepped over to find the latest one due (a year of a
/// minutely trigger is more: then a tick near the start of the gap is delivered).
const MAX_CATCH_UP: usize = 100_000;
/// The longest sleep at once, so that a change of the machine's clock is noticed.
const LONGEST_SLEEP: Duration = Duration::from_secs(60);

/// What a tick (the time it was due) does: a request to an object (a route's schedule),
/// or a JS worker's `scheduled` handler. `Ok` once it was delivered; `Err` says why not,
/// and is retried.
pub type Delivery = Arc<
    dyn Fn(SystemTime) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync,
>;

/// A worker's schedules, each bound to what it reaches, ready to run.
#[derive(Clone)]
pub struct Planned {
    key: String,
    cron: Cron,
    store: Store,
    deliver: Delivery,
}

impl Planned {
    /// A schedule called `key` in `store` (where its last run is kept) that runs
    /// `deliver` at each tick of `cron`.
    pub fn new(key: String, cron: Cron, store: Store, deliver: Delivery) -> Planned {
        Planned {
            key,
            cron,
            store,
            deliver,
        }
    }

    /// Starts `planned`, on `clock`; they run until the returned [`Running`] is dropped.
    pub fn start(planned: &[Planned], clock: Clock) -> Running {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Running(Vec::new());
        };
        let tasks = planned
            .iter()
            .cloned()
            .map(|p| {
                let deliver = p.deliver;
                handle.spawn(run(p.key, p.cron, p.store, clock, move |tick| {
                    deliver(tick)
                }))
            })
            .collect();
        Running(tasks)
    }
}

/// Schedules that run; dropping it stops them (a release that is replaced).
#[derive(Default)]
pub struct Running(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Router {
    /// Binds `schedules` of the worker `worker` to their objects: each goes to the object
    /// its `instance` names, or to the fixed object of the first route that matches its
    /// path, as a request of a client would. They run once [`Planned::start`]ed, so that
    /// a release that is staged, and maybe never applied, runs none.
    pub fn plan_schedules(
        &self,
        worker: &str,
        schedules: &[CronSchedule],
    ) -> Result<Vec<Planned>, RouterError> {
        schedules
            .iter()
            .map(|schedule| {
                let (object, path) = self.scheduled(schedule)?;
                let key = schedule.key(object.app_name(), worker);
                let store = object.store().clone();
                let cron = schedule.cron.clone();
                let deliver: Delivery = Arc::new(move |_| {
                    let (object, path, cron) = (object.clone(), path.clone(), cron.clone());
                    Box::pin(async move { deliver(&object, &path, &cron).await })
                });
                Ok(Planned::new(key, schedule.cron.clone(), store, deliver))
            })
            .collect()
    }

    /// The object a schedule reaches, and the path it is sent (after `strip_prefix`).
    fn scheduled(&self, schedule: &CronSchedule) -> Result<(Object, String), RouterError> {
        let (path, query) = match schedule.path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (schedule.path.as_str(), None),
        };
        let cron = schedule.cron.to_string();
        let Some((compiled, rest)) = self.routes.iter().find_map(|c| {
            c.route
                .path
                .match_with_rest(path)
                .map(|(_, rest)| (c, rest))
        }) else {
            return Err(RouterError::UnroutedSchedule {
                cron,
                path: schedule.path.clone(),
            });
        };
        let object = match (&schedule.instance, &compiled.fixed) {
            (Some(name), _) => compiled.namespace.get_by_name(name),
            (None, Some(object)) => object.clone(),
            (None, None) => {
                return Err(RouterError::ScheduleNeedsInstance {
                    cron,
                    path: schedule.path.clone(),
                    route: compiled.route.path.as_str().to_string(),
                })
            }
        };
        let mut sent = if compiled.route.strip_prefix {
            if rest.is_empty() { "/" } else { rest }.to_string()
        } else {
            path.to_string()
        };
        if let Some(query) = query {
            sent = format!("{sent}?{query}");
        }
        Ok((object, sent))
    }
}

/// Sends `path` to `object` once: whether it was answered below 500.
pub(super) async fn deliver(object: &Object, path: &str, cron: &Cron) -> Result<(), String> {
    // On a cluster every router runs the schedule, and the object's home delivers it.
    if !object.is_home() {
        return Ok(());
    }
    let mut request = Request::new(full(""));
    *request.method_mut() = Method::GET;
    *request.uri_mut() = path
        .parse()
        .map_err(|e| format!("{path} is not a request path: {e}"))?;
    if let Ok(value) = HeaderValue::from_str(&cron.to_string()) {
        request.headers_mut().insert(SCHEDULE_HEADER, value);
    }
    let response = object.fetch(request).await;
    let status = response.status();
    // The answer is read to its end, so that the request counts as done.
    let _ = response.into_body().collect().await;
    if status.is_server_error() {
        Err(format!("answered {status}"))
    } else if status == StatusCode::NOT_FOUND {
        tracing::warn!("schedule {cron} {path}: the container answered 404; check the path");
        Ok(())
    } else {
        Ok(())
    }
}

/// Runs one schedule until the task is dropped. `key` names it in `store`.
pub(super) async fn run<F, Fut>(key: String, cron: Cron, store: Store, clock: Clock, deliver: F)
where
    F: Fn(SystemTime) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut last = match store.cron_started(&key, to_ms(clock.now())).await {
        Ok(ms) => from_ms(ms),
        Err(e) => {
            tracing::warn!("schedule {key}: {e}; its missed ticks cannot be known");
            clock.now()
        }
    };
    loop {
        let Some(tick) = cron.next_after(last) else {
            return;
        };
        let now = clock.now();
        if let Ok(ahead) = tick.duration_since(now) {
            if !ahead.is_zero() {
                tokio::time::sleep(ahead.min(LONGEST_SLEEP)).await;
                continue;
            }
        }
        // Due, or missed while berth was down: one delivery, of the latest tick due, stands
        // for every tick up to now.
        let mut latest = tick;
        for _ in 0..MAX_CATCH_UP {
            match cron.next_after(latest) {
                Some(next) if next <= now => latest = next,
                _ => break,
            }
        }
        let tick = latest;
        let mut wait = FIRST_RETRY;
        let delivered = loop {
            match deliver(tick).await {
                Ok(()) => break true,
                Err(why) => {
                    let next = cron.next_after(now);
                    let retry_at = clock.now() + wait;
                    if next.is_some_and(|next| next <= retry_at) {
                        tracing::warn!("schedule {key}: {why}; the next tick takes over");
                        break false;
                    }
                    tracing::warn!("schedule {key}: {why}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(LAST_RETRY);
                }
            }
        };
        if delivered {
            if let Err(e) = store.cron_ran(&key, to_ms(now)).await {
                tracing::warn!("schedule {key}: {e}; a restart may run this tick again");
            }
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;

    use super::*;

    /// Runs `cron` with a delivery that fails its first `failures` times, and records
    /// when (on the test's clock) each attempt came.
    fn start(
        cron: &str,
        store: &Store,
        clock: Clock,
        failures: usize,
    ) -> (Arc<Mutex<Vec<SystemTime>>>, tokio::task::JoinHandle<()>) {
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let seen = attempts.clone();
        let count = Arc::new(AtomicUsize::new(0));
        let cron: Cron = cron.parse().expect("cron");
        let task = tokio::spawn(run(
            "app/w/k".into(),
            cron,
            store.clone(),
            clock,
            move |_| {
                let (seen, count) = (seen.clone(), count.clone());
                async move {
                    seen.lock().expect("attempts").push(clock.now());
                    if count.fetch_add(1, Ordering::SeqCst) < failures {
                        Err("answered 503 Service Unavailable".to_string())
                    } else {
                        Ok(())
                    }
                }
            },
        ));
        (attempts, task)
    }

    fn minutes(clock: Clock, times: &[SystemTime]) -> Vec<u64> {
        let Clock::Tokio { wall, .. } = clock else {
            return Vec::new();
        };
        times
            .iter()
            .map(|t| t.duration_since(wall).unwrap_or_default().as_secs())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_are_delivered_on_time_and_a_new_schedule_waits_for_its_first() {
        let store = Store::in_memory().expect("store");
        let clock = Clock::tokio();
        let (attempts, task) = start("* * * * *", &store, clock, 0);
        tokio::time::sleep(Duration::from_secs(60 * 3 + 30)).await;
        let seen = attempts.lock().expect("attempts").clone();
        let at = minutes(clock, &seen);
        // 3.5 minutes hold three or four minute marks, and the first is within a minute.
        assert!((3..=4).contains(&seen.len()), "one per minute: {at:?}");
        assert!(
            at[0] > 0 && at[0] <= 60,
            "none at once, the first on the next mark: {at:?}"
        );
        for t in &seen {
            let secs = t
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("epoch")
                .as_secs();
            assert_eq!(secs % 60, 0, "on the minute");
        }
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_missed_while_berth_was_down_run_once_at_the_start() {
        let store = Store::in_memory().expect("store");
        let clock = Clock::tokio();
        // Last run 10 minutes ago: 9 ticks since.
        let ten_ago = clock.now() - Duration::from_secs(600);
        store
            .cron_started("app/w/k", to_ms(ten_ago))
            .await
            .expect("seed");
        let (attempts, task) = start("* * * * *", &store, clock, 0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            attempts.lock().expect("attempts").len(),
            1,
            "once, not nine times"
        );
        let recorded = store.cron_started("app/w/k", 0).await.expect("last");
        assert!(recorded > to_ms(ten_ago), "the catch-up is recorded");
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_delivery_is_retried_with_backoff_until_it_is_answered() {
        let store = Store::in_memory().expect("store");
        let clock = Clock::tokio();
        let (attempts, task) = start("0 * * * *", &store, clock, 3);
        tokio::time::sleep(Duration::from_secs(3600 + 30)).await;
        let seen = attempts.lock().expect("attempts").clone();
        assert_eq!(seen.len(), 4, "three failures, then the answer");
        let gaps: Vec<u64> = seen
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).expect("later").as_secs())
            .collect();
        assert_eq!(gaps, [1, 2, 4], "each wait twice the last");
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_when_the_next_tick_comes() {
        let store = Store::in_memory().expect("store");
        let clock = Clock::tokio();
        let (attempts, task) = start("* * * * *", &store, clock, usize::MAX);
        tokio::time::sleep(Duration::from_secs(60 * 2 + 50)).await;
        let seen = minutes(clock, &attempts.lock().expect("attempts"));
        // Each minute: tries at +0, +1, +3, +7, +15, +31 s; the next would pass the next tick.
        let first: Vec<u64> = seen
            .iter()
            .map(|t| t - seen[0])
            .take_while(|t| *t < 60)
            .collect();
        assert_eq!(first, [0, 1, 3, 7, 15, 31], "{seen:?}");
        assert_eq!(
            seen[first.len()] - seen[0],
            60,
            "the next tick starts afresh: {seen:?}"
        );
        task.abort();
    }
}
