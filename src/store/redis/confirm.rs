//! Tray writes a Redis Cluster replica confirms. A primary that hung until its replica was
//! promoted, then wakes, runs the commands that waited in its sockets as a primary for the
//! instant before it learns it was replaced, answers them, then drops their writes when it
//! resyncs from the new primary. So a write that is answered (a publish, a mark, an action's
//! claim and record) is sent, where its slot's primary has a replica, as a pipeline with
//! `WAIT` behind it on the same connection (`WAIT` covers the writes of its own connection):
//! the woken primary cuts that `WAIT` short (`UNBLOCKED`) when it turns replica, and the
//! write fails (503) instead of being answered as done.

use std::time::Duration;

use redis::{Cmd, RedisResult, Script, Value};
use tokio::time::Instant;

use super::RedisStore;
use crate::redis_conn::{RedisConn, COMMAND_DEADLINE};
use crate::store::keys::UserKeys;

/// Longest wait for the replica to confirm. Confirmed, or not within this time (the replica
/// is down or behind: the primary keeps the write, and writes stop waiting for a while, see
/// [`RedisConn::unconfirmed`]), the write counts as done; refused, it does not. A woken
/// primary learns it was replaced within a few milliseconds; longer waits add up for writes
/// queued behind them on a new primary without a replica yet (docs/redis.md, Scripts).
const REPLICA_CONFIRMS_WITHIN: Duration = Duration::from_millis(50);

impl RedisStore {
    /// `EVALSHA` of `script` on the tray of `k`, with the keys of [`RedisStore::tray`]; the
    /// script's arguments follow. For [`Self::commit`].
    pub(super) fn tray_call(&self, script: &Script, k: &UserKeys) -> Cmd {
        let keys = self.tray_script_keys(k);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash()).arg(keys.len()).arg(keys);
        cmd
    }

    /// Run `call` (an `EVALSHA` of `script` whose keys are all of `k`'s slot) on `conn`,
    /// confirmed by the slot's replica where its primary has one; loads the script into
    /// Redis first when Redis lost it (a restart, `SCRIPT FLUSH`).
    pub(super) async fn commit(
        &self,
        script: &Script,
        call: Cmd,
        k: &UserKeys,
        conn: &mut RedisConn,
    ) -> RedisResult<Value> {
        let call = if self.conn.replicated(k.slot()) {
            let mut pipe = redis::pipe();
            pipe.add_command(call)
                .cmd("WAIT")
                .arg(1)
                .arg(REPLICA_CONFIRMS_WITHIN.as_millis() as u64)
                .ignore_errors();
            Call::Confirmed(pipe)
        } else {
            Call::Plain(call)
        };
        // One deadline for all of it: loading the script and sending the call again get what
        // is left of the first send's, so the answer still comes within a second.
        let until = Instant::now() + COMMAND_DEADLINE;
        match call.send(conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                let again = async {
                    script.load_async(conn).await?;
                    call.send(conn).await
                };
                tokio::time::timeout_at(until, again)
                    .await
                    .unwrap_or_else(|_| Err(timed_out()))
            }
            reply => reply,
        }
    }
}

/// The error of a write that ran out of its deadline (a link failure: 503).
fn timed_out() -> redis::RedisError {
    let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "Redis did not answer in time");
    e.into()
}

/// A tray write as sent: alone, or followed on the same connection by `WAIT` for one replica.
enum Call {
    Plain(Cmd),
    Confirmed(redis::Pipeline),
}

impl Call {
    async fn send(&self, conn: &mut RedisConn) -> RedisResult<Value> {
        let pipe = match self {
            Call::Plain(call) => return call.query_async(conn).await,
            Call::Confirmed(pipe) => pipe,
        };
        let replies: Vec<Value> = pipe.query_async(conn).await?;
        let mut replies = replies.into_iter();
        let reply = replies.next().unwrap_or(Value::Nil).extract_error()?;
        match replies.next() {
            Some(Value::ServerError(e)) => Err(e.into()),
            Some(Value::Int(0)) => {
                // Said once, not by each call that was waiting at the time.
                if conn.unconfirmed() {
                    tracing::info!(
                        "a Redis Cluster replica did not confirm a write within {} ms (down or \
                         resyncing?); writes do not wait for replicas for the next 30 s",
                        REPLICA_CONFIRMS_WITHIN.as_millis()
                    );
                }
                Ok(reply)
            }
            _ => Ok(reply),
        }
    }
}
