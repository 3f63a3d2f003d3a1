//! What a container class declares: the options that shape every container an object of
//! the class runs.
//!
//! Mirrors the options of Cloudflare's `Container` class, with berth's additions:
//! configurable readiness timeouts, compound `sleep_after` values and classes without any
//! port.

use std::collections::BTreeMap;
use std::time::Duration;

/// What an object keeps of its containers' output by default (`log_max`): 10 MiB.
pub const DEFAULT_LOG_MAX: u64 = 10 * 1024 * 1024;

/// The smallest `log_max` berth takes: room for a few long lines in each half of the ring.
pub const MIN_LOG_MAX: u64 = 64 * 1024;

/// A bad class option value.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClassError {
    #[error("invalid duration {value:?}: {why}; use seconds (90) or units h, m, s, ms, combinable as in 1h30m")]
    Duration { value: String, why: &'static str },
    #[error("invalid size {value:?}; use bytes (65536) or a number with KiB, MiB or GiB (also KB, MB, GB), as in \"10MiB\"")]
    Size { value: String },
    #[error("unknown instance type {value:?}; use lite, basic, standard-1, standard-2, standard-3, standard-4 or a custom {{ vcpu, memory_mib }}")]
    InstanceType { value: String },
}

/// Parses `sleep_after`-style durations: `90` (seconds), `30s`, `3m`, `1h`, `250ms`, and
/// compound values such as `1h30m` or `2m30s`, which Cloudflare's library rejects.
pub fn parse_duration(value: &str) -> Result<Duration, ClassError> {
    let err = |why| ClassError::Duration {
        value: value.to_string(),
        why,
    };
    let text = value.trim();
    if text.is_empty() {
        return Err(err("it is empty"));
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(err("each unit needs a number before it"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| err("a number is too large"))?;
        rest = &rest[digits..];
        if rest.starts_with(['.', ',']) {
            return Err(err(
                "fractions are not accepted; use a smaller unit, as in 1500ms",
            ));
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "h" => Duration::from_secs(3600),
            "m" => Duration::from_secs(60),
            "s" => Duration::from_secs(1),
            "ms" => Duration::from_millis(1),
            "" => return Err(err("a number after a unit needs a unit too")),
            _ => return Err(err("the unit is not one of h, m, s, ms")),
        };
        rest = &rest[unit_len..];
        let part = unit
            .checked_mul(u32::try_from(number).map_err(|_| err("a number is too large"))?)
            .ok_or_else(|| err("it is too long"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| err("it is too long"))?;
    }
    Ok(total)
}

/// Parses sizes such as `log_max`: bytes (`65536`), or `512KiB`, `10MiB`, `1GiB` (and the
/// decimal `KB`, `MB`, `GB`).
pub fn parse_size(value: &str) -> Result<u64, ClassError> {
    let err = || ClassError::Size {
        value: value.to_string(),
    };
    let text = value.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: u64 = text[..digits].parse().map_err(|_| err())?;
    let unit: u64 = match text[digits..].trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(err()),
    };
    number.checked_mul(unit).ok_or_else(err)
}

/// CPU and memory limits for each container of a class (wrangler's `instance_type`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstanceType {
    pub vcpu: f64,
    pub memory_mib: u64,
}

impl InstanceType {
    /// Cloudflare's named sizes: lite, basic, standard-1 … standard-4.
    pub fn named(name: &str) -> Result<InstanceType, ClassError> {
        let (vcpu, memory_mib) = match name {
            "lite" | "dev" => (1.0 / 16.0, 256),
            "basic" => (0.25, 1024),
            "standard-1" | "standard" => (0.5, 4096),
            "standard-2" => (1.0, 6144),
            "standard-3" => (2.0, 8192),
            "standard-4" => (4.0, 12288),
            _ => {
                return Err(ClassError::InstanceType {
                    value: name.to_string(),
                })
            }
        };
        Ok(InstanceType { vcpu, memory_mib })
    }
}

/// A container class: the image and the options that every object of the class uses.
///
/// Build one with [`ContainerClass::new`] and adjust the public fields; the defaults are
/// Cloudflare Containers' where it has one.
#[derive(Debug, Clone)]
pub struct ContainerClass {
    /// The class name (`MyContainer`), used in labels, logs and object ids.
    pub name: String,
    /// The image every container of the class runs.
    pub image: String,
    /// The port `fetch` proxies to when a request names no other. `None`: the class has
    /// no port; its containers still start and run.
    pub default_port: Option<u16>,
    /// Ports that must accept connections before an instance counts as healthy. Empty:
    /// only `default_port`, if any.
    pub required_ports: Vec<u16>,
    /// Idle time after which the container is stopped. Default 10 minutes.
    /// [`ContainerClass::NEVER`]: never; a started instance keeps running.
    pub sleep_after: Duration,
    /// What a sleep does: stop the container (the default), or pause it.
    pub sleep_mode: SleepMode,
    /// How long a paused container stays paused before it is stopped. Default 1 hour.
    pub pause_for: Duration,
    /// How many containers of the class may be paused at once; when one more pauses, the
    /// longest-paused is stopped. `None`: `max_instances`.
    pub max_paused: Option<usize>,
    /// Environment of the container process.
    pub env_vars: BTreeMap<String, String>,
    /// Overrides the image's entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// `false`: the container gets no route out of the machine, except to the hosts of
    /// `allowed_hosts`.
    pub enable_internet: bool,
    /// Host patterns (`*` globs) the container may reach; when not empty, it reaches
    /// nothing else, through berth's egress proxy (see [`crate::egress`]).
    pub allowed_hosts: Vec<String>,
    /// Host patterns the container may never reach, whatever else says.
    pub denied_hosts: Vec<String>,
    /// `host/path` asked over HTTP once the port is open; any HTTP answer counts as ready.
    /// Default `ping` (host `ping`, path `/`), as in Cloudflare's library. `None` skips the probe.
    pub ping_endpoint: Option<String>,
    /// Extra labels on every container of the class.
    pub labels: BTreeMap<String, String>,
    /// How long creating and starting a container may take. Default 30 s.
    pub start_timeout: Duration,
    /// How long the ports (and the ping endpoint) may take to answer once the process has
    /// started. Default 20 s; raise it for slow-starting apps.
    pub port_ready_timeout: Duration,
    /// How long a request forwarded to the container may wait for the head of its answer;
    /// then the client gets a 504 and the request no longer counts as in flight. Default
    /// 100 s, as Cloudflare's proxy waits for an origin. A streamed body may take longer.
    pub request_timeout: Duration,
    /// Time between the stop signal and SIGKILL. Default 10 s.
    pub stop_grace: Duration,
    /// Run an init process as the container's PID 1 (the engine's `--init`). Default
    /// `true`: an app that installs no SIGTERM handler (busybox `httpd`, most shell-script
    /// servers) would otherwise ignore SIGTERM as PID 1, and keep running for the whole
    /// `stop_grace` each time it goes to sleep.
    pub init: bool,
    /// Maximum number of running containers of the class. Default 20.
    pub max_instances: usize,
    /// How many containers the class keeps started and ready, assigned to no object yet,
    /// so that a new name is served without a start (see [`crate::object`]'s standby
    /// pool). They count against `max_instances`. Default 0.
    pub standby: usize,
    /// CPU and memory limits. `None`: no limits.
    pub instance_type: Option<InstanceType>,
    /// How much of its containers' output each object keeps in the data folder, in
    /// bytes, after they are gone. Default 10 MiB.
    pub log_max: u64,
    /// An HTTP check an instance must pass, after its ports open, to count as healthy.
    /// It replaces the ping endpoint. `None`: the ping endpoint's any-answer check.
    pub ready: Option<ReadyCheck>,
    /// Paths in the container that each object keeps on a volume of its own, named after
    /// the app, the class and the object: what is written there survives sleep, a
    /// restart of berth and rollouts, until the object is destroyed.
    pub volumes: Vec<String>,
}

/// What an idle container's sleep does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SleepMode {
    /// Stop it: a request starts a new container.
    #[default]
    Stop,
    /// Freeze it (the engine's pause): a request thaws it in milliseconds, without a
    /// start. Its memory stays allocated while it is paused.
    Pause,
}

/// `ready = { path = "/healthz", status = [200, 204], interval = "50ms" }`: the instance
/// is healthy once `GET path` on its default port answers one of `status`. Cloudflare's
/// library counts any answer at all, so an app that answers 503 while it warms up gets
/// traffic too early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyCheck {
    /// The path asked, as `/healthz`, or `host/path` to send another `Host`.
    pub path: String,
    /// The statuses that mean ready; empty: any of 200 to 299.
    pub status: Vec<u16>,
    /// The time between two asks.
    pub interval: Duration,
}

impl ReadyCheck {
    /// The interval when none is given.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(50);

    pub fn accepts(&self, status: u16) -> bool {
        if self.status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.status.contains(&status)
        }
    }
}

impl ContainerClass {
    /// `sleep_after = "never"`.
    pub const NEVER: Duration = Duration::MAX;

    /// Whether idle instances are put to sleep.
    pub fn sleeps(&self) -> bool {
        self.sleep_after != ContainerClass::NEVER
    }

    /// A digest of the options that shape a container (the image, its environment,
    /// entrypoint, ports, network, init process, limits, labels and volumes): two classes of one
    /// version start the same containers. Containers carry it, so that a rebuild, a
    /// deployment or a later berth process can tell the containers of an older version.
    /// Options of berth's own conduct (timeouts, `sleep_after`, `max_instances`) are left
    /// out: changing them replaces no container. The encoding is explicit and versioned,
    /// so that a new berth reads the same digest from the same options, and a restart
    /// after an upgrade re-adopts what runs.
    pub fn version(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        let mut field = |name: &str, value: &str| {
            for part in [name, value] {
                hash.update((part.len() as u64).to_le_bytes());
                hash.update(part.as_bytes());
            }
        };
        field("berth-class-version", "1");
        field("image", &self.image);
        for (key, value) in &self.env_vars {
            field("env", key);
            field("env-value", value);
        }
        match &self.entrypoint {
            Some(args) => args.iter().for_each(|arg| field("entrypoint", arg)),
            None => field("entrypoint-of-image", ""),
        }
        let mut ports = self.ready_ports();
        ports.extend(self.default_port);
        ports.sort_unstable();
        ports.dedup();
        ports.iter().for_each(|p| field("port", &p.to_string()));
        field("internet", &self.enable_internet.to_string());
        self.allowed_hosts
            .iter()
            .for_each(|h| field("allowed-host", h));
        self.denied_hosts
            .iter()
            .for_each(|h| field("denied-host", h));
        field("init", &self.init.to_string());
        if let Some(t) = self.instance_type {
            field("vcpu", &t.vcpu.to_string());
            field("memory-mib", &t.memory_mib.to_string());
        }
        for (key, value) in &self.labels {
            field("label", key);
            field("label-value", value);
        }
        self.volumes.iter().for_each(|path| field("volume", path));
        hash.finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn new(name: impl Into<String>, image: impl Into<String>) -> ContainerClass {
        ContainerClass {
            name: name.into(),
            image: image.into(),
            default_port: None,
            required_ports: Vec::new(),
            sleep_after: Duration::from_secs(600),
            env_vars: BTreeMap::new(),
            entrypoint: None,
            enable_internet: true,
            sleep_mode: SleepMode::Stop,
            pause_for: Duration::from_secs(3600),
            max_paused: None,
            allowed_hosts: Vec::new(),
            denied_hosts: Vec::new(),
            ping_endpoint: Some("ping".to_string()),
            labels: BTreeMap::new(),
            start_timeout: Duration::from_secs(30),
            port_ready_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(100),
            stop_grace: Duration::from_secs(10),
            init: true,
            max_instances: 20,
            standby: 0,
            log_max: DEFAULT_LOG_MAX,
            ready: None,
            volumes: Vec::new(),
            instance_type: None,
        }
    }

    /// The ports that readiness waits for.
    pub fn ready_ports(&self) -> Vec<u16> {
        if self.required_ports.is_empty() {
            self.default_port.into_iter().collect()
        } else {
            self.required_ports.clone()
        }
    }
}

/// Why `class` cannot keep `standby` spares, if it cannot: what a manifest reports.
pub fn standby_conflict(class: &ContainerClass) -> Option<String> {
    if class.standby == 0 {
        return None;
    }
    if !class.volumes.is_empty() {
        return Some(format!(
            "a class with volumes cannot keep standby containers: a volume belongs to one object, and a spare starts before its object is known; remove standby, or the volumes ({})",
            class.volumes.join(", ")
        ));
    }
    if class.standby > class.max_instances {
        return Some(format!(
            "{} standby containers do not fit in max_instances = {}: spares count against it; lower standby or raise max_instances",
            class.standby, class.max_instances
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_plain_units_and_compounds() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2m30s"), Ok(Duration::from_secs(150)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn durations_reject_garbage_with_a_reason() {
        for bad in ["", "m", "3x", "1h30", "-5", "1.5h", "99999999999999999999s"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid duration"), "{err}");
        }
        let err = parse_duration("1.5s").expect_err("a fraction");
        assert!(
            err.to_string()
                .contains("fractions are not accepted; use a smaller unit, as in 1500ms"),
            "{err}"
        );
    }

    #[test]
    fn versions_follow_what_shapes_a_container_and_only_that() {
        let class = ContainerClass::new("A", "img:1");
        let base = class.version();
        // Pinned: a new berth must read the same version from the same options, or a
        // restart after an upgrade would replace every container.
        assert_eq!(base, "fb67a452f4185caa");
        let mut conduct = class.clone();
        conduct.sleep_after = Duration::from_secs(1);
        conduct.max_instances = 1;
        conduct.request_timeout = Duration::from_secs(1);
        assert_eq!(conduct.version(), base);
        let mut env = class.clone();
        env.env_vars.insert("K".into(), "v".into());
        assert_ne!(env.version(), base);
        let mut image = class;
        image.image = "img:2".into();
        assert_ne!(image.version(), base);
    }

    #[test]
    fn named_instance_types_match_the_reference_sizes() {
        assert_eq!(InstanceType::named("basic").map(|t| t.memory_mib), Ok(1024));
        assert!(InstanceType::named("huge").is_err());
    }
}
