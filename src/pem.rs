//! PEM files named by flags: CA bundles read and checked certificate by certificate, and the
//! PEM parser's errors said as sentences that name the flag.

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::CertificateDer;

use crate::error::StartupError;

/// What is wrong with a PEM file, as a sentence.
pub fn describe(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM block in it has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line in it is malformed".into(),
        pem::Error::Base64Decode(_) => "a PEM block in it is not valid base64".into(),
        pem::Error::NoItemsFound => "no PEM block of the kind needed in it".into(),
        pem::Error::SectionTooLarge => "a PEM block in it is over 256 MB".into(),
        pem::Error::Io(e) => format!("cannot read it: {e}"),
        e => e.to_string(),
    }
}

/// The certificates of a CA bundle given by `flag`, at least one, each parsed as an X.509
/// certificate a TLS client can trust (a library that only splits the PEM would take a
/// block of anything until its first connection).
pub fn ca_certificates(
    flag: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, StartupError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StartupError(format!("{flag}: {}", describe(&e))))?;
    if certs.is_empty() {
        return Err(StartupError(format!("{flag} holds no certificate")));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (n, cert) in certs.iter().enumerate() {
        roots.add(cert.clone()).map_err(|e| {
            StartupError(format!(
                "{flag}: certificate {} is not a valid X.509 certificate ({e})",
                n + 1
            ))
        })?;
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_DER: &str = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQsIG5vdCBhIGNlcnQ=\n-----END CERTIFICATE-----\n";

    /// A bundle is refused with a sentence naming the flag: no certificate, bad base64, a
    /// block that is not a certificate.
    #[test]
    fn bad_bundles_are_named() {
        let refused = |pem: &str| {
            ca_certificates("--x-ca-file", pem.as_bytes())
                .unwrap_err()
                .0
        };
        assert_eq!(refused(""), "--x-ca-file holds no certificate");
        assert_eq!(
            refused("-----BEGIN CERTIFICATE-----\n@@@\n-----END CERTIFICATE-----\n"),
            "--x-ca-file: a PEM block in it is not valid base64"
        );
        let message = refused(NOT_DER);
        assert!(
            message.starts_with("--x-ca-file: certificate 1 is not a valid X.509 certificate"),
            "{message}"
        );
    }
}
