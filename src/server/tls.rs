//! HTTPS: `--tls-cert` / `--tls-key` load a certificate chain and key (PEM) into rustls, with
//! ALPN `h2` and `http/1.1`. SIGHUP loads the files again; new handshakes use the new ones,
//! open connections and their streams carry on. Unreadable or invalid new files leave the old
//! ones in use (and say so in the log).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::error::StartupError;

/// The certificate in use, swapped whole on reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// The acceptor and what reloading it needs.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    current: Arc<Current>,
    cert: PathBuf,
    key: PathBuf,
}

impl Tls {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, StartupError> {
        let current = Arc::new(Current(RwLock::new(Arc::new(
            certified(cert, key).map_err(StartupError)?,
        ))));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StartupError(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            cert: cert.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Load the files again; on failure the old certificate stays.
    pub fn reload(&self) {
        match certified(&self.cert, &self.key) {
            Ok(new) => {
                *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
                tracing::info!("TLS certificate reloaded");
            }
            Err(e) => tracing::error!(
                error = %e,
                "TLS reload failed; the previous certificate stays in use: fix the files and \
                 send SIGHUP again"
            ),
        }
    }
}

/// A chain and its key from PEM files, checked to belong together.
fn certified(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| {
            format!(
                "--tls-cert {}: {}",
                cert.display(),
                crate::pem::describe(&e)
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in it",
            cert.display()
        ));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            format!("--tls-key {}: no private key PEM in it", key.display())
        }
        e => format!("--tls-key {}: {}", key.display(), crate::pem::describe(&e)),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("--tls-cert and --tls-key do not belong together: {e}"))?;
    Ok(certified)
}
