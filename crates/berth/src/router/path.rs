//! Route paths: the patterns a route's `path` is written in, and what they match.

/// A path pattern: literal segments, `:name` segments that capture one segment, and an
/// optional final `*` that matches the rest (including nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    raw: String,
    segments: Vec<Segment>,
    rest: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

impl PathPattern {
    pub fn parse(raw: &str) -> Result<PathPattern, String> {
        let Some(body) = raw.strip_prefix('/') else {
            return Err(format!("route path {raw:?} must start with /"));
        };
        if let Some(c) = raw.chars().find(|c| matches!(c, '?' | '#')) {
            return Err(format!(
                "route path {raw:?} holds {c:?}, which never reaches a route: a route matches the path only, not the query or fragment"
            ));
        }
        let mut segments = Vec::new();
        let mut rest = false;
        let parts: Vec<&str> = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            if *part == "*" {
                if i + 1 != parts.len() {
                    return Err(format!(
                        "route path {raw:?}: * may only be the last segment"
                    ));
                }
                rest = true;
            } else if let Some(name) = part.strip_prefix(':') {
                if name.is_empty() {
                    return Err(format!(
                        "route path {raw:?}: a : segment needs a name, as in :user"
                    ));
                }
                segments.push(Segment::Param(name.to_string()));
            } else {
                segments.push(Segment::Literal(part.to_string()));
            }
        }
        Ok(PathPattern {
            raw: raw.to_string(),
            segments,
            rest,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether every path `later` matches is matched by this pattern too, so that a
    /// route with `later` after one with this pattern is never reached.
    pub fn covers(&self, later: &PathPattern) -> bool {
        for (i, segment) in self.segments.iter().enumerate() {
            let covered = match (segment, later.segments.get(i)) {
                (_, None) => false,
                (Segment::Literal(a), Some(Segment::Literal(b))) => a == b,
                (Segment::Literal(_), Some(Segment::Param(_))) => false,
                (Segment::Param(_), Some(Segment::Literal(b))) => !b.is_empty(),
                (Segment::Param(_), Some(Segment::Param(_))) => true,
            };
            if !covered {
                return false;
            }
        }
        self.rest || (later.segments.len() == self.segments.len() && !later.rest)
    }

    /// Whether the pattern has a `:name` segment.
    pub fn has_param(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Param(p) if p == name))
    }

    /// The captured parameters, if `path` matches.
    pub fn matches<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        self.match_with_rest(path).map(|(captured, _)| captured)
    }

    /// The captured parameters and what the final `*` matched (`/` and onwards).
    pub(super) fn match_with_rest<'p>(
        &self,
        path: &'p str,
    ) -> Option<(Vec<(&str, &'p str)>, &'p str)> {
        let mut rest = path.strip_prefix('/')?;
        let mut captured = Vec::new();
        for segment in &self.segments {
            let (part, after) = rest.split_once('/').unwrap_or((rest, ""));
            match segment {
                Segment::Literal(lit) if lit == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) if !part.is_empty() => captured.push((name.as_str(), part)),
                Segment::Param(_) => return None,
            }
            rest = after;
        }
        (self.rest || rest.is_empty()).then(|| {
            // `rest` lost its leading slash; give the slash before it back.
            let rest = match rest {
                "" => "",
                _ => &path[path.len() - rest.len() - 1..],
            };
            (captured, rest)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_literals_params_and_rest() {
        let p = PathPattern::parse("/users/:user/*").expect("pattern");
        assert_eq!(p.matches("/users/bob/x/y"), Some(vec![("user", "bob")]));
        assert_eq!(p.matches("/users/bob"), Some(vec![("user", "bob")]));
        assert_eq!(p.matches("/users/"), None);
        assert_eq!(p.matches("/other/bob"), None);
        let all = PathPattern::parse("/*").expect("pattern");
        assert_eq!(all.matches("/"), Some(vec![]));
        assert_eq!(all.matches("/a/b"), Some(vec![]));
        let exact = PathPattern::parse("/health").expect("pattern");
        assert!(exact.matches("/health").is_some());
        assert!(exact.matches("/health/").is_some());
        assert!(exact.matches("/health/x").is_none());
        assert_eq!(
            p.match_with_rest("/users/bob/x/y").map(|m| m.1),
            Some("/x/y")
        );
        assert_eq!(p.match_with_rest("/users/bob").map(|m| m.1), Some(""));
        assert_eq!(all.match_with_rest("/a").map(|m| m.1), Some("/a"));
        assert!(PathPattern::parse("users").is_err());
        assert!(PathPattern::parse("/a/*/b").is_err());
        assert!(PathPattern::parse("/a/:").is_err());
        assert!(PathPattern::parse("/a?b=1")
            .expect_err("a query")
            .contains("a route matches the path only"));
        assert!(PathPattern::parse("/a#top").is_err());
    }

    #[test]
    fn a_pattern_covers_the_patterns_it_shadows() {
        let covers = |a: &str, b: &str| {
            let p = |s| PathPattern::parse(s).expect("pattern");
            p(a).covers(&p(b))
        };
        assert!(covers("/*", "/users/:u"));
        assert!(covers("/users/:id", "/users/:user"));
        assert!(covers("/users/:id", "/users/bob"));
        assert!(covers("/a/*", "/a/b/*"));
        assert!(covers("/a", "/a"));
        assert!(!covers("/users/bob", "/users/:user"));
        assert!(!covers("/a", "/a/*"));
        assert!(!covers("/a/b", "/a/*"));
        assert!(!covers("/a/:x", "/a/*"));
        assert!(!covers("/a/*", "/b"));
    }
}
