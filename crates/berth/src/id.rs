//! Object ids: what names turn into, with no I/O.
//!
//! The scheme is Cloudflare's Durable Object ids, so that ids need no I/O and cannot be
//! forged across namespaces:
//!
//! * an id is 32 bytes, written as 64 lowercase hex digits;
//! * `key = SHA-256(namespace key)`, where the namespace key is `"<app>/<class>"`;
//! * for a name, the first 16 bytes are `HMAC-SHA256(key, name)[..16]`; for a unique id
//!   they are random;
//! * the last 16 bytes are `HMAC-SHA256(key, first 16 bytes)[..16]`, which parsing
//!   verifies, so an id of another namespace is rejected.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The id of an object: 32 bytes, displayed as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u8; 32]);

impl ObjectId {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 12 hex digits, enough to tell objects apart in names and logs.
    pub fn short(&self) -> String {
        self.0[..6].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads an id from its 64 hex digits, with no check of the namespace that made it
    /// (for ids that berth itself wrote down, such as a container's labels).
    pub fn parse_hex(value: &str) -> Result<ObjectId, IdError> {
        let malformed = || IdError::Malformed {
            value: value.chars().take(80).collect(),
        };
        if value.len() != 64
            || !value
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(malformed());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            let digits = value.get(2 * i..2 * i + 2).ok_or_else(malformed)?;
            *byte = u8::from_str_radix(digits, 16).map_err(|_| malformed())?;
        }
        Ok(ObjectId(bytes))
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

/// Why a string is not an id of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{value:?} is not an object id: an id is 64 lowercase hex digits")]
    Malformed { value: String },
    #[error("{value} is not an id of namespace {namespace}: it was made by another namespace")]
    ForeignNamespace { value: String, namespace: String },
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// The operating system's random source failed. berth then refuses to go on rather than
/// make guessable ids or a session id that another process could share.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random source failed: {reason}; berth needs it for unguessable ids (check /dev/urandom and the getrandom system call)")]
pub struct RandomError {
    reason: String,
}

/// Fills `bytes` from the operating system's random source.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    random_bytes_from(|bytes| getrandom::fill(bytes).map_err(|e| e.to_string()))
}

/// [`random_bytes`] over any source, so that a failing one can be tested.
pub(crate) fn random_bytes_from<const N: usize>(
    fill: impl FnOnce(&mut [u8]) -> Result<(), String>,
) -> Result<[u8; N], RandomError> {
    let mut bytes = [0u8; N];
    fill(&mut bytes).map_err(|reason| RandomError { reason })?;
    Ok(bytes)
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The id arithmetic of one namespace, with no I/O.
#[derive(Clone)]
pub(crate) struct IdScheme {
    key: [u8; 32],
}

impl IdScheme {
    pub(crate) fn new(namespace_key: &str) -> IdScheme {
        IdScheme {
            key: Sha256::digest(namespace_key.as_bytes()).into(),
        }
    }

    fn mac(&self, data: &[u8]) -> [u8; 16] {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(data);
        let full = mac.finalize().into_bytes();
        let mut half = [0u8; 16];
        half.copy_from_slice(&full[..16]);
        half
    }

    fn seal(&self, first: [u8; 16]) -> ObjectId {
        let mut id = [0u8; 32];
        id[..16].copy_from_slice(&first);
        id[16..].copy_from_slice(&self.mac(&first));
        ObjectId(id)
    }

    pub(crate) fn for_name(&self, name: &str) -> ObjectId {
        self.seal(self.mac(name.as_bytes()))
    }

    pub(crate) fn unique(&self) -> Result<ObjectId, RandomError> {
        Ok(self.seal(random_bytes()?))
    }

    pub(crate) fn parse(&self, value: &str, namespace: &str) -> Result<ObjectId, IdError> {
        let ObjectId(bytes) = ObjectId::parse_hex(value)?;
        let mut first = [0u8; 16];
        first.copy_from_slice(&bytes[..16]);
        if self.seal(first).0 != bytes {
            return Err(IdError::ForeignNamespace {
                value: value.to_string(),
                namespace: namespace.to_string(),
            });
        }
        Ok(ObjectId(bytes))
    }
}

/// A number in `0..n`, for spreading load: not security-relevant, so a failing random
/// source falls back to the clock.
pub(crate) fn random_below(n: usize) -> usize {
    let n = n.max(1);
    let bytes = random_bytes::<8>().unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        u64::from(nanos).to_le_bytes()
    });
    (u64::from_le_bytes(bytes) % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_stable_distinct_ids() {
        let ids = IdScheme::new("app/Class");
        assert_eq!(ids.for_name("alpha"), ids.for_name("alpha"));
        assert_ne!(ids.for_name("alpha"), ids.for_name("beta"));
        let text = ids.for_name("alpha").to_string();
        assert_eq!(text.len(), 64);
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn ids_round_trip_and_other_namespaces_are_rejected() {
        let mine = IdScheme::new("app/Class");
        let theirs = IdScheme::new("app/Other");
        for id in [mine.for_name("alpha"), mine.unique().expect("random")] {
            assert_eq!(mine.parse(&id.to_string(), "app/Class"), Ok(id));
            assert!(matches!(
                theirs.parse(&id.to_string(), "app/Other"),
                Err(IdError::ForeignNamespace { .. })
            ));
        }
        assert_ne!(mine.for_name("alpha"), theirs.for_name("alpha"));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        let ids = IdScheme::new("app/Class");
        let good = ids.for_name("alpha").to_string();
        for bad in [
            String::new(),
            "xyz".to_string(),
            good.to_uppercase(),
            good[..63].to_string(),
            format!("{good}0"),
            format!("{}g", &good[..63]),
        ] {
            assert!(
                matches!(ids.parse(&bad, "app/Class"), Err(IdError::Malformed { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn unique_ids_differ() {
        let ids = IdScheme::new("app/Class");
        assert_ne!(ids.unique().expect("random"), ids.unique().expect("random"));
    }

    #[test]
    fn a_failing_random_source_is_an_error_not_zeros() {
        let failed = random_bytes_from::<8>(|_| Err("no entropy".to_string()));
        let error = failed.expect_err("a failing source must fail");
        assert!(error.to_string().contains("no entropy"), "{error}");
        let good = random_bytes_from::<4>(|b| {
            b.copy_from_slice(&[1, 2, 3, 4]);
            Ok(())
        });
        assert_eq!(good, Ok([1, 2, 3, 4]));
    }

    #[test]
    fn short_ids_are_the_first_twelve_hex_digits() {
        let id = IdScheme::new("app/Class").for_name("alpha");
        assert_eq!(id.short(), id.to_string()[..12]);
        assert!(ObjectId::parse_hex("é".repeat(32).as_str()).is_err());
    }
}
