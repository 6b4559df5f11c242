//! What the race's clients read off a socket: the HTTP response head, the body (chunked as
//! Herald's hyper sends it, or plain until close as nchan's eventsource does), SSE events, and
//! the marker every published event carries (`@<round>:<seq>:<sent ns>@`, in Herald's title
//! and nchan's message body). Pure byte handling, no I/O.

/// A response head: status and whether the body is chunked.
pub struct Head {
    pub status: u16,
    pub chunked: bool,
}

/// Parse the head at the start of `buf` once it is complete: the head and its length.
pub fn head(buf: &[u8]) -> Option<(Head, usize)> {
    let end = find(buf, b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = text
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    Some((Head { status, chunked }, end))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Where the chunked decoder stands.
enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
}

/// The body decoder: chunked framing removed, or bytes passed through.
pub struct Body {
    chunked: bool,
    state: ChunkState,
    raw: Vec<u8>,
}

impl Body {
    pub fn new(chunked: bool) -> Self {
        Body {
            chunked,
            state: ChunkState::Size,
            raw: Vec::new(),
        }
    }

    /// Decode `input`, appending the body bytes to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if !self.chunked {
            out.extend_from_slice(input);
            return;
        }
        self.raw.extend_from_slice(input);
        let mut at = 0;
        loop {
            let rest = &self.raw[at..];
            match self.state {
                ChunkState::Size => {
                    let Some(eol) = find(rest, b"\r\n") else {
                        break;
                    };
                    let line = String::from_utf8_lossy(&rest[..eol]);
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(hex, 16).unwrap_or(0);
                    at += eol + 2;
                    self.state = if size == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        break;
                    }
                    let take = left.min(rest.len());
                    out.extend_from_slice(&rest[..take]);
                    at += take;
                    self.state = match left - take {
                        0 => ChunkState::DataEnd,
                        n => ChunkState::Data(n),
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        break;
                    }
                    at += 2;
                    self.state = ChunkState::Size;
                }
            }
        }
        self.raw.drain(..at);
    }
}

/// One SSE event (a comment-only block has `comment` set and no fields).
#[derive(Default)]
pub struct Event {
    pub id: Option<String>,
    pub name: Option<String>,
    pub data: String,
    pub comment: bool,
}

/// Splits body bytes into SSE events; keeps a partial event until its blank line arrives.
#[derive(Default)]
pub struct Sse {
    buf: Vec<u8>,
}

impl Sse {
    /// Add body bytes; push each complete event to `out`.
    pub fn feed(&mut self, body: &[u8], out: &mut Vec<Event>) {
        self.buf.extend_from_slice(body);
        let mut at = 0;
        while let Some(end) = find(&self.buf[at..], b"\n\n") {
            out.push(parse_event(&self.buf[at..at + end]));
            at += end + 2;
        }
        self.buf.drain(..at);
    }
}

fn parse_event(block: &[u8]) -> Event {
    let mut event = Event::default();
    for line in String::from_utf8_lossy(block).lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "" => event.comment = true,
            "id" => event.id = Some(value.to_owned()),
            "event" => event.name = Some(value.to_owned()),
            "data" => {
                if !event.data.is_empty() {
                    event.data.push('\n');
                }
                event.data.push_str(value);
            }
            _ => {}
        }
    }
    event
}

/// A published event's marker: which round, the stream's sequence number, when it was sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Marker {
    pub round: u32,
    pub seq: u32,
    pub sent_ns: u64,
}

impl Marker {
    pub fn text(&self) -> String {
        format!("@{}:{}:{}@", self.round, self.seq, self.sent_ns)
    }

    /// The first marker in `data` (a JSON notification or a plain body).
    pub fn find(data: &str) -> Option<Marker> {
        let start = data.find('@')? + 1;
        let len = data[start..].find('@')?;
        let mut parts = data[start..start + len].split(':');
        let marker = Marker {
            round: parts.next()?.parse().ok()?,
            seq: parts.next()?.parse().ok()?,
            sent_ns: parts.next()?.parse().ok()?,
        };
        Some(marker)
    }
}

/// Nanoseconds since the Unix epoch: the clock every process of the race shares.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
