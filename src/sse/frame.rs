//! SSE wire encoding. A change is encoded to bytes once, and every stream of the user gets
//! the same `Bytes` (a refcount, never a copy per subscriber).

use bytes::Bytes;

use crate::model::Change;

/// `: ping` comment line, sent every `--heartbeat`.
pub const PING: &[u8] = b": ping\n\n";

/// `id:`, `event:`, `data:` frame of a change.
pub fn change(c: &Change) -> Bytes {
    event(Some(c.seq), c.kind.as_str(), &c.data)
}

/// One event; `data` is single-line JSON (serde_json escapes newlines).
pub fn event(id: Option<u64>, name: &str, data: &str) -> Bytes {
    let mut s = String::with_capacity(data.len() + name.len() + 32);
    if let Some(id) = id {
        s.push_str("id: ");
        s.push_str(&id.to_string());
        s.push('\n');
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

    /// A change frame carries its seq as `id:` and its kind as `event:`.
    #[test]
    fn change_frame_layout() {
        let c = Change {
            seq: 7,
            kind: ChangeKind::Read,
            data: r#"{"ids":["a"],"unread_count":0}"#.into(),
            at_ms: 0,
        };
        assert_eq!(
            &change(&c)[..],
            b"id: 7\nevent: read\ndata: {\"ids\":[\"a\"],\"unread_count\":0}\n\n"
        );
    }
}
