//! One SSE stream: its state, shared between the hub, which hands it changes, ends and ticks
//! without ever waiting (`hub::Sink`), and its transport, which does all the waiting: the raw
//! socket (`super::socket`, where live changes are written straight from the hub's shared
//! bytes) or hyper's response body (`Handle::next`). `open` admits it, then
//! `queue_opening` sends `retry:` + `ready` and replays after Last-Event-ID. Rule for every edit: subscribe (hub + broker) *before* reading
//! the store, and skip live changes at or below the last seq written; that ordering makes
//! replay gap-free and duplicate-free. Seqs compare only within one epoch: a Last-Event-ID of
//! another epoch (another user's, a lost log's, or not an id at all) gets `reset`, and a live
//! change of another epoch makes the stream ask the store where the log stands.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::Instrument;

pub use super::abort::Abort;
pub use super::admission::Owner;
use super::admission::{admission, announce_opening, session_ended, sid_ended, Admission};
use super::frame;
use super::output::{Output, Written};
use super::wake::Wake;
pub use super::went::Went;
use crate::error::{Error, Result};
use crate::hub::{Delivery, EndReason, Sink};
use crate::model::PresenceEntry;
use crate::model::{now_ms, Epoch, EventId};
use crate::request_id::RequestId;
use crate::shutdown::STOPPING_SEND_TIMEOUT;
use crate::state::AppState;
use crate::store::{Head, Replay, SessionRecord};

/// Range of the reconnect delay each stream suggests in its `retry:` line, in milliseconds.
/// Each stream draws its own, so the clients of a node that shuts down (or of a network
/// blip) come back spread over a second instead of all at once.
pub const RETRY_MS: std::ops::Range<u64> = 1500..2500;
/// Longest a stream runs before it ends at its expiry, in seconds (about 100 years): a token
/// that "never expires" gets a deadline `Instant` can represent.
const MAX_STREAM_SECS: u64 = 100 * 365 * 24 * 3600;
/// Bytes a stream may have waiting for its client (beyond what the kernel's socket buffer
/// holds), held changes included. A live change beyond it ends the stream after what is
/// queued; the client resumes with `Last-Event-ID` and loses nothing.
pub const MAX_BACKLOG_BYTES: usize = 1024 * 1024;
/// Live changes a stream holds while a catch-up from the store is due; beyond it the stream
/// ends (the store is away for long) and the client resumes later.
const MAX_HELD: usize = 1024;
/// Wait before a failed catch-up is tried again (the store is away).
pub const CATCH_UP_RETRY: Duration = Duration::from_secs(1);
/// Longest a stream's opening may take to read the store and broker (subscribe, presence,
/// head, replay) once its turn comes, before it is refused with 503; while the store fails,
/// longest from the request's arrival, its turn's wait included: the answer comes within a
/// second when Redis is away, as every request's does.
const OPEN_DEADLINE: Duration = Duration::from_millis(850);
/// How a stream's bytes reach its client, as `herald_streams_open_by_transport` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain HTTP/1.x held on the raw socket (`super::socket`).
    Socket,
    /// hyper's response body over HTTP/1.1 (HTTPS, or a connection's later request).
    Http1,
    /// hyper's response body over HTTP/2 (HTTPS).
    Http2,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Socket => "socket",
            Transport::Http1 => "http1",
            Transport::Http2 => "http2",
        }
    }
}

pub struct Stream {
    state: AppState,
    user: String,
    id: u64,
    request_id: RequestId,
    /// The session's public id, checked after the broker was away (`ended_meanwhile`).
    session: Option<Box<str>>,
    /// The record of a session kept in the store (see [`Owner::record`]), which a logout
    /// ends, and which the node puts back if Redis loses it.
    record: Option<Box<SessionRecord>>,
    carrier: Option<Abort>,
    inner: Mutex<Inner>,
    /// Wakes the transport: something to write, a catch-up due, or the end.
    wake: Wake,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// Write what is queued (and the end of the response), then close.
    Ending,
    /// Close now: the socket failed or the client stopped reading.
    Over,
}

struct Inner {
    out: Output,
    /// The position of the last change written (or skipped as already seen by the client).
    last: EventId,
    /// The commit time of that change (0: unknown, after a reset or a resume at the head).
    last_ms: u64,
    /// Its [`Delivery::print`] (0: unknown): the catch-up checks it against the log, to
    /// notice a log that went back.
    last_print: u64,
    /// `Some` while a catch-up from the store is due (or the opening frames are not queued
    /// yet): live changes wait here.
    held: Option<Vec<Delivery>>,
    /// A broker outage asked for a catch-up (`Sink::catch_up`) that has not begun yet: it
    /// checks for a missed end first, and one asked for while a catch-up or the opening reads
    /// the store runs after it (what the broker missed may be newer than that read).
    recheck: bool,
    /// True until the opening frames are queued: ticks wait, and an end waits in
    /// `deferred_end` (with its last event, if any), so `ready` always comes first.
    opening: bool,
    deferred_end: Option<Option<Bytes>>,
    phase: Phase,
    /// When the stream last wrote anything: pings go only to streams quiet for a heartbeat
    /// less a tick (`Config::ping_after`).
    quiet_since: Instant,
    expires: Instant,
    /// Set when a transport takes the stream; counted in the gauge until the handle drops.
    transport: Option<Transport>,
}

/// What the transport should do next.
pub enum Work {
    /// (Body transport) write these bytes.
    Frame(Bytes),
    /// (Socket transport) wait until the socket takes more, then `flush`.
    Flush,
    /// Fetch what the stream missed from the store (`catch_up`).
    CatchUp,
    /// Nothing to do until woken (or the client goes).
    Idle,
    /// The stream is over.
    Close,
}

impl Stream {
    /// Register with the hub and broker, then queue the opening frames: `retry:`, `ready`, and
    /// the replay (or `reset`) when `resume` carries a Last-Event-ID. `None` when the user
    /// already has `--max-streams-per-user` streams, here or (Redis) on all nodes together.
    /// The stream starts on the body transport; the socket transport takes it over with
    /// `Handle::attach`.
    pub async fn open(
        state: &AppState,
        owner: Owner,
        resume: Option<&str>,
    ) -> Result<Option<Handle>> {
        // Everything that could fail happens before the hub registration; after it, dropping
        // the handle undoes the registration.
        let now = Instant::now();
        let expires = expiry(owner.ends_ms, now);
        let hub = &state.hub;
        let by = owner.arrived + OPEN_DEADLINE;
        let Some(_opening) = state.opening.take(by).await else {
            return Err(Error::Unavailable(
                "no turn to open the stream in time (the store fails)".into(),
            ));
        };
        if owner.went() {
            return Err(Error::ClientClosed);
        }
        let stream = Arc::new(Stream {
            state: state.clone(),
            user: owner.user.clone(),
            id: hub.next_id(),
            request_id: owner.request_id.clone(),
            session: owner.session.as_deref().map(Box::from),
            record: owner.record.clone(),
            carrier: owner.carrier.clone(),
            inner: Mutex::new(Inner {
                out: Output::body(),
                // Set from the head or the resumed id below, before any change is read.
                last: EventId {
                    epoch: Epoch::random(),
                    seq: 0,
                },
                last_ms: 0,
                last_print: 0,
                // Live changes and ends wait until the opening frames are queued.
                held: Some(Vec::new()),
                recheck: false,
                opening: true,
                deferred_end: None,
                phase: Phase::Open,
                quiet_since: now,
                expires,
                transport: None,
            }),
            wake: Wake::default(),
        });
        let unit = (owner.session.as_deref(), owner.tab.as_deref());
        let max = state.config.max_streams_per_user;
        // One instant orders this stream among its unit's everywhere: hub, presence, message.
        let since = std::time::SystemTime::now();
        if !hub.register(&owner.user, unit, max, stream.id, since, stream.clone()) {
            return Ok(None);
        }
        let handle = Handle(stream);
        if state.shutdown.is_stopping() {
            handle.0.end(EndReason::Shutdown);
        }
        let presence = PresenceEntry {
            stream: hub.stream_key(handle.0.id),
            session: owner.session.clone(),
            tab: owner.tab.clone(),
            node: hub.node().to_owned(),
            since: crate::model::presence_since(since),
        };
        let admit = admission(state, &owner, &presence, max);
        // A Last-Event-ID that is no event id (a legacy plain number, garbage) resumes nothing.
        let after = resume.and_then(EventId::parse);
        let reads = async {
            state.broker.subscribe(&owner.user).await?;
            let (admission, opened) = tokio::join!(admit, state.store.open_at(&owner.user, after));
            Ok::<_, Error>((admission?, opened?))
        };
        // One deadline for the reads, as for any request while Redis is away (each command
        // has its own, and they take several round trips in turn).
        let reads_by = match state.opening.failed_last() {
            true => by,
            false => by.max(Instant::now() + OPEN_DEADLINE),
        };
        let read = tokio::time::timeout_at(reads_by, reads)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Unavailable(
                    "the stream's opening ran out of time".into(),
                ))
            });
        state
            .opening
            .note(!matches!(read, Err(Error::Unavailable(_))));
        let (admission, (head, replay)) = read?;
        match admission {
            // Its unit's older streams end once it opens, here and (announced) elsewhere: a
            // stream refused (503) ends none.
            // A client that went meanwhile replaces nothing (dropping the handle undoes it).
            Admission::Open if owner.went() => return Err(Error::ClientClosed),
            Admission::Open => {
                if let Some(session) = &owner.session {
                    let opened = hub.opened(handle.0.id, since);
                    let open = crate::broker::Message::Open {
                        from: hub.sender().to_owned(),
                        session: session.clone(),
                        tab: owner.tab.clone(),
                        opened: opened.clone(),
                    };
                    let stream = Arc::downgrade(&handle.0);
                    let open_yet = move || stream.upgrade().is_some_and(|s| s.is_open());
                    announce_opening(state, &owner.user, open, reads_by, open_yet).await;
                    hub.end_replaced(&owner.user, session, owner.tab.as_deref(), &opened);
                }
            }
            Admission::Ended(reason) => hub.end_one(&owner.user, handle.0.id, reason),
            // Dropping the handle takes the stream out of the hub and its presence entry away.
            Admission::Full => return Ok(None),
        }
        // The store resets an id of another epoch (another user's log, or a lost one).
        let replay = after.zip(replay);
        handle.0.queue_opening(&head, resume.is_some(), replay);
        Ok(Some(handle))
    }

    /// Queue the opening frames (`retry:` and `ready`, then the replay after the resumed id,
    /// or `reset` when there is none to replay from), then what arrived meanwhile, and let
    /// live changes and ends through.
    fn queue_opening(&self, head: &Head, resumed: bool, replay: Option<(EventId, Replay)>) {
        let ready = |id: EventId| {
            let data = serde_json::json!({
                "user": self.user, "session": self.session, "unread_count": head.unread_count,
                "unseen_count": head.unseen_count,
            });
            // `retry:` shares the first block with `ready`, so even naive parsers see both first.
            let event = frame::event(Some(id), "ready", &data.to_string());
            let retry = rand::random_range(RETRY_MS);
            Bytes::from([frame::retry(retry).as_bytes(), &event].concat())
        };
        let mut g = self.lock();
        match replay {
            None if !resumed => {
                g.send(ready(head.id()));
                g.last = head.id();
            }
            Some((after, Replay::Changes(changes))) => {
                g.send(ready(after));
                g.last = after;
                for c in &changes {
                    self.push_change(&mut g, &Delivery::new(c), false);
                }
            }
            // Not an event id (a legacy plain number, garbage, non-ASCII), or one the store
            // no longer has: never replay from it.
            _ => {
                g.send(ready(head.id()));
                g.reset(head);
            }
        }
        // What arrived meanwhile: written now if it follows on, else fetched by a catch-up,
        // as it is after a broker outage meanwhile (see `recheck`).
        let held = g.held.take().unwrap_or_default();
        for d in &held {
            self.on_change(&mut g, d);
        }
        if g.recheck {
            g.held.get_or_insert_with(Vec::new);
        }
        g.opening = false;
        if let Some(last) = g.deferred_end.take() {
            g.end(last);
        }
        drop(g);
        self.wake.wake();
    }

    /// The log span of the request that opened the stream, for the lines the stream logs
    /// outside it (from the hub, or later on its transport). Made only to log: a stream
    /// holds no span while idle.
    fn span(&self) -> tracing::Span {
        self.request_id.span()
    }

    /// Say why the stream ends early, in its request's span; its user only at debug.
    fn log_end(&self, why: &str) {
        self.span().in_scope(|| {
            tracing::info!("{why}; ending the stream");
            tracing::debug!(user = %self.user, "the stream's user");
        });
    }

    /// Whether the stream is open (not ending or over).
    fn is_open(&self) -> bool {
        self.lock().phase == Phase::Open
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write a change unless already written. Only `live` deliveries count in the
    /// publish-to-delivery latency: those to an open stream, straight from a commit or
    /// fetched by a catch-up (after a gap, or an outage: that delay is Herald's), not the
    /// opening's replay (its age is the client's absence).
    fn push_change(&self, g: &mut Inner, d: &Delivery, live: bool) {
        if d.epoch != g.last.epoch || d.seq <= g.last.seq {
            return;
        }
        g.send(d.frame.clone());
        g.last.seq = d.seq;
        g.last_ms = d.at_ms;
        g.last_print = d.print;
        let metrics = &self.state.metrics;
        metrics.events_delivered.inc();
        if live && d.at_ms > 0 {
            metrics
                .delivery_latency
                .observe(now_ms().saturating_sub(d.at_ms) as f64 / 1000.0);
        }
    }

    /// A live change: written when it follows the last one; a gap, or a change of another
    /// epoch (the log restarted, or a late one of a log this stream left), makes the stream
    /// hold it and ask the store where the log stands.
    fn on_change(&self, g: &mut Inner, d: &Delivery) {
        if let Some(held) = &mut g.held {
            held.push(d.clone());
            if held.len() > MAX_HELD {
                self.log_end("store away too long for a catch-up");
                g.end(None);
            }
        } else if d.epoch != g.last.epoch || d.seq > g.last.seq + 1 || g.went_back(d) {
            g.held = Some(vec![d.clone()]);
        } else {
            self.push_change(g, d, true);
        }
    }

    /// Fetch from the store what came after the last change written, then what was held
    /// meanwhile. On failure the catch-up stays due; the transport tries again later.
    pub async fn catch_up(&self) -> Result<()> {
        // Taken now: one asked for from here on runs after this one.
        let recheck = std::mem::take(&mut self.lock().recheck);
        if recheck {
            match self.ended_meanwhile().await {
                Ok(None) => {}
                Ok(Some(end)) => {
                    self.end(end);
                    return Ok(());
                }
                Err(e) => {
                    self.lock().recheck = true;
                    return Err(e);
                }
            }
        }
        let (after, after_print) = {
            let g = self.lock();
            (g.last, g.last_print)
        };
        let head = match self
            .state
            .store
            .replay(&self.user, after, after_print)
            .await?
        {
            // All committed after the opening's read: the stream was open for each.
            Replay::Changes(changes) => {
                let mut g = self.lock();
                for c in &changes {
                    self.push_change(&mut g, &Delivery::new(c), true);
                }
                None
            }
            Replay::Reset => Some(self.state.store.head(&self.user).await?),
        };
        let mut g = self.lock();
        if let Some(head) = head {
            g.reset(&head);
        }
        // A broker outage meanwhile may have lost a change newer than the read: what was held
        // stays held, for one more read.
        if g.recheck {
            return Ok(());
        }
        let held = g.held.take().unwrap_or_default();
        for d in &held {
            self.push_change(&mut g, d, true);
        }
        self.bound_backlog(&mut g);
        Ok(())
    }

    /// A client that reads too slowly is cut off once its backlog passes the bound: it
    /// resumes from the last change it read. What the stream holds for a catch-up counts
    /// too: a stalled client's writer, waiting for the socket, does not run the catch-up.
    fn bound_backlog(&self, g: &mut Inner) {
        let held = (g.held.iter().flatten())
            .map(|d| d.frame.len())
            .sum::<usize>();
        if g.phase == Phase::Open && g.out.backlog() + held > MAX_BACKLOG_BYTES {
            self.log_end("stream backlog full (the client reads too slowly)");
            self.state.metrics.streams_overflowed.inc();
            g.end(None);
            if let Some(carrier) = &self.carrier {
                carrier.abort();
            }
        }
    }

    /// After a broker outage, what this node may have missed, since controls are not in the
    /// change log: a logout elsewhere (the session's mark; a browser session that Redis lost
    /// with its data is put back instead), or a newer stream of this stream's session and tab
    /// opened on another node (its presence entry replaces ours). An error leaves the check
    /// due, for the next try.
    async fn ended_meanwhile(&self) -> Result<Option<EndReason>> {
        let store = &self.state.store;
        let Some(session) = self.session.as_deref() else {
            return Ok(None);
        };
        if let Some(record) = &self.record {
            if session_ended(store, session, record, true).await? {
                return Ok(Some(EndReason::Revoked));
            }
        }
        if !store.keeps_presence() {
            return Ok(None);
        }
        // Ours as this node's hub holds it: its stored entry may be gone (dropped while this
        // node was away from Redis, or with Redis's data) and not written back yet.
        let key = self.state.hub.stream_key(self.id);
        let ours = self.state.hub.presence(&self.user);
        let Some(ours) = ours.into_iter().find(|e| e.stream == key) else {
            return Ok(None);
        };
        if self.record.is_none() && sid_ended(store, &self.user, session, &ours).await? {
            return Ok(Some(EndReason::Revoked));
        }
        let entries = store.presence(&self.user).await?;
        let replaced = entries.iter().any(|e| e.replaces(&ours));
        Ok(replaced.then_some(EndReason::Replaced))
    }

    /// What the transport should do next.
    pub fn work(&self) -> Work {
        let mut g = self.lock();
        if g.phase == Phase::Over {
            return Work::Close;
        }
        if let Some(frame) = g.out.pull() {
            return Work::Frame(frame);
        }
        if g.out.is_backed_up() {
            return Work::Flush;
        }
        match g.phase {
            Phase::Open if g.held.is_some() => Work::CatchUp,
            Phase::Open => Work::Idle,
            _ => Work::Close,
        }
    }

    /// Until something changes: a frame, a catch-up due, or the end.
    pub async fn woken(&self) {
        self.wake.woken().await
    }

    /// Ready once something changed (as `woken`, for a transport that polls it beside its
    /// socket).
    pub fn poll_woken(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.wake.poll(cx)
    }
}

/// When a stream (or tail) whose credentials end at `end_ms` (Unix ms) ends, as an `Instant`
/// after `now`.
pub fn expiry(end_ms: u64, now: Instant) -> Instant {
    // From the clock's milliseconds: whole seconds would end it up to a second late.
    let left = Duration::from_millis(end_ms.saturating_sub(now_ms()));
    now.checked_add(left.min(Duration::from_secs(MAX_STREAM_SECS)))
        .unwrap_or(now)
}

/// What the node's tick needs of an open stream or tail (their locked state).
pub(super) trait Ticked {
    /// (expiry, quiet since, whether its writes are backed up).
    fn clock(&self) -> (Instant, Instant, bool);
    fn send(&mut self, bytes: Bytes);
    fn end(&mut self, last: Option<Bytes>);
}

/// The one tick rule for an open stream or tail (its locked state `g`): past its expiry it
/// ends with `revoked`; quiet for `ping_after` (`Config::ping_after`: a heartbeat less a
/// tick) and keeping up with its writes, it gets a `: ping`. Either wakes its writer once the
/// lock is let go. Returns when it next needs a tick: at its expiry or `ping_after` after its
/// last write, whichever comes first (`None` once it ended).
pub(super) fn tick<T: Ticked>(
    mut g: MutexGuard<'_, T>,
    wake: &Wake,
    now: Instant,
    ping_after: Duration,
) -> Option<Instant> {
    let (expires, quiet_since, backed_up) = g.clock();
    let ended = now >= expires;
    let ping = !ended && now.saturating_duration_since(quiet_since) >= ping_after && !backed_up;
    if ended {
        g.end(Some(frame::event(
            None,
            "revoked",
            r#"{"reason":"expired"}"#,
        )));
    } else if ping {
        g.send(Bytes::from_static(frame::PING));
    }
    // After a ping, counted from its write.
    let (_, quiet_since, _) = g.clock();
    drop(g);
    if ended || ping {
        wake.wake();
    }
    if ended {
        return None;
    }
    Some(
        quiet_since
            .checked_add(ping_after)
            .map_or(expires, |at| at.min(expires)),
    )
}

impl Ticked for Inner {
    fn clock(&self) -> (Instant, Instant, bool) {
        (self.expires, self.quiet_since, self.out.is_backed_up())
    }
    fn send(&mut self, bytes: Bytes) {
        Inner::send(self, bytes)
    }
    fn end(&mut self, last: Option<Bytes>) {
        Inner::end(self, last)
    }
}

impl Inner {
    /// Whether live change `d`, at or before the last change written, shows that the log
    /// went back under this stream (a Redis Cluster primary that hung until its replica took
    /// over ran writes the new primary never had, and this stream delivered their
    /// announcements: the new primary hands those positions out again). The last change's
    /// own position announced with another print (another change), or an earlier position
    /// committed after it, cannot come from one log. Commit times are the publishing node's
    /// clock, so the second can also be clocks apart: the catch-up it asks for then finds the
    /// log whole.
    fn went_back(&self, d: &Delivery) -> bool {
        if d.epoch != self.last.epoch {
            return false;
        }
        let printed = self.last_print != 0 && d.print != 0;
        let timed = self.last_ms != 0 && d.at_ms != 0;
        (d.seq == self.last.seq && printed && d.print != self.last_print)
            || (d.seq < self.last.seq && timed && d.at_ms > self.last_ms)
    }

    /// Write (or queue) `bytes`; a socket that fails makes the stream over.
    fn send(&mut self, bytes: Bytes) {
        if self.phase != Phase::Open {
            return;
        }
        self.quiet_since = Instant::now();
        if self.out.send(bytes) == Written::Failed {
            self.phase = Phase::Over;
        }
    }

    /// The client's position is unknown here: it must refetch. Carries on from `head`.
    fn reset(&mut self, head: &Head) {
        let data = serde_json::json!({
            "unread_count": head.unread_count, "unseen_count": head.unseen_count,
        })
        .to_string();
        self.send(frame::event(Some(head.id()), "reset", &data));
        self.last = head.id();
        self.last_ms = 0;
        self.last_print = 0;
    }

    /// End after `last` (the stream's last event) and what is queued.
    fn end(&mut self, last: Option<Bytes>) {
        if self.opening {
            self.deferred_end.get_or_insert(last);
            return;
        }
        if self.phase != Phase::Open {
            return;
        }
        if let Some(frame) = last {
            self.send(frame);
        }
        if self.phase == Phase::Open {
            self.phase = Phase::Ending;
            if self.out.finish() == Written::Failed {
                self.phase = Phase::Over;
            }
        }
    }
}

impl Sink for Stream {
    fn deliver(&self, d: &Delivery) -> bool {
        let mut g = self.lock();
        if g.phase != Phase::Open {
            return false;
        }
        self.on_change(&mut g, d);
        self.bound_backlog(&mut g);
        let open = g.phase == Phase::Open;
        // The transport is woken only when it has something to do: bytes waiting (a body
        // always, a socket only when full), a catch-up due, or the end.
        let wake = !open || g.held.is_some() || g.out.is_backed_up();
        drop(g);
        if wake {
            self.wake.wake();
        }
        open
    }

    fn end(&self, reason: EndReason) {
        let last = match reason {
            EndReason::Replaced => Some(frame::event(None, "replaced", "{}")),
            EndReason::Revoked => Some(frame::event(None, "revoked", r#"{"reason":"logout"}"#)),
            EndReason::Shutdown => None,
        };
        self.lock().end(last);
        self.wake.wake();
        // Over hyper what is queued may never be taken (an HTTP/2 client that grants no
        // window): dropped a moment after the stop, so the drain waits for no such client.
        if let (EndReason::Shutdown, Some(carrier)) = (reason, self.carrier.clone()) {
            tokio::spawn(async move {
                tokio::time::sleep(STOPPING_SEND_TIMEOUT).await;
                carrier.abort();
            });
        }
    }

    fn catch_up(&self) {
        let mut g = self.lock();
        g.recheck = true;
        if g.phase == Phase::Open && g.held.is_none() {
            g.held = Some(Vec::new());
            drop(g);
            self.wake.wake();
        }
    }

    fn tick(&self, now: Instant) -> Option<Instant> {
        let g = self.lock();
        if g.phase != Phase::Open {
            return None;
        }
        if g.opening {
            // Ticked again at the next tick.
            return Some(now);
        }
        tick(g, &self.wake, now, self.state.config.ping_after())
    }
}

/// The transport's hold on a stream: dropping it (the client went, the stream ended) takes
/// the stream out of the hub, the broker and presence.
pub struct Handle(Arc<Stream>);

impl Handle {
    /// Hand the stream to the socket transport: from here on frames are written to `io`
    /// directly (chunk-framed when `chunked`), starting with what is queued.
    pub fn attach(&self, io: Arc<tokio::net::TcpStream>, chunked: bool) {
        self.count_as(Transport::Socket);
        let mut g = self.0.lock();
        if g.phase == Phase::Over {
            return;
        }
        if g.out.attach(io, chunked) == Written::Failed {
            g.phase = Phase::Over;
        }
        if g.phase == Phase::Ending && g.out.finish() == Written::Failed {
            g.phase = Phase::Over;
        }
    }

    /// Count the stream as carried by `transport` (once; the gauge drops with the handle).
    pub fn count_as(&self, transport: Transport) {
        let mut g = self.0.lock();
        if g.transport.is_none() {
            g.transport = Some(transport);
            self.0
                .state
                .metrics
                .streams_by_transport(transport.label())
                .inc();
        }
    }

    /// (Socket transport) write what is queued, as far as the socket takes it.
    pub fn flush(&self) {
        let mut g = self.0.lock();
        if g.out.flush() == Written::Failed {
            g.phase = Phase::Over;
        }
    }

    /// (Body transport) the next bytes to write, or `None` when the stream is over.
    pub async fn next(&self) -> Option<Bytes> {
        loop {
            match self.0.work() {
                Work::Frame(bytes) => return Some(bytes),
                Work::Close => return None,
                Work::CatchUp => self.catch_up_or_wait().await,
                Work::Idle | Work::Flush => self.0.woken().await,
            }
        }
    }

    /// Catch up; when the store is away, wait a while (or until woken) before the next try.
    pub async fn catch_up_or_wait(&self) {
        let span = self.0.span();
        if let Err(e) = self.0.catch_up().instrument(span.clone()).await {
            span.in_scope(|| {
                tracing::debug!(error = %e, user = %self.0.user, "catch-up failed; trying again")
            });
            let _ = tokio::time::timeout(CATCH_UP_RETRY, self.0.woken()).await;
        }
    }

    pub fn stream(&self) -> &Stream {
        &self.0
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let s = &self.0;
        let transport = {
            let mut g = s.lock();
            g.phase = Phase::Over;
            g.out.close();
            g.transport.take()
        };
        if let Some(transport) = transport {
            s.state
                .metrics
                .streams_by_transport(transport.label())
                .dec();
        }
        let state = &s.state;
        if state.hub.remove(&s.user, s.id) {
            state.broker.unsubscribe(&s.user);
        }
        // The memory store reads presence from the hub; Redis holds an entry to delete.
        let runtime = tokio::runtime::Handle::try_current();
        if let (true, Ok(runtime)) = (state.store.keeps_presence(), runtime) {
            let (state, user, key) = (state.clone(), s.user.clone(), state.hub.stream_key(s.id));
            runtime.spawn(async move {
                // In turn with the opening streams: when every stream of a node drops at once,
                // their deletions must not queue past the store's deadlines either.
                let _turn = state.opening.wait().await;
                let removed = state.store.remove_presence(&user, &key).await;
                (state.opening).note(!matches!(removed, Err(Error::Unavailable(_))));
            });
        }
    }
}
