//! From flags to the library's plain values: `ServeArgs` → `Config`, `KeyArgs` → `Keys`,
//! `KafkaArgs` → `KafkaConfig`, `--redis-url` → `Backend`, and the checks that span flags
//! (bounds of every duration, Kafka topic names). Nothing below the CLI sees a clap type.

use std::time::Duration;

use url::Url;

use super::args::{KafkaArgs, KeyArgs, ServeArgs, SigningArgs};
use crate::auth::jwt::{Checks, Keys, Signer};
use crate::auth::origin;
use crate::config::{Backend, Config, KafkaConfig};
use crate::error::StartupError;

impl KeyArgs {
    fn checks(&self) -> Checks {
        Checks {
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            leeway: self.jwt_leeway,
        }
    }

    /// What signs a sub-command's tokens: `--jwt-private-key`, else the `--jwt-secret`.
    pub(super) fn signer(&self, signing: &SigningArgs) -> Result<Signer, StartupError> {
        let Some(path) = &signing.jwt_private_key else {
            return self
                .keys()?
                .as_ref()
                .and_then(Keys::signer)
                .cloned()
                .ok_or_else(|| {
                    StartupError(
                        "signing needs --jwt-secret, or --jwt-private-key beside --jwt-public-key"
                            .into(),
                    )
                });
        };
        let pem = std::fs::read(path).map_err(|e| {
            StartupError(format!(
                "--jwt-private-key: cannot read {}: {e}",
                path.display()
            ))
        })?;
        Signer::private_pem(&pem, &self.checks()).map_err(|e| {
            StartupError(format!(
                "--jwt-private-key: {} is not an RSA or EC (P-256, PKCS#8) private key PEM: {e}",
                path.display()
            ))
        })
    }

    /// Keys from the flags; `None` when neither a secret nor a public key is given.
    fn keys(&self) -> Result<Option<Keys>, StartupError> {
        let checks = self.checks();
        if let Some(secret) = &self.jwt_secret {
            if secret.trim().is_empty() {
                return Err(StartupError(
                    "--jwt-secret must not be empty or only whitespace".into(),
                ));
            }
            Ok(Some(Keys::secret(secret.as_bytes(), checks)))
        } else if let Some(path) = &self.jwt_public_key {
            let pem = std::fs::read(path).map_err(|e| {
                StartupError(format!(
                    "--jwt-public-key: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            let keys = Keys::public_pem(&pem, checks).map_err(|e| {
                StartupError(format!(
                    "--jwt-public-key: {} is not an RSA or EC (P-256) public key PEM: {e}",
                    path.display()
                ))
            })?;
            Ok(Some(keys))
        } else {
            Ok(None)
        }
    }
}

impl KafkaArgs {
    /// The client settings, `None` without `--kafka-brokers`; topics are checked here.
    pub(super) fn config(
        &self,
        group: &str,
        dead_letter_topic: Option<&String>,
    ) -> Result<Option<KafkaConfig>, StartupError> {
        let Some(brokers) = &self.kafka_brokers else {
            if !self.kafka_topic.is_empty() {
                return Err(StartupError("--kafka-topic needs --kafka-brokers".into()));
            }
            return Ok(None);
        };
        if !cfg!(feature = "kafka") {
            return Err(StartupError(
                "--kafka-brokers: this herald was built without Kafka (cargo feature `kafka`)"
                    .into(),
            ));
        }
        if brokers.trim().is_empty() {
            return Err(StartupError(
                "--kafka-brokers must name at least one broker".into(),
            ));
        }
        if self.kafka_topic.is_empty() {
            return Err(StartupError(
                "--kafka-brokers needs at least one --kafka-topic".into(),
            ));
        }
        for topic in &self.kafka_topic {
            check_topic("--kafka-topic", topic)?;
        }
        if group.trim().is_empty() {
            return Err(StartupError("--kafka-group must not be empty".into()));
        }
        Ok(Some(KafkaConfig {
            brokers: brokers.trim().to_owned(),
            topics: self.kafka_topic.clone(),
            group: group.to_owned(),
            dead_letter_topic: dead_letter_topic.cloned(),
            options: self.kafka_option.clone(),
        }))
    }
}

/// Where ingest puts the records that are not publish bodies (`serve` only: `herald publish`
/// produces, and dead-letters nothing): a topic name, and not one it consumes (dead letters
/// read again would be dead-lettered again, without end, or once more to `<topic>.dead.dead`);
/// without `--kafka-dead-letter-topic`, each topic's `<topic>.dead`.
fn check_dead_letters(kafka: &KafkaConfig) -> Result<(), StartupError> {
    if let Some(dead) = &kafka.dead_letter_topic {
        check_topic("--kafka-dead-letter-topic", dead)?;
    }
    for topic in &kafka.topics {
        let dead = KafkaConfig::dead_letters_of(kafka.dead_letter_topic.as_deref(), topic);
        if !is_topic_name(&dead) {
            return Err(StartupError(format!(
                "--kafka-topic: {topic:?} is too long for its default dead-letter topic \
                 {dead} (at most 249 characters); name one with --kafka-dead-letter-topic"
            )));
        }
        if kafka.topics.contains(&dead) {
            return Err(StartupError(format!(
                "--kafka-dead-letter-topic: {dead:?} (where the records of {topic:?} that are \
                 not publish bodies go) is also a --kafka-topic; name a topic Herald does not \
                 consume"
            )));
        }
    }
    Ok(())
}

/// Kafka's rule for topic names: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..`.
fn is_topic_name(topic: &str) -> bool {
    (1..=249).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && topic != "."
        && topic != ".."
}

/// [`is_topic_name`], as an error that names the topic's `flag`.
fn check_topic(flag: &str, topic: &str) -> Result<(), StartupError> {
    if is_topic_name(topic) {
        Ok(())
    } else {
        Err(StartupError(format!(
            "{flag}: {topic:?} is not a Kafka topic name (1 to 249 of A-Z a-z 0-9 . _ -)"
        )))
    }
}

impl ServeArgs {
    /// The typed, validated `Config` (a `--dev` run without key flags gets a random secret).
    pub(super) fn config(&self) -> Result<Config, StartupError> {
        let args = self;
        let (keys, generated_secret) = match args.keys.keys()? {
            Some(keys) => (keys, None),
            None if args.dev => {
                let secret = crate::model::random_token(32);
                let keys = KeyArgs {
                    jwt_secret: Some(secret.clone()),
                    ..args.keys.clone()
                }
                .keys()?
                .expect("a secret was given");
                (keys, Some(secret))
            }
            None => {
                return Err(StartupError(
                    "--jwt-secret or --jwt-public-key is required (or --dev)".into(),
                ))
            }
        };
        let allowed_origins = args
            .allowed_origin
            .iter()
            .map(|o| {
                origin::normalize_origin(o)
                    .ok_or_else(|| StartupError(format!("--allowed-origin: invalid origin {o:?}")))
            })
            .collect::<Result<_, _>>()?;
        let base_path = args.base_path.clone();
        if let Some(upstream) = &args.upstream {
            if !matches!(upstream.scheme(), "http" | "https") || upstream.host().is_none() {
                return Err(StartupError(format!(
                    "--upstream: {upstream} must be an http:// or https:// URL"
                )));
            }
            // `/api/x?q` maps to the base + `/x?q`: a base with its own query, fragment or
            // credentials has no place to keep them.
            if upstream.query().is_some()
                || upstream.fragment().is_some()
                || !upstream.username().is_empty()
                || upstream.password().is_some()
            {
                return Err(StartupError(format!(
                    "--upstream: {upstream} must be a base URL without a query, fragment or credentials"
                )));
            }
        }
        let https = args
            .upstream
            .as_ref()
            .is_some_and(|u| u.scheme() == "https");
        if args.upstream_ca_file.is_some() && !https {
            return Err(StartupError(
                "--upstream-ca-file needs an https:// --upstream".into(),
            ));
        }
        let upstream_ca_pem = (args.upstream_ca_file.as_ref())
            .map(|path| {
                std::fs::read(path).map_err(|e| {
                    StartupError(format!(
                        "--upstream-ca-file: cannot read {}: {e}",
                        path.display()
                    ))
                })
            })
            .transpose()?;
        check_durations(args)?;
        let kafka = args
            .kafka
            .config(&args.kafka_group, args.kafka_dead_letter_topic.as_ref())?;
        if let Some(kafka) = &kafka {
            check_dead_letters(kafka)?;
        }
        Ok(Config {
            listen: args.listen,
            backend: backend(&args.redis_url)?,
            keys,
            generated_secret,
            dev: args.dev,
            allowed_origins,
            upstream: args.upstream.clone(),
            upstream_ca_pem,
            retention: args.retention,
            max_per_user: args.max_per_user,
            heartbeat: args.heartbeat,
            upstream_timeout: args.upstream_timeout,
            upstream_idle_timeout: args.upstream_idle_timeout,
            send_timeout: args.send_timeout,
            body_timeout: args.body_timeout,
            idle_timeout: args.idle_timeout,
            metrics_allow: args.metrics_allow.clone(),
            admin: args.admin,
            trusted_proxies: args.trusted_proxy.clone(),
            base_path,
            drain_timeout: args.drain_timeout,
            max_streams_per_user: args.max_streams_per_user,
            max_connect_rate: args.max_connect_rate,
            node: args
                .node_id
                .clone()
                .unwrap_or_else(|| format!("node-{}", crate::model::random_token(4))),
            kafka,
            push: args.push.config()?,
            tls: args.tls_cert.clone().zip(args.tls_key.clone()),
        })
    }
}

const MS: Duration = Duration::from_millis(1);
pub(super) const HOUR: Duration = Duration::from_secs(3600);
pub(super) const DAY: Duration = Duration::from_secs(86_400);
/// 100 years of 365.25 days.
pub(super) const CENTURY: Duration = Duration::from_secs(3_155_760_000);

/// Each duration flag within sensible bounds, so no later deadline arithmetic can overflow
/// (`--heartbeat 400000000000y` used to be accepted, then panic every stream).
pub(super) fn check_durations(args: &ServeArgs) -> Result<(), StartupError> {
    let bounds = [
        ("--heartbeat", args.heartbeat, 10 * MS, HOUR),
        ("--upstream-timeout", args.upstream_timeout, MS, HOUR),
        (
            "--upstream-idle-timeout",
            args.upstream_idle_timeout,
            MS,
            DAY,
        ),
        ("--send-timeout", args.send_timeout, MS, HOUR),
        ("--body-timeout", args.body_timeout, MS, HOUR),
        ("--idle-timeout", args.idle_timeout, MS, HOUR),
        ("--drain-timeout", args.drain_timeout, Duration::ZERO, HOUR),
        (
            "--retention",
            args.retention,
            Duration::from_secs(1),
            CENTURY,
        ),
        ("--jwt-leeway", args.keys.jwt_leeway, Duration::ZERO, DAY),
    ];
    for (flag, value, min, max) in bounds {
        if value < min || value > max {
            return Err(StartupError(format!(
                "{flag} must be between {} and {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            )));
        }
    }
    Ok(())
}

/// `--redis-url` values → backend. `redis+cluster://h1:p,h2:p` and repeated flags name cluster
/// nodes; so does one value listing `redis://` or `rediss://` URLs separated by commas (the
/// env twin's form of the repeated flag: `HERALD_REDIS_URL=redis://h1:p,redis://h2:p`).
pub(super) fn backend(urls: &[String]) -> Result<Backend, StartupError> {
    let mut cluster = Vec::new();
    let mut single = Vec::new();
    for url in urls.iter().flat_map(|url| listed(url)) {
        let shown = crate::config::redacted(url);
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let before = cluster.len();
            let nodes: Vec<&str> = rest.split(',').filter(|s| !s.trim().is_empty()).collect();
            // Credentials written once, on the first node, are every node's
            // (`redis+cluster://user:password@h1:p,h2:p`).
            let credentials = nodes
                .first()
                .and_then(|n| n.rsplit_once('@'))
                .map(|(c, _)| c);
            cluster.extend(nodes.iter().map(|h| match credentials {
                Some(c) if !h.contains('@') => format!("redis://{c}@{h}"),
                _ => format!("redis://{h}"),
            }));
            if cluster.len() == before {
                return Err(StartupError(format!(
                    "--redis-url: {shown:?} names no node (redis+cluster://host:port,host:port)"
                )));
            }
        } else {
            let parsed = Url::parse(url)
                .map_err(|e| StartupError(format!("--redis-url: invalid URL {shown:?}: {e}")))?;
            if !matches!(parsed.scheme(), "redis" | "rediss") {
                return Err(StartupError(format!(
                    "--redis-url: scheme must be redis://, rediss:// or redis+cluster:// in {shown:?}"
                )));
            }
            single.push(url.to_owned());
        }
    }
    match (single.len(), cluster.is_empty()) {
        (0, true) => Ok(Backend::Embedded),
        (1, true) => Ok(Backend::Redis(single.remove(0))),
        (_, _) => {
            cluster.extend(single);
            Ok(Backend::Cluster(cluster))
        }
    }
}

/// The URLs of a comma-separated list of `redis://`/`rediss://` URLs, or `url` itself.
fn listed(url: &str) -> Vec<&str> {
    let parts: Vec<&str> = url.split(',').map(str::trim).collect();
    let all_urls = parts
        .iter()
        .all(|p| p.starts_with("redis://") || p.starts_with("rediss://"));
    if parts.len() > 1 && all_urls {
        parts
    } else {
        vec![url]
    }
}

#[cfg(test)]
mod tests {
    use super::super::values::parse_option;
    use super::*;

    /// `--kafka-option` wants `key=value`; topic names follow Kafka's rule.
    #[test]
    fn kafka_values() {
        assert_eq!(
            parse_option("sasl.username=a=b"),
            Ok(("sasl.username".into(), "a=b".into()))
        );
        assert!(parse_option("novalue").is_err());
        assert!(parse_option("=x").is_err());
        assert!(check_topic("--kafka-topic", "orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a b", "ü", &"t".repeat(250)] {
            assert!(check_topic("--kafka-topic", bad).is_err(), "{bad:?}");
        }
    }

    /// A cluster URL and repeated flags give cluster seeds; one URL gives single Redis.
    #[test]
    fn backends() {
        assert_eq!(backend(&[]).unwrap(), Backend::Embedded);
        assert_eq!(
            backend(&["redis://h:1".into()]).unwrap(),
            Backend::Redis("redis://h:1".into())
        );
        assert_eq!(
            backend(&["redis+cluster://a:1,b:2".into()]).unwrap(),
            Backend::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
        // credentials written once are every node's; a node's own are kept
        assert_eq!(
            backend(&["redis+cluster://u:p@a:1,b:2,v:q@c:3".into()]).unwrap(),
            Backend::Cluster(vec![
                "redis://u:p@a:1".into(),
                "redis://u:p@b:2".into(),
                "redis://v:q@c:3".into()
            ])
        );
        // the env twin's form of the repeated flag
        assert_eq!(
            backend(&["redis://a:1, rediss://b:2".into()]).unwrap(),
            Backend::Cluster(vec!["redis://a:1".into(), "rediss://b:2".into()])
        );
        assert!(backend(&["redis://a:1,b:2".into()]).is_err());
        assert!(backend(&["http://x".into()]).is_err());
        for empty in ["redis+cluster://", "redis+cluster://,,"] {
            assert!(backend(&[empty.into()]).is_err(), "{empty}");
        }
        let Err(StartupError(shown)) = backend(&["redis://:secret@h:x".into()]) else {
            panic!("a bad port is an error")
        };
        assert!(!shown.contains("secret"), "{shown}");
    }
}
