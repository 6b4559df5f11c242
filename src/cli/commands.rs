//! The `token`, `publish` and `health` sub-commands: small clients of the same code the
//! server runs.

use super::args::{HealthArgs, PublishArgs, TokenArgs};
use super::config::backend;
use crate::auth::jwt::{Claims, NumericDate};
use crate::config::{Backend, KafkaConfig};
use crate::error::StartupError;
use crate::model::{now_secs, validate_id, without_position, NotificationInput};
use crate::publish::{publish as publish_request, PublishRequest};
use crate::store::Store;

/// `herald token`: print a signed JWT.
pub fn token(args: &TokenArgs) -> Result<(), StartupError> {
    if args.sub.is_none() && args.scope.is_none() {
        return Err(StartupError("--sub or --scope is required".into()));
    }
    // A user id the server would refuse makes a token no server accepts.
    if let Some(sub) = &args.sub {
        validate_id("--sub", sub).map_err(|e| StartupError(e.to_string()))?;
    }
    if let Some(sid) = &args.sid {
        validate_id("--sid", sid).map_err(|e| StartupError(e.to_string()))?;
    }
    let claims = Claims {
        sub: args.sub.clone(),
        exp: NumericDate::from_secs(now_secs().saturating_add(args.ttl.as_secs())),
        nbf: None,
        scope: args.scope.clone(),
        sid: args.sid.clone(),
        iss: None,
        aud: None,
    };
    println!("{}", args.keys.signer(&args.signing)?.sign(claims)?);
    Ok(())
}

/// `herald publish`: through Redis with `--redis-url`, else a Kafka record with
/// `--kafka-brokers`, else `POST /publish` to `--url`. A node's environment may set both
/// `HERALD_REDIS_URL` and `HERALD_KAFKA_*` (Redis mode with Kafka ingest): Redis wins, unless
/// `--kafka-brokers` is typed and `--redis-url` is not; both typed is a usage error.
pub async fn publish(args: &PublishArgs) -> Result<(), StartupError> {
    let data = match &args.data {
        Some(d) => Some(
            serde_json::from_str(d)
                .map_err(|e| StartupError(format!("--data: {}", without_position(&e))))?,
        ),
        None => None,
    };
    let request = PublishRequest {
        users: args.users.clone(),
        groups: args.groups.clone(),
        notification: NotificationInput {
            title: args.title.clone(),
            body: args.body.clone(),
            source: args.source.clone(),
            category: args.category.clone(),
            link: args.link.clone(),
            data,
            critical: args.critical,
            collapse_key: args.collapse_key.clone(),
            deliver_at: args.deliver_at.clone(),
            expires_at: args.expires_at.clone(),
            actions: args
                .actions
                .iter()
                .map(|a| serde_json::from_str(a))
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    StartupError(format!(
                        "--action must be a JSON object with id and label: {e}"
                    ))
                })?,
            ..Default::default()
        },
        idempotency_key: args.idempotency_key.clone(),
        idempotency_stamp: None,
    };
    let failed =
        |e: crate::error::Error| StartupError(format!("publish failed: {} ({})", e, e.code()));
    // Checked here as a node checks it, whichever way it goes, so a bad value is named by its
    // flag (a record would only reach the dead-letter topic; a POST would answer 400 naming
    // the body's field).
    crate::publish::check(&request).map_err(|e| StartupError(named_by_flag(&e.to_string())))?;
    let kafka = match (args.redis_url.is_empty(), args.typed_kafka_brokers) {
        (false, true) if args.typed_redis_url => {
            return Err(StartupError(
                "--redis-url and --kafka-brokers: herald publish writes through one; give one"
                    .into(),
            ))
        }
        (true, _) | (false, true) => args.kafka.config("herald", None)?,
        (false, false) => None,
    };
    if let Some(kafka) = kafka {
        if kafka.topics.len() > 1 {
            return Err(StartupError(
                "--kafka-topic: herald publish produces to one topic; name one".into(),
            ));
        }
        return produce(&kafka, &request).await;
    }
    match backend(&args.redis_url)? {
        Backend::Embedded => post(args, &request).await,
        redis => {
            // Web Push on: a recipient with a subscription gets an escalation, as through
            // `POST /publish`; the nodes push it (a node with Web Push off cancels it).
            let store = Store::redis(&redis, args.max_per_user, true, None).await?;
            let response = publish_request(&store, None, &request)
                .await
                .map_err(failed)?;
            println!("{}", serde_json::to_string(&response).unwrap_or_default());
            Ok(())
        }
    }
}

/// The flag a publish's field comes from, for a message about it (which starts with the
/// field's name, as `POST /publish` words it): `<flag>: <message>`.
fn named_by_flag(message: &str) -> String {
    const FLAGS: [(&str, &str); 15] = [
        ("notification.title", "--title"),
        ("notification.body", "--body"),
        ("notification.source", "--source"),
        ("notification.category", "--category"),
        ("notification.link", "--link"),
        ("notification.data", "--data"),
        ("notification.collapse_key", "--collapse-key"),
        ("notification.deliver_at", "--deliver-at"),
        ("notification.expires_at", "--expires-at"),
        ("notification.actions", "--action"),
        ("each user", "--user"),
        ("each group", "--group"),
        ("idempotency_key", "--idempotency-key"),
        ("name at least one user or group", "--user or --group"),
        ("notification exceeds", "--title, --body, --data"),
    ];
    let flag = FLAGS
        .iter()
        .find(|(field, _)| message.starts_with(field))
        .map_or("publish", |(_, flag)| flag);
    format!("{flag}: {message}")
}

/// Produce the request to the `--kafka-topic`, keyed by its first user (or group), so
/// one user's records share a partition and keep their order; prints where it went.
#[cfg(feature = "kafka")]
async fn produce(kafka: &KafkaConfig, request: &PublishRequest) -> Result<(), StartupError> {
    let key = request.users.first().or(request.groups.first());
    let value = serde_json::to_vec(request).expect("a publish request serializes");
    let at = crate::ingest::kafka_produce(kafka, key.map_or("", String::as_str), &value).await?;
    println!("{at}");
    Ok(())
}

#[cfg(not(feature = "kafka"))]
async fn produce(_: &KafkaConfig, _: &PublishRequest) -> Result<(), StartupError> {
    unreachable!("KafkaArgs::config refuses --kafka-brokers without the feature")
}

async fn post(args: &PublishArgs, request: &PublishRequest) -> Result<(), StartupError> {
    let service = args.keys.signer(&args.signing)?.sign(Claims {
        sub: None,
        exp: NumericDate::from_secs(now_secs() + 300),
        nbf: None,
        scope: Some("publish".into()),
        sid: None,
        iss: None,
        aud: None,
    })?;
    // `--url` may carry a base path: append, never replace its last segment.
    let url = format!("{}/publish", args.url.as_str().trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(POST_TIMEOUT)
        .build()
        .map_err(|e| StartupError(format!("HTTP client: {e}")))?;
    let response = client
        .post(&url)
        .bearer_auth(service)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(request).expect("a publish request serializes"))
        .send()
        .await
        .map_err(|e| {
            let mut cause = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                cause.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            if e.is_timeout() {
                cause = format!("no answer within {} s", POST_TIMEOUT.as_secs());
            }
            StartupError(format!(
                "--url: cannot reach Herald at {}: {cause}",
                args.url
            ))
        })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(StartupError(format!(
            "publish failed with {status}: {text}"
        )));
    }
    println!("{text}");
    Ok(())
}

/// The longest `herald publish` waits for the server's answer.
const POST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `herald health`: `GET /healthz` (or `/readyz`) on the local node within 3 s; an error (exit
/// status 1, what container health checks read as unhealthy) unless it answers 2xx.
pub async fn health(args: &HealthArgs) -> Result<(), StartupError> {
    let mut addr = args.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let base = args.base_path.trim_matches('/');
    let path = if args.ready { "readyz" } else { "healthz" };
    let scheme = if args.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let url = match base {
        "" => format!("{scheme}://{addr}/{path}"),
        base => format!("{scheme}://{addr}/{base}/{path}"),
    };
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(args.tls_cert.is_some())
        .build()
        .map_err(|e| StartupError(format!("HTTP client: {e}")))?;
    let status = client
        .get(&url)
        .timeout(std::time::Duration::from_secs(3))
        .send()
        .await
        .map(|r| r.status())
        .map_err(|e| StartupError(format!("{url}: no answer ({e})")))?;
    if status.is_success() {
        Ok(())
    } else {
        Err(StartupError(format!("{url}: {status}")))
    }
}
