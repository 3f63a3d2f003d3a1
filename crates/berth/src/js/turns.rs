//! How a worker's runtime runs its tasks: each request's or hook's JavaScript on its own
//! CPU budget ([`Metered`]), and the runtime's spawned futures and timers driven in
//! turns of their own ([`Turns`]), woken again whenever a job ends ([`Driver`]).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::serve::Meter;

/// See [`super::host::Host::metered`].
pub(super) struct Metered<'m, F> {
    pub meter: &'m Meter,
    pub left: Duration,
    pub task: Pin<Box<F>>,
}

impl<F: Future> Future for Metered<'_, F> {
    type Output = (F::Output, Duration);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Metered { meter, left, task } = &mut *self;
        match meter.run(left, || task.as_mut().poll(cx)) {
            Poll::Ready(output) => Poll::Ready((output, *left)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The waker of the task that drives the runtime's spawned futures (the native calls'
/// promises). QuickJS's scheduler wakes only the last task that polled it, and a job's
/// task polls it too: when that task ends, a native call that completes later would wake
/// no one, and every request awaiting it would hang. So each job, as it ends, wakes the
/// driver, which polls the scheduler again and becomes the one it wakes.
#[derive(Clone, Default)]
pub(super) struct Driver(Rc<std::cell::RefCell<Option<std::task::Waker>>>);

impl Driver {
    pub fn wake(&self) {
        if let Some(waker) = self.0.borrow().as_ref() {
            waker.wake_by_ref();
        }
    }
}

/// A task whose every turn (poll) may run JavaScript for `cpu`.
pub(super) struct Turns<F> {
    pub meter: Meter,
    pub cpu: Duration,
    pub task: Pin<Box<F>>,
    pub driver: Driver,
}

impl<F: Future> Future for Turns<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Turns {
            meter,
            cpu,
            task,
            driver,
        } = &mut *self;
        *driver.0.borrow_mut() = Some(cx.waker().clone());
        let mut left = *cpu;
        let polled = meter.run(&mut left, || task.as_mut().poll(cx));
        if left.is_zero() {
            tracing::error!(target: "berth::js", "a timer's callback ran JavaScript for more than {cpu:?}, so berth stopped it (does it loop forever?); the timers of its runtime no longer fire, so new requests go to the worker's other runtimes");
            meter.break_timers();
        }
        polled
    }
}
