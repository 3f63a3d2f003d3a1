//! The build context: which files `.dockerignore` keeps, read once, then both hashed and
//! archived, so that the hash describes exactly what the engine is sent.
//!
//! The ignore rules are Docker's, not git's: a pattern such as `*.log` matches at the top
//! of the context only.
//!
//! Only regular files, folders and symbolic links are sent. Anything else (a FIFO, a
//! device, a socket) is skipped and named in [`Context::skipped`], never opened: reading
//! a FIFO waits for a writer that never comes, and a device such as `/dev/zero` never
//! ends. `docker build` does not read them either.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{BuildError, BuildSpec};

/// What the context holds, as the engine is to be sent it.
pub(super) struct Context {
    pub(super) entries: Vec<Entry>,
    /// Paths of files that are neither regular files, folders nor links, left out.
    pub(super) skipped: Vec<String>,
}

/// A file of the build context.
pub(super) struct Entry {
    path: String,
    kind: EntryKind,
}

enum EntryKind {
    File { data: Vec<u8>, executable: bool },
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
    field(b"berth-build-v1");
    field(spec.dockerfile.as_bytes());
    field(spec.target.as_deref().unwrap_or("").as_bytes());
    for (k, v) in &spec.args {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    for entry in entries {
        field(entry.path.as_bytes());
        match &entry.kind {
            EntryKind::File { data, executable } => {
                field(if *executable { b"x" } else { b"f" });
                field(data);
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

/// The context as the tar archive engines take.
pub(super) fn tar_of(entries: &[Entry]) -> std::io::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        match &entry.kind {
            EntryKind::File { data, executable } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                header.set_mode(if *executable { 0o755 } else { 0o644 });
                archive.append_data(&mut header, &entry.path, data.as_slice())?;
            }
            EntryKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                header.set_mode(0o755);
                archive.append_data(&mut header, &entry.path, std::io::empty())?;
            }
            EntryKind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                header.set_mode(0o777);
                archive.append_link(&mut header, &entry.path, target)?;
            }
        }
    }
    archive.into_inner()
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
                    use std::os::unix::fs::PermissionsExt;
                    let meta = child.metadata().map_err(|e| err(&child.path(), e))?;
                    EntryKind::File {
                        data: std::fs::read(child.path()).map_err(|e| err(&child.path(), e))?,
                        executable: meta.permissions().mode() & 0o111 != 0,
                    }
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
    Ok(Context { entries, skipped })
}

fn normalise(path: &str) -> String {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// `.dockerignore` rules: glob patterns (`*`, `?`, `[…]`, `**`), `!` exceptions, the last
/// matching rule wins, and a rule that matches a folder covers everything in it.
#[derive(Default)]
struct Ignore {
    rules: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    fn parse(text: &str) -> Ignore {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (exception, pattern) = match l.strip_prefix('!') {
                    Some(p) => (true, p.trim()),
                    None => (false, l),
                };
                let segments = normalise(pattern).split('/').map(str::to_string).collect();
                (exception, segments)
            })
            .collect();
        Ignore { rules }
    }

    fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(exception, _)| *exception)
    }

    fn excludes(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for (exception, pattern) in &self.rules {
            // The path itself, or any folder above it.
            let matched = (1..=parts.len()).any(|n| match_segments(pattern, &parts[..n]));
            if matched {
                excluded = !exception;
            }
        }
        excluded
    }
}

fn match_segments(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| match_segments(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((segment, path_rest)) => {
                glob(first.as_bytes(), segment.as_bytes()) && match_segments(rest, path_rest)
            }
            None => false,
        },
    }
}

/// One path segment against one glob segment.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some(close) = rest.iter().position(|b| *b == b']') else {
                return text.first() == Some(&b'[') && glob(rest, &text[1..]);
            };
            let Some((&c, text_rest)) = text.split_first() else {
                return false;
            };
            let (negate, class) = match rest[..close].split_first() {
                Some((b'^' | b'!', class)) => (true, class),
                _ => (false, &rest[..close]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && glob(&rest[close + 1..], text_rest)
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            text.first() == Some(&rest[0]) && glob(&rest[1..], &text[1..])
        }
        Some((&c, rest)) => text.first() == Some(&c) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn dockerignore_rules_follow_docker() {
        let ignore = Ignore::parse("# comment\ntarget\n*.log\n!keep.log\ndocs/**/*.md\n/secret?\n");
        assert!(ignore.excludes("target"));
        assert!(ignore.excludes("target/debug/app"));
        assert!(ignore.excludes("a.log"));
        assert!(!ignore.excludes("keep.log"));
        assert!(!ignore.excludes("sub/a.log"), "* does not cross folders");
        assert!(ignore.excludes("docs/x/y/readme.md"));
        assert!(ignore.excludes("docs/readme.md"));
        assert!(ignore.excludes("secret1"));
        assert!(!ignore.excludes("src/main.rs"));
        assert!(glob(b"[a-c]x", b"bx"));
        assert!(!glob(b"[^a-c]x", b"bx"));
    }

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
