//! The logbook: what each object's containers wrote, kept in the data folder after the
//! containers are gone, so that a crash can be read afterwards.
//!
//! Each object has its own file, `<root>/<app>/<class>/<object id>.log`, one JSON line per
//! line the container wrote. It is a ring of two halves: when the file reaches half the
//! object's `log_max`, it becomes `<id>.log.1` (replacing the older half) and a new file
//! begins. An object's logs thus never take more than `log_max`, and the newest half of it
//! at least is always there. Readers are other processes too (`berth logs` beside a
//! running `berth dev`), so they follow the files, not this process's memory.

mod follow;
mod keep;
mod read;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::class::MIN_LOG_MAX;
use crate::runtime::Stream;

pub use follow::follow;
pub(crate) use keep::keep;
pub use read::Query;

/// A failure to read or write the logbook.
#[derive(Debug, thiserror::Error)]
pub enum LogbookError {
    #[error("could not {action} {}: {source}; check that the data folder is writable and not full", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// One line a container wrote, as `berth logs` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When the engine took the line, RFC 3339 in UTC.
    #[serde(with = "rfc3339")]
    pub time: SystemTime,
    pub app: String,
    pub class: String,
    /// The object's name, or its short id when it has none.
    pub object: String,
    /// The object's full id.
    pub id: String,
    /// The first 12 characters of the container's id.
    pub instance: String,
    pub stream: Stream,
    pub line: String,
}

/// A line as the object's file holds it: the app, class and id are in its path.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    #[serde(with = "rfc3339")]
    time: SystemTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    instance: String,
    stream: Stream,
    line: String,
}

mod rfc3339 {
    use std::time::SystemTime;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::timestamp::format(*time))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        crate::timestamp::parse(&text)
            .ok_or_else(|| D::Error::custom(format!("{text:?} is not an RFC 3339 UTC time")))
    }
}

/// Where the objects' logs are kept.
#[derive(Debug, Clone)]
pub struct Logbook {
    root: PathBuf,
}

impl Logbook {
    /// The logbook under `root`, which is created when the first line is written.
    pub fn new(root: impl Into<PathBuf>) -> Logbook {
        Logbook { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes everything kept of `app`, as its destruction does.
    pub fn forget_app(&self, app: &str) -> Result<(), LogbookError> {
        let dir = self.root.join(segment(app));
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(LogbookError::Io {
                action: "remove the logs in",
                path: dir,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Removes what one object kept, as its destruction does.
    pub fn forget_object(&self, app: &str, class: &str, id: &str) -> Result<(), LogbookError> {
        let log = self.object(app, class, id, MIN_LOG_MAX);
        for path in [rotated(&log.path), log.path.clone()] {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(LogbookError::Io {
                        action: "remove the log",
                        path,
                        source: e,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The writer of one object's file.
    pub(crate) fn object(&self, app: &str, class: &str, id: &str, max: u64) -> ObjectLog {
        ObjectLog {
            path: self
                .root
                .join(segment(app))
                .join(segment(class))
                .join(format!("{}.log", segment(id))),
            half: max.max(MIN_LOG_MAX) / 2,
            file: None,
            size: 0,
        }
    }
}

/// `10m`, `1h30m`, `90` (seconds) back from now, or an RFC 3339 time in UTC.
pub fn parse_since(value: &str) -> Result<SystemTime, String> {
    if let Some(time) = crate::timestamp::parse(value) {
        return Ok(time);
    }
    let back = crate::class::parse_duration(value).map_err(|e| {
        format!("since={value:?}: give a duration back from now (10m, 1h30m) or an RFC 3339 UTC time (2026-11-26T05:30:00Z): {e}")
    })?;
    Ok(SystemTime::now()
        .checked_sub(back)
        .unwrap_or(SystemTime::UNIX_EPOCH))
}

/// A name as a path segment: letters, digits, `_`, `-` and inner `.` stay; any other byte
/// becomes `%XX`, so that no name can climb out of its folder or clash with another.
fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    out
}

/// The inverse of [`segment`].
fn unsegment(segment: &str) -> String {
    if segment == "%" {
        return String::new();
    }
    crate::http::percent_decode(segment)
}

/// Appends to one object's file, turning it over at half the object's `log_max`.
pub(crate) struct ObjectLog {
    path: PathBuf,
    half: u64,
    file: Option<File>,
    size: u64,
}

impl ObjectLog {
    /// The last line kept, if any: where a follower of a re-adopted container resumes.
    fn last(&self) -> Option<Stored> {
        [self.path.clone(), rotated(&self.path)]
            .iter()
            .find_map(|path| {
                let text = fs::read_to_string(path).ok()?;
                text.lines()
                    .rev()
                    .find_map(|line| serde_json::from_str(line).ok())
            })
    }

    /// Writes `lines`; each is cut to a quarter of `log_max`, so that both halves hold
    /// whole lines. Blocks.
    fn append(&mut self, lines: &[Stored]) -> Result<(), LogbookError> {
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| LogbookError::Io {
                action,
                path,
                source,
            }
        };
        for stored in lines {
            let mut stored = stored.clone();
            let limit = usize::try_from(self.half / 2).unwrap_or(usize::MAX);
            if stored.line.len() > limit {
                let mut end = limit;
                while !stored.line.is_char_boundary(end) {
                    end -= 1;
                }
                stored.line.truncate(end);
                stored
                    .line
                    .push_str(" [cut by berth: line longer than log_max/4]");
            }
            let mut text = serde_json::to_string(&stored).unwrap_or_default();
            text.push('\n');
            let len = text.len() as u64;
            if self.file.is_none() {
                if let Some(dir) = self.path.parent() {
                    fs::create_dir_all(dir).map_err(io("create the log folder", dir))?;
                }
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .map_err(io("open the log file", &self.path))?;
                self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = Some(file);
            }
            if self.size > 0 && self.size + len > self.half {
                let older = rotated(&self.path);
                fs::rename(&self.path, &older).map_err(io("turn over the log file", &self.path))?;
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .map_err(io("open the log file", &self.path))?;
                self.file = Some(file);
                self.size = 0;
            }
            if let Some(file) = self.file.as_mut() {
                file.write_all(text.as_bytes())
                    .map_err(io("write to the log file", &self.path))?;
                self.size += len;
            }
        }
        Ok(())
    }
}

/// The older half of the file at `path`.
fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".1");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests;
