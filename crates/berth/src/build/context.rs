//! The build context: which files `.dockerignore` keeps, walked once to hash them, then
//! read again as they are archived (see `archive`), so that memory stays small whatever
//! the size of the context. The archive checks each file against its hash as it sends it,
//! so the hash describes exactly what the engine is sent.
//!
//! Only regular files, folders and symbolic links are sent. Anything else (a FIFO, a
//! device, a socket) is skipped and named in [`Context::skipped`], never opened: reading
//! a FIFO waits for a writer that never comes, and a device such as `/dev/zero` never
//! ends. `docker build` does not read them either.
//!
//! The manifest (`berth.toml`), when it lies in the context, is left out of both the hash
//! and the archive unless the Dockerfile's text names its file name. berth reads the
//! manifest itself and images seldom need it, so a new route or class option should not
//! rebuild the image (and leave one more behind). A Dockerfile that does copy it (`COPY
//! berth.toml …`) names it, and then it counts like any other file. A `COPY . .` that
//! needs it must name it too, even in a comment.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::file::{hash_file, HashedFile};
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
/// `manifest` is the manifest file, left out as the module says.
pub(super) fn read_context(
    context: &Path,
    dockerfile: &str,
    manifest: &Path,
) -> Result<Context, BuildError> {
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
    let manifest_path = manifest_left_out(context, manifest, &dockerfile_path)
        .map_err(|e| err(&dockerfile_path, e))?;
    let ignore_path = context.join(".dockerignore");
    // Through a link, as `docker build` does; anything but a regular file is not read.
    let ignore = match std::fs::metadata(&ignore_path) {
        Ok(meta) if meta.is_file() => {
            let mut text = Vec::new();
            HashedFile::open(&ignore_path)
                .and_then(|mut file| file.read_to_end(&mut text))
                .map_err(|e| err(&ignore_path, e))?;
            Ignore::parse(&String::from_utf8_lossy(&text))
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
            if rel_str == ".berth" || manifest_path.as_ref() == Some(&rel_str) {
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

/// The manifest's path in the context, if it lies there and the Dockerfile does not name
/// it. Paths are compared resolved, as `build.context` may be `..` or a link.
fn manifest_left_out(
    context: &Path,
    manifest: &Path,
    dockerfile: &Path,
) -> std::io::Result<Option<String>> {
    let (Ok(context), Ok(manifest)) = (context.canonicalize(), manifest.canonicalize()) else {
        return Ok(None);
    };
    let (Ok(relative), Some(name)) = (manifest.strip_prefix(&context), manifest.file_name()) else {
        return Ok(None);
    };
    let mut text = Vec::new();
    HashedFile::open(dockerfile)?.read_to_end(&mut text)?;
    if String::from_utf8_lossy(&text).contains(&*name.to_string_lossy()) {
        return Ok(None);
    }
    Ok(Some(relative.to_string_lossy().replace('\\', "/")))
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
        std::fs::write(dir.join("ignored"), "*.log\n").expect("write");
        // Followed, as `docker build` follows it.
        std::os::unix::fs::symlink("ignored", dir.join(".dockerignore")).expect("symlink");
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
            let context =
                read_context(&dir, "Dockerfile", &dir.join("berth.toml")).expect("context");
            content_hash(&context.entries, &spec)
        };
        let first = hash();
        std::fs::write(dir.join("debug.log"), "noise").expect("write");
        std::fs::write(dir.join(".berth/state.db"), "changed").expect("write");
        assert_eq!(hash(), first, "ignored files and .berth do not count");
        std::fs::write(dir.join("berth.toml"), "name = \"t\"\n").expect("write");
        assert_eq!(
            hash(),
            first,
            "nor does the manifest, which the Dockerfile does not name"
        );
        std::fs::write(dir.join("sub/a.txt"), "b").expect("write");
        assert_ne!(hash(), first, "a changed file does");
        let entries = read_context(&dir, "Dockerfile", &dir.join("berth.toml"))
            .expect("context")
            .entries;
        let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [".dockerignore", "Dockerfile", "ignored", "sub", "sub/a.txt"]
        );
        assert!(matches!(
            read_context(&dir, "Nope", &dir.join("berth.toml")),
            Err(BuildError::NoDockerfile { .. })
        ));
        let missing = dir.join("nowhere");
        let e = read_context(&missing, "Dockerfile", &dir.join("berth.toml"))
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
        // A character device that never ends, where the machine lets the test make one.
        let device = std::process::Command::new("mknod")
            .arg(dir.join("sub/zero"))
            .args(["c", "1", "5"])
            .status()
            .is_ok_and(|s| s.success());
        // Opening a FIFO for reading blocks until a writer comes, and none will: a read
        // that has not returned after a minute has hung.
        let (tx, rx) = std::sync::mpsc::channel();
        let walked = dir.clone();
        std::thread::spawn(move || {
            tx.send(read_context(
                &walked,
                "Dockerfile",
                &walked.join("berth.toml"),
            ))
        });
        let context = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("reading the context hung on a FIFO")
            .expect("context");
        let paths: Vec<_> = context.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["Dockerfile", "sub"]);
        let mut skipped = vec![".dockerignore", "sub/pipe"];
        if device {
            skipped.push("sub/zero");
        }
        assert_eq!(context.skipped, skipped);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
