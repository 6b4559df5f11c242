//! The Web Push message's payload: `{"id","title","body","link","category","unread_count"}`,
//! kept within what every push service must accept (RFC 8030 §7.2: 4,096 bytes of encrypted
//! message), by shortening the body (and, if that is not enough, leaving out the link).

use serde_json::json;

use crate::model::Notification;

/// The longest payload whose `aes128gcm` message fits 4,096 bytes: the header (86 bytes:
/// salt, record size, key id length, the sender's 65-byte key) and the tag (16) leave 3,994,
/// which the `ece` crate fills with the payload, its padding delimiter and padding to a
/// multiple of 128 bytes, so 31 blocks less the delimiter. Pinned by a test below.
pub(super) const MAX_PAYLOAD: usize = 31 * 128 - 1;

/// A shortened body ends with this.
const ELLIPSIS: char = '…';

pub(super) fn payload(n: &Notification, unread_count: u64) -> String {
    let write = |body: Option<&str>, link: Option<&str>| {
        json!({
            "id": n.id, "title": n.title, "body": body, "link": link,
            "category": n.category, "unread_count": unread_count,
        })
        .to_string()
    };
    let (mut body, mut link) = (n.body.clone(), n.link.as_deref());
    let mut out = write(body.as_deref(), link);
    while out.len() > MAX_PAYLOAD {
        let excess = out.len() - MAX_PAYLOAD;
        match &mut body {
            // Cut the characters whose JSON makes up the excess (and room for the mark).
            Some(text) if !text.is_empty() => {
                let need = excess + ELLIPSIS.len_utf8();
                let (mut removed, mut end) = (0, text.len());
                for (at, c) in text.char_indices().rev() {
                    if removed >= need {
                        break;
                    }
                    removed += escaped_len(c);
                    end = at;
                }
                text.truncate(end);
                if !text.is_empty() {
                    text.push(ELLIPSIS);
                }
            }
            // A link cut short would lead nowhere: leave it out.
            _ if link.is_some() => link = None,
            _ => break,
        }
        out = write(body.as_deref(), link);
    }
    out
}

/// The bytes `c` takes in a JSON string, as serde_json writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(body: Option<String>, link: Option<String>) -> Notification {
        serde_json::from_value(json!({
            "id": "01JF0000000000000000000000", "user": "alice", "title": "t".repeat(256),
            "body": body, "link": link, "category": "c".repeat(128),
            "created_at": "2026-01-01T00:00:00.000Z", "count": 1,
        }))
        .expect("a notification")
    }

    /// The bound holds for the longest payload: encrypted, it is at most 4,096 bytes.
    #[test]
    fn the_longest_payload_fits_a_push_message() {
        let (keys, auth) = ece::generate_keypair_and_auth_secret().expect("keys");
        let public = keys.pub_as_raw().expect("raw key");
        for len in [MAX_PAYLOAD - 200, MAX_PAYLOAD - 1, MAX_PAYLOAD] {
            let sealed = ece::encrypt(&public, &auth, "x".repeat(len).as_bytes()).expect("encrypt");
            assert!(sealed.len() <= 4096, "{len} → {}", sealed.len());
        }
        let sealed = ece::encrypt(&public, &auth, &[b'x'; MAX_PAYLOAD + 1]).expect("encrypt");
        assert!(sealed.len() > 4096, "the bound is tight");
    }

    /// A short notification goes whole; a long body is cut (on a character, marked with
    /// `…`, escapes counted), then a long link left out; every payload fits.
    #[test]
    fn long_bodies_are_shortened_to_fit() {
        let short = notification(Some("hello".into()), Some("/x".into()));
        let p: serde_json::Value = serde_json::from_str(&payload(&short, 3)).unwrap();
        assert_eq!(
            (p["body"].as_str(), p["link"].as_str()),
            (Some("hello"), Some("/x"))
        );
        assert_eq!(p["unread_count"], 3);
        for body in [
            "x".repeat(8000),
            "é".repeat(5000),
            "\u{1}".repeat(3000),
            "\"".repeat(4000),
        ] {
            let n = notification(Some(body.clone()), Some("/x".into()));
            let out = payload(&n, 1);
            assert!(out.len() <= MAX_PAYLOAD, "{}", out.len());
            assert!(
                out.len() > MAX_PAYLOAD - 16,
                "cut no more than needed: {}",
                out.len()
            );
            let p: serde_json::Value = serde_json::from_str(&out).unwrap();
            let cut = p["body"].as_str().unwrap();
            assert!(cut.ends_with(ELLIPSIS) && body.starts_with(cut.trim_end_matches(ELLIPSIS)));
            assert_eq!(p["link"], "/x");
        }
        let n = notification(
            Some("b".repeat(100)),
            Some(format!("/{}", "l".repeat(8000))),
        );
        let p: serde_json::Value = serde_json::from_str(&payload(&n, 1)).unwrap();
        assert!(
            p["link"].is_null() && p["body"].as_str().unwrap().is_empty(),
            "{p}"
        );
    }
}
