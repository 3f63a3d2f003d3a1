//! The control API's bearer token: made on first start, kept in the data folder readable
//! by its owner only, compared in constant time, and never logged.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::id::{hex, random_bytes};

/// Why the token could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read or create the control token {path}: {reason}; check the data folder's permissions")]
    Io { path: PathBuf, reason: String },
    #[error("the control token {path} is empty or damaged; remove it, and berth serve makes a new one (clients then need the new token)")]
    Damaged { path: PathBuf },
    #[error("the token file {path} (--token-file) cannot be used: {reason}; it must hold one token of at least 32 letters and digits, such as `openssl rand -hex 32` prints")]
    File { path: PathBuf, reason: String },
    #[error("cannot make a random token: {0}")]
    Random(String),
}

/// The secret every control request but the health check must carry.
#[derive(Clone)]
pub struct Token(String);

/// The token's file in the data folder.
pub const FILE_NAME: &str = "token";

impl Token {
    /// Reads `dir/token`, or makes it (mode 0600) if there is none.
    pub fn load_or_create(dir: &Path) -> Result<Token, TokenError> {
        let path = dir.join(FILE_NAME);
        let io = |e: std::io::Error| TokenError::Io {
            path: path.clone(),
            reason: e.to_string(),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let token = text.trim().to_string();
                if token.len() < 32 || !token.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(TokenError::Damaged { path });
                }
                // A token others can read is no secret: tighten it if someone loosened it.
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io)?;
                Ok(Token(token))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token =
                    hex(&random_bytes::<32>().map_err(|e| TokenError::Random(e.to_string()))?);
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io)?;
                file.write_all(format!("{token}\n").as_bytes())
                    .map_err(io)?;
                Ok(Token(token))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Reads the token from `file`, as given (a Docker secret is read-only): the one
    /// token every router of a cluster shares.
    pub fn load(file: &Path) -> Result<Token, TokenError> {
        let text = std::fs::read_to_string(file).map_err(|e| TokenError::File {
            path: file.to_path_buf(),
            reason: e.to_string(),
        })?;
        let token = text.trim().to_string();
        if token.len() < 32 || !token.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(TokenError::File {
                path: file.to_path_buf(),
                reason: "it is empty, too short, or holds other characters".into(),
            });
        }
        Ok(Token(token))
    }

    /// The token itself, for `berth serve --print-token`.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// Whether an `Authorization` header value carries this token. The comparison takes
    /// the same time wherever the first difference is.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        authorization
            .and_then(|v| v.strip_prefix(b"Bearer "))
            .is_some_and(|given| self.matches(given))
    }

    /// Whether `given` is the token itself, compared in the same time wherever the first
    /// difference is.
    pub fn matches(&self, given: &[u8]) -> bool {
        same(self.0.as_bytes(), given)
    }

    /// The key a cluster's routers send each other (HMAC-SHA256 of the token): it opens
    /// only their peer listeners, so one that leaks on the overlay gives away no control.
    pub fn peer_key(&self) -> String {
        self.derive(b"berth peers")
    }

    /// The key routers send the cluster's store (`berth store`): it opens only the
    /// store, so one that leaks on the overlay gives away the objects' storage, not the
    /// peer listeners (which take control changes) nor the control API.
    pub fn store_key(&self) -> String {
        self.derive(b"berth store")
    }

    /// What the dashboard's cookie holds instead of the token: a key derived from it
    /// (HMAC-SHA256), good for reading only. Cookies go to every port of a host, so a
    /// cookie that leaks to another service there gives away no right to change anything.
    pub fn read_only(&self) -> String {
        self.derive(b"berth dashboard: read only")
    }

    /// HMAC-SHA256 of `purpose` keyed by the token, in hex; empty if it cannot be made.
    fn derive(&self, purpose: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        use sha2::Sha256;
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_bytes()) else {
            return String::new();
        };
        mac.update(purpose);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `given` is [`Token::read_only`], compared in constant time.
    pub fn matches_read_only(&self, given: &[u8]) -> bool {
        let expected = self.read_only();
        !expected.is_empty() && same(expected.as_bytes(), given)
    }
}

/// Whether `given` is `expected`, in the same time wherever the first difference is.
fn same(expected: &[u8], given: &[u8]) -> bool {
    let mut differ = u8::from(given.len() != expected.len());
    for (i, byte) in expected.iter().enumerate() {
        differ |= byte ^ given.get(i).copied().unwrap_or(0);
    }
    differ == 0
}

/// Never shows the secret, whatever logs it.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_read_as_given_and_a_bad_one_is_named() {
        let dir = std::env::temp_dir().join(format!("berth-token-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("secret");
        std::fs::write(&file, format!("{}\n", "ab12".repeat(16))).expect("write");
        let token = Token::load(&file).expect("read");
        assert_eq!(token.reveal(), "ab12".repeat(16));
        assert_ne!(
            token.peer_key(),
            token.reveal(),
            "the peer key is not the token"
        );
        assert_eq!(token.peer_key().len(), 64);
        std::fs::write(&file, "short").expect("write");
        let error = Token::load(&file).expect_err("too short").to_string();
        assert!(
            error.contains("--token-file") && error.contains("secret"),
            "{error}"
        );
        let missing = Token::load(&dir.join("none"))
            .expect_err("missing")
            .to_string();
        assert!(missing.contains("none"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_token_is_made_once_kept_private_and_checked_exactly() {
        let dir = std::env::temp_dir().join(format!("berth-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let token = Token::load_or_create(&dir).expect("made");
        let again = Token::load_or_create(&dir).expect("read");
        assert_eq!(token.reveal(), again.reveal());
        let mode = std::fs::metadata(dir.join(FILE_NAME))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let header = format!("Bearer {}", token.reveal());
        assert!(token.accepts(Some(header.as_bytes())));
        assert!(!token.accepts(Some(&header.as_bytes()[..header.len() - 1])));
        assert!(!token.accepts(Some(format!("{header}x").as_bytes())));
        assert!(
            !token.accepts(Some(token.reveal().as_bytes())),
            "the scheme is needed"
        );
        assert!(!token.accepts(None));
        assert_eq!(format!("{token:?}"), "Token(…)");
        std::fs::write(dir.join(FILE_NAME), "short").expect("write");
        assert!(matches!(
            Token::load_or_create(&dir),
            Err(TokenError::Damaged { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
