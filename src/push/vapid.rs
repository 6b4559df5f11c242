//! VAPID (RFC 8292): the server's P-256 key pair, which identifies Herald to push services, and
//! the `Authorization: vapid t=<JWT>, k=<public key>` header, signed with jsonwebtoken's ES256.

use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use dashmap::DashMap;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use p256::SecretKey;

use crate::error::StartupError;
use crate::model::unix_ms;

/// How long a VAPID token is valid (RFC 8292 allows up to 24 h), and how long one is reused.
const TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);
const TOKEN_REUSE: Duration = Duration::from_secs(3600);
/// Headers kept at most: past it, those too old to reuse go (and all, if none is). Push
/// services are a handful of origins; subscriptions name them, so users choose them (any
/// subdomain and port of an allowed host).
const CACHED_ORIGINS: usize = 256;

/// The key pair and `sub` Herald signs push requests with.
pub struct Vapid {
    key: EncodingKey,
    /// The uncompressed public point, base64url (`GET /push/key`, the `k=` of the header).
    public_key: String,
    subject: String,
    /// Push service origin → (header, when it was made), reused for [`TOKEN_REUSE`]. A
    /// monotonic clock: after a wall clock step back, a header would be reused past its age.
    headers: DashMap<String, (String, Instant)>,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// Whether a VAPID `sub` is a contact a push service can use: `mailto:` with an address, or
/// an `https://` URL with a host (RFC 8292 2.1), with nothing that needs escaping.
fn subject_is_contact(subject: &str) -> bool {
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    if !(subject.starts_with("mailto:") || subject.starts_with("https://")) {
        return false;
    }
    let Ok(url) = url::Url::parse(subject) else {
        return false;
    };
    match url.scheme() {
        "mailto" => url
            .path()
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty()),
        // the URL parser reads `https:///x` as host `x`; credentials would go to every push
        // service in the claim
        "https" => {
            url.host_str().is_some()
                && !subject[8..].starts_with('/')
                && url.username().is_empty()
                && url.password().is_none()
        }
        _ => false,
    }
}

impl Vapid {
    /// The key from a PEM file's text and the `sub` claim (`mailto:` or `https:`). The key is
    /// the file's P-256 `PRIVATE KEY` (PKCS#8) or `EC PRIVATE KEY` (SEC1) block; text around
    /// it is ignored (`openssl ecparam -genkey` writes an `EC PARAMETERS` block first,
    /// `herald vapid-keys` a `public_key:` line after).
    pub fn from_pem(pem: &str, subject: &str) -> Result<Self, StartupError> {
        let pkcs8 = pem_block(pem, "PRIVATE KEY").and_then(|b| SecretKey::from_pkcs8_pem(b).ok());
        let sec1 =
            || pem_block(pem, "EC PRIVATE KEY").and_then(|b| SecretKey::from_sec1_pem(b).ok());
        let secret = pkcs8.or_else(sec1).ok_or_else(|| {
            StartupError(
                "--vapid-private-key: not a P-256 private key in PKCS#8 or SEC1 PEM \
                 (`herald vapid-keys` makes one)"
                    .into(),
            )
        })?;
        if !subject_is_contact(subject) {
            return Err(StartupError(
                "--vapid-subject must be a mailto: address or an https:// URL with a host".into(),
            ));
        }
        let der = secret
            .to_pkcs8_der()
            .map_err(|e| StartupError(format!("--vapid-private-key: {e}")))?;
        Ok(Vapid {
            key: EncodingKey::from_ec_der(der.as_bytes()),
            public_key: public_key(&secret),
            subject: subject.to_owned(),
            headers: DashMap::new(),
        })
    }

    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The `Authorization` header for a push service at `origin` (`https://host[:port]`).
    pub fn authorization(&self, origin: &str) -> Result<String, jsonwebtoken::errors::Error> {
        if let Some(cached) = self.headers.get(origin) {
            if cached.1.elapsed() < TOKEN_REUSE {
                return Ok(cached.0.clone());
            }
        }
        let claims = serde_json::json!({
            "aud": origin,
            "exp": unix_ms(SystemTime::now() + TOKEN_TTL) / 1000,
            "sub": self.subject,
        });
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.key)?;
        let header = format!("vapid t={token}, k={}", self.public_key);
        if self.headers.len() >= CACHED_ORIGINS {
            self.headers
                .retain(|_, (_, made)| made.elapsed() < TOKEN_REUSE);
            if self.headers.len() >= CACHED_ORIGINS {
                self.headers.clear();
            }
        }
        self.headers
            .insert(origin.to_owned(), (header.clone(), Instant::now()));
        Ok(header)
    }
}

/// The PEM block labelled `label` in `text`, from its `BEGIN` line to its `END` line.
fn pem_block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = start + text[start..].find(&end)? + end.len();
    Some(&text[start..stop])
}

fn public_key(secret: &SecretKey) -> String {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes())
}

/// `herald vapid-keys`: a new P-256 key pair, the private key as PKCS#8 PEM and the public
/// key as the `public_key: <base64url>` line.
pub fn generate() -> Result<(String, String), StartupError> {
    let secret = loop {
        let bytes: [u8; 32] = rand::random();
        if let Ok(secret) = SecretKey::from_slice(&bytes) {
            break secret;
        }
    };
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| StartupError(format!("could not encode the key: {e}")))?;
    Ok((pem.to_string(), public_key(&secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generated key loads back with the same public key, which is an uncompressed point.
    #[test]
    fn generated_keys_load() {
        let (pem, public) = generate().unwrap();
        let vapid = Vapid::from_pem(&pem, "mailto:ops@example.com").unwrap();
        assert_eq!(vapid.public_key(), public);
        let raw = URL_SAFE_NO_PAD.decode(&public).unwrap();
        assert_eq!((raw.len(), raw[0]), (65, 4));
        let header = vapid.authorization("https://push.example").unwrap();
        assert!(header.starts_with("vapid t=") && header.ends_with(&format!(", k={public}")));
        assert!(Vapid::from_pem(&pem, "ops@example.com").is_err());
        assert!(Vapid::from_pem("not a key", "mailto:x@y").is_err());
        // the whole output of `herald vapid-keys`, and what `openssl ecparam -genkey` writes
        let printed = format!("{pem}public_key: {public}\n");
        assert_eq!(
            Vapid::from_pem(&printed, "mailto:x@y")
                .unwrap()
                .public_key(),
            public
        );
        let secret = SecretKey::from_pkcs8_pem(&pem).unwrap();
        let sec1 = secret.to_sec1_pem(LineEnding::LF).unwrap();
        let openssl = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
            sec1.as_str()
        );
        assert_eq!(
            Vapid::from_pem(&openssl, "mailto:x@y")
                .unwrap()
                .public_key(),
            public
        );
    }

    /// A subject is a contact: an address after `mailto:`, a host after `https://`.
    #[test]
    fn subjects_are_contacts() {
        for good in [
            "mailto:ops@example.com",
            "https://example.com",
            "https://Example.com/contact",
        ] {
            assert!(subject_is_contact(good), "{good}");
        }
        for bad in [
            "mailto:",
            "mailto:ops",
            "https://",
            "https:///path",
            "http://example.com",
            "ops@example.com",
            "mailto:ops@example.com\n",
            " mailto:ops@example.com",
            "mailto:ops @example.com",
            "mailto:@",
            "mailto:ops@",
            "mailto:@example.com",
            "https://ops:secret@example.com",
            "https://ops@example.com",
            "",
        ] {
            assert!(!subject_is_contact(bad), "{bad:?}");
        }
    }

    /// A header is reused per origin, and the cache stays bounded whatever origins come.
    #[test]
    fn headers_are_reused_and_bounded() {
        let (pem, _) = generate().unwrap();
        let vapid = Vapid::from_pem(&pem, "mailto:ops@example.com").unwrap();
        let first = vapid.authorization("https://push.example").unwrap();
        assert_eq!(vapid.authorization("https://push.example").unwrap(), first);
        for n in 0..CACHED_ORIGINS + 10 {
            vapid
                .authorization(&format!("https://a{n}.push.example"))
                .unwrap();
            assert!(vapid.headers.len() <= CACHED_ORIGINS);
        }
    }
}
