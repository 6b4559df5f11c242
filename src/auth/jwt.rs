//! JWT keys and claims. One algorithm is accepted per configuration (HS256 with a secret, RS256
//! or ES256 with a PEM public key), so `alg: none` and algorithm confusion are refused by
//! construction. `exp` is always required; `iss`/`aud` only when configured. Claims take their
//! RFC 7519 forms: `aud` a string or an array, NumericDates (`exp`, `nbf`) integer or not.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, StartupError};

/// Latest instant Herald represents, in Unix seconds (9999-12-31T23:59:59Z): a NumericDate
/// beyond it (`u64::MAX`, `1e300`) means "never" and is clamped here, so no later arithmetic
/// on it can overflow.
pub const MAX_UNIX_SECS: u64 = 253_402_300_799;

/// A JWT NumericDate (RFC 7519 §2): seconds since the epoch, integer or not. Kept to the
/// millisecond (a finer fraction rounded up: a token with `exp` 10.5 is good until 10.5, never
/// refused early), clamped to `0..=MAX_UNIX_SECS` (a date before 1970 is long past: an `exp`
/// then has expired, an `nbf` has passed); written as seconds, with the fraction if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NumericDate {
    ms: u64,
}

impl NumericDate {
    pub fn from_secs(secs: u64) -> Self {
        NumericDate {
            ms: secs.min(MAX_UNIX_SECS) * 1000,
        }
    }

    /// Unix milliseconds.
    pub fn millis(self) -> u64 {
        self.ms
    }
}

impl Serialize for NumericDate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.ms % 1000 {
            0 => s.serialize_u64(self.ms / 1000),
            _ => s.serialize_f64(self.ms as f64 / 1000.0),
        }
    }
}

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Number::deserialize(d)?;
        let max_ms = MAX_UNIX_SECS * 1000;
        let ms = match (value.as_u64(), value.as_f64()) {
            (Some(int), _) => int.min(MAX_UNIX_SECS) * 1000,
            (None, Some(f)) if f.is_finite() => {
                (f.max(0.0) * 1000.0).ceil().min(max_ms as f64) as u64
            }
            _ => return Err(serde::de::Error::custom("a NumericDate is a number")),
        };
        Ok(NumericDate { ms: ms.min(max_ms) })
    }
}

/// `aud`: one audience or several (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Claims Herald reads; other claims are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub exp: NumericDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<NumericDate>,
    /// Space-delimited (RFC 6749 §3.3); an array of strings, as some identity providers
    /// issue it, is read as its items; any other form names no scope (the token is still a
    /// user's).
    #[serde(
        default,
        deserialize_with = "any_scope",
        skip_serializing_if = "Option::is_none"
    )]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
}

/// `scope` as a string, an array of strings (joined with spaces), or nothing.
fn any_scope<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        // Each item one scope: one with a space in it names none (`"read publish"` is not
        // `publish`).
        serde_json::Value::Array(items) => {
            let names = items.iter().filter_map(|v| v.as_str());
            let names: Vec<&str> = names.filter(|name| !name.contains(' ')).collect();
            Some(names.join(" "))
        }
        _ => None,
    })
}

impl Claims {
    /// Whether the space-delimited `scope` (RFC 6749 §3.3: ASCII spaces only) names `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|s| s.split(' ').any(|x| x == scope))
    }
}

#[derive(Clone)]
pub struct Keys {
    decoding: DecodingKey,
    /// Present for HS256 only: a public key cannot sign.
    signer: Option<Signer>,
    validation: Validation,
    algorithm: Algorithm,
    /// Clock skew allowed on `exp`/`nbf`; streams also end this late.
    pub leeway: Duration,
    /// Tokens that passed, shared by the clones.
    verified: Arc<Verified>,
}

/// Tokens verified lately, by their text, with their claims: a service that publishes with
/// one token many times a second pays for its signature and parse once (Envoy's JWT filter
/// keeps such a cache too); `exp` and `nbf` are checked on every use. The keys never change
/// in a process, so a token that verified once verifies again. Bounded: at most
/// [`Verified::TOKENS`] tokens of at most [`Verified::TOKEN_BYTES`] each, emptied when full.
#[derive(Default)]
struct Verified(DashMap<Box<str>, Claims>);

impl Verified {
    const TOKENS: usize = 1024;
    const TOKEN_BYTES: usize = 2048;

    fn get(&self, token: &str) -> Option<Claims> {
        self.0.get(token).map(|claims| claims.clone())
    }

    fn keep(&self, token: &str, claims: &Claims) {
        if token.len() > Self::TOKEN_BYTES {
            return;
        }
        if self.0.len() >= Self::TOKENS {
            self.0.clear();
        }
        self.0.insert(token.into(), claims.clone());
    }
}

/// The claim checks besides the signature and `exp`/`nbf`.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    /// Required `iss` claim.
    pub issuer: Option<String>,
    /// Required `aud` claim (one of the token's audiences).
    pub audience: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`.
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
    /// HS256 keys from a shared secret (which must not be empty): they verify and sign.
    pub fn secret(secret: &[u8], checks: Checks) -> Self {
        let signer = Signer {
            key: EncodingKey::from_secret(secret),
            algorithm: Algorithm::HS256,
            issuer: checks.issuer.clone(),
            audience: checks.audience.clone(),
        };
        Keys::with(
            Algorithm::HS256,
            DecodingKey::from_secret(secret),
            Some(signer),
            checks,
        )
    }

    /// Keys from a PEM public key (or certificate); its key type picks the one algorithm
    /// accepted (RSA → RS256, EC P-256 → ES256). They verify only: a public key cannot sign.
    /// A private key, or an EC key on another curve, is refused here: the library would take
    /// it and then refuse every token.
    pub fn public_pem(pem: &[u8], checks: Checks) -> Result<Self, String> {
        let text = String::from_utf8_lossy(pem);
        if text.contains("PRIVATE KEY-----") {
            return Err("it holds a private key; give the public key".into());
        }
        one_pem_block(&text, "public key")?;
        let (algorithm, key) = match DecodingKey::from_rsa_pem(pem) {
            Ok(key) => (Algorithm::RS256, key),
            Err(_) => {
                let key = DecodingKey::from_ec_pem(pem)
                    .map_err(|_| "its block holds no RSA or EC public key")?;
                p256::PublicKey::from_sec1_bytes(key.as_bytes())
                    .map_err(|_| "an EC key must be on the P-256 curve (ES256)")?;
                (Algorithm::ES256, key)
            }
        };
        Ok(Keys::with(algorithm, key, None, checks))
    }

    fn with(
        algorithm: Algorithm,
        decoding: DecodingKey,
        signer: Option<Signer>,
        checks: Checks,
    ) -> Self {
        let Checks {
            issuer,
            audience,
            leeway,
        } = checks;
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.leeway = leeway.as_secs();
        // `exp`/`nbf` are checked in `verify`: the library reads them as integers only.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let mut required = Vec::new();
        required.extend(issuer.as_ref().map(|_| "iss"));
        required.extend(audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        match &issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Keys {
            decoding,
            signer,
            validation,
            algorithm,
            leeway,
            verified: Arc::default(),
        }
    }

    /// Verify a token's signature and claims: the library checks the signature, `iss` and
    /// `aud` (once per token, see [`Verified`]); `exp` (required) and `nbf` are checked
    /// here, within the leeway.
    pub fn verify(&self, token: &str) -> Result<Claims> {
        let rejected = |reason: &dyn std::fmt::Display| {
            tracing::debug!(%reason, "token rejected");
            Error::Unauthorized("invalid or expired token")
        };
        let cached = self.verified.get(token);
        let known = cached.is_some();
        let claims = match cached {
            Some(claims) => claims,
            None => {
                let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
                    .map_err(|e| rejected(&e))?;
                // RFC 7515 4.1.11: extensions listed as critical must be understood, and
                // Herald understands none.
                if data.header.crit.is_some() {
                    return Err(rejected(&"a critical header extension (crit)"));
                }
                data.claims
            }
        };
        // To the millisecond: a fractional `exp` is not honoured past it.
        let now = crate::model::now_ms();
        let leeway = self.leeway_ms();
        if claims.exp.millis().saturating_add(leeway) <= now {
            return Err(rejected(&"expired"));
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf.millis() > now.saturating_add(leeway))
        {
            return Err(rejected(&"not valid yet (nbf)"));
        }
        if !known {
            self.verified.keep(token, &claims);
        }
        Ok(claims)
    }

    /// `--jwt-leeway` in milliseconds, as `exp`/`nbf` are compared.
    pub fn leeway_ms(&self) -> u64 {
        u64::try_from(self.leeway.as_millis()).unwrap_or(u64::MAX)
    }

    /// When credentials of these claims end, Unix ms: their `exp` (to the millisecond) plus
    /// the leeway, as [`Self::verify`] accepts them: a stream on them ends then.
    pub fn ends_ms(&self, claims: &Claims) -> u64 {
        claims.exp.millis().saturating_add(self.leeway_ms())
    }

    /// The signer of an HS256 configuration (`None` for a public key, which cannot sign).
    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }
}

/// Signs tokens for the `token` and `publish` sub-commands: HS256 with the shared secret, or
/// RS256/ES256 with a PEM private key (deployments that verify with `--jwt-public-key`).
/// Fills `iss`/`aud` from the configuration when the claims leave them unset.
#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
    algorithm: Algorithm,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Signer {
    /// A signer from a PEM private key; its key type picks the algorithm (RSA → RS256, EC
    /// P-256 in PKCS#8 → ES256), as [`Keys::public_pem`] does for the public half.
    pub fn private_pem(pem: &[u8], checks: &Checks) -> Result<Self, String> {
        let text = String::from_utf8_lossy(pem);
        one_pem_block(&text, "private key")?;
        let (algorithm, key) = match EncodingKey::from_rsa_pem(pem) {
            Ok(key) => (Algorithm::RS256, key),
            Err(_) => {
                use p256::pkcs8::DecodePrivateKey;
                use rustls::pki_types::{pem::PemObject, PrivateKeyDer};
                let no_key = "its block holds no RSA or EC private key";
                let key = EncodingKey::from_ec_pem(pem).map_err(|_| no_key)?;
                // the block's DER, as lenient about the text around it as the key's reader
                let on_p256 = match PrivateKeyDer::from_pem_slice(pem) {
                    Ok(PrivateKeyDer::Pkcs8(der)) => {
                        p256::SecretKey::from_pkcs8_der(der.secret_pkcs8_der()).is_ok()
                    }
                    _ => false,
                };
                if !on_p256 {
                    return Err("an EC key must be on the P-256 curve (ES256)".into());
                }
                (Algorithm::ES256, key)
            }
        };
        Ok(Signer {
            key,
            algorithm,
            issuer: checks.issuer.clone(),
            audience: checks.audience.clone(),
        })
    }

    pub fn sign(&self, mut claims: Claims) -> Result<String, StartupError> {
        claims.iss = claims.iss.or_else(|| self.issuer.clone());
        claims.aud = claims
            .aud
            .or_else(|| self.audience.clone().map(Audience::One));
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key)
            .map_err(|e| StartupError(format!("cannot sign token: {e}")))
    }
}

/// A key file's text holds one PEM block: a second key would be ignored without a word.
fn one_pem_block(text: &str, what: &str) -> Result<(), String> {
    match text.matches("-----BEGIN ").count() {
        0 => Err("it holds no PEM block".into()),
        1 => Ok(()),
        n => Err(format!("it holds {n} PEM blocks; give one {what}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(audience: Option<&str>) -> Keys {
        Keys::secret(
            b"s",
            Checks {
                audience: audience.map(Into::into),
                ..Checks::default()
            },
        )
    }

    fn mint(claims: serde_json::Value) -> String {
        let key = EncodingKey::from_secret(b"s");
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    const FAR: u64 = 4_102_444_800;

    /// A token that lists critical header extensions is refused: Herald understands none
    /// (RFC 7515 4.1.11), so it cannot honour what they would mean.
    #[test]
    fn critical_extensions_are_refused() {
        let k = keys(None);
        let claims = serde_json::json!({"sub": "alice", "exp": FAR});
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp".into()]);
        let key = EncodingKey::from_secret(b"s");
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert!(matches!(k.verify(&token), Err(Error::Unauthorized(_))));
        assert!(k.verify(&mint(claims)).is_ok());
    }

    /// `aud` may be an array; with a configured audience, it must contain it.
    #[test]
    fn audience_arrays() {
        let any = keys(None);
        assert!(any
            .verify(&mint(
                serde_json::json!({"sub":"a","exp":FAR,"aud":["x","y"]})
            ))
            .is_ok());
        let app = keys(Some("app"));
        assert!(app
            .verify(&mint(
                serde_json::json!({"sub":"a","exp":FAR,"aud":["app","y"]})
            ))
            .is_ok());
        assert!(app
            .verify(&mint(serde_json::json!({"sub":"a","exp":FAR,"aud":"app"})))
            .is_ok());
        assert!(app
            .verify(&mint(serde_json::json!({"sub":"a","exp":FAR,"aud":["x"]})))
            .is_err());
        assert!(app
            .verify(&mint(serde_json::json!({"sub":"a","exp":FAR})))
            .is_err());
    }

    /// A token verified once is taken from the cache, yet its `exp` is still checked on
    /// every use; a token with another signature is not taken for it; the cache is bounded.
    #[test]
    fn verified_tokens_are_kept_but_still_expire() {
        let k = keys(None);
        let exp = crate::model::now_ms() as f64 / 1000.0 + 2.0;
        let token = mint(serde_json::json!({"sub":"a","exp":exp}));
        assert_eq!(k.verify(&token).unwrap().sub.as_deref(), Some("a"));
        assert!(k.verified.get(&token).is_some());
        assert!(k.clone().verify(&token).is_ok(), "clones share it");
        let (head, _) = token.rsplit_once('.').unwrap();
        assert!(k.verify(&format!("{head}.AAAA")).is_err());
        let left = exp - crate::model::now_ms() as f64 / 1000.0;
        std::thread::sleep(Duration::from_secs_f64(left.max(0.0) + 0.1));
        assert!(k.verify(&token).is_err(), "expired, though kept");
        for n in 0..Verified::TOKENS + 10 {
            k.verify(&mint(serde_json::json!({"sub":format!("u{n}"),"exp":FAR})))
                .unwrap();
        }
        assert!(k.verified.0.len() <= Verified::TOKENS);
        let long = mint(serde_json::json!({"sub":"x".repeat(Verified::TOKEN_BYTES),"exp":FAR}));
        assert!(k.verify(&long).is_ok());
        assert!(k.verified.get(&long).is_none(), "too long to keep");
    }

    /// NumericDates may carry a fraction; absurd ones are clamped, never overflow.
    #[test]
    fn numeric_dates() {
        let k = keys(None);
        let c = k
            .verify(&mint(serde_json::json!({"sub":"a","exp":4102444800.5})))
            .unwrap();
        assert_eq!(
            k.ends_ms(&c),
            FAR * 1000 + 500,
            "a stream ends at exp, not later"
        );
        assert_eq!(c.exp.millis(), FAR * 1000 + 500);
        assert_eq!(c.exp.millis() / 1000, FAR);
        assert_eq!(serde_json::to_value(c.exp).unwrap(), 4102444800.5);
        let now = crate::model::now_ms() as f64 / 1000.0;
        assert!(k
            .verify(&mint(serde_json::json!({"sub":"a","exp":now - 0.2})))
            .is_err());
        assert!(k
            .verify(&mint(
                serde_json::json!({"sub":"a","exp":now + 5.0, "nbf": now + 2.5})
            ))
            .is_err());
        let c = k
            .verify(&mint(serde_json::json!({"sub":"a","exp":u64::MAX})))
            .unwrap();
        assert_eq!(c.exp.millis(), MAX_UNIX_SECS * 1000);
        let c = k
            .verify(&mint(serde_json::json!({"sub":"a","exp":1e300})))
            .unwrap();
        assert_eq!(c.exp.millis(), MAX_UNIX_SECS * 1000);
        // before 1970: an `nbf` long passed, an `exp` long expired
        let c = k
            .verify(&mint(serde_json::json!({"sub":"a","exp":FAR,"nbf":-1.5})))
            .unwrap();
        assert_eq!(c.nbf.map(NumericDate::millis), Some(0));
        for bad in [
            serde_json::json!({"sub":"a","exp":"4102444800"}),
            serde_json::json!({"sub":"a","exp":-1}),
            serde_json::json!({"sub":"a","exp":1000.5}),
            serde_json::json!({"sub":"a"}),
            serde_json::json!({"sub":"a","exp":FAR,"nbf":FAR}),
            serde_json::json!({"sub":"a","exp":FAR,"nbf":"0"}),
        ] {
            assert!(k.verify(&mint(bad.clone())).is_err(), "{bad}");
        }
    }

    /// Scopes are separated by ASCII spaces only.
    #[test]
    fn scope_split_on_spaces() {
        let with = |scope: &str| Claims {
            sub: None,
            exp: NumericDate::from_secs(FAR),
            nbf: None,
            scope: Some(scope.into()),
            sid: None,
            iss: None,
            aud: None,
        };
        assert!(with("read publish").has_scope("publish"));
        assert!(!with("read\tpublish").has_scope("publish"));
        assert!(!with("read\u{a0}publish").has_scope("publish"));
    }

    /// `scope` as an array of strings names its items; any other form names none, and the
    /// token is still a user's.
    #[test]
    fn scope_of_other_forms() {
        let k = Keys::secret(b"s", Checks::default());
        let claims = |scope: serde_json::Value| {
            k.verify(&mint(
                serde_json::json!({"sub":"a","exp":FAR,"scope":scope}),
            ))
            .expect("verifies")
        };
        assert!(claims(serde_json::json!(["openid", "publish"])).has_scope("publish"));
        assert!(!claims(serde_json::json!(["openid"])).has_scope("publish"));
        assert!(!claims(serde_json::json!(["read publish"])).has_scope("publish"));
        for other in [serde_json::json!(5), serde_json::json!({"publish": true})] {
            let c = claims(other);
            assert!(!c.has_scope("publish"));
            assert_eq!(c.sub.as_deref(), Some("a"));
        }
    }

    /// Property tests (issue 13): tokens and claims of any shape get 401, never a panic; what
    /// Herald signs verifies as the same claims.
    mod props {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        use proptest::prelude::*;
        use serde_json::{json, Value};

        use super::*;
        use crate::model::props::{any_text, json_value, text};

        fn b64(value: &Value) -> String {
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("JSON serializes"))
        }

        /// A token signed (HMAC-SHA256) with `secret` under any `header`, carrying `payload`.
        fn signed(header: &Value, payload: &Value, secret: &[u8]) -> String {
            let input = format!("{}.{}", b64(header), b64(payload));
            let key = EncodingKey::from_secret(secret);
            let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256)
                .expect("HS256 signs");
            format!("{input}.{signature}")
        }

        /// A NumericDate as a token may carry one: around now, huge, negative, fractional,
        /// or not a number at all.
        fn date() -> impl Strategy<Value = Value> {
            let now = crate::model::now_secs() as i64;
            prop_oneof![
                4 => (-7200i64..7200).prop_map(move |d| json!(now + d)),
                1 => any::<u64>().prop_map(|n| json!(n)),
                1 => any::<i64>().prop_map(|n| json!(n)),
                1 => any::<f64>().prop_map(|f| json!(f)),
                1 => (-7200i64..7200).prop_map(move |d| json!(now as f64 + d as f64 + 0.5)),
                1 => json_value(),
            ]
        }

        /// A claims object: mostly the right members, any of them of the wrong type.
        fn claims_value() -> impl Strategy<Value = Value> {
            let member = |p: f64, value: BoxedStrategy<Value>| prop::option::weighted(p, value);
            let string = || {
                prop_oneof![3 => "[a-z]{1,6}", 1 => text()]
                    .prop_map(Value::String)
                    .boxed()
            };
            let aud = prop_oneof![
                "(app|x)".prop_map(Value::String),
                prop::collection::vec("(app|x|y)".prop_map(Value::String), 0..3)
                    .prop_map(Value::Array),
                json_value(),
            ]
            .boxed();
            (
                (
                    member(0.9, string()),
                    member(0.95, date().boxed()),
                    member(0.3, date().boxed()),
                ),
                (
                    member(0.3, string()),
                    member(0.3, string()),
                    member(0.3, string()),
                ),
                (member(0.3, aud), member(0.1, json_value().boxed())),
            )
                .prop_map(|((sub, exp, nbf), (scope, sid, iss), (aud, extra))| {
                    let mut claims = serde_json::Map::new();
                    for (name, value) in [
                        ("sub", sub),
                        ("exp", exp),
                        ("nbf", nbf),
                        ("scope", scope),
                        ("sid", sid),
                        ("iss", iss),
                        ("aud", aud),
                        ("other", extra),
                    ] {
                        if let Some(value) = value {
                            claims.insert(name.to_owned(), value);
                        }
                    }
                    Value::Object(claims)
                })
        }

        /// A JOSE header: HS256 mostly, other algorithms and shapes sometimes.
        fn header() -> impl Strategy<Value = Value> {
            prop_oneof![
                6 => Just(json!({"alg": "HS256", "typ": "JWT"})),
                1 => "(none|None|HS384|HS512|RS256|ES256|EdDSA|hs256)"
                    .prop_map(|alg| json!({"alg": alg, "typ": "JWT"})),
                1 => json_value(),
            ]
        }

        fn key_sets() -> [Keys; 2] {
            [
                Keys::secret(b"s", Checks::default()),
                Keys::secret(
                    b"s",
                    Checks {
                        issuer: Some("iss".into()),
                        audience: Some("app".into()),
                        leeway: Duration::from_secs(60),
                    },
                ),
            ]
        }

        fn unauthorized(result: &Result<Claims>) -> bool {
            matches!(result, Err(Error::Unauthorized(_)))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Text that is not a token signed with the key: 401, never a panic.
            #[test]
            fn garbage_tokens_are_unauthorized(token in prop_oneof![
                any_text(),
                "[A-Za-z0-9_-]{0,24}(\\.[A-Za-z0-9_=+/-]{0,40}){0,3}",
                (header(), claims_value(), "[A-Za-z0-9_-]{0,43}")
                    .prop_map(|(h, c, sig)| format!("{}.{}.{sig}", b64(&h), b64(&c))),
                (header(), claims_value()).prop_map(|(h, c)| signed(&h, &c, b"other")),
            ]) {
                for keys in key_sets() {
                    let result = keys.verify(&token);
                    prop_assert!(unauthorized(&result), "{:?} → {:?}", token, result);
                }
            }

            /// A token signed with the key, with any header and any claims: verified only when
            /// it is HS256 and its claims hold (exp ahead, nbf passed, iss/aud as configured);
            /// 401 otherwise, never a panic.
            #[test]
            fn signed_tokens_verify_only_when_the_claims_hold(
                header in header(),
                claims in claims_value(),
            ) {
                let token = signed(&header, &claims, b"s");
                let hs256 = header.get("alg") == Some(&json!("HS256"));
                for (configured, keys) in key_sets().iter().enumerate() {
                    let before = crate::model::now_secs();
                    let result = keys.verify(&token);
                    let after = crate::model::now_secs();
                    match &result {
                        Ok(verified) => {
                            prop_assert!(hs256, "{} verified", header);
                            let leeway = keys.leeway.as_secs();
                            prop_assert!(verified.exp.millis() <= MAX_UNIX_SECS * 1000);
                            prop_assert!(verified.exp.millis() + leeway * 1000 > before * 1000);
                            prop_assert!(verified.nbf.is_none_or(|nbf| nbf.millis() / 1000 <= after + leeway));
                            prop_assert_eq!(
                                verified.sub.as_deref(),
                                claims.get("sub").and_then(Value::as_str)
                            );
                            if configured == 1 {
                                prop_assert_eq!(verified.iss.as_deref(), Some("iss"));
                                let aud = match &verified.aud {
                                    Some(Audience::One(a)) => vec![a.clone()],
                                    Some(Audience::Many(a)) => a.clone(),
                                    None => vec![],
                                };
                                prop_assert!(aud.iter().any(|a| a == "app"));
                            }
                        }
                        Err(_) => prop_assert!(unauthorized(&result), "{:?}", result),
                    }
                }
            }

            /// What Herald signs verifies as the same claims (print, then parse).
            #[test]
            fn signed_claims_round_trip(
                (sub, scope, sid) in (
                    prop::option::of(text()),
                    prop::option::of(text()),
                    prop::option::of(text()),
                ),
                (iss, aud) in (
                    prop::option::of(text()),
                    prop::option::of(prop_oneof![
                        text().prop_map(Audience::One),
                        prop::collection::vec(text(), 0..3).prop_map(Audience::Many),
                    ]),
                ),
                ahead in 120u64..=MAX_UNIX_SECS,
                nbf in prop::option::of(0u64..1_000_000_000),
            ) {
                let now = crate::model::now_secs();
                let claims = Claims {
                    sub,
                    exp: NumericDate::from_secs(now + ahead),
                    nbf: nbf.map(NumericDate::from_secs),
                    scope,
                    sid,
                    iss,
                    aud,
                };
                let keys = Keys::secret(b"s", Checks::default());
                let token = keys.signer().unwrap().sign(claims.clone()).expect("HS256 signs");
                let verified = keys.verify(&token).expect("what Herald signs verifies");
                prop_assert_eq!(
                    serde_json::to_value(&verified).expect("serializes"),
                    serde_json::to_value(&claims).expect("serializes")
                );
            }

            /// A NumericDate of any JSON: a number, read to the millisecond (a finer fraction
            /// rounded up) and clamped to `0..=MAX_UNIX_SECS`; anything else is refused, never
            /// a panic.
            #[test]
            fn numeric_dates_clamp(value in prop_oneof![
                any::<u64>().prop_map(|n| json!(n)),
                any::<i64>().prop_map(|n| json!(n)),
                any::<f64>().prop_map(|f| json!(f)),
                json_value(),
            ], number in "-?[0-9]{1,25}(\\.[0-9]{0,5})?([eE][+-]?[0-9]{1,3})?") {
                let expected = match &value {
                    Value::Number(n) => match (n.as_u64(), n.as_f64()) {
                        (Some(int), _) => Some(int.min(MAX_UNIX_SECS) * 1000),
                        (None, Some(f)) if f <= 0.0 => Some(0),
                        (None, Some(f)) => Some(if f >= MAX_UNIX_SECS as f64 {
                            MAX_UNIX_SECS * 1000
                        } else {
                            ((f * 1000.0).ceil() as u64).min(MAX_UNIX_SECS * 1000)
                        }),
                        _ => None,
                    },
                    _ => None,
                };
                let read = serde_json::from_value::<NumericDate>(value.clone()).ok();
                prop_assert_eq!(read.map(NumericDate::millis), expected, "{}", value);
                if let Ok(date) = serde_json::from_str::<NumericDate>(&number) {
                    prop_assert!(date.millis() <= MAX_UNIX_SECS * 1000);
                    prop_assert!(!number.starts_with('-') || date.millis() == 0, "{} → {:?}", number, date);
                }
            }
        }
    }
}
