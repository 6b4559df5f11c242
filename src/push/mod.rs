//! Web Push escalation (RFC 8030 delivery, RFC 8291 `aes128gcm` payloads, RFC 8292 VAPID):
//! the [`Pusher`] sends a notification to each of a user's subscriptions when the due-time
//! task hands it an escalation (`crate::due`). The payload is encrypted per subscription with
//! the `ece` crate; the client follows no redirects, reaches only allowed endpoints (the
//! default push services at public addresses only), reuses connections and bounds every
//! request. `404`/`410` remove the subscription; `429`/`5xx` and network failures are
//! retried with backoff until the message's TTL runs out (`Retry-After` honoured), each retry
//! only while the subscription is still the user's and the notification still waits to be
//! pushed. A node has at most [`MAX_REQUESTS`] push requests in flight; the others wait their
//! turn, keeping their escalation's lease.

mod endpoint;
mod payload;
pub mod vapid;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tokio::sync::{Semaphore, SemaphorePermit};
use url::Url;

pub use self::endpoint::{canonical as canonical_endpoint, is_allow_entry, DEFAULT_ALLOW};
use self::endpoint::{Allow, PublicOnly};
use self::vapid::Vapid;
use crate::config::PushConfig;
use crate::error::{Result, StartupError};
use crate::metrics::{Metrics, ReasonLabels};
use crate::model::{now_ms, parse_time, Notification};
use crate::shutdown::Shutdown;
use crate::store::{push_fingerprint, Escalation, Store, Subscription, PUSH_LEASE_MS};

/// A message's TTL when the notification does not expire sooner.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The first retry's wait (the spec: within 5 s unless `Retry-After` says otherwise), doubled
/// up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The shortest wait before a first retry, also when `Retry-After` says `0`; doubled on each
/// retry up to [`MAX_BACKOFF`], so a push service that keeps asking for no wait is not
/// called four times a second until the TTL runs out.
const MIN_RETRY: Duration = Duration::from_millis(250);
/// How long before the TTL runs out the last retry goes (its `TTL` header: 1 s).
const LAST_TRY: Duration = Duration::from_millis(1500);
/// One push request, whole.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Push requests one node has in flight at most: a group published to thousands of offline
/// users pushes at the pace of this many requests, not with a socket each at once (over
/// HTTP/1.1, each request in flight holds a connection; the process has 20,000 files).
const MAX_REQUESTS: usize = 256;

/// The Web Push sender: a cheap-to-clone handle.
#[derive(Clone)]
pub struct Pusher {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    vapid: Vapid,
    allow: Allow,
    after: Duration,
    metrics: Metrics,
    /// [`MAX_REQUESTS`] turns.
    requests: Semaphore,
}

/// What one push request came to.
enum Outcome {
    Sent,
    /// The subscription is gone (`404`/`410`).
    Gone,
    /// Try again: after this long (`Retry-After`), or after the backoff (`None`).
    Retry(Option<Duration>),
    /// Given up: the reason (a metric label).
    Failed(&'static str),
    /// Not sent: by a retry, the subscription is no longer the user's or the notification no
    /// longer waits to be pushed.
    Unwanted,
}

impl Pusher {
    pub fn new(config: &PushConfig, metrics: Metrics) -> Result<Self, StartupError> {
        let vapid = Vapid::from_pem(&config.private_key_pem, &config.subject)?;
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            // Direct connections only: through `HTTPS_PROXY`/`ALL_PROXY` the proxy would
            // resolve the endpoint's name, past the public-address check.
            .no_proxy()
            .dns_resolver(Arc::new(PublicOnly {
                trusted: Allow::new(config.endpoint_allow.clone()).added(),
            }));
        if let Some(pem) = &config.ca_pem {
            for der in crate::pem::ca_certificates("--push-ca-file", pem)? {
                let cert = reqwest::Certificate::from_der(&der)
                    .map_err(|e| StartupError(format!("--push-ca-file: {e}")))?;
                client = client.add_root_certificate(cert);
            }
        }
        let client = client
            .build()
            .map_err(|e| StartupError(format!("the Web Push client: {e}")))?;
        Ok(Pusher {
            inner: Arc::new(Inner {
                client,
                vapid,
                allow: Allow::new(config.endpoint_allow.clone()),
                after: config.after,
                metrics,
                requests: Semaphore::new(MAX_REQUESTS),
            }),
        })
    }

    /// The VAPID public key (base64url, uncompressed P-256 point).
    pub fn public_key(&self) -> &str {
        self.inner.vapid.public_key()
    }

    /// How long a connected user has to see a notification before it is pushed.
    pub fn after(&self) -> Duration {
        self.inner.after
    }

    /// Refuse (400) a subscription whose endpoint is not allowed or whose keys are not the
    /// sizes RFC 8291 fixes.
    pub fn check(&self, sub: &Subscription) -> Result<()> {
        self.inner.allow.check(&sub.endpoint)?;
        let size = |v: &str| {
            URL_SAFE_NO_PAD
                .decode(v.trim_end_matches('='))
                .map(|b| b.len())
        };
        let point = URL_SAFE_NO_PAD.decode(sub.keys.p256dh.trim_end_matches('='));
        let on_curve =
            point.is_ok_and(|p| p.len() == 65 && p256::PublicKey::from_sec1_bytes(&p).is_ok());
        if !on_curve {
            return Err(crate::error::Error::invalid(
                "keys.p256dh must be a base64url uncompressed P-256 public key",
            ));
        }
        if size(&sub.keys.auth) != Ok(16) {
            return Err(crate::error::Error::invalid(
                "keys.auth must be 16 bytes, base64url",
            ));
        }
        Ok(())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Push `escalation` to every subscription of `user` (all at once, so one slow push
    /// service delays no other and the first tries end well within the store's lease; each
    /// retried within the TTL while renewing the lease), then mark it done. Once `stop` has
    /// begun, a push still waiting for a retry is handed back to the store, due at its
    /// retry's time for any node, rather than left leased until the lease runs out.
    pub async fn send(&self, store: &Store, user: &str, escalation: &Escalation, stop: &Shutdown) {
        let n = &escalation.notification;
        let payload = payload::payload(n, escalation.unread_count);
        // 24 h from the first try, also for a sender that took it over.
        let longest = escalation.due_ms.min(now_ms()) + DEFAULT_TTL.as_millis() as u64;
        let deadline = n
            .expires_at
            .as_deref()
            .and_then(|t| parse_time("expires_at", t).ok())
            .map_or(longest, |at| at.min(longest));
        // The subscriptions that took it already: a sender that died left the escalation (its
        // lease ran out) with some of them sent.
        let (subscriptions, sent) = tokio::join!(
            store.subscriptions(user),
            store.pushed_to(user, &n.id, escalation.lease)
        );
        let (subscriptions, sent) = match (subscriptions, sent) {
            (Ok(subs), Ok(Some(sent))) => (subs, sent),
            // Not ours any more (a snooze or an archive dropped it).
            (Ok(_), Ok(None)) => return,
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(
                    error = %e,
                    "Web Push: subscriptions unavailable (check Redis); the escalation is retried \
                     later"
                );
                return;
            }
        };
        let sends = subscriptions
            .iter()
            .filter(|sub| !sent.contains(&push_fingerprint(&sub.endpoint)))
            .map(|sub| self.send_one(store, user, escalation, sub, &payload, deadline, stop));
        let retries = futures_util::future::join_all(sends).await;
        let (id, lease) = (&n.id, escalation.lease);
        let ended = match retries.into_iter().flatten().min() {
            // The subscriptions that took it are recorded: the next sender skips them.
            Some(at) => {
                tracing::debug!("Web Push: a retry handed back for another node");
                store
                    .push_handover(user, id, lease, at, escalation.due_ms)
                    .await
            }
            None => store.push_done(user, id, lease).await,
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "Web Push: could not end an escalation");
        }
    }

    /// Push to one subscription until it is sent or given up (`None`), or until `stop` cuts a
    /// wait for a retry or for a turn short: then when that retry is due (Unix ms; now for a
    /// turn).
    #[allow(clippy::too_many_arguments)]
    async fn send_one(
        &self,
        store: &Store,
        user: &str,
        escalation: &Escalation,
        sub: &Subscription,
        payload: &str,
        deadline: u64,
        stop: &Shutdown,
    ) -> Option<u64> {
        let (n, lease) = (&escalation.notification, escalation.lease);
        let metrics = &self.inner.metrics;
        let mut sub = sub.clone();
        let mut backoff = FIRST_BACKOFF;
        let mut least = MIN_RETRY;
        let mut retrying = false;
        loop {
            let (turn, waited) = match self.turn(store, user, escalation, stop).await {
                Ok(turn) => turn,
                Err(handed_back) => return handed_back,
            };
            let ttl = deadline.saturating_sub(now_ms()) / 1000;
            if ttl == 0 {
                self.failed("expired");
                return None;
            }
            // A retry, or a first try that waited for its turn, goes only where the first
            // try would go now: not to a subscription removed or taken by another user
            // meanwhile (the endpoint is then another user's browser), nor for a
            // notification read, seen, archived, snoozed or deleted, nor once the escalation
            // is no longer this sender's (a snooze or an archive dropped it; one begun at a
            // snooze's end is another's).
            // A subscription the user posted again meanwhile (new keys) is retried as it is now.
            let outcome = match retrying || waited {
                false => self.request(&sub, payload, ttl, n).await,
                true => match still_wanted(store, user, escalation, &sub.endpoint).await {
                    Some(Some(now)) => {
                        sub = now;
                        self.request(&sub, payload, ttl, n).await
                    }
                    Some(None) => Outcome::Unwanted,
                    None => Outcome::Retry(None),
                },
            };
            drop(turn);
            retrying = true;
            match outcome {
                Outcome::Sent => {
                    metrics.pushes_sent.inc();
                    // So that a sender taking the escalation over (this one dies before it
                    // is done) does not push here again.
                    if let Err(e) = store.push_sent(user, &n.id, lease, &sub.endpoint).await {
                        tracing::debug!(error = %e, "Web Push: could not record a push sent");
                    }
                    return None;
                }
                Outcome::Gone => {
                    metrics.push_subscriptions_removed.inc();
                    if let Err(e) = store.remove_subscription(user, &sub.endpoint).await {
                        tracing::debug!(error = %e, "Web Push: could not remove a subscription");
                    }
                    return None;
                }
                Outcome::Failed(reason) => {
                    self.failed(reason);
                    return None;
                }
                Outcome::Unwanted => {
                    tracing::debug!("Web Push: a retry no longer wanted was dropped");
                    return None;
                }
                Outcome::Retry(after) => {
                    let left = Duration::from_millis(deadline.saturating_sub(now_ms()));
                    let last = left.checked_sub(LAST_TRY).filter(|last| !last.is_zero());
                    let wait = match (after.map(|after| after.max(least)), last) {
                        // The push service's `Retry-After` is honoured: given up when it
                        // lies past the TTL.
                        (Some(after), _) if after < left => after,
                        // A backoff that would pass the TTL becomes one last try
                        // [`LAST_TRY`] before it.
                        (None, Some(last)) => backoff.min(last),
                        _ => {
                            self.failed("expired");
                            return None;
                        }
                    };
                    let retry_at = tokio::time::Instant::now() + wait;
                    let due_ms = || {
                        let left = retry_at.saturating_duration_since(tokio::time::Instant::now());
                        now_ms() + left.as_millis() as u64
                    };
                    if stop.is_stopping() {
                        return Some(due_ms());
                    }
                    // Keep the escalation ours while waiting.
                    let until = now_ms() + wait.as_millis() as u64 + PUSH_LEASE_MS;
                    if let Ok(false) = store.extend_push_lease(user, &n.id, lease, until).await {
                        tracing::debug!("Web Push: a retry no longer wanted was dropped");
                        return None;
                    }
                    tokio::select! {
                        () = tokio::time::sleep_until(retry_at) => {}
                        () = stop.wait() => return Some(due_ms()),
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    least = (least * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// A turn at one of the node's [`MAX_REQUESTS`] push requests, and whether it had to
    /// wait for it (the escalation's lease renewed meanwhile). `Err(None)`: the escalation is
    /// no longer this sender's; `Err(Some(now))`: `stop` began, hand it back at once.
    async fn turn(
        &self,
        store: &Store,
        user: &str,
        escalation: &Escalation,
        stop: &Shutdown,
    ) -> Result<(SemaphorePermit<'_>, bool), Option<u64>> {
        let requests = &self.inner.requests;
        if let Ok(turn) = requests.try_acquire() {
            return Ok((turn, false));
        }
        let (id, lease) = (&escalation.notification.id, escalation.lease);
        loop {
            let until = now_ms() + PUSH_LEASE_MS;
            match store.extend_push_lease(user, id, lease, until).await {
                Ok(true) => {}
                Ok(false) => return Err(None),
                // Waiting on: should the lease run out, another node takes the escalation
                // and this one's next renewal says so.
                Err(e) => tracing::debug!(error = %e, "Web Push: could not renew a lease"),
            }
            tokio::select! {
                turn = requests.acquire() => return Ok((turn.expect("never closed"), true)),
                () = tokio::time::sleep(Duration::from_millis(PUSH_LEASE_MS / 3)) => {}
                () = stop.wait() => return Err(Some(now_ms())),
            }
        }
    }

    fn failed(&self, reason: &str) {
        let labels = ReasonLabels {
            reason: reason.to_owned(),
        };
        self.inner
            .metrics
            .pushes_failed
            .get_or_create(&labels)
            .inc();
    }

    /// One POST to the subscription's endpoint, of `payload` for `n`.
    async fn request(
        &self,
        sub: &Subscription,
        payload: &str,
        ttl: u64,
        n: &Notification,
    ) -> Outcome {
        let Ok(url) = self.inner.allow.check(&sub.endpoint) else {
            return Outcome::Failed("endpoint_refused");
        };
        let keys = (
            URL_SAFE_NO_PAD.decode(sub.keys.p256dh.trim_end_matches('=')),
            URL_SAFE_NO_PAD.decode(sub.keys.auth.trim_end_matches('=')),
        );
        let (Ok(p256dh), Ok(auth)) = keys else {
            return Outcome::Failed("bad_keys");
        };
        let Ok(body) = ece::encrypt(&p256dh, &auth, payload.as_bytes()) else {
            return Outcome::Failed("encryption");
        };
        let Ok(authorization) = self.inner.vapid.authorization(&origin(&url)) else {
            return Outcome::Failed("vapid");
        };
        let mut request = (self.inner.client.post(url))
            .header("TTL", ttl.to_string())
            .header("Content-Encoding", "aes128gcm")
            .header("Content-Type", "application/octet-stream")
            .header("Urgency", if n.critical { "high" } else { "normal" })
            .header("Authorization", authorization);
        if let Some(key) = &n.collapse_key {
            request = request.header("Topic", topic(key));
        }
        let response = request.body(body).send().await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "Web Push: request failed; retrying");
                return Outcome::Retry(None);
            }
        };
        let status = response.status();
        match status.as_u16() {
            200..=299 => Outcome::Sent,
            404 | 410 => Outcome::Gone,
            429 | 500..=599 => Outcome::Retry(retry_after(response.headers())),
            _ => {
                tracing::warn!(
                    %status,
                    "Web Push: the push service refused a message; check --vapid-subject and \
                     --vapid-private-key (a 401/403 means the push service rejects our VAPID \
                     signature)"
                );
                Outcome::Failed("refused")
            }
        }
    }
}

/// The `Topic` (RFC 8030 §5.4: at most 32 characters of the base64url alphabet) of a
/// notification with `collapse_key`: a push service still holding the message of the
/// notification it replaced for an offline device delivers only the newer one.
fn topic(collapse_key: &str) -> String {
    let mut hash = crate::model::sha256_hex(collapse_key);
    hash.truncate(32);
    hash
}

/// `https://host[:port]`: a VAPID token's audience.
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// `user`'s subscription at `endpoint` as it is now, if it still is theirs and `escalation`
/// still waits to be pushed (its notification active, unseen, unread; its lease still held,
/// and renewed); `None` when the store can't say.
async fn still_wanted(
    store: &Store,
    user: &str,
    escalation: &Escalation,
    endpoint: &str,
) -> Option<Option<Subscription>> {
    let (id, lease) = (&escalation.notification.id, escalation.lease);
    let until = now_ms() + PUSH_LEASE_MS;
    let (notification, subscriptions, held) = tokio::join!(
        store.get(user, id),
        store.subscriptions(user),
        store.extend_push_lease(user, id, lease, until)
    );
    let (notification, subscriptions) = (notification.ok()?, subscriptions.ok()?);
    let pending = held.ok()?
        && notification.is_some_and(|n| {
            let s = &n.state;
            s.read_at.is_none()
                && s.seen_at.is_none()
                && s.archived_at.is_none()
                && s.snoozed_until.is_none()
        });
    let now = subscriptions.into_iter().find(|s| s.endpoint == endpoint);
    Some(now.filter(|_| pending))
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}
