//! A regular file of the build context, opened without waiting and hashed as it is read,
//! in chunks, so that no file is ever held in memory whole.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::context::EntryKind;

/// A regular file of the context, hashed as it is read.
pub(super) struct HashedFile {
    file: File,
    hash: Sha256,
    read: u64,
    executable: bool,
}

impl HashedFile {
    /// Opens `path` only if it is a regular file. The open does not wait: a FIFO put in
    /// its place since the walk would otherwise block it until a writer came.
    pub(super) fn open(path: &Path) -> io::Result<HashedFile> {
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is no longer a regular file",
            ));
        }
        Ok(HashedFile {
            file,
            hash: Sha256::new(),
            read: 0,
            executable: meta.permissions().mode() & 0o111 != 0,
        })
    }

    /// How many bytes were read, and their SHA-256.
    pub(super) fn finish(self) -> (u64, [u8; 32]) {
        (self.read, self.hash.finalize().into())
    }
}

impl Read for HashedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hash.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Reads the file at `path` through, in chunks, to learn its size and hash.
pub(super) fn hash_file(path: &Path) -> io::Result<EntryKind> {
    let mut file = HashedFile::open(path)?;
    let executable = file.executable;
    let mut buf = vec![0; 64 * 1024];
    while file.read(&mut buf)? != 0 {}
    let (size, digest) = file.finish();
    Ok(EntryKind::File {
        size,
        executable,
        digest,
    })
}
