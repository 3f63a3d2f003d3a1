//! A real 3-node Docker Swarm (1 manager, 2 workers) on this machine's own Docker Engine,
//! with no registry and no pulls. Each node is a container running its own dockerd (see
//! `scripts/swarm-node.sh`), on a bridge network of the test's own, with its API socket
//! bind-mounted out. Dropping the cluster removes its nodes, network and folders.
//!
//! Why each setting, measured on this kind of machine:
//! - `--privileged` fails here (`CAP_SYS_RESOURCE` is not in the host's bounding set), so
//!   the nodes get every other capability, unconfined seccomp, apparmor and /sys, and the
//!   node's entry remounts /sys and the cgroup hierarchies read-write.
//! - overlay2 works on a bind mount of the host's ext4, one folder per node.
//! - every dockerd asks `dns::Resolver` on the bridge's gateway, which answers NXDOMAIN,
//!   so that no name goes to a public resolver; a counter in each node shows it.
//! - this kernel has no IPVS: services use `endpoint_mode = dnsrr` and task addresses.
//! - a small keeper container per node holds the overlay there: a node that never held a
//!   task on it was slow to take over after a failure.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::dns::Resolver;

/// The label on everything a cluster makes on the host, with its run's id.
pub const LABEL: &str = "berth.swarm-test";
/// The overlay network that objects and routers share.
pub const OVERLAY: &str = "berth-swarm";
/// The manager's API on the nodes' network (plain TCP: the network is the test's own).
pub const MANAGER_API_PORT: u16 = 2375;

pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
    /// The node's dockerd, as seen from the host.
    pub socket: PathBuf,
}

impl Node {
    /// `docker` against this node's engine.
    pub fn docker(&self) -> Command {
        let mut command = Command::new("docker");
        command
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()));
        command
    }
}

/// How a cluster is made.
#[derive(Debug, Clone)]
pub struct Options {
    /// The nodes' bridge network: a /24 whose `.1` is the host and `.11`, `.12`, … the
    /// nodes. By default one chosen from the process id, so that two runs do not collide.
    pub subnet: [u8; 3],
    /// The overlay's subnet, inside the nodes.
    pub overlay_subnet: [u8; 3],
    /// Swarm's dispatcher heartbeat period: how soon a silent node is marked down.
    pub heartbeat: Duration,
    /// Images copied from the host into every node (`docker save | docker load`).
    pub images: Vec<String>,
}

impl Options {
    pub fn new() -> Options {
        let pid = std::process::id();
        let subnet = match std::env::var("BERTH_SWARM_SUBNET") {
            Ok(text) => parse_subnet(&text).expect("BERTH_SWARM_SUBNET is like 10.231.7"),
            Err(_) => [10, 200 + (pid % 50) as u8, (pid / 50 % 250) as u8],
        };
        Options {
            subnet,
            overlay_subnet: [10, 199, (pid % 250) as u8],
            heartbeat: Duration::from_secs(5),
            images: Vec::new(),
        }
    }
}

fn parse_subnet(text: &str) -> Option<[u8; 3]> {
    let parts: Vec<u8> = text
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    parts.try_into().ok()
}

pub struct Cluster {
    pub run: String,
    pub nodes: Vec<Node>,
    pub gateway: Ipv4Addr,
    pub resolver: Resolver,
    pub setup: Duration,
}

/// The output of a command that must succeed.
pub async fn run(command: &mut Command) -> String {
    let output = command.output().await.expect("docker can run");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The output of a command that may fail, as when it names a service that another
/// router removes meanwhile.
pub async fn try_run(command: &mut Command) -> Option<String> {
    let output = command.output().await.expect("docker can run");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn docker() -> Command {
    Command::new("docker")
}

impl Cluster {
    pub async fn up(options: Options) -> Cluster {
        let started = Instant::now();
        remove_stale().await;
        let run = format!("{}", std::process::id());
        let node_image = node_image().await;
        let [a, b, c] = options.subnet;
        let network = format!("berth-swarm-{run}");
        let gateway = Ipv4Addr::new(a, b, c, 1);
        run_cmd(
            docker()
                .args(["network", "create", "--label"])
                .arg(format!("{LABEL}={run}"))
                .args([
                    "--subnet",
                    &format!("{a}.{b}.{c}.0/24"),
                    "--gateway",
                    &gateway.to_string(),
                    &network,
                ]),
        )
        .await;
        let dir = std::env::temp_dir().join(format!("berth-swarm-{run}"));
        let _ = std::fs::remove_dir_all(&dir);
        let resolver = Resolver::start(IpAddr::V4(gateway))
            .await
            .expect("the cluster's resolver binds the gateway's port 53 (run as root)");
        let mut cluster = Cluster {
            run: run.clone(),
            nodes: Vec::new(),
            gateway,
            resolver,
            setup: Duration::ZERO,
        };
        for i in 0..3 {
            let name = format!("berth-swarm-{run}-n{}", i + 1);
            let ip = Ipv4Addr::new(a, b, c, 11 + i as u8);
            let home = dir.join(&name);
            std::fs::create_dir_all(home.join("node")).expect("node folder");
            std::fs::create_dir_all(home.join("docker")).expect("node folder");
            run_cmd(
                docker()
                    .args(["run", "-d", "--name", &name, "--hostname"])
                    .arg(format!("n{}", i + 1))
                    .args(["--label", &format!("{LABEL}={run}"), "--network", &network])
                    .args(["--ip", &ip.to_string(), "--dns", &gateway.to_string()])
                    .args(["--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--init"])
                    .args(["--security-opt", "seccomp=unconfined"])
                    .args(["--security-opt", "apparmor=unconfined"])
                    .args(["--security-opt", "systempaths=unconfined"])
                    .args(["-e", &format!("NODE_DNS={gateway}")])
                    .arg("-e")
                    .arg(if i == 0 {
                        // The routers, on every node, reach the manager's API here.
                        format!("NODE_DOCKERD_ARGS=--host tcp://{ip}:{MANAGER_API_PORT}")
                    } else {
                        "NODE_DOCKERD_ARGS=".to_string()
                    })
                    .arg("-v")
                    .arg(format!("{}:/node", home.join("node").display()))
                    .arg("-v")
                    .arg(format!("{}:/var/lib/docker", home.join("docker").display()))
                    .arg(&node_image),
            )
            .await;
            cluster.nodes.push(Node {
                name,
                ip,
                socket: home.join("node/docker.sock"),
            });
        }
        for node in &cluster.nodes {
            wait_for_engine(node).await;
            count_dns(node, gateway).await;
        }
        let manager = &cluster.nodes[0];
        run_cmd(
            manager
                .docker()
                .args(["swarm", "init", "--advertise-addr"])
                .arg(manager.ip.to_string())
                .args([
                    "--dispatcher-heartbeat",
                    &format!("{}ms", options.heartbeat.as_millis()),
                    "--task-history-limit",
                    "1",
                ]),
        )
        .await;
        let token = run_cmd(
            manager
                .docker()
                .args(["swarm", "join-token", "-q", "worker"]),
        )
        .await;
        for worker in &cluster.nodes[1..] {
            run_cmd(
                worker
                    .docker()
                    .args(["swarm", "join", "--token", &token, "--advertise-addr"])
                    .arg(worker.ip.to_string())
                    .arg(format!("{}:2377", manager.ip)),
            )
            .await;
        }
        let [oa, ob, oc] = options.overlay_subnet;
        run_cmd(manager.docker().args([
            "network",
            "create",
            "-d",
            "overlay",
            "--attachable",
            "--subnet",
            &format!("{oa}.{ob}.{oc}.0/24"),
            OVERLAY,
        ]))
        .await;
        let mut images = options.images.clone();
        images.push(probe_image().await);
        for node in &cluster.nodes {
            for image in &images {
                load_image(node, image).await;
            }
        }
        let probe = probe_image().await;
        for node in &cluster.nodes {
            run_cmd(node.docker().args([
                "run",
                "-d",
                "--name",
                "keeper",
                "--network",
                OVERLAY,
                &probe,
                "sleep",
                "2147483647",
            ]))
            .await;
        }
        cluster.wait_ready().await;
        cluster.setup = started.elapsed();
        cluster
    }

    pub fn manager(&self) -> &Node {
        &self.nodes[0]
    }

    /// Sets Swarm's dispatcher heartbeat, and waits until every node has heard of it (at
    /// its next heartbeat, with the old period).
    pub async fn set_heartbeat(&self, period: Duration) {
        run_cmd(self.manager().docker().args([
            "swarm",
            "update",
            "--dispatcher-heartbeat",
            &format!("{}ms", period.as_millis()),
        ]))
        .await;
        tokio::time::sleep(Duration::from_secs(6)).await;
    }

    /// Waits until every node is Ready in the manager's list.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list =
                run_cmd(
                    self.manager()
                        .docker()
                        .args(["node", "ls", "--format", "{{.Status}}"]),
                )
                .await;
            if list.lines().filter(|s| *s == "Ready").count() == self.nodes.len() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nodes not all ready after 60 s: {list}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What `command` prints when run in node `node`'s keeper, a busybox on the overlay.
    pub async fn probe(&self, node: usize, command: &str) -> Result<String, String> {
        let output = self.nodes[node]
            .docker()
            .args(["exec", "keeper", "sh", "-c", command])
            .output()
            .await
            .expect("docker can run");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
        }
    }

    /// The body of `GET http://host:port/path` from node `node`'s keeper, or why not.
    /// busybox's `wget` crashes when static (glibc's resolver), so it is `nslookup` (A
    /// records only: AAAA lookups for a new name sometimes stall) and `nc`.
    pub async fn get(
        &self,
        node: usize,
        host: &str,
        port: u16,
        path: &str,
    ) -> Result<String, String> {
        let lookup = if host.parse::<std::net::Ipv4Addr>().is_ok() {
            format!("ip={host}")
        } else {
            format!("ip=$(nslookup -type=a {host} 2>/dev/null | awk '/^Address: / {{a=$2}} END {{print a}}')")
        };
        let script = format!(
            "{lookup}; \
             [ -n \"$ip\" ] || {{ echo 'no address for {host}' >&2; exit 1; }}; \
             printf 'GET {path} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n' | nc -w 3 \"$ip\" {port}"
        );
        let answer = self.probe(node, &script).await?;
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no HTTP answer: {answer:?}"))?;
        if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
            return Err(head.to_string());
        }
        Ok(body.to_string())
    }

    /// DNS packets that left node `node` for anywhere but the cluster's resolver.
    pub async fn stray_dns_packets(&self, node: usize) -> u64 {
        let rules = run_cmd(docker().args([
            "exec",
            &self.nodes[node].name,
            "iptables",
            "-L",
            "-v",
            "-n",
            "-x",
        ]))
        .await;
        rules
            .lines()
            .filter(|line| line.contains("dpt:53") && line.contains(&format!("!{}", self.gateway)))
            .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::env::var_os("BERTH_SWARM_KEEP").is_some() {
            eprintln!(
                "BERTH_SWARM_KEEP: cluster {} kept; the next run removes it",
                self.run
            );
            return;
        }
        remove_run(&self.run);
    }
}

async fn run_cmd(command: &mut Command) -> String {
    run(command).await
}

/// Counting rules (no target): UDP and TCP port 53 to anywhere but `gateway`, from the
/// node itself (OUTPUT) and from its containers (FORWARD).
async fn count_dns(node: &Node, gateway: Ipv4Addr) {
    for chain in ["OUTPUT", "FORWARD"] {
        for protocol in ["udp", "tcp"] {
            run_cmd(
                docker()
                    .args([
                        "exec", &node.name, "iptables", "-I", chain, "-p", protocol, "--dport",
                        "53", "!", "-d",
                    ])
                    .arg(gateway.to_string()),
            )
            .await;
        }
    }
}

async fn wait_for_engine(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = node
            .docker()
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .await
            .is_ok_and(|o| o.status.success());
        if ok {
            return;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(node.socket.with_file_name("dockerd.log"))
                .unwrap_or_default();
            panic!(
                "node {}'s dockerd did not answer in 60 s; its log ends:\n{}",
                node.name,
                tail(&log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub async fn load_image(node: &Node, image: &str) {
    let script = format!(
        "docker save {image} | docker -H unix://{} load -q",
        node.socket.display()
    );
    run_cmd(Command::new("sh").args(["-c", &script])).await;
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The static test server as an image, `FROM scratch`.
pub async fn app_image() -> String {
    let binary = tokio::task::spawn_blocking(crate::common::server_binary)
        .await
        .expect("build thread");
    let script = format!(
        r#"set -e
b={binary}
tag=berth-swarm-app:$(sha256sum "$b" | cut -c1-12)
if ! docker image inspect "$tag" >/dev/null 2>&1; then
    dir=$(mktemp -d); cp "$b" "$dir/server"
    printf 'FROM scratch\nCOPY server /server\nENTRYPOINT ["/server"]\n' >"$dir/Dockerfile"
    docker build -q -t "$tag" "$dir" >/dev/null
    rm -rf "$dir"
fi
echo "$tag""#,
        binary = binary.display()
    );
    run_cmd(Command::new("sh").args(["-c", &script])).await
}

/// berth itself as an image, for the routers: the test's own build of the binary, without
/// its debug information, and the shared libraries it links.
pub async fn router_image() -> String {
    let script = format!(
        r#"set -e
b={binary}
tag=berth-swarm-router:$(sha256sum "$b" | cut -c1-12)
if ! docker image inspect "$tag" >/dev/null 2>&1; then
    root=$(mktemp -d); mkdir -p "$root/usr/bin" "$root/tmp" "$root/data" "$root/etc"
    objcopy --strip-debug "$b" "$root/usr/bin/berth" 2>/dev/null || cp "$b" "$root/usr/bin/berth"
    for lib in $(ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {{print $3}} $1 ~ /^\// {{print $1}}'); do
        mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
    done
    printf 'root:x:0:0:root:/:/bin/sh\n' >"$root/etc/passwd"
    tar -C "$root" -c . | docker import --change 'ENTRYPOINT ["/usr/bin/berth"]' - "$tag" >/dev/null
    rm -rf "$root"
fi
echo "$tag""#,
        binary = env!("CARGO_BIN_EXE_berth")
    );
    run_cmd(Command::new("sh").args(["-c", &script])).await
}

async fn node_image() -> String {
    run_cmd(&mut Command::new(repo_root().join("scripts/swarm-node.sh"))).await
}

/// A busybox image made from the host's busybox: the keepers, and a client on the overlay.
pub async fn probe_image() -> String {
    let script = r#"set -e
b=$(readlink -f "$(command -v busybox)")
tag=berth-swarm-probe:$(sha256sum "$b" | cut -c1-12)
if ! docker image inspect "$tag" >/dev/null 2>&1; then
    root=$(mktemp -d); mkdir -p "$root/bin"; cp "$b" "$root/bin/busybox"
    for a in $("$b" --list); do [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"; done
    tar -C "$root" -c . | docker import --change 'ENV PATH=/bin' - "$tag" >/dev/null
    rm -rf "$root"
fi
echo "$tag""#;
    run_cmd(Command::new("sh").args(["-c", script])).await
}

/// `attempt` until it succeeds, for up to 60 s: what a new task answers once the overlay's DNS
/// knows it on every node (30 services at once took 10 s here, twice that when loaded).
pub async fn eventually<T, F, Fut>(mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let result = attempt().await;
        if result.is_ok() || Instant::now() > deadline {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Removes what run `run` made on the host, with the std library: it runs from `Drop`.
fn remove_run(run: &str) {
    let filter = format!("label={LABEL}={run}");
    let list = |what: &[&str]| -> Vec<String> {
        std::process::Command::new("docker")
            .args(what)
            .args(["--filter", &filter])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let nodes = list(&["ps", "-aq"]);
    if !nodes.is_empty() {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", "-v"])
            .args(&nodes)
            .output();
    }
    for network in list(&["network", "ls", "-q"]) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &network])
            .output();
    }
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("berth-swarm-{run}")));
}

/// Removes clusters that runs which are no longer alive left behind.
async fn remove_stale() {
    let labels = run_cmd(docker().args([
        "ps",
        "-a",
        "--filter",
        &format!("label={LABEL}"),
        "--format",
        &format!("{{{{.Label \"{LABEL}\"}}}}"),
    ]))
    .await;
    let networks = run_cmd(docker().args([
        "network",
        "ls",
        "--filter",
        &format!("label={LABEL}"),
        "--format",
        &format!("{{{{.Label \"{LABEL}\"}}}}"),
    ]))
    .await;
    let mut runs: Vec<&str> = labels.lines().chain(networks.lines()).collect();
    runs.sort();
    runs.dedup();
    for run in runs {
        let alive = run
            .parse::<u32>()
            .is_ok_and(|pid| PathBuf::from(format!("/proc/{pid}")).exists());
        if !alive {
            remove_run(run);
        }
    }
}
