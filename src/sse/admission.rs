//! Whether an opening stream may open: who it belongs to ([`Owner`]), what it finds of its
//! session and of its unit's and user's other streams ([`admission`]), and the announcement
//! that ends its unit's older streams on other nodes.

use std::time::Duration;

use tokio::time::Instant;

use super::abort::Abort;
use super::went::Went;
use crate::broker::Message;
use crate::error::Result;
use crate::hub::EndReason;
use crate::model::PresenceEntry;
use crate::request_id::RequestId;
use crate::state::AppState;
use crate::store::{SessionRecord, SessionState, Store};

/// The least wait for an opening's announcement once its reads are done (then it is sent
/// again in the background).
const ANNOUNCE_LEAST: Duration = Duration::from_millis(100);

/// What an opening stream found of its unit's and user's other streams.
pub(super) enum Admission {
    Open,
    /// It opens and ends at once: its session ended, or a newer stream of its unit opened.
    Ended(EndReason),
    /// The user's streams on every node are past `--max-streams-per-user`.
    Full,
}

/// Who the stream belongs to.
pub struct Owner {
    pub user: String,
    /// The session's public id; `None` for a Bearer token without `sid`.
    pub session: Option<String>,
    /// The record of a browser session kept in the store (a cookie's), as read when the
    /// stream opened; `None` for a token's `sid`.
    pub record: Option<Box<SessionRecord>>,
    pub tab: Option<String>,
    /// When the token or session ends, Unix ms (`--jwt-leeway` included).
    pub ends_ms: u64,
    /// The `/events` request that opened it: the stream's own log lines carry it too.
    pub request_id: RequestId,
    /// What carries it over hyper (its HTTP/2 stream, or its HTTPS/1.1 connection), to drop
    /// if the stream's backlog overflows.
    pub carrier: Option<Abort>,
    /// Marked when its plain HTTP/1.x client closed the connection before the stream opened.
    pub went: Option<Went>,
    /// When its request arrived: while the store fails, the answer is due
    /// `stream::OPEN_DEADLINE` after it.
    pub arrived: Instant,
}

impl Owner {
    pub(super) fn went(&self) -> bool {
        self.went.as_ref().is_some_and(Went::is_marked)
    }
}

/// Tell the other nodes that a stream opened (`open`), so they end its unit's older streams.
/// The stream opens either way: a 503 would not take back an announcement that ran out of
/// time (the connection may still send it), so one that fails, or is not answered by
/// `reads_by` (at least [`ANNOUNCE_LEAST`] from now), is sent again in the background while
/// the stream is open (`open_yet`), and a refused opening never replaces a stream.
pub(super) async fn announce_opening(
    state: &AppState,
    user: &str,
    open: Message,
    reads_by: Instant,
    open_yet: impl Fn() -> bool + Send + 'static,
) {
    let by = reads_by.max(Instant::now() + ANNOUNCE_LEAST);
    let sent = tokio::time::timeout_at(by, state.broker.announce(user, &open)).await;
    if matches!(sent, Ok(Ok(()))) {
        return;
    }
    tracing::debug!("an opening's announcement is late: sent again");
    let stop = state.shutdown.clone();
    let again = state
        .broker
        .clone()
        .announce_until_sent(user.to_owned(), open, stop, open_yet);
    tokio::spawn(again);
}

/// Records the opening stream's presence, then reads whether it may open: its session may
/// have ended before it subscribed, a newer stream of its unit may have been recorded
/// meanwhile (Redis), or the user may have `max` streams on all nodes together.
pub(super) async fn admission(
    state: &AppState,
    owner: &Owner,
    presence: &PresenceEntry,
    max: usize,
) -> Result<Admission> {
    // Of two streams of a unit opened at once on two nodes, the one recorded second finds
    // the other here; the one recorded first is subscribed before the other announces.
    let recorded = state.store.add_presence(&owner.user, presence).await;
    if let Err(e) = &recorded {
        tracing::debug!(error = %e, "presence not recorded");
    }
    // A logout that ran before this stream subscribed announced its end before we
    // could hear it: the session has ended by now. One that ends it after this read
    // announces the end again then, which this stream hears. (The record was read
    // just now: one gone already is not put back.)
    if let Some(session) = &owner.session {
        let ended = match &owner.record {
            Some(record) => session_ended(&state.store, session, record, false).await?,
            None => sid_ended(&state.store, &owner.user, session, presence).await?,
        };
        if ended {
            return Ok(Admission::Ended(EndReason::Revoked));
        }
    }
    let (Ok(before), true) = (recorded, state.store.keeps_presence()) else {
        return Ok(Admission::Open);
    };
    // A session's stream reads the user's streams on every node: a newer one of its
    // unit, recorded meanwhile, ends it.
    if owner.session.is_some() {
        match state.store.presence(&owner.user).await {
            Ok(entries) if entries.iter().any(|e| e.replaces(presence)) => {
                return Ok(Admission::Ended(EndReason::Replaced));
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "presence not read"),
        }
    }
    // The limit on every node (the hub counts only this node's streams): the entries
    // recorded before this one's, once they could reach it, less those of dead nodes.
    if before.len() >= max {
        match state.store.live_entries(&owner.user, before).await {
            Ok(live) if !presence.fits_after(&live, max) => return Ok(Admission::Full),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "presence not read"),
        }
    }
    Ok(Admission::Open)
}

/// Whether the browser session `id`, which a stream holds as `record`, has ended: logged
/// out, ended by the per-user cap, or past its end. With `restore`, one that Redis lost with
/// its data is put back as the stream holds it, so that its streams stay open and its cookie
/// goes on working.
pub(super) async fn session_ended(
    store: &Store,
    id: &str,
    record: &SessionRecord,
    restore: bool,
) -> Result<bool> {
    match store.session_state(id).await? {
        SessionState::Live => Ok(false),
        SessionState::Lost if restore && record.is_live() => {
            if store.restore_session(id, record).await? {
                tracing::info!(session = id, "session lost with Redis's data: put back");
                return Ok(false);
            }
            // Something took its place meanwhile: a logout's end, or another node's write-back.
            Ok(store.session_state(id).await? != SessionState::Live)
        }
        SessionState::Lost | SessionState::Ended => Ok(true),
    }
}

/// Whether `user`'s token session `sid` was logged out after the stream `ours` opened (the
/// token stays valid: a stream opened since stays). The two times come from the clocks of
/// the nodes that took the logout and the stream.
pub(super) async fn sid_ended(
    store: &Store,
    user: &str,
    sid: &str,
    ours: &PresenceEntry,
) -> Result<bool> {
    let ended = store.token_session_ended(user, sid).await?;
    Ok(ended.is_some_and(|at| at >= ours.since))
}
