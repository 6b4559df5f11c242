//! SSE wire encoding. A change is encoded to bytes once, and every stream of the user gets
//! the same `Bytes` (a refcount, never a copy per subscriber).

use bytes::Bytes;

use crate::model::{Change, EventId};

/// `: ping` comment line, sent every `--heartbeat`.
pub const PING: &[u8] = b": ping\n\n";

/// `id:`, `event:`, `data:` frame of a change; the id is `<epoch>.<seq>`.
pub fn change(c: &Change) -> Bytes {
    let id = EventId {
        epoch: c.epoch,
        seq: c.seq,
    };
    event(Some(id), c.kind.as_str(), &c.data)
}

/// One event; `data` is single-line JSON (serde_json escapes newlines). Controls that end a
/// stream (`replaced`, `revoked`) have no id: they are not a position in the change log.
pub fn event(id: Option<EventId>, name: &str, data: &str) -> Bytes {
    use std::fmt::Write;
    // "id: " + 12-char epoch + "." + up to 20 digits + "\n", "event: ", "\ndata: ", "\n\n"
    let mut s = String::with_capacity(data.len() + name.len() + 64);
    if let Some(id) = id {
        let _ = writeln!(s, "id: {id}");
    }
    s.push_str("event: ");
    s.push_str(name);
    s.push_str("\ndata: ");
    s.push_str(data);
    s.push_str("\n\n");
    Bytes::from(s)
}

/// The `retry:` line telling clients how long to wait before reconnecting, in milliseconds.
pub fn retry(ms: u64) -> String {
    format!("retry: {ms}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChangeKind;

    /// A change frame carries `<epoch>.<seq>` as `id:` and its kind as `event:`.
    #[test]
    fn change_frame_layout() {
        let c = Change {
            epoch: crate::model::Epoch::parse("3f9a0c12d4e1").unwrap(),
            seq: 7,
            kind: ChangeKind::Read,
            data: r#"{"ids":["a"],"unread_count":0}"#.into(),
            at_ms: 0,
        };
        assert_eq!(
            &change(&c)[..],
            b"id: 3f9a0c12d4e1.7\nevent: read\ndata: {\"ids\":[\"a\"],\"unread_count\":0}\n\n"
        );
    }
}
