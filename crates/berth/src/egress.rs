//! Which hosts a container may reach: Cloudflare's `enableInternet`, `allowedHosts` and
//! `deniedHosts`, in the reference's order. A denied host is refused first; then, when
//! an allow-list is given, only its hosts pass; otherwise `enable_internet` decides.
//!
//! A container with either list sits on an internal network with no route out, and
//! berth's egress proxy on that network is its only way out: the runtime applies the
//! policy there, to the `Host` of an HTTP request and the target of an HTTPS `CONNECT`.

use serde::{Deserialize, Serialize};

/// What one container may reach.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Policy {
    /// Whether a host on neither list passes (when there is no allow-list).
    pub internet: bool,
    /// Host patterns (`*` globs) that pass; when not empty, nothing else does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
    /// Host patterns refused whatever else says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied: Vec<String>,
}

impl Policy {
    /// No limits: the container is on an ordinary network, with no proxy in between.
    pub fn open() -> Policy {
        Policy {
            internet: true,
            allowed: Vec::new(),
            denied: Vec::new(),
        }
    }

    /// Whether the container reaches every host directly.
    pub fn is_open(&self) -> bool {
        self.internet && !self.filters()
    }

    /// Whether some hosts pass and others do not, so that the egress proxy must judge.
    /// (Without a list and without internet, nothing passes and no proxy is needed.)
    pub fn filters(&self) -> bool {
        !self.allowed.is_empty() || !self.denied.is_empty()
    }

    /// Whether `address`, which a permitted host resolved to, is refused all the same:
    /// an IP pattern of `denied_hosts` is checked against the address a name reaches,
    /// whatever form of it (a name, `0xa000001`, `::ffff:10.0.0.1`) the request gave.
    pub fn denies_address(&self, address: std::net::IpAddr) -> bool {
        let address = address.to_canonical().to_string();
        self.denied.iter().any(|p| glob(p, &address))
    }

    /// Whether a request to `host` (a name or an address, without its port) passes.
    pub fn permits(&self, host: &str) -> bool {
        let host = normal(host);
        if self.denied.iter().any(|p| glob(p, &host)) {
            return false;
        }
        if !self.allowed.is_empty() {
            return self.allowed.iter().any(|p| glob(p, &host));
        }
        self.internet
    }
}

/// Checks a host pattern as a user writes it: a host name or an address, where `*`
/// stands for any run of characters. Says what is wrong otherwise.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err(
            "is empty; give a host such as \"api.example.com\" or \"*.example.com\"".into(),
        );
    }
    if pattern.contains("://") || pattern.contains('/') {
        return Err("is not a host: give the host alone, such as \"api.example.com\", without a scheme or a path".into());
    }
    if !pattern.starts_with('[') && pattern.matches(':').count() == 1 {
        return Err("holds a port; give the host alone (the rules apply to every port of it), and an IPv6 address in brackets".into());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_*:[]".contains(c);
    if let Some(c) = pattern.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "holds {c:?}, which no host name has; give a host such as \"api.example.com\", with `*` for any part"
        ));
    }
    Ok(())
}

/// A host as it is compared: lower case, with no trailing dot and no IPv6 brackets.
fn normal(host: &str) -> String {
    host.trim_end_matches('.')
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// Whether `host` matches `pattern`, where `*` matches any run of characters (dots too,
/// as Cloudflare's globs do: `*.example.com` covers `a.b.example.com`, not `example.com`).
fn glob(pattern: &str, host: &str) -> bool {
    let pattern = normal(pattern);
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = host.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(internet: bool, allowed: &[&str], denied: &[&str]) -> Policy {
        Policy {
            internet,
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            denied: denied.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn globs_match_as_the_reference_documents() {
        assert!(glob("api.github.com", "api.github.com"));
        assert!(!glob("api.github.com", "github.com"));
        assert!(glob("*.example.com", "a.example.com"));
        assert!(glob("*.example.com", "a.b.example.com"));
        assert!(!glob("*.example.com", "example.com"));
        assert!(!glob("*.example.com", "example.com.evil.net"));
        assert!(glob("*", "anything.at.all"));
        assert!(glob("10.0.*.1", "10.0.7.1"));
        assert!(!glob("10.0.*.1", "10.0.7.2"));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b*c", "aXcYb"));
        assert!(!glob("ab*ba", "aba"), "the ends may not share characters");
        assert!(glob("API.Example.COM", &normal("api.example.com.")));
    }

    #[test]
    fn denied_hosts_win_then_the_allow_list_then_the_internet_switch() {
        let p = policy(
            false,
            &["*.example.com", "api.github.com"],
            &["secret.example.com"],
        );
        assert!(p.permits("api.github.com"));
        assert!(p.permits("Docs.Example.com"));
        assert!(!p.permits("secret.example.com"), "denied beats allowed");
        assert!(!p.permits("pypi.org"), "an allow-list admits nothing else");
        let p = policy(true, &["api.github.com"], &[]);
        assert!(!p.permits("pypi.org"), "even with internet on");
        let p = policy(true, &[], &["*.internal"]);
        assert!(p.permits("pypi.org"));
        assert!(!p.permits("db.internal"));
        let p = policy(false, &[], &["x"]);
        assert!(
            !p.permits("pypi.org"),
            "no internet, no allow-list: nothing"
        );
        assert!(p.filters() && !p.is_open());
        assert!(Policy::open().is_open() && Policy::open().permits("pypi.org"));
        assert!(policy(true, &[], &[]).is_open());
        assert!(!policy(false, &[], &[]).filters());
        assert!(policy(false, &["[::1]"], &[]).permits("::1"));
    }

    #[test]
    fn patterns_are_checked_as_written() {
        for good in [
            "api.github.com",
            "*.example.com",
            "10.0.0.*",
            "[fd00::1]",
            "*",
        ] {
            assert_eq!(check_pattern(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "https://api.github.com",
            "api.github.com/x",
            "db.internal:5432",
            "a b",
            "é.com",
        ] {
            assert!(check_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_denied_address_is_refused_whatever_name_reached_it() {
        let p = policy(true, &[], &["10.*"]);
        assert!(p.permits("167772161"), "the name alone passes");
        assert!(p.denies_address("10.0.0.1".parse().expect("ip")));
        assert!(p.denies_address("::ffff:10.0.0.1".parse().expect("ip")));
        assert!(!p.denies_address("172.17.0.2".parse().expect("ip")));
    }

    #[test]
    fn a_policy_reads_back_from_its_label() {
        let p = policy(false, &["*.example.com"], &["x.example.com"]);
        let text = serde_json::to_string(&p).expect("encode");
        assert_eq!(serde_json::from_str::<Policy>(&text).expect("decode"), p);
    }
}
