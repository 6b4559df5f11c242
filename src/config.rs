//! `Config`: what `herald serve` runs with, typed and validated once (by `cli`, which builds
//! it from the flags). Inner code never sees raw flag strings, and this layer knows no clap.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

use crate::auth::jwt::Keys;

/// Where the broker and store live. Its `Debug` (what the start-up log line shows) hides
/// the passwords in the URLs.
#[derive(Clone, PartialEq, Eq)]
pub enum Backend {
    /// No Redis: in-process broker and store, one node.
    Embedded,
    /// One Redis server (`redis://` or `rediss://`).
    Redis(String),
    /// Redis Cluster seed nodes.
    Cluster(Vec<String>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Embedded => f.write_str("Embedded"),
            Backend::Redis(url) => f.debug_tuple("Redis").field(&redacted(url)).finish(),
            Backend::Cluster(urls) => f
                .debug_tuple("Cluster")
                .field(&urls.iter().map(|u| redacted(u)).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// `url` with its password (if any) replaced by `***`; in a URL that does not parse, all
/// that stands before an `@` in its authority.
pub fn redacted(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => match url.split_once("://") {
            Some((scheme, rest)) if rest.contains('@') => {
                let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                format!("{scheme}://***@{host}")
            }
            _ => url.to_owned(),
        },
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub backend: Backend,
    pub keys: Keys,
    /// Set when `--dev` generated the secret, so start-up can print it for `herald token`.
    pub generated_secret: Option<String>,
    pub dev: bool,
    /// Normalized origins (`scheme://host[:port]`); empty means "the request's own host".
    pub allowed_origins: Vec<String>,
    pub upstream: Option<Url>,
    /// Extra certificates (PEM) trusted for an `https://` upstream (`--upstream-ca-file`).
    pub upstream_ca_pem: Option<Vec<u8>>,
    pub retention: Duration,
    pub max_per_user: usize,
    pub heartbeat: Duration,
    /// The upstream's response headers must come within this (else 504).
    pub upstream_timeout: Duration,
    /// A pause this long in the upstream's response body cuts it.
    pub upstream_idle_timeout: Duration,
    /// A write blocked this long (the client does not read) closes the connection.
    pub send_timeout: Duration,
    /// A JSON request body must arrive whole within this (else 408).
    pub body_timeout: Duration,
    /// A connection with no request in progress this long is closed; also the longest wait
    /// for a request head and for a TLS handshake.
    pub idle_timeout: Duration,
    /// Client networks allowed to read `/metrics`; empty means any.
    pub metrics_allow: Vec<IpNet>,
    /// `--admin`: the admin view and its endpoints under `/admin` (404 when off).
    pub admin: bool,
    pub trusted_proxies: Vec<IpNet>,
    /// Always starts and ends with `/`.
    pub base_path: String,
    pub drain_timeout: Duration,
    pub max_streams_per_user: usize,
    pub max_connect_rate: u32,
    /// This node's name in presence entries and logs.
    pub node: String,
    /// Kafka ingest, with `--kafka-brokers`.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub kafka: Option<KafkaConfig>,
    /// Web Push, with `--vapid-private-key` and `--vapid-subject`.
    pub push: Option<PushConfig>,
    /// HTTPS with HTTP/2: the certificate chain and key files (`--tls-cert`, `--tls-key`).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Config {
    /// The node's ticker period (pings and expiry of every stream): a quarter heartbeat, at
    /// most 250 ms.
    pub fn tick_period(&self) -> Duration {
        (self.heartbeat / 4).clamp(Duration::from_millis(10), Duration::from_millis(250))
    }

    /// How long a stream is quiet before a tick pings it: a heartbeat less one tick. Its last
    /// write lands just after a tick, so the tick that pings it comes a heartbeat after that
    /// one: a quiet stream's pings are `--heartbeat` apart, not a heartbeat and a tick.
    pub fn ping_after(&self) -> Duration {
        self.heartbeat.saturating_sub(self.tick_period())
    }
}

/// Web Push escalation settings, already checked (the key parses, the subject is a URL).
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// The VAPID private key, PEM (PKCS#8 or SEC1, P-256).
    pub private_key_pem: String,
    /// `mailto:…` or `https://…`.
    pub subject: String,
    /// Host suffixes (or exact IP addresses) push endpoints may be on.
    pub endpoint_allow: Vec<String>,
    /// Extra CA certificates trusted for push endpoints, PEM.
    pub ca_pem: Option<Vec<u8>>,
    /// How long after a notification became active a connected user gets a push for it.
    pub after: Duration,
}

/// Where Kafka ingest reads from (and `herald publish --kafka-brokers` writes to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// librdkafka's `bootstrap.servers`: `host:port[,host:port…]`.
    pub brokers: String,
    pub topics: Vec<String>,
    pub group: String,
    /// `None`: `<topic>.dead` for each topic ([`KafkaConfig::dead_letters_of`]).
    pub dead_letter_topic: Option<String>,
    /// `--kafka-option key=value`s, passed to librdkafka as they are (SASL, TLS, timeouts).
    pub options: Vec<(String, String)>,
}

impl KafkaConfig {
    /// Where the records of `topic` that are not valid publish bodies go: `dead_letter_topic`
    /// (`--kafka-dead-letter-topic`), else `<topic>.dead`.
    pub fn dead_letters_of(dead_letter_topic: Option<&str>, topic: &str) -> String {
        dead_letter_topic.map_or_else(|| format!("{topic}.dead"), str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::{redacted, Backend};

    #[test]
    fn debug_hides_redis_passwords() {
        let one = Backend::Redis("redis://herald:s3cret@db:6379/0".into());
        assert_eq!(
            format!("{one:?}"),
            r#"Redis("redis://herald:***@db:6379/0")"#
        );
        let plain = Backend::Redis("redis://127.0.0.1:6379".into());
        assert_eq!(format!("{plain:?}"), r#"Redis("redis://127.0.0.1:6379")"#);
        let cluster =
            Backend::Cluster(vec!["redis://:pw@h1:7000".into(), "redis://h2:7001".into()]);
        let shown = format!("{cluster:?}");
        assert!(!shown.contains("pw"), "{shown}");
        assert!(shown.contains("h2:7001"), "{shown}");
        let unparsable = redacted("redis://u:pw@h1:port/x");
        assert_eq!(unparsable, "redis://***@h1:port/x");
        assert_eq!(redacted("redis://u:p/w@h1:x"), "redis://***@h1:x");
    }
}
