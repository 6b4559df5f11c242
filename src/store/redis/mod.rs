//! Redis store: the same surface as the memory store, over the layout in `keys`. Tray writes
//! are Lua scripts that store, log and announce a change atomically per user, on one slot;
//! reads are single commands or pipelines within that slot. A command that fails maps to 503.
//! A publish sends many users per script call and a batch's calls together (see
//! [`RedisStore::publish`]): a 10k-member group is a few round trips, not 10,000.
//! Tray scripts carry a deadline on Redis's clock and refuse to run past it, so a write that
//! was answered 503 (bytes stuck in a network black hole) cannot commit when they arrive. The
//! change log's epoch is drawn here and handed to the scripts, which keep an existing one.
//! On a cluster, the writes that are answered wait for the replica (`confirm`).
//! One file per part of the surface: `sessions`, `publish`, `tray` (pages, marks, actions,
//! preferences), `log` (head and replay), `due`, `push`, `retention`, `groups`, `presence`
//! (with the node's heartbeat); the scripts themselves are in `scripts/`.

use std::sync::Arc;

use redis::{Script, ScriptInvocation};

use super::keys::UserKeys;
use super::nodes::PushPeers;
use crate::error::{Error, Result};
use crate::redis_conn::RedisConn;

mod confirm;
mod due;
mod groups;
mod log;
mod presence;
mod publish;
mod push;
mod retention;
mod sessions;
mod tray;

/// Users per `publish.lua` call: enough to share the script's fixed cost (about a third of a
/// one-user call), few enough that one call holds Redis for a few milliseconds at most.
pub const USERS_PER_SCRIPT: usize = 64;

#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConn,
    scripts: &'static Scripts,
    max_per_user: usize,
    /// This node sends Web Push: notifications that become active escalate, and it sends the
    /// escalations that come due.
    push: bool,
    /// Whether other nodes send Web Push (read at each heartbeat, see [`Self::keep_alive`]).
    /// With Web Push off here, notifications still escalate while one does, or did within
    /// `PUSH_HANDOVER_MS` (it may be restarting), and the due escalations are left to it:
    /// nodes with different Web Push flags, as in a rolling change of them, lose no push.
    push_peers: Arc<PushPeers>,
    /// Presence entries of ended streams whose deletion failed (their shard away): deleted
    /// again at each heartbeat, so a live node leaves no entry behind ([`Self::keep_alive`]).
    unremoved: Arc<std::sync::Mutex<std::collections::BTreeSet<(String, String)>>>,
}

struct Scripts {
    publish: Script,
    mark: Script,
    list: Script,
    counts: Script,
    get: Script,
    due: Script,
    action: Script,
    head: Script,
    rehint: Script,
    trim: Script,
    push: Script,
    subscribed: Script,
}

/// A tray script: `common.lua` (the key layout and the shared steps) and the script's own.
macro_rules! tray_script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("scripts/common.lua"),
            include_str!(concat!("scripts/", $file))
        ))
    };
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        publish: tray_script!("publish.lua"),
        mark: tray_script!("mark.lua"),
        list: tray_script!("list.lua"),
        counts: tray_script!("counts.lua"),
        get: tray_script!("get.lua"),
        due: tray_script!("due.lua"),
        action: tray_script!("action.lua"),
        head: tray_script!("head.lua"),
        rehint: Script::new(include_str!("scripts/rehint.lua")),
        trim: tray_script!("trim.lua"),
        push: tray_script!("push.lua"),
        subscribed: tray_script!("subscribed.lua"),
    })
}

impl RedisStore {
    pub fn new(conn: RedisConn, max_per_user: usize, push: bool) -> Self {
        RedisStore {
            conn,
            scripts: scripts(),
            max_per_user,
            push,
            push_peers: Arc::default(),
            unremoved: Arc::default(),
        }
    }

    /// Some node sends Web Push, so notifications that become active escalate.
    fn escalates(&self) -> bool {
        self.push || self.push_peers.others()
    }

    /// [`Self::escalates`] as the scripts take it.
    fn push_flag(&self) -> &'static str {
        if self.escalates() {
            "1"
        } else {
            "0"
        }
    }

    /// Who sends the due escalations, as `due.lua` takes it: this node, only another one (`w`:
    /// left to it), or none (cancelled).
    fn due_push_flag(&self) -> &'static str {
        match (self.push, self.push_peers.others()) {
            (true, _) => "1",
            (false, true) => "w",
            (false, false) => "0",
        }
    }

    fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// `script` on the tray of `k`, with [`Self::tray_script_keys`].
    fn tray<'a>(&self, script: &'a Script, k: &UserKeys) -> ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        inv.key(self.tray_script_keys(k));
        inv
    }

    /// The keys a tray script declares: the tray's base key, and on a cluster every key of the
    /// tray (`UserKeys::tray_keys`), so a slot migration never runs it against half of them.
    fn tray_script_keys(&self, k: &UserKeys) -> Vec<String> {
        let mut keys = vec![k.base().to_owned()];
        if self.conn.is_cluster() {
            keys.extend(k.tray_keys());
        }
        keys
    }

    /// Changes each time the store's link has a new connection after losing one.
    pub fn reconnections(&self) -> tokio::sync::watch::Receiver<u64> {
        self.conn.reconnections()
    }

    /// Redis answers; on a cluster, one that serves every slot (`cluster_state:ok`: with a
    /// shard down, every node refuses every key until the shard is back or failed over).
    pub async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
        if self.conn.is_cluster() {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut self.conn())
                .await?;
            if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
                return Err(Error::Unavailable(
                    "the Redis Cluster does not serve every slot (cluster_state is not ok)".into(),
                ));
            }
        }
        Ok(())
    }
}

/// A tray script that refused to run past its deadline (see `publish.lua`): 503 like any
/// outage, named in the log.
fn late(e: redis::RedisError) -> Error {
    if e.code() == Some("LATE") {
        Error::Unavailable("Redis ran a tray write after its deadline; refused".into())
    } else {
        e.into()
    }
}
