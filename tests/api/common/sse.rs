//! An SSE reader: [`Sse`] parses a `text/event-stream` answer one [`Event`] at a time and keeps
//! the raw text, so tests assert on the wire format.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use super::WAIT;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
    pub retry: Option<String>,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }

    /// The event's `id:` split into (epoch, seq); panics unless it is `<12 hex>.<digits>`.
    pub fn position(&self) -> (String, u64) {
        let id = self.id.as_deref().expect("an id: line");
        event_id(id)
    }
}

/// An event id split into (epoch, seq); panics unless it is `<12 lowercase hex>.<digits>`.
pub fn event_id(id: &str) -> (String, u64) {
    let (epoch, seq) = id
        .split_once('.')
        .unwrap_or_else(|| panic!("not <epoch>.<seq>: {id}"));
    assert!(
        epoch.len() == 12
            && epoch
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "not a 12-hex-char epoch: {id}"
    );
    assert!(seq.bytes().all(|b| b.is_ascii_digit()), "not a seq: {id}");
    (epoch.to_owned(), seq.parse().unwrap())
}

/// Reads an SSE response incrementally, one event at a time, keeping the raw text seen.
pub struct Sse {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
    pub raw: String,
    pub comments: usize,
    pub ready: Option<Event>,
    pub headers: reqwest::header::HeaderMap,
    pub ended: bool,
}

impl Sse {
    pub fn new(r: reqwest::Response) -> Sse {
        let headers = r.headers().clone();
        Sse {
            stream: Box::pin(r.bytes_stream()),
            buf: String::new(),
            raw: String::new(),
            comments: 0,
            ready: None,
            headers,
            ended: false,
        }
    }

    /// The next event (comments and `retry:`-only blocks are recorded, not returned).
    pub async fn next_event(&mut self) -> Event {
        self.try_next(WAIT).await.expect("expected an SSE event")
    }

    /// The next event within `wait`, or `None` on timeout or end of stream.
    pub async fn try_next(&mut self, wait: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                let mut ev = Event::default();
                let mut has_field = false;
                for line in block.lines().filter(|l| !l.is_empty()) {
                    if line.starts_with(':') {
                        self.comments += 1;
                        continue;
                    }
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    match field {
                        "id" => ev.id = Some(value.to_owned()),
                        "event" => ev.event = value.to_owned(),
                        "data" => ev.data.push_str(value),
                        "retry" => ev.retry = Some(value.to_owned()),
                        _ => {}
                    }
                    if field != "retry" {
                        has_field = true;
                    }
                }
                if has_field {
                    return Some(ev);
                }
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => self.ended = true,
                Ok(Some(Ok(bytes))) => {
                    let text = String::from_utf8_lossy(&bytes);
                    self.raw.push_str(&text);
                    self.buf.push_str(&text);
                }
            }
        }
    }

    /// Wait for the next event named `name`, skipping others.
    pub async fn expect(&mut self, name: &str) -> Event {
        loop {
            let ev = self.next_event().await;
            if ev.event == name {
                return ev;
            }
        }
    }

    /// True when the stream ends within `wait` (after any remaining events).
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            if self
                .try_next(deadline - tokio::time::Instant::now())
                .await
                .is_none()
            {
                return self.ended;
            }
        }
        false
    }
}
