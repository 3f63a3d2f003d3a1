//! The context as a tar stream, written while the engine reads it.
//!
//! A context can be far larger than memory should be, so it is never held whole: a
//! blocking thread reads one file at a time from disk, in chunks, into a small bounded
//! channel that the engine's request body drains. The thread waits while the engine is
//! busy, and stops when the engine goes away.
//!
//! Each file is hashed again as it is sent. A file whose bytes differ from those hashed
//! when the context was read (it was saved in between) breaks the stream off, and the
//! build fails saying which file: otherwise the image would carry a content hash that does
//! not describe it, and the next run would take it as up to date. Sending only the first
//! `size` bytes keeps the archive well formed if a file grows.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::context::{Context, EntryKind};
use super::file::HashedFile;
use super::BuildError;

/// The size of the chunks sent to the engine.
const CHUNK: usize = 64 * 1024;
/// How many chunks may wait for the engine: at most this many times [`CHUNK`] in memory.
const QUEUED: usize = 4;

/// The tar archive of a build context, produced as it is read.
pub struct Archive {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    failure: Failure,
}

/// Why an [`Archive`] broke off, once it has: the engine sees only that the request
/// body failed, and this says what the user can do about it.
#[derive(Clone, Default)]
pub struct Failure(Arc<Mutex<Option<BuildError>>>);

impl Failure {
    /// The error that broke the archive off, if one did.
    pub fn take(&self) -> Option<BuildError> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }

    /// Whether the archive broke off.
    pub fn has_failed(&self) -> bool {
        self.0.lock().map(|slot| slot.is_some()).unwrap_or(false)
    }

    fn set(&self, error: BuildError) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(error);
        }
    }
}

impl Archive {
    /// Starts writing the archive of `context` on a blocking thread; it waits for the
    /// reader after the first few chunks.
    pub(super) fn start(context: Context) -> Archive {
        let (tx, chunks) = mpsc::channel(QUEUED);
        let failure = Failure::default();
        let report = failure.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = ChunkWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
                closed: false,
            };
            if let Err(error) = write_tar(&context, &mut out) {
                // The reader has gone away: nobody is left to tell.
                if tx.is_closed() {
                    return;
                }
                let message = error.to_string();
                report.set(error);
                // An error, not the end of the stream: a body that simply ended would
                // look like a whole, shorter context to the engine.
                let _ = tx.blocking_send(Err(io::Error::other(message)));
            }
        });
        Archive { chunks, failure }
    }

    /// The archive as a stream of chunks for a request body, and where to find why it
    /// broke off if the request fails.
    pub fn into_stream(self) -> (impl Stream<Item = io::Result<Bytes>> + Send, Failure) {
        let stream = futures_util::stream::unfold(self.chunks, |mut chunks| async move {
            chunks.recv().await.map(|chunk| (chunk, chunks))
        });
        (stream, self.failure)
    }

    /// The whole archive in memory, for tests.
    #[cfg(test)]
    pub(super) async fn bytes(self) -> Result<Vec<u8>, BuildError> {
        let (stream, failure) = self.into_stream();
        let mut stream = std::pin::pin!(stream);
        let mut all = Vec::new();
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            match chunk {
                Ok(chunk) => all.extend_from_slice(&chunk),
                Err(e) => {
                    return Err(failure.take().unwrap_or(BuildError::Context {
                        path: std::path::PathBuf::new(),
                        reason: e.to_string(),
                    }))
                }
            }
        }
        Ok(all)
    }
}

/// Writes the entries of `context` as a tar archive into `out`.
fn write_tar(context: &Context, out: &mut ChunkWriter) -> Result<(), BuildError> {
    let mut archive = tar::Builder::new(out);
    let result = context.entries.iter().try_for_each(|entry| {
        let path = context.root.join(&entry.path);
        let io_error = |e: io::Error| BuildError::Context {
            path: path.clone(),
            reason: e.to_string(),
        };
        let mut header = tar::Header::new_gnu();
        match &entry.kind {
            EntryKind::File {
                size,
                executable,
                digest,
            } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(*size);
                header.set_mode(if *executable { 0o755 } else { 0o644 });
                let mut file = HashedFile::open(&path).map_err(io_error)?;
                archive
                    .append_data(&mut header, &entry.path, (&mut file).take(*size))
                    .map_err(io_error)?;
                let (sent, sent_digest) = file.finish();
                if sent != *size || sent_digest != *digest {
                    return Err(BuildError::Changed { path });
                }
            }
            EntryKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                header.set_mode(0o755);
                archive
                    .append_data(&mut header, &entry.path, io::empty())
                    .map_err(io_error)?;
            }
            EntryKind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                header.set_mode(0o777);
                archive
                    .append_link(&mut header, &entry.path, target)
                    .map_err(io_error)?;
            }
        }
        Ok(())
    });
    let io_error = |e: io::Error| BuildError::Context {
        path: context.root.clone(),
        reason: e.to_string(),
    };
    match result {
        Ok(()) => archive
            .into_inner()
            .map_err(io_error)?
            .flush()
            .map_err(io_error),
        Err(error) => {
            // Dropping the builder would end the archive properly, making the files
            // sent so far look like the whole context.
            archive.get_mut().closed = true;
            Err(error)
        }
    }
}

/// Cuts what the tar builder writes into chunks for the channel.
struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    /// The reader has gone away, or the archive broke off: nothing more is sent.
    closed: bool,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        if self.tx.blocking_send(Ok(chunk)).is_err() {
            self.closed = true;
        }
        self.check_open()
    }

    fn check_open(&self) -> io::Result<()> {
        if self.closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the engine stopped reading the build context",
            ));
        }
        Ok(())
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check_open()?;
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.check_open()?;
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::super::context::read_context;
    use super::*;

    fn context_dir(test: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("berth-archive-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).expect("dir");
        std::fs::write(dir.join("Dockerfile"), "FROM scratch\n").expect("write");
        // Larger than a chunk, and not a multiple of one.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("sub/big"), &big).expect("write");
        std::os::unix::fs::symlink("big", dir.join("sub/link")).expect("symlink");
        dir
    }

    #[tokio::test]
    async fn the_archive_holds_the_files_as_they_are_on_disk() {
        let dir = context_dir("whole");
        let context = read_context(&dir, "Dockerfile", &dir.join("berth.toml")).expect("context");
        let bytes = Archive::start(context).bytes().await.expect("archive");
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().expect("a tar") {
            let mut entry = entry.expect("an entry");
            let path = entry.path().expect("path").display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("data");
            let link = entry
                .link_name()
                .expect("link")
                .map(|l| l.display().to_string());
            seen.push((path, data.len(), link));
        }
        let on_disk = std::fs::read(dir.join("sub/big")).expect("read");
        assert_eq!(
            seen,
            [
                ("Dockerfile".to_string(), 13, None),
                ("sub".to_string(), 0, None),
                ("sub/big".to_string(), on_disk.len(), None),
                ("sub/link".to_string(), 0, Some("big".to_string())),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_file_changed_after_hashing_breaks_the_archive_off() {
        let dir = context_dir("changed");
        let context = read_context(&dir, "Dockerfile", &dir.join("berth.toml")).expect("context");
        std::fs::write(dir.join("sub/big"), "saved since").expect("write");
        let e = Archive::start(context)
            .bytes()
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(&*format!(
                "{} changed while the build context was sent, so the image would not match its content hash; build again once it is saved",
                dir.join("sub/big").display()
            ))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
