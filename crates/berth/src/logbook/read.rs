//! Reading the logbook: which objects' files a query selects, and their lines in order.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{rotated, segment, unsegment, Entry, Logbook, LogbookError, Stored};

/// Which lines to show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub app: String,
    pub class: Option<String>,
    /// An object's name, or its id (or the first 4 or more characters of it).
    pub object: Option<String>,
    /// Only lines written at this time or later.
    pub since: Option<SystemTime>,
    /// Only the last this many lines (of those that match), when first read.
    pub tail: Option<usize>,
}

impl Query {
    pub(super) fn selects(&self, id: &str, stored: &Stored) -> bool {
        if self.since.is_some_and(|since| stored.time < since) {
            return false;
        }
        match &self.object {
            None => true,
            Some(wanted) => {
                stored.name.as_deref() == Some(wanted.as_str())
                    || (wanted.len() >= 4 && id.starts_with(&wanted.to_ascii_lowercase()))
            }
        }
    }
}

/// One object's file.
pub(super) struct ObjectFile {
    pub(super) class: String,
    pub(super) id: String,
    pub(super) path: PathBuf,
}

impl ObjectFile {
    pub(super) fn entry(&self, app: &str, stored: Stored) -> Entry {
        Entry {
            time: stored.time,
            app: app.to_string(),
            class: self.class.clone(),
            object: stored
                .name
                .map(|name| format!("{name:?}"))
                .unwrap_or_else(|| self.id.chars().take(12).collect()),
            id: self.id.clone(),
            instance: stored.instance,
            stream: stored.stream,
            line: stored.line,
        }
    }
}

/// Where a reader of one file has got to: the file (by inode) and the bytes read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cursor {
    inode: u64,
    offset: u64,
}

impl Logbook {
    /// The lines `query` selects, oldest first. Blocks.
    pub fn read(&self, query: &Query) -> Result<Vec<Entry>, LogbookError> {
        let mut entries = Vec::new();
        for file in self.files(query)? {
            let (lines, _) = file.read_from(None)?;
            entries.extend(
                lines
                    .into_iter()
                    .filter(|s| query.selects(&file.id, s))
                    .map(|s| file.entry(&query.app, s)),
            );
        }
        Ok(last(entries, query.tail))
    }

    /// The apps that have kept lines.
    pub fn apps(&self) -> Result<Vec<String>, LogbookError> {
        Ok(listing(&self.root)?.iter().map(|a| unsegment(a)).collect())
    }

    /// The files of the objects of `query`'s app (and class, if given).
    pub(super) fn files(&self, query: &Query) -> Result<Vec<ObjectFile>, LogbookError> {
        let app = self.root.join(segment(&query.app));
        let mut files = Vec::new();
        for class in listing(&app)? {
            let class_name = unsegment(&class);
            if query.class.as_ref().is_some_and(|c| *c != class_name) {
                continue;
            }
            let dir = app.join(&class);
            for name in listing(&dir)? {
                if let Some(id) = name.strip_suffix(".log") {
                    files.push(ObjectFile {
                        class: class_name.clone(),
                        id: unsegment(id),
                        path: dir.join(&name),
                    });
                }
            }
        }
        Ok(files)
    }
}

/// The names in `dir`, sorted; none if it does not exist.
fn listing(dir: &Path) -> Result<Vec<String>, LogbookError> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(LogbookError::Io {
                action: "list",
                path: dir.to_path_buf(),
                source: e,
            })
        }
    };
    let mut names: Vec<String> = read
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// The newest `tail` of `entries`, all of them sorted by time.
pub(super) fn last(mut entries: Vec<Entry>, tail: Option<usize>) -> Vec<Entry> {
    entries.sort_by_key(|e| e.time);
    if let Some(tail) = tail {
        entries.drain(..entries.len().saturating_sub(tail));
    }
    entries
}

impl ObjectFile {
    /// The whole lines written after `cursor` (from the start of both halves if none),
    /// and the cursor after them. A turn-over since the last read is followed: the rest
    /// of the old file is read from the older half. Blocks.
    pub(super) fn read_from(
        &self,
        cursor: Option<Cursor>,
    ) -> Result<(Vec<Stored>, Option<Cursor>), LogbookError> {
        let older = rotated(&self.path);
        // The older half first: if the file turns over between the two opens, the older
        // half then is what was the current file, which is not read twice.
        let mut older_file = open(&older)?;
        let Some(mut current) = open(&self.path)? else {
            return Ok((Vec::new(), cursor));
        };
        let inode = current.metadata().map(|m| m.ino()).unwrap_or(0);
        let older_inode = older_file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.ino());
        let mut older_text = Vec::new();
        let start = match cursor {
            Some(c) if c.inode == inode => c.offset,
            Some(c) => {
                if let Some(file) = older_file.as_mut().filter(|_| older_inode == Some(c.inode)) {
                    read_at(file, &older, c.offset, &mut older_text)?;
                }
                0
            }
            None => {
                if let Some(file) = older_file.as_mut().filter(|_| older_inode != Some(inode)) {
                    read_at(file, &older, 0, &mut older_text)?;
                }
                0
            }
        };
        let mut text = Vec::new();
        read_at(&mut current, &self.path, start, &mut text)?;
        // Only whole lines of the current file: one being written is read next time.
        let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let lines = [&older_text[..], &text[..whole]]
            .into_iter()
            .flat_map(|bytes| {
                String::from_utf8_lossy(bytes)
                    .lines()
                    .filter_map(|line| serde_json::from_str(line).ok())
                    .collect::<Vec<Stored>>()
            })
            .collect();
        let next = Cursor {
            inode,
            offset: start + whole as u64,
        };
        Ok((lines, Some(next)))
    }
}

/// The file at `path`, if there is one.
fn open(path: &Path) -> Result<Option<fs::File>, LogbookError> {
    match fs::File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogbookError::Io {
            action: "open",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Appends the bytes of `file` from `offset` on to `text`.
fn read_at(
    file: &mut fs::File,
    path: &Path,
    offset: u64,
    text: &mut Vec<u8>,
) -> Result<(), LogbookError> {
    let err = |source| LogbookError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    };
    file.seek(SeekFrom::Start(offset)).map_err(err)?;
    file.read_to_end(text).map_err(err)?;
    Ok(())
}
