//! Whether a berth session is alive, in a way another process can check.
//!
//! Each session holds an exclusive lock on a file of its own for as long as its process
//! lives; the operating system lets go of the lock when the process dies, however it
//! dies. Another process on the same machine tells a live session from a dead one by
//! trying that lock. A session on another machine (an engine shared over the network)
//! cannot be checked this way, so its containers are never taken for a dead session's.
//!
//! The files live in one folder per machine (`$TMPDIR/berth-sessions`, or
//! `BERTH_SESSIONS_DIR`), named `<app>--<session>.lock`, so that the live sessions of an
//! app can be listed too.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::id::{hex, random_bytes, RandomError};

/// Why a session could not take its lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("cannot keep the session's lease in {path}: {reason}; make the folder writable, or point BERTH_SESSIONS_DIR at one that is")]
    Io { path: PathBuf, reason: String },
}

/// What can be known of a session from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its process runs, on this machine.
    Alive,
    /// Its process has ended: its containers are nobody's.
    Dead,
    /// It runs on another machine, which cannot be asked.
    Unknown,
}

/// This process's session: its id, its machine, and the lock that says it is alive.
#[derive(Debug)]
pub struct Lease {
    id: String,
    host: String,
    path: PathBuf,
    _lock: File,
}

impl Lease {
    /// A new session of `app`, alive until this value is dropped (or the process ends).
    pub fn take(app: &str) -> Result<Lease, LeaseError> {
        let id = hex(&random_bytes::<8>()?);
        let dir = folder();
        let io_error = |e: io::Error| LeaseError::Io {
            path: dir.clone(),
            reason: e.to_string(),
        };
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o1777)
                .create(&dir)
                .map_err(io_error)?;
            // Whatever the umask: every user's sessions have their lease here.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777))
                .map_err(io_error)?;
        }
        let path = dir.join(file_name(app, &id));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_error)?;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
        lock.try_lock().map_err(|e| io_error(e.into()))?;
        Ok(Lease {
            id,
            host: this_host(),
            path,
            _lock: lock,
        })
    }

    /// The session id, on the `berth.session` label of this session's containers.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The machine the session runs on.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether `session` of `app`, which runs on `host`, is alive. A container from before
/// sessions named their machine (`host` empty) belongs to a session that ended.
pub fn liveness(app: &str, session: &str, host: &str) -> Liveness {
    if host.is_empty() {
        return Liveness::Dead;
    }
    if host != this_host() {
        return Liveness::Unknown;
    }
    let path = folder().join(file_name(app, session));
    match File::open(&path) {
        Ok(file) => match file.try_lock_shared() {
            // Nobody holds it: its process has ended. Its file goes with it.
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
                Liveness::Dead
            }
            Err(_) => Liveness::Alive,
        },
        // A session that ended cleanly removed its file.
        Err(_) => Liveness::Dead,
    }
}

/// The other live sessions of `app` on this machine.
pub fn live_sessions(app: &str, except: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(folder()) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            // An app's name may hold `--` too; the session id, after the last one, never.
            let (owner, session) = name.strip_suffix(".lock")?.rsplit_once("--")?;
            (owner == app && session != except).then(|| session.to_string())
        })
        .filter(|session| liveness(app, session, &this_host()) == Liveness::Alive)
        .collect()
}

fn folder() -> PathBuf {
    std::env::var_os("BERTH_SESSIONS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("berth-sessions"))
}

fn file_name(app: &str, session: &str) -> String {
    let safe = |text: &str| -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("{}--{}.lock", safe(app), safe(session))
}

/// This machine: its `/etc/machine-id`, or else its host name.
pub(crate) fn this_host() -> String {
    let read = |path: &str| {
        std::fs::read_to_string(Path::new(path))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    read("/etc/machine-id")
        .or_else(|| read("/proc/sys/kernel/hostname"))
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_lease_is_seen_alive_and_a_dropped_one_dead() {
        let app = format!("lease-test-{}", std::process::id());
        let lease = Lease::take(&app).expect("lease");
        let other = Lease::take(&app).expect("another session");
        assert_eq!(liveness(&app, lease.id(), lease.host()), Liveness::Alive);
        assert_eq!(live_sessions(&app, other.id()), [lease.id().to_string()]);
        // Another app whose name starts with this one's and `--` is not this app.
        let longer = Lease::take(&format!("{app}--b")).expect("a lease of another app");
        assert_eq!(live_sessions(&app, other.id()), [lease.id().to_string()]);
        drop(longer);
        assert_eq!(
            liveness(&app, lease.id(), "another-machine"),
            Liveness::Unknown
        );
        let id = lease.id().to_string();
        drop(lease);
        assert_eq!(liveness(&app, &id, &this_host()), Liveness::Dead);
        assert!(live_sessions(&app, other.id()).is_empty());
        assert_eq!(liveness(&app, "never-was", &this_host()), Liveness::Dead);
        assert_eq!(liveness(&app, "legacy", ""), Liveness::Dead);
    }

    /// A process that dies without dropping anything (SIGKILL) lets go of its lock too.
    #[test]
    fn a_killed_process_leaves_a_dead_lease() {
        let dir = folder();
        std::fs::create_dir_all(&dir).expect("dir");
        let app = format!("lease-kill-{}", std::process::id());
        let path = dir.join(file_name(&app, "victim"));
        let mut holder = std::process::Command::new("python3")
            .arg("-c")
            .arg("import fcntl,sys,time; f=open(sys.argv[1],'w'); fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)")
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        let stdout = holder.stdout.as_mut().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("read");
        assert_eq!(line.trim(), "locked");
        assert_eq!(liveness(&app, "victim", &this_host()), Liveness::Alive);
        holder.kill().expect("SIGKILL");
        let _ = holder.wait();
        assert_eq!(liveness(&app, "victim", &this_host()), Liveness::Dead);
    }
}
