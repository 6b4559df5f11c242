//! The Web Push flags of `serve` and the `herald vapid-keys` command.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::config::PushConfig;
use crate::error::StartupError;
use crate::push::{is_allow_entry, vapid, DEFAULT_ALLOW};

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Web Push")]
pub struct PushArgs {
    /// VAPID private key file (P-256, PKCS#8 or SEC1 PEM; `herald vapid-keys` makes one):
    /// with --vapid-subject, turns Web Push on.
    #[arg(long, env = "HERALD_VAPID_PRIVATE_KEY")]
    pub vapid_private_key: Option<PathBuf>,
    /// Who runs this server, for push services: `mailto:…` or `https://…`.
    #[arg(long, env = "HERALD_VAPID_SUBJECT")]
    pub vapid_subject: Option<String>,
    /// Host suffix (or exact IP address) push endpoints may be on (repeatable; default: the
    /// push services of Chrome, Firefox, Safari and Edge).
    #[arg(long, env = "HERALD_PUSH_ENDPOINT_ALLOW", value_delimiter = ',')]
    pub push_endpoint_allow: Vec<String>,
    /// Extra CA certificates (PEM) trusted for push endpoints.
    #[arg(long, env = "HERALD_PUSH_CA_FILE")]
    pub push_ca_file: Option<PathBuf>,
    /// A connected user gets a push for a notification not seen this long after it arrived.
    #[arg(long, env = "HERALD_PUSH_AFTER", default_value = "30s", value_parser = super::values::parse_duration)]
    pub push_after: Duration,
}

impl PushArgs {
    /// The checked settings; `None` without a key (Web Push off).
    pub fn config(&self) -> Result<Option<PushConfig>, StartupError> {
        if let Some(bad) = (self.push_endpoint_allow.iter()).find(|e| !is_allow_entry(e.trim())) {
            return Err(StartupError(format!(
                "--push-endpoint-allow: {bad:?} is not a host name or IP address (a name such as \
                 example.org also allows its subdomains)"
            )));
        }
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| StartupError(format!("{flag}: cannot read {}: {e}", path.display())))
        };
        // Checked even while Web Push is off: a wrong file is found now, not when it is on.
        let ca_pem = (self.push_ca_file.as_ref())
            .map(|path| read("--push-ca-file", path))
            .transpose()?;
        if let Some(pem) = &ca_pem {
            crate::pem::ca_certificates("--push-ca-file", pem)?;
        }
        if self.push_after > Duration::from_secs(7 * 86_400) {
            return Err(StartupError("--push-after may be at most 7d".into()));
        }
        let (key, subject) = match (&self.vapid_private_key, &self.vapid_subject) {
            (None, None) => return Ok(None),
            (Some(key), Some(subject)) => (key, subject),
            _ => {
                return Err(StartupError(
                    "--vapid-private-key and --vapid-subject go together".into(),
                ))
            }
        };
        let pem = String::from_utf8(read("--vapid-private-key", key)?)
            .map_err(|_| StartupError("--vapid-private-key: not a PEM file".into()))?;
        // Checked now, so a bad key is a start-up error.
        vapid::Vapid::from_pem(&pem, subject)?;
        let endpoint_allow = if self.push_endpoint_allow.is_empty() {
            DEFAULT_ALLOW.iter().map(|s| s.to_string()).collect()
        } else {
            self.push_endpoint_allow.clone()
        };
        Ok(Some(PushConfig {
            private_key_pem: pem,
            subject: subject.clone(),
            endpoint_allow,
            ca_pem,
            after: self.push_after,
        }))
    }
}

/// `herald vapid-keys`: print a new key pair (the private key as PKCS#8 PEM, then
/// `public_key: <base64url>`).
pub fn vapid_keys() -> Result<(), StartupError> {
    let (pem, public) = vapid::generate()?;
    print!("{pem}");
    println!("public_key: {public}");
    Ok(())
}
