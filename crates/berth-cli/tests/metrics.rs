//! berth's metrics as a real Prometheus (Debian's, installed by scripts/prometheus.sh)
//! scrapes them from `berth dev --metrics`, and as its HTTP API reports them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;

const MANIFEST: &str = r#"
[containers.app]
class_name = "App"
build = { context = ".", command = "cp @SERVER@ server" }

[containers.app.class]
default_port = 8080
sleep_after = "8s"

[workers.web]
bindings = { APP = "app" }
routes = [{ path = "/*", binding = "APP", instance = "only" }]
"#;

/// A Prometheus of this test's own, scraping `target` every second; killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Prometheus {
    fn start(test: &str, target: &str) -> Prometheus {
        let binary = script("prometheus.sh", "scripts/prometheus.sh failed");
        let dir = std::env::temp_dir()
            .join("berth-cli-tests")
            .join(format!("prometheus-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: berth\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let prometheus = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        let answers = |addr: &str| {
            std::net::TcpStream::connect(addr).is_ok()
                && request(addr, "GET", "/-/ready", &[]).0 == 200
        };
        while !answers(&prometheus.addr) {
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready:\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The value of instant query `query`, once it equals `expected` or after 60 s.
    fn value_within(&self, query: &str, expected: f64) -> Option<f64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let value = self.value(query);
            if value == Some(expected) || Instant::now() >= deadline {
                return value;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The single value of instant query `query` (`None`: no series).
    fn value(&self, query: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", berth::http::percent_encode(query));
        let (status, body) = request(&self.addr, "GET", &path, &[]);
        assert_eq!(status, 200, "{query}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let result = answer["data"]["result"].as_array()?;
        let [series] = result.as_slice() else {
            assert!(result.is_empty(), "{query} gave several series: {body}");
            return None;
        };
        series["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_requests_a_cold_start_and_a_sleep() {
    let app = AppDir::new("metrics", MANIFEST);
    let mut berth = Berth::start(
        &["dev", "--port", "0", "--metrics", "127.0.0.1:0"],
        &app.dir,
    );
    let metrics = berth.line_after("Metrics on http://");
    let target = metrics.trim_end_matches("/metrics").to_string();
    let addr = berth.ready();
    let prometheus = Prometheus::start("dev", &target);

    for _ in 0..5 {
        assert_eq!(http(&addr, "/ping", &[]), (200, "pong".into()));
    }
    assert_eq!(http(&addr, "/nowhere", &[]).0, 404);
    // Seen while the container runs (it sleeps 8 s after the last request).
    let healthy = format!("berth_instances{{app=\"{}\",state=\"healthy\"}}", app.name);
    assert_eq!(
        prometheus.value_within(&healthy, 1.0),
        Some(1.0),
        "{}",
        prometheus.log()
    );
    let selector = format!("app=\"{}\",worker=\"web\"", app.name);
    let ok = format!("berth_requests_total{{{selector},code=\"200\"}}");
    assert_eq!(
        prometheus.value_within(&ok, 5.0),
        Some(5.0),
        "{}",
        prometheus.log()
    );
    let missing = format!("berth_requests_total{{{selector},code=\"404\"}}");
    assert_eq!(prometheus.value_within(&missing, 1.0), Some(1.0));
    let cold = format!("sum(berth_cold_starts_total{{app=\"{}\"}})", app.name);
    assert_eq!(prometheus.value_within(&cold, 1.0), Some(1.0));

    // Idle for sleep_after: the container sleeps, and no instance is counted any more.
    let sleeps = format!("sum(berth_sleeps_total{{app=\"{}\"}})", app.name);
    assert_eq!(prometheus.value_within(&sleeps, 1.0), Some(1.0));
    let running = format!(
        "count(berth_instances{{app=\"{}\"}}) or vector(0)",
        app.name
    );
    assert_eq!(prometheus.value_within(&running, 0.0), Some(0.0));
    drop(berth);
}
