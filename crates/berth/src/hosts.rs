//! Which app and worker a request reaches by its `Host`, in `berth serve`.
//!
//! A worker answers the hosts its manifest lists (`hosts = ["api.example.com",
//! "*.preview.example.com"]`), or else `<worker>.<app>.localhost`. An exact host wins
//! over a wildcard, and a longer wildcard over a shorter one, whatever the order in which
//! apps were deployed, so that routing never depends on history.

use std::fmt;

use http::Request;

/// A host a worker answers: exact, or `*.` and a suffix (one or more labels before it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPattern {
    raw: String,
}

impl HostPattern {
    /// A pattern from a manifest: a DNS name in lowercase letters, digits, `-` and `.`,
    /// optionally starting with `*.`; no port, no scheme.
    pub fn parse(raw: &str) -> Result<HostPattern, String> {
        let host = raw.trim_end_matches('.').to_ascii_lowercase();
        let name = host.strip_prefix("*.").unwrap_or(&host);
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!(
                "{raw:?} is not a host name; use a name such as \"api.example.com\" or \"*.preview.example.com\", without scheme or port"
            ));
        }
        Ok(HostPattern { raw: host })
    }

    /// The host a worker answers when its manifest lists none.
    pub fn default_for(worker: &str, app: &str) -> Result<HostPattern, String> {
        HostPattern::parse(&format!("{worker}.{app}.localhost"))
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    fn suffix(&self) -> Option<&str> {
        self.raw.strip_prefix('*')
    }

    /// Whether `host` (lowercase, without port) is answered by this pattern.
    pub fn matches(&self, host: &str) -> bool {
        match self.suffix() {
            Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            None => host == self.raw,
        }
    }

    /// How specific the pattern is: exact hosts first, then longer suffixes.
    fn rank(&self) -> (bool, usize) {
        (self.suffix().is_none(), self.raw.len())
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// The host a request is for: the authority of an absolute-form target, or else the
/// `Host` header; lowercase, without port or trailing dot.
pub fn request_host<B>(request: &Request<B>) -> Option<String> {
    let raw = match request.uri().authority() {
        Some(authority) => authority.host().to_string(),
        None => {
            let value = request.headers().get(http::header::HOST)?.to_str().ok()?;
            let authority: http::uri::Authority = value.parse().ok()?;
            authority.host().to_string()
        }
    };
    let host = raw.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// The most specific of `candidates` that matches `host`, with its value.
pub fn best_match<'a, T>(
    host: &str,
    candidates: impl IntoIterator<Item = (&'a HostPattern, T)>,
) -> Option<T> {
    candidates
        .into_iter()
        .filter(|(pattern, _)| pattern.matches(host))
        .max_by_key(|(pattern, _)| pattern.rank())
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(raw: &str) -> HostPattern {
        HostPattern::parse(raw).expect("pattern")
    }

    #[test]
    fn patterns_are_dns_names_with_an_optional_wildcard() {
        assert_eq!(p("API.Example.com.").as_str(), "api.example.com");
        for bad in [
            "",
            "*.",
            "a..b",
            "http://a.com",
            "a.com:80",
            "-a.com",
            "a b",
            "*",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            HostPattern::default_for("web", "hello").map(|h| h.raw),
            Ok("web.hello.localhost".into())
        );
    }

    #[test]
    fn exact_hosts_win_over_wildcards_and_long_over_short() {
        let patterns = [
            p("*.example.com"),
            p("api.example.com"),
            p("*.preview.example.com"),
        ];
        let pick = |host| best_match(host, patterns.iter().map(|p| (p, p.as_str())));
        assert_eq!(pick("api.example.com"), Some("api.example.com"));
        assert_eq!(pick("x.preview.example.com"), Some("*.preview.example.com"));
        assert_eq!(pick("a.b.example.com"), Some("*.example.com"));
        assert_eq!(
            pick("example.com"),
            None,
            "a wildcard needs a label before it"
        );
        assert_eq!(pick("evil-example.com"), None);
    }

    #[test]
    fn the_host_comes_from_the_target_or_the_header() {
        let request = Request::get("/x")
            .header("host", "Web.Hello.localhost:8080")
            .body(());
        let request = request.expect("request");
        assert_eq!(
            request_host(&request).as_deref(),
            Some("web.hello.localhost")
        );
        let absolute = Request::get("http://a.com./x")
            .header("host", "b.com")
            .body(());
        assert_eq!(
            request_host(&absolute.expect("request")).as_deref(),
            Some("a.com")
        );
        let none = Request::get("/x").body(()).expect("request");
        assert_eq!(request_host(&none), None);
    }
}
