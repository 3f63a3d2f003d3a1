//! A running `berth serve`, as the tests of the server, its control API and its
//! dashboard drive it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{registry, request, Berth};

/// A running `berth serve` on loopback ports, with its own data folder.
pub struct Server {
    pub process: Berth,
    pub public: String,
    pub control: String,
    /// The dashboard's address, as `berth serve` prints it.
    pub dashboard: String,
    pub token: String,
}

impl Server {
    pub fn start(data: &Path) -> Server {
        Server::start_with(data, &[])
    }

    /// [`Server::start`] with more variables in the server's environment.
    pub fn start_with(data: &Path, env: &[(&str, &str)]) -> Server {
        let registry = registry();
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--registry",
            &registry,
            "--data",
        ];
        let mut process = Berth::start_with(&args, data, env);
        let public = process.line_after("Public on http://");
        let control = process.line_after("Control on http://");
        let dashboard = process.line_after("Dashboard on ");
        let output = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--print-token", "--data"])
            .arg(data)
            .output()
            .expect("berth runs");
        assert!(output.status.success());
        Server {
            process,
            public,
            control,
            dashboard,
            token: String::from_utf8_lossy(&output.stdout).trim().to_string(),
        }
    }

    /// Runs `berth COMMAND ARGS` against this server; its exit code, stdout and stderr.
    pub fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        self.run_with(args, &[])
    }

    /// [`Server::run`], with more variables in the command's environment.
    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .envs(env.iter().copied())
            .env("BERTH_SERVER", format!("http://{}", self.control))
            .env("BERTH_TOKEN", &self.token)
            .stdin(Stdio::null())
            .output()
            .expect("berth runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// `berth deploy DIR ARGS`, which must succeed; its stdout. See also [`deploy_to`].
    pub fn deploy(&self, dir: &Path, args: &[&str]) -> String {
        let dir = dir.display().to_string();
        let mut all = vec!["deploy", dir.as_str()];
        all.extend_from_slice(args);
        let (code, stdout, stderr) = self.run(&all);
        assert_eq!(code, Some(0), "deploy failed:\n{stderr}");
        stdout
    }

    /// A request through the public listener, to `host`.
    pub fn get(&self, host: &str, path: &str, user: &str) -> (u16, String) {
        request(
            &self.public,
            "GET",
            path,
            &[("Host", host), ("X-User", user)],
        )
    }

    /// A control API call with the token.
    pub fn api(&self, method: &str, path: &str) -> (u16, String) {
        let auth = format!("Bearer {}", self.token);
        request(&self.control, method, path, &[("Authorization", &auth)])
    }

    pub fn stop(mut self) {
        self.process.signal("TERM");
        let code = self.process.wait(Duration::from_secs(60));
        assert_eq!(code, Some(0), "{}", self.process.stderr());
    }
}

/// `berth deploy DIR` against the server at `control` with `token`, which must succeed;
/// its stdout. For a thread that holds no [`Server`].
pub fn deploy_to(control: &str, token: &str, dir: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("deploy")
        .arg(dir)
        .env("BERTH_SERVER", format!("http://{control}"))
        .env("BERTH_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .expect("berth runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "deploy failed:\n{stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
