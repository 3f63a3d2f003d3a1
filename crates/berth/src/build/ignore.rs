//! `.dockerignore`: which files of the context the engine is not sent.
//!
//! The rules are Docker's, not git's: a pattern such as `*.log` matches at the top of the
//! context only.

/// `.dockerignore` rules: glob patterns (`*`, `?`, `[…]`, `**`), `!` exceptions, the last
/// matching rule wins, and a rule that matches a folder covers everything in it.
#[derive(Default)]
pub(super) struct Ignore {
    rules: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    pub(super) fn parse(text: &str) -> Ignore {
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

    pub(super) fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(exception, _)| *exception)
    }

    pub(super) fn excludes(&self, path: &str) -> bool {
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

/// A path as `.dockerignore` and the tar archive spell it: `/`-separated, without `.` or
/// empty segments.
pub(super) fn normalise(path: &str) -> String {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
