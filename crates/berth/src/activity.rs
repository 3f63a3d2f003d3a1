//! What keeps a container awake: requests in flight, and the moment of the last activity.
//!
//! The proxy holds an [`InFlight`] guard for as long as a request is being answered; its
//! drop renews the activity, so that `sleep_after` counts from the end of the last request.
//! An upgraded connection (a WebSocket) is no longer a request in flight: it turns its
//! guard into a [`Renewer`], and every message renews the activity instead.
//!
//! Counting in is the caller's decision, taken under the owner's lock together with the
//! decision to sleep (see `object::live`), so a request either keeps the container awake
//! or finds it stopping. Counting out and renewing need no lock: they are atomics.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The in-flight count and the last activity of one object.
#[derive(Debug)]
pub struct Activity {
    /// Instants are kept as nanoseconds since this one, so that they fit in an atomic.
    epoch: Instant,
    in_flight: AtomicU32,
    last: AtomicU64,
    /// Told when the last request in flight ends.
    drained: Notify,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            last: AtomicU64::new(0),
            drained: Notify::new(),
        })
    }

    /// Counts one request in flight until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.renew();
        InFlight(Some(self.clone()), None)
    }

    /// Waits until no request is in flight.
    pub async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Pushes the idle deadline `sleep_after` into the future from now.
    pub fn renew(&self) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.fetch_max(nanos, Ordering::AcqRel);
    }

    /// Requests in flight right now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The moment of the last activity.
    pub fn last(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.last.load(Ordering::Acquire))
    }

    /// When the object becomes idle if nothing else happens: `None` while a request is in
    /// flight (its end renews the activity, so the deadline is at least `sleep_after` away).
    pub fn idle_at(&self, sleep_after: Duration) -> Option<Instant> {
        if self.in_flight() > 0 {
            return None;
        }
        Some(
            self.last()
                .checked_add(sleep_after)
                .unwrap_or_else(crate::lifecycle::far_future),
        )
    }

    /// Whether nothing is in flight and `sleep_after` has passed since the last activity.
    pub fn is_idle(&self, sleep_after: Duration, now: Instant) -> bool {
        self.idle_at(sleep_after).is_some_and(|at| at <= now)
    }

    fn leave(&self) {
        // Renewed before counting out: whoever sees the count drop sees the renewal too.
        self.renew();
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_waiters();
        }
    }
}

/// One request in flight. Dropping it counts the request out and renews the activity. It
/// may count in a second place too (an object's activity, and its container's).
#[derive(Debug)]
pub struct InFlight(Option<Arc<Activity>>, Option<Arc<Activity>>);

impl InFlight {
    /// Counts nowhere: for a request no object's activity follows (a control request
    /// that one router relays to the others).
    pub fn untracked() -> InFlight {
        InFlight(None, None)
    }

    /// Counts the request in `other`'s activity too, for as long as it counts here.
    pub fn and(mut self, mut other: InFlight) -> InFlight {
        self.1 = other.0.take();
        self
    }

    /// The means to renew the first activity while this counts: for a connection that
    /// was upgraded and carries messages.
    pub fn renewer(&self) -> Renewer {
        Renewer(self.0.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        for activity in [self.0.take(), self.1.take()].into_iter().flatten() {
            activity.leave();
        }
    }
}

/// Renews an object's activity, for traffic that is not a request in flight.
#[derive(Debug, Clone)]
pub struct Renewer(Option<Arc<Activity>>);

impl Renewer {
    pub fn renew(&self) {
        if let Some(activity) = &self.0 {
            activity.renew();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_holds_off_idleness_and_its_end_renews() {
        let activity = Activity::new();
        let sleep_after = Duration::from_secs(10);
        let guard = activity.enter();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(activity.in_flight(), 1);
        assert!(!activity.is_idle(sleep_after, Instant::now()));
        drop(guard);
        assert_eq!(activity.in_flight(), 0);
        assert_eq!(
            activity.idle_at(sleep_after),
            Some(Instant::now() + sleep_after)
        );
        tokio::time::advance(sleep_after).await;
        assert!(activity.is_idle(sleep_after, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upgraded_connection_counts_until_it_ends_and_renews() {
        let activity = Activity::new();
        let guard = activity.enter();
        let renewer = guard.renewer();
        assert_eq!(activity.in_flight(), 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        renewer.renew();
        assert_eq!(activity.last(), Instant::now());
        drop(guard);
        assert_eq!(activity.in_flight(), 0);
    }
}
