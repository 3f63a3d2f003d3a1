//! Keep-alive load with wrk, and nginx as the reverse proxy to compare against. Both come
//! from Debian (bench/setup.sh installs them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub requests_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// `wrk -c CONNECTIONS -d SECONDS --latency http://ADDR/`.
pub fn load(addr: SocketAddr, connections: usize, seconds: u64) -> anyhow::Result<Run> {
    let threads = connections.clamp(1, 2);
    let output = Command::new("wrk")
        .args([
            &format!("-t{threads}"),
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            &format!("http://{addr}/"),
        ])
        .output()
        .context("running wrk (bench/setup.sh installs it)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

fn parse(text: &str) -> Option<Run> {
    let mut run = Run {
        requests_per_sec: 0.0,
        p50: Duration::ZERO,
        p99: Duration::ZERO,
    };
    if text.contains("Socket errors") || text.contains("Non-2xx") {
        return None;
    }
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            run.requests_per_sec = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("50%") {
            run.p50 = duration(v.trim())?;
        } else if let Some(v) = line.strip_prefix("99%") {
            run.p99 = duration(v.trim())?;
        }
    }
    (run.requests_per_sec > 0.0).then_some(run)
}

fn duration(text: &str) -> Option<Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = number.parse().ok()?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// nginx as a keep-alive reverse proxy to `upstream`, listening on `listen`.
pub struct Nginx {
    child: Child,
    _dir: PathBuf,
}

impl Nginx {
    pub fn start(
        dir: &Path,
        workers: usize,
        listen: SocketAddr,
        upstream: SocketAddr,
    ) -> anyhow::Result<Nginx> {
        std::fs::create_dir_all(dir)?;
        let d = dir.display();
        let conf = format!(
            "worker_processes {workers};\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               upstream container {{ server {upstream}; keepalive 256; }}\n\
               server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://container;\n\
                 proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n    }}\n  }}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf)?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx (bench/setup.sh installs it)")?;
        // Wait until it listens.
        for _ in 0..200 {
            if std::net::TcpStream::connect(listen).is_ok() {
                return Ok(Nginx {
                    child,
                    _dir: dir.to_path_buf(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        anyhow::bail!("nginx did not start; see {d}/error.log")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "Running 5s test @ http://127.0.0.1:1/\n  1 threads and 1 connections\n  Latency Distribution\n     50%   61.00us\n     75%   70.00us\n     90%   80.00us\n     99%    1.20ms\n  123 requests in 5.00s, 1KB read\nRequests/sec:  24690.12\nTransfer/sec:      1.00MB\n";
        let run = parse(text).expect("parsed");
        assert_eq!(run.p50, Duration::from_micros(61));
        assert_eq!(run.p99, Duration::from_micros(1200));
        assert!((run.requests_per_sec - 24690.12).abs() < 0.01);
    }
}
