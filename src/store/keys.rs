//! The Redis key layout, in one place (documented in docs/redis.md). Every key and the change
//! channel of a user share the hash tag `{u:<user>}`, so one user lives in one cluster slot:
//! scripts touch one slot, and the sharded pub/sub channel goes to the node holding the data.
//! User ids are escaped (`%`, `{`, `}`) so a user id can never end or forge a hash tag; other
//! caller-supplied parts (idempotency keys) are hashed, so no key of one kind can take the
//! shape of another (and scans match only what they look for).

use std::borrow::Cow;

use redis::cluster_routing::Slot;
use redis::{Cmd, RedisWrite};

pub const PREFIX: &str = "herald:";

fn escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '{', '}']) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.replace('%', "%25")
            .replace('{', "%7B")
            .replace('}', "%7D"),
    )
}

fn unescape(s: &str) -> String {
    s.replace("%7D", "}")
        .replace("%7B", "{")
        .replace("%25", "%")
}

/// The keys of one user.
pub struct UserKeys {
    base: String,
}

impl UserKeys {
    pub fn new(user: &str) -> Self {
        UserKeys {
            base: format!("{PREFIX}{{u:{}}}", escape(user)),
        }
    }
    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.base)
    }
    /// The prefix of every key of this user, itself a key name in the user's slot: the tray
    /// scripts take it as their KEYS entry and add the suffixes below (`common.lua`).
    pub fn base(&self) -> &str {
        &self.base
    }
    // The tray's keys (`unread`, `unseen`, `items`, the state HASHes, `wake`, `expire`, ...)
    // and the change log's (`seq`, `changes`) are named in the scripts (`common.lua`;
    // docs/redis.md lists them all) and in `TRAY_SUFFIXES`; `order` is here too, for the
    // retention cleaner.
    /// STRING: the change log's epoch, 12 hex chars, the tag of every event id. Created with
    /// `SET NX` by the first commit or head read; a Redis that lost its data draws a new one.
    pub fn epoch(&self) -> String {
        self.key("epoch")
    }
    /// ZSET: every id of the tray, in creation order (the retention cleaner reads it).
    pub fn order(&self) -> String {
        self.key("order")
    }
    /// ZSET of the user's browser sessions: public id → creation time (µs), oldest first.
    pub fn sessions(&self) -> String {
        self.key("sessions")
    }
    /// STRING: when the user's token session `sid` (a Bearer token's `sid` claim, hashed)
    /// was logged out, as a presence entry's `since`; it expires with the token.
    pub fn sid_ended(&self, sid: &str) -> String {
        self.key(&format!("sid-ended:{}", crate::model::sha256_hex(sid)))
    }
    /// HASH stream key → presence JSON {session, node, since}.
    pub fn presence(&self) -> String {
        self.key("presence")
    }
    /// HASH category → `1` (muted) or `0` (not muted): the user's preferences.
    pub fn preferences(&self) -> String {
        self.key("prefs")
    }
    /// Sharded pub/sub channel of the user's changes and stream controls.
    pub fn channel(&self) -> String {
        self.key("ch")
    }
    /// The base key written straight into `cmd`'s arguments, then, when the publish has one,
    /// the idempotency key `idem:<hash>`: STRING → notification id, expiring after 24 h.
    /// `hash` is [`crate::model::sha256_hex`] of the caller's key: any text, fixed length,
    /// never another key's shape.
    pub fn write_publish(&self, cmd: &mut Cmd, idempotency: Option<&str>) {
        cmd.arg(&self.base);
        if let Some(hash) = idempotency {
            cmd.write_arg_fmt(format_args!("{}:idem:{hash}", self.base));
        }
    }
    /// Every key a tray script may touch (the base key's suffixes in `common.lua`), for a
    /// cluster, where a script declares them all after the base key: while a slot migrates,
    /// Redis then answers `TRYAGAIN` for a user whose keys are split between the two nodes
    /// (the client retries) instead of running the script against half of them.
    pub const TRAY_KEYS: usize = TRAY_SUFFIXES.len();
    pub fn tray_keys(&self) -> impl Iterator<Item = String> + '_ {
        TRAY_SUFFIXES.iter().map(|suffix| self.key(suffix))
    }
    /// The cluster slot of every key of this user.
    pub fn slot(&self) -> Slot {
        Slot::for_key(&self.base)
    }
}

/// The suffixes of the keys the tray scripts touch (docs/redis.md), the change channel aside.
const TRAY_SUFFIXES: [&str; 25] = [
    "items",
    "order",
    "unread",
    "unseen",
    "read_at",
    "seen_at",
    "archived",
    "snoozed",
    "wake",
    "expire",
    "action",
    "acting",
    "meta",
    "cat",
    "collapse",
    "push",
    "pushdue",
    "pushstage",
    "pushlease",
    "pushsent",
    "activated",
    "seq",
    "epoch",
    "changes",
    "prefs",
];

/// The user a change channel belongs to.
pub fn user_of_channel(channel: &str) -> Option<String> {
    let inner = channel
        .strip_prefix(PREFIX)?
        .strip_prefix("{u:")?
        .strip_suffix("}:ch")?;
    Some(unescape(inner))
}

/// STRING session public id → `{"user","exp","hash"}` (`hash`: SHA-256 of the cookie's
/// secret), expiring at the session's end.
pub fn session(id: &str) -> String {
    format!("{PREFIX}session:{id}")
}

/// STRING naming the user a Web Push endpoint belongs to (the endpoint hashed): a browser's
/// endpoint is the browser's, so the user who subscribed it last takes it from any other.
pub fn push_owner(endpoint: &str) -> String {
    format!("{PREFIX}pushowner:{}", crate::model::sha256_hex(endpoint))
}

/// SET of a group's members.
pub fn group(name: &str) -> String {
    format!("{PREFIX}group:{}", escape(name))
}

/// STRING naming the node whose turn it is to run the retention cleaner (expires).
pub fn cleaner_lock() -> String {
    format!("{PREFIX}cleaner")
}

/// The patterns the cleaner's SCANs match: every user's tray (`order`) and change log
/// (`changes`). A user with neither has nothing to clean.
pub const CLEANED_PATTERNS: [&str; 2] = ["herald:{u:*}:order", "herald:{u:*}:changes"];

/// Every user's presence hash, which the cleaner sweeps of dead processes' entries.
pub const PRESENCE_PATTERN: &str = "herald:{u:*}:presence";

/// The user an `order` or `changes` key belongs to; `None` for anything that only looks like
/// one (an escaped user id never holds a brace, so a key with one is not ours to clean).
pub fn user_of_cleaned_key(key: &str) -> Option<String> {
    user_of(key, &["}:order", "}:changes"])
}

/// The user a `presence` key belongs to, as [`user_of_cleaned_key`].
pub fn user_of_presence_key(key: &str) -> Option<String> {
    user_of(key, &["}:presence"])
}

fn user_of(key: &str, suffixes: &[&str]) -> Option<String> {
    let tagged = key.strip_prefix(PREFIX)?.strip_prefix("{u:")?;
    let inner = suffixes.iter().find_map(|s| tagged.strip_suffix(s))?;
    (!inner.contains(['{', '}'])).then(|| unescape(inner))
}

/// ZSET user → Unix ms: the users with something due (a delivery, a snooze end, an expiry)
/// and when, never later than the tray's own first due time (it may be earlier). One key
/// for the whole deployment, read by every node's due task (`crate::due`).
pub fn due_index() -> String {
    format!("{PREFIX}due")
}

/// STRING that exists while a node is alive (refreshed by it; expires when it dies), holding
/// `{"at_ms","streams","run"}` (`super::nodes`).
pub fn node_alive(node: &str) -> String {
    format!("{PREFIX}node:{node}")
}

/// HASH node -> Unix ms of its first heartbeat: every node that may be alive, so the node
/// list reads a few keys instead of scanning the keyspace. A node whose alive key is gone is
/// dropped from it by the next reader.
pub fn node_registry() -> String {
    format!("{PREFIX}nodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user id with braces keeps every key in its own hash tag, and round-trips.
    #[test]
    fn braces_cannot_break_the_hash_tag() {
        let keys = UserKeys::new("a}b{c%");
        assert_eq!(keys.base(), "herald:{u:a%7Db%7Bc%25}");
        assert_eq!(user_of_channel(&keys.channel()).as_deref(), Some("a}b{c%"));
        for suffix in ["order", "changes"] {
            let key = format!("{}:{suffix}", keys.base());
            assert_eq!(user_of_cleaned_key(&key).as_deref(), Some("a}b{c%"));
        }
        assert_eq!(user_of_cleaned_key(&format!("{}:seq", keys.base())), None);
    }

    /// The keys written into a command are the keys the tray scripts are documented to take.
    #[test]
    fn written_keys_match_the_named_ones() {
        let keys = UserKeys::new("a}b");
        let hash = crate::model::sha256_hex("k");
        let mut cmd = redis::cmd("EVALSHA");
        keys.write_publish(&mut cmd, Some(&hash));
        let written: Vec<String> = cmd
            .args_iter()
            .skip(1)
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
                _ => unreachable!(),
            })
            .collect();
        let mut named = vec![keys.base().to_owned()];
        named.push(format!("herald:{{u:a%7Db}}:idem:{hash}"));
        assert_eq!(written, named);
        assert_eq!(
            keys.slot(),
            Slot::for_key(format!("{}:unread", keys.base()))
        );
    }

    /// Every key suffix the tray scripts name is declared on a cluster ([`UserKeys::tray_keys`]):
    /// in `key(b, '…')`, in the lists a script walks, and through `set_if_absent('…')`.
    #[test]
    fn tray_keys_cover_every_key_the_scripts_touch() {
        let scripts = [
            include_str!("redis/scripts/common.lua"),
            include_str!("redis/scripts/action.lua"),
            include_str!("redis/scripts/counts.lua"),
            include_str!("redis/scripts/due.lua"),
            include_str!("redis/scripts/get.lua"),
            include_str!("redis/scripts/head.lua"),
            include_str!("redis/scripts/list.lua"),
            include_str!("redis/scripts/mark.lua"),
            include_str!("redis/scripts/publish.lua"),
            include_str!("redis/scripts/push.lua"),
            include_str!("redis/scripts/rehint.lua"),
            include_str!("redis/scripts/subscribed.lua"),
            include_str!("redis/scripts/trim.lua"),
        ];
        let code: String = scripts
            .iter()
            .flat_map(|s| s.lines())
            .map(|line| line.split("--").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let mut named = std::collections::BTreeSet::new();
        for opener in ["key(b, '", "key(KEYS[1], '", "set_if_absent('"] {
            for (at, _) in code.match_indices(opener) {
                let rest = &code[at + opener.len()..];
                named.insert(rest[..rest.find('\'').unwrap()].to_owned());
            }
        }
        for (at, _) in code.match_indices("ipairs({") {
            let list = &code[at..at + code[at..].find("})").unwrap()];
            named.extend(list.split('\'').skip(1).step_by(2).map(str::to_owned));
        }
        named.remove("ch"); // the change channel: a channel, not a key
        let declared: std::collections::BTreeSet<String> =
            TRAY_SUFFIXES.iter().map(|s| (*s).to_owned()).collect();
        assert!(named.len() > 15, "{named:?}");
        assert_eq!(
            named.difference(&declared).collect::<Vec<_>>(),
            Vec::<&String>::new()
        );
        let keys = UserKeys::new("a}b");
        assert!(keys.tray_keys().all(|k| Slot::for_key(&k) == keys.slot()));
    }

    /// No idempotency key can look like a tray or a change log, whatever the caller sends.
    #[test]
    fn idempotency_keys_never_match_the_cleaned_patterns() {
        let hash = crate::model::sha256_hex("x}:order");
        let mut cmd = redis::cmd("EVALSHA");
        UserKeys::new("frank").write_publish(&mut cmd, Some(&hash));
        let key = cmd.args_iter().last().map(|arg| match arg {
            redis::Arg::Simple(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
            _ => unreachable!(),
        });
        assert!(!key.unwrap().ends_with(":order"));
        assert_eq!(user_of_cleaned_key("herald:{u:frank}:idem:x}:order"), None);
        assert_eq!(
            user_of_cleaned_key("herald:{u:frank}:idem:x}:changes"),
            None
        );
    }
}
