//! What berth counts, in Prometheus's terms (the OpenMetrics text that `prometheus-client`
//! writes): requests, cold starts and their phases, instances by state, requests in
//! flight, exits, failed starts, sleeps, rollouts, and berth's own process.
//!
//! The figures are counted where things happen, by the code that makes them happen, and
//! never from the event broadcast, which drops events when a listener lags. One
//! [`Metrics`] serves a whole process: every app of a `berth serve`, or a `berth dev`.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// Labels of what a worker answers.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub app: String,
    pub worker: String,
}

/// One worker's answer counters, each looked up the first time its status code comes:
/// counting an answer then takes no lookup, no label copy and no lock of the families.
#[derive(Debug)]
pub struct WorkerCounters {
    labels: WorkerLabels,
    seconds: Histogram,
    /// By status code, 100 to 599.
    by_code: [OnceLock<Counter>; 500],
}

impl WorkerCounters {
    pub fn answered(&self, metrics: &Metrics, code: u16, elapsed: Duration) {
        let Some(slot) = usize::from(code)
            .checked_sub(100)
            .and_then(|i| self.by_code.get(i))
        else {
            return metrics.request(&self.labels, code, elapsed);
        };
        slot.get_or_init(|| {
            let labels = CodeLabels {
                app: self.labels.app.clone(),
                worker: self.labels.worker.clone(),
                code,
            };
            metrics.requests.get_or_create(&labels).clone()
        })
        .inc();
        self.seconds.observe(elapsed.as_secs_f64());
    }
}

/// Labels of one answer: its worker and its status code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    app: String,
    worker: String,
    code: u16,
}

/// Labels of what a container class does.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub app: String,
    pub class: String,
}

/// A class's labels with one more: a state, a phase, a reason or a cause (each family
/// has one of them; an empty label would still be written).
macro_rules! class_and {
    ($name:ident, $field:ident) => {
        #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct $name {
            app: String,
            class: String,
            $field: &'static str,
        }

        impl $name {
            fn new(class: &ClassLabels, $field: &'static str) -> $name {
                $name {
                    app: class.app.clone(),
                    class: class.class.clone(),
                    $field,
                }
            }
        }
    };
}

class_and!(StateLabels, state);
class_and!(PhaseLabels, phase);
class_and!(ReasonLabels, reason);
class_and!(CauseLabels, cause);

type Timings<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latencies from 0.5 ms to about 33 s, each bucket twice the last.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// Every figure berth keeps, and the registry that writes them out.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<CodeLabels, Counter>,
    request_seconds: Timings<WorkerLabels>,
    cold_starts: Family<ClassLabels, Counter>,
    cold_start_seconds: Timings<PhaseLabels>,
    /// Whoever can say, at a scrape, which containers run and what they serve.
    census: Arc<Mutex<Vec<Weak<dyn Census>>>>,
    exits: Family<ReasonLabels, Counter>,
    failed_starts: Family<CauseLabels, Counter>,
    sleeps: Family<ClassLabels, Counter>,
    egress_denied: Family<ClassLabels, Counter>,
    rollout_progress: Family<ClassLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::default();
        registry.register(
            "berth_requests",
            "Requests answered by a worker, by status code",
            requests.clone(),
        );
        let request_seconds: Timings<WorkerLabels> = Family::new_with_constructor(latency);
        registry.register_with_unit(
            "berth_request_duration",
            "Time from a request's arrival to its answer's head",
            Unit::Seconds,
            request_seconds.clone(),
        );
        let cold_starts = Family::default();
        registry.register(
            "berth_cold_starts",
            "Containers started for a request or a start",
            cold_starts.clone(),
        );
        let cold_start_seconds: Timings<PhaseLabels> = Family::new_with_constructor(latency);
        registry.register_with_unit(
            "berth_cold_start_duration",
            "Time of a cold start's phases: the engine's create and start, then readiness",
            Unit::Seconds,
            cold_start_seconds.clone(),
        );
        let exits = Family::default();
        registry.register(
            "berth_container_exits",
            "Containers that stopped, by why",
            exits.clone(),
        );
        let failed_starts = Family::default();
        registry.register(
            "berth_failed_starts",
            "Starts that failed, by cause",
            failed_starts.clone(),
        );
        let sleeps = Family::default();
        registry.register(
            "berth_sleeps",
            "Containers put to sleep after sleep_after idle",
            sleeps.clone(),
        );
        let egress_denied = Family::default();
        registry.register(
            "berth_egress_denied",
            "Requests of containers to hosts their class's allowed_hosts/denied_hosts refuse",
            egress_denied.clone(),
        );
        let rollout_progress = Family::default();
        registry.register(
            "berth_rollout_progress",
            "Share of a class's running containers on its newest version (0 to 1)",
            rollout_progress.clone(),
        );
        let census: Arc<Mutex<Vec<Weak<dyn Census>>>> = Arc::default();
        registry.register_collector(Box::new(Counted(census.clone())));
        registry.register_collector(Box::new(Process));
        Metrics {
            registry,
            requests,
            request_seconds,
            cold_starts,
            cold_start_seconds,
            census,
            exits,
            failed_starts,
            sleeps,
            egress_denied,
            rollout_progress,
        }
    }

    /// A worker answered with `code` after `elapsed`.
    /// The counters of `worker`'s answers, looked up once.
    pub fn worker(&self, worker: WorkerLabels) -> WorkerCounters {
        WorkerCounters {
            seconds: self.request_seconds.get_or_create(&worker).clone(),
            by_code: std::array::from_fn(|_| OnceLock::new()),
            labels: worker,
        }
    }

    pub fn request(&self, worker: &WorkerLabels, code: u16, elapsed: Duration) {
        let labels = CodeLabels {
            app: worker.app.clone(),
            worker: worker.worker.clone(),
            code,
        };
        self.requests.get_or_create(&labels).inc();
        let seconds = elapsed.as_secs_f64();
        self.request_seconds.get_or_create(worker).observe(seconds);
    }

    /// A container was created in `create` and started in `start`, for a request or a
    /// start: a cold start.
    pub fn cold_start(&self, class: &ClassLabels, create: Duration, start: Duration) {
        self.cold_starts.get_or_create(class).inc();
        self.phase(class, "create", create);
        self.phase(class, "start", start);
    }

    /// A started container's ports answered after `took`.
    pub fn ready(&self, class: &ClassLabels, took: Duration) {
        self.phase(class, "ready", took);
    }

    fn phase(&self, class: &ClassLabels, phase: &'static str, took: Duration) {
        let labels = PhaseLabels::new(class, phase);
        let histogram = self.cold_start_seconds.get_or_create(&labels);
        histogram.observe(took.as_secs_f64());
    }

    /// A start failed for `cause` (`limit-reached`, `image-missing`, `exited`,
    /// `port-never-opened`, …).
    pub fn failed_start(&self, class: &ClassLabels, cause: &'static str) {
        let labels = CauseLabels::new(class, cause);
        self.failed_starts.get_or_create(&labels).inc();
    }

    /// A container stopped for `reason`.
    pub fn exit(&self, class: &ClassLabels, reason: &'static str) {
        let labels = ReasonLabels::new(class, reason);
        self.exits.get_or_create(&labels).inc();
    }

    pub fn sleep(&self, class: &ClassLabels) {
        self.sleeps.get_or_create(class).inc();
    }

    /// A container of `class` asked for a host its egress policy refuses.
    pub fn egress_denied(&self, class: &ClassLabels) {
        self.egress_denied.get_or_create(class).inc();
    }

    /// Adds `census` to what a scrape asks (until it is dropped).
    pub fn watch(&self, census: Weak<dyn Census>) {
        let mut all = self.census.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|c| c.strong_count() > 0);
        all.push(census);
    }

    pub fn rollout_progress(&self, class: &ClassLabels, share: f64) {
        self.rollout_progress.get_or_create(class).set(share);
    }

    /// The OpenMetrics text of every figure, as `/metrics` serves it.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What runs, asked at each scrape rather than kept in gauges moved up and down: the
/// objects themselves know their state and their requests in flight, and a count kept
/// beside them could drift.
pub trait Census: Send + Sync {
    /// Calls `count` with each live object's class, its container's state (`None`: it
    /// has none) and its requests in flight.
    fn count(&self, count: &mut dyn FnMut(&ClassLabels, Option<&'static str>, u32));
}

/// `berth_instances` and `berth_in_flight_requests`, from the census.
#[derive(Debug)]
struct Counted(Arc<Mutex<Vec<Weak<dyn Census>>>>);

impl std::fmt::Debug for dyn Census {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Census")
    }
}

impl Collector for Counted {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let instances: Family<StateLabels, Gauge> = Family::default();
        let in_flight: Family<ClassLabels, Gauge> = Family::default();
        let census: Vec<Arc<dyn Census>> = {
            let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
            all.iter().filter_map(Weak::upgrade).collect()
        };
        for source in census {
            source.count(&mut |class, state, requests| {
                if let Some(state) = state {
                    instances
                        .get_or_create(&StateLabels::new(class, state))
                        .inc();
                }
                in_flight.get_or_create(class).inc_by(i64::from(requests));
            });
        }
        let metric = encoder.encode_descriptor(
            "berth_instances",
            "Containers of a class by state",
            None,
            instances.metric_type(),
        )?;
        instances.encode(metric)?;
        let metric = encoder.encode_descriptor(
            "berth_in_flight_requests",
            "Requests in flight to a class's objects",
            None,
            in_flight.metric_type(),
        )?;
        in_flight.encode(metric)
    }
}

/// berth's own process, read from `/proc/self` at each scrape: the figures Prometheus's
/// client libraries name `process_*`.
#[derive(Debug)]
struct Process;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(figures) = ProcessFigures::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(figures.cpu_seconds);
        let metric = encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent",
            None,
            cpu.metric_type(),
        )?;
        cpu.encode(metric)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size",
                figures.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size",
                figures.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                figures.open_fds,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value as i64);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

struct ProcessFigures {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    open_fds: u64,
}

impl ProcessFigures {
    /// `None` where there is no `/proc` (not Linux).
    fn read() -> Option<ProcessFigures> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name, in parentheses, may hold spaces: the fields follow its end,
        // from field 3 (state); utime is field 14 and stime 15 (man 5 proc).
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        // USER_HZ, which Linux fixes at 100 for what /proc shows.
        let cpu_seconds = (field(14)? + field(15)?) as f64 / 100.0;
        // Sizes from status, in kB: stat's RSS is in pages, whose size varies.
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib = |key: &str| {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line[key.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        };
        Some(ProcessFigures {
            cpu_seconds,
            resident_bytes: kib("VmRSS:")? * 1024,
            virtual_bytes: kib("VmSize:")? * 1024,
            open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class() -> ClassLabels {
        ClassLabels {
            app: "shop".into(),
            class: "Web".into(),
        }
    }

    /// Two healthy objects with 2 and 3 requests in flight, and one without a container.
    struct Fixed;

    impl Census for Fixed {
        fn count(&self, count: &mut dyn FnMut(&ClassLabels, Option<&'static str>, u32)) {
            count(&class(), Some("healthy"), 2);
            count(&class(), Some("healthy"), 3);
            count(&class(), None, 0);
        }
    }

    #[test]
    fn figures_are_written_as_openmetrics_with_their_labels() {
        let metrics = Metrics::new();
        let worker = WorkerLabels {
            app: "shop".into(),
            worker: "api".into(),
        };
        // The looked-up counters and the lookup count into the same series.
        let counters = metrics.worker(worker.clone());
        for _ in 0..2 {
            counters.answered(&metrics, 200, Duration::from_millis(2));
        }
        metrics.request(&worker, 200, Duration::from_millis(2));
        counters.answered(&metrics, 503, Duration::from_millis(1));
        let ms = Duration::from_millis;
        metrics.cold_start(&class(), ms(40), ms(120));
        metrics.ready(&class(), ms(3));
        let census: Arc<dyn Census> = Arc::new(Fixed);
        metrics.watch(Arc::downgrade(&census));
        metrics.failed_start(&class(), "image-missing");
        let text = metrics.encode().expect("encode");
        for line in [
            "berth_requests_total{app=\"shop\",worker=\"api\",code=\"200\"} 3",
            "berth_requests_total{app=\"shop\",worker=\"api\",code=\"503\"} 1",
            "berth_request_duration_seconds_count{app=\"shop\",worker=\"api\"} 4",
            "berth_cold_starts_total{app=\"shop\",class=\"Web\"} 1",
            "berth_cold_start_duration_seconds_count{app=\"shop\",class=\"Web\",phase=\"start\"} 1",
            "berth_cold_start_duration_seconds_count{app=\"shop\",class=\"Web\",phase=\"ready\"} 1",
            "berth_instances{app=\"shop\",class=\"Web\",state=\"healthy\"} 2",
            "berth_in_flight_requests{app=\"shop\",class=\"Web\"} 5",
            "berth_failed_starts_total{app=\"shop\",class=\"Web\",cause=\"image-missing\"} 1",
            "# TYPE process_cpu_seconds counter",
            "# TYPE process_resident_memory_bytes gauge",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        drop(census);
        let text = metrics.encode().expect("encode");
        assert!(
            !text.contains("state=\"healthy\""),
            "a dropped census counts nothing"
        );
    }
}
