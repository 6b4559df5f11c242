//! JWT keys and claims. One algorithm is accepted per configuration (HS256 with a secret, RS256
//! or ES256 with a PEM public key), so `alg: none` and algorithm confusion are refused by
//! construction. `exp` is always required; `iss`/`aud` only when configured.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::cli::KeyArgs;
use crate::config::StartupError;
use crate::error::{Error, Result};

/// Claims Herald reads; other claims are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Unix seconds.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

impl Claims {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|s| s.split_whitespace().any(|x| x == scope))
    }
}

#[derive(Clone)]
pub struct Keys {
    decoding: DecodingKey,
    /// Present for HS256 only: a public key cannot sign.
    encoding: Option<EncodingKey>,
    validation: Validation,
    algorithm: Algorithm,
    issuer: Option<String>,
    audience: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`; streams also end this late.
    pub leeway: Duration,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Keys from the flags; `None` when neither a secret nor a public key is given.
    pub fn from_args(args: &KeyArgs) -> Result<Option<Self>, StartupError> {
        let (algorithm, decoding, encoding) = if let Some(secret) = &args.jwt_secret {
            if secret.is_empty() {
                return Err(StartupError("--jwt-secret must not be empty".into()));
            }
            (
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
                Some(EncodingKey::from_secret(secret.as_bytes())),
            )
        } else if let Some(path) = &args.jwt_public_key {
            let pem = std::fs::read(path).map_err(|e| {
                StartupError(format!(
                    "--jwt-public-key: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            // The PEM's key type picks the one algorithm accepted: RSA → RS256, EC → ES256.
            let (algorithm, key) = match DecodingKey::from_rsa_pem(&pem) {
                Ok(key) => (Algorithm::RS256, Ok(key)),
                Err(_) => (Algorithm::ES256, DecodingKey::from_ec_pem(&pem)),
            };
            let key = key.map_err(|e| {
                StartupError(format!(
                    "--jwt-public-key: {} is not an RSA or EC (P-256) public key PEM: {e}",
                    path.display()
                ))
            })?;
            (algorithm, key, None)
        } else {
            return Ok(None);
        };
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.leeway = args.jwt_leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        required.extend(args.jwt_issuer.as_ref().map(|_| "iss"));
        required.extend(args.jwt_audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        match &args.jwt_issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &args.jwt_audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Some(Keys {
            decoding,
            encoding,
            validation,
            algorithm,
            issuer: args.jwt_issuer.clone(),
            audience: args.jwt_audience.clone(),
            leeway: args.jwt_leeway,
        }))
    }

    /// Verify a token's signature and claims.
    pub fn verify(&self, token: &str) -> Result<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                tracing::debug!(error = %e, "token rejected");
                Error::Unauthorized("invalid or expired token")
            })
    }

    /// Sign claims (HS256 only); fills `iss`/`aud` from the configuration when unset.
    pub fn sign(&self, mut claims: Claims) -> Result<String, StartupError> {
        let key = self.encoding.as_ref().ok_or_else(|| {
            StartupError("signing needs --jwt-secret (a public key cannot sign)".into())
        })?;
        claims.iss = claims.iss.or_else(|| self.issuer.clone());
        claims.aud = claims.aud.or_else(|| self.audience.clone());
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key)
            .map_err(|e| StartupError(format!("cannot sign token: {e}")))
    }
}
