//! The build context: which files `.dockerignore` keeps, walked once to hash them, then
//! read again as they are archived (see `archive`), so that memory stays small whatever
//! the size of the context. The archive checks each file against its hash as it sends it,
//! so the hash describes exactly what the engine is sent.
//!
//! Only regular files, folders and symbolic links are sent. Anything else (a FIFO, a
//! device, a socket) is skipped and named in [`Context::skipped`], never opened: reading
//! a FIFO waits for a writer that never comes, and a device such as `/dev/zero` never
//! ends. `docker build` does not read them either.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ignore::{normalise, Ignore};
use super::{BuildError, BuildSpec};

/// What the context holds, as the engine is to be sent it.
pub(super) struct Context {
    /// The folder the entries' paths are relative to.
    pub(super) root: PathBuf,
    pub(super) entries: Vec<Entry>,
    /// Paths of files that are neither regular files, folders nor links, left out.
    pub(super) skipped: Vec<String>,
}

/// A file of the build context.
pub(super) struct Entry {
    /// Relative to the context, `/`-separated: the name in the archive.
    pub(super) path: String,
    pub(super) kind: EntryKind,
}

pub(super) enum EntryKind {
    /// A regular file as it was when hashed; its bytes stay on disk.
    File {
        size: u64,
        executable: bool,
        digest: [u8; 32],
    },
    Dir,
    Symlink(PathBuf),
}

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
fn hash_file(path: &Path) -> io::Result<EntryKind> {
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

/// The hash of everything that makes the image: the files, the Dockerfile path, the
/// target and the build args.
pub(super) fn content_hash(entries: &[Entry], spec: &BuildSpec) -> String {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(b"berth-build-v2");
    field(spec.dockerfile.as_bytes());
    field(spec.target.as_deref().unwrap_or("").as_bytes());
    for (k, v) in &spec.args {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    for entry in entries {
        field(entry.path.as_bytes());
        match &entry.kind {
            EntryKind::File {
                executable, digest, ..
            } => {
                field(if *executable { b"x" } else { b"f" });
                field(digest);
            }
            EntryKind::Dir => field(b"d"),
            EntryKind::Symlink(target) => {
                field(b"l");
                field(target.to_string_lossy().as_bytes());
            }
        }
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the files of the context that `.dockerignore` keeps, in a stable order.
pub(super) fn read_context(context: &Path, dockerfile: &str) -> Result<Context, BuildError> {
    let err = |path: &Path, e: std::io::Error| BuildError::Context {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    if !context.is_dir() {
        return Err(BuildError::NoContext {
            path: context.to_path_buf(),
        });
    }
    let dockerfile_path = context.join(dockerfile);
    if !dockerfile_path.is_file() {
        return Err(BuildError::NoDockerfile {
            path: dockerfile_path,
        });
    }
    let ignore_path = context.join(".dockerignore");
    let ignore = match std::fs::symlink_metadata(&ignore_path) {
        Ok(meta) if meta.is_file() => {
            Ignore::parse(&std::fs::read_to_string(&ignore_path).map_err(|e| err(&ignore_path, e))?)
        }
        Ok(_) => Ignore::default(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::default(),
        Err(e) => return Err(err(&ignore_path, e)),
    };
    let always = [normalise(dockerfile), ".dockerignore".to_string()];
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let dir = context.join(&relative);
        let mut children: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| err(&dir, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| err(&dir, e))?;
        children.sort_by_key(|c| c.file_name());
        for child in children {
            let rel = relative.join(child.file_name());
            let rel_str = rel.to_string_lossy().replace('\\', "/");
            // berth's own state lives in the app folder and changes all the time.
            if rel_str == ".berth" {
                continue;
            }
            let excluded = ignore.excludes(&rel_str) && !always.contains(&rel_str);
            let file_type = child.file_type().map_err(|e| err(&child.path(), e))?;
            if file_type.is_dir() {
                if excluded && !ignore.has_exceptions() {
                    continue;
                }
                if !excluded {
                    entries.push(Entry {
                        path: rel_str,
                        kind: EntryKind::Dir,
                    });
                }
                stack.push(rel);
            } else if !excluded {
                let kind = if file_type.is_symlink() {
                    EntryKind::Symlink(
                        std::fs::read_link(child.path()).map_err(|e| err(&child.path(), e))?,
                    )
                } else if file_type.is_file() {
                    hash_file(&child.path()).map_err(|e| err(&child.path(), e))?
                } else {
                    skipped.push(rel_str);
                    continue;
                };
                entries.push(Entry {
                    path: rel_str,
                    kind,
                });
            }
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    skipped.sort();
    Ok(Context {
        root: context.to_path_buf(),
        entries,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_context_hash_changes_with_content_and_ignores_ignored_files() {
        let dir = std::env::temp_dir().join(format!("berth-build-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).expect("dir");
        std::fs::write(dir.join("Dockerfile"), "FROM scratch\n").expect("write");
        std::fs::write(dir.join("sub/a.txt"), "a").expect("write");
        std::fs::write(dir.join(".dockerignore"), "*.log\n").expect("write");
        std::fs::create_dir_all(dir.join(".berth")).expect("dir");
        std::fs::write(dir.join(".berth/state.db"), "x").expect("write");
        let spec = BuildSpec {
            name: "t".into(),
            tag: None,
            context: dir.clone(),
            dockerfile: "Dockerfile".into(),
            args: BTreeMap::new(),
            target: None,
            command: None,
        };
        let hash = || {
            let context = read_context(&dir, "Dockerfile").expect("context");
            content_hash(&context.entries, &spec)
        };
        let first = hash();
        std::fs::write(dir.join("debug.log"), "noise").expect("write");
        std::fs::write(dir.join(".berth/state.db"), "changed").expect("write");
        assert_eq!(hash(), first, "ignored files and .berth do not count");
        std::fs::write(dir.join("sub/a.txt"), "b").expect("write");
        assert_ne!(hash(), first, "a changed file does");
        let entries = read_context(&dir, "Dockerfile").expect("context").entries;
        let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, [".dockerignore", "Dockerfile", "sub", "sub/a.txt"]);
        assert!(matches!(
            read_context(&dir, "Nope"),
            Err(BuildError::NoDockerfile { .. })
        ));
        let missing = dir.join("nowhere");
        let e = read_context(&missing, "Dockerfile")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(&*format!("the build context {} does not exist or is not a folder; set build.context (relative to berth.toml) to the folder that holds the Dockerfile", missing.display()))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn special_files_are_skipped_without_being_opened() {
        let dir = std::env::temp_dir().join(format!("berth-build-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).expect("dir");
        std::fs::write(dir.join("Dockerfile"), "FROM scratch\n").expect("write");
        for fifo in ["sub/pipe", ".dockerignore"] {
            let made = std::process::Command::new("mkfifo")
                .arg(dir.join(fifo))
                .status()
                .expect("mkfifo runs");
            assert!(made.success());
        }
        // Opening a FIFO for reading blocks until a writer comes, and none will: a read
        // that has not returned after a minute has hung.
        let (tx, rx) = std::sync::mpsc::channel();
        let walked = dir.clone();
        std::thread::spawn(move || tx.send(read_context(&walked, "Dockerfile")));
        let context = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("reading the context hung on a FIFO")
            .expect("context");
        let paths: Vec<_> = context.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["Dockerfile", "sub"]);
        assert_eq!(context.skipped, [".dockerignore", "sub/pipe"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
