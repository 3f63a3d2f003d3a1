//! TLS for a listener: a certificate chain and its key read from PEM files, and the
//! handshake that turns an accepted connection into an encrypted one (rustls, with ring).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Why a certificate or key cannot serve TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} {path}: {reason}; check the path given to {flag}")]
    Read {
        what: &'static str,
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the {what} {path} is not valid PEM: {reason}; give {flag} the PEM file itself (text starting with -----BEGIN)")]
    Pem {
        what: &'static str,
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the certificate file {path} holds no certificate (no -----BEGIN CERTIFICATE----- block){hint}; give --tls-cert the certificate chain in PEM, the server's certificate first")]
    NoCertificate { path: PathBuf, hint: &'static str },
    #[error("the key file {path} holds no private key{hint}; give --tls-key the unencrypted private key in PEM (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf, hint: &'static str },
    #[error("the key {key} does not belong to the certificate {cert}; give --tls-key the key the certificate was issued for")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot use the certificate {cert} with the key {key}: {reason}; use an RSA (2048 bits or more), ECDSA (P-256 or P-384) or Ed25519 key")]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// The TLS side of a listener: certificate, key and protocol settings, ready to accept
/// connections. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the certificate chain (leaf first) and its private key from PEM files, and
    /// checks that they belong together. It blocks: call it before serving.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let read = |path: &Path, what: &'static str, flag: &'static str| {
            std::fs::read(path).map_err(|e| TlsError::Read {
                what,
                flag,
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        };
        let cert_pem = read(cert, "certificate file", "--tls-cert")?;
        let key_pem = read(key, "key file", "--tls-key")?;
        let chain = certificates(cert, &cert_pem)?;
        let private = private_key(key, &key_pem)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let unusable = |e: rustls::Error| TlsError::Unusable {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reason: e.to_string(),
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(unusable)?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
                    cert: cert.to_path_buf(),
                    key: key.to_path_buf(),
                },
                e => unusable(e),
            })?;
        // The server speaks HTTP/1.1 only; a client that offers h2 as well settles on it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The server's side of the handshake on `stream`. It has no bound of its own: the
    /// caller limits how long it may take.
    pub async fn accept<S>(&self, stream: S) -> std::io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.acceptor.accept(stream).await
    }
}

fn certificates(path: &Path, text: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, "certificate file", "--tls-cert", e))?;
    if chain.is_empty() {
        let hint = if PrivateKeyDer::from_pem_slice(text).is_ok() {
            " but a private key: the files given to --tls-cert and --tls-key may be swapped"
        } else {
            ""
        };
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
            hint,
        });
    }
    Ok(chain)
}

fn private_key(path: &Path, text: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    match PrivateKeyDer::from_pem_slice(text) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            let hint = if contains(text, b"ENCRYPTED PRIVATE KEY")
                || contains(text, b"Proc-Type: 4,ENCRYPTED")
            {
                " but an encrypted one, which berth cannot unlock: decrypt it first (openssl pkey -in KEY -out PLAIN)"
            } else if CertificateDer::pem_slice_iter(text).any(|c| c.is_ok()) {
                " but a certificate: the files given to --tls-cert and --tls-key may be swapped"
            } else {
                ""
            };
            Err(TlsError::NoKey {
                path: path.to_path_buf(),
                hint,
            })
        }
        Err(e) => Err(pem_error(path, "key file", "--tls-key", e)),
    }
}

fn pem_error(path: &Path, what: &'static str, flag: &'static str, e: pem::Error) -> TlsError {
    TlsError::Pem {
        what,
        flag,
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
