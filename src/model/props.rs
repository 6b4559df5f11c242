//! Property tests of the model's parsers and printers (issue 13): event ids, epochs and
//! notification ids parse exactly their grammar and read back what they print; the id rules;
//! links; a publish body's notification of any shape is parsed and validated without a panic,
//! refused only with a 400 that names the member; the template writes serde's JSON for any
//! input; due times of any text, and actions of any shape (the rules of `fields`).
//! The strategies here (`text`, `json_value`, `publish_body`, …) serve other modules' property
//! tests too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use serde_json::Value;

use super::fields::{
    validate_actions, MAX_ACTIONS, MAX_ACTION_CHARS, MAX_AHEAD, MAX_COLLAPSE_KEY_CHARS,
};
use super::ids::MAX_ID_CHARS;
use super::notification::{is_safe_link, MAX_TITLE_CHARS};
use super::template::json_str_len;
use super::*;
use crate::error::Error;

/// A fixed "now" for validation (2027-01-15T08:00:00Z): cases do not depend on the clock.
pub(crate) const NOW_MS: u64 = 1_800_000_000_000;

pub(crate) fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(NOW_MS)
}

/// Any string at all: every `char`, controls and surrogate-free non-characters included.
pub(crate) fn any_text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..24).prop_map(|chars| chars.into_iter().collect())
}

/// Strings that reach the corners: anything, JSON escapes and controls, look-alikes, short
/// plain words, and long ones.
pub(crate) fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any_text(),
        3 => "[a-z]{1,8}",
        2 => "[\\x00-\\x1f\"\\\\/ a-z\u{7f}\u{a0}\u{2028}\u{3000}é🎉]{0,16}",
        1 => "\\PC{0,300}",
    ]
}

/// Any JSON value, three levels deep at most (floats only those that survive a round trip
/// through text exactly).
pub(crate) fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1_000_000i32..1_000_000).prop_map(|n| Value::from(f64::from(n) / 8.0)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..5)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// `ms` (Unix milliseconds) as RFC 3339 at a `±HH:MM` offset of `offset_min` minutes, the same
/// instant (`Z` for 0).
pub(crate) fn with_offset(ms: u64, offset_min: i32) -> String {
    let local = ms.saturating_add_signed(i64::from(offset_min) * 60_000);
    let utc = ms_to_rfc3339(local);
    if offset_min == 0 {
        return utc;
    }
    let sign = if offset_min < 0 { '-' } else { '+' };
    let minutes = offset_min.unsigned_abs();
    let date = utc.strip_suffix('Z').unwrap_or(&utc);
    format!("{date}{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// A due time around [`NOW_MS`] (past, inside the 90 days, beyond) at any offset, or not a
/// time at all.
pub(crate) fn due_time() -> impl Strategy<Value = Value> {
    let day = 86_400_000i64;
    prop_oneof![
        6 => (-day..100 * day, -1439i32..=1439).prop_map(|(ahead, offset)| {
            Value::String(with_offset(NOW_MS.saturating_add_signed(ahead), offset))
        }),
        2 => text().prop_map(Value::String),
        1 => json_value(),
    ]
}

type Member = Option<(String, Value)>;

/// A member `name` present with probability `p`, its value from `value`.
fn member(
    name: &'static str,
    p: f64,
    value: impl Strategy<Value = Value> + 'static,
) -> BoxedStrategy<Member> {
    prop::option::weighted(p, value.prop_map(move |v| (name.to_owned(), v))).boxed()
}

/// A JSON object of the members drawn.
fn object(members: Vec<BoxedStrategy<Member>>) -> impl Strategy<Value = Value> {
    members.prop_map(|m| Value::Object(m.into_iter().flatten().collect()))
}

/// Mostly `value`, sometimes any JSON at all (the wrong type).
fn or_any(value: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
    prop_oneof![30 => value, 1 => json_value()].boxed()
}

fn string(s: impl Strategy<Value = String>) -> impl Strategy<Value = Value> {
    s.prop_map(Value::String)
}

fn action_value() -> impl Strategy<Value = Value> {
    object(vec![
        member(
            "id",
            0.95,
            or_any(string(prop_oneof!["[a-c]{1,2}", text()])),
        ),
        member(
            "label",
            0.98,
            or_any(string(prop_oneof!["[A-Za-z ]{1,8}", "\\PC{60,70}", text()])),
        ),
        member(
            "method",
            0.5,
            or_any(string("(get|post|PUT|Patch|DELETE|head|x|)")),
        ),
        member(
            "path",
            0.6,
            or_any(string(prop_oneof![
                "/api/[a-z/]{0,8}",
                "(/admin|/api/a b|/api|api/x)",
                text()
            ])),
        ),
    ])
}

/// A `notification` object as publishers send it: mostly the right shape, with wrong types,
/// reserved members, unknown members and values across every rule's boundary.
pub(crate) fn notification_value() -> impl Strategy<Value = Value> {
    const RESERVED: [&str; 10] = [
        "id",
        "user",
        "created_at",
        "read_at",
        "seen_at",
        "archived_at",
        "snoozed_until",
        "count",
        "replaces",
        "action",
    ];
    let link = prop_oneof![
        "https?://[a-z][a-z0-9]{0,9}\\.example(/[a-z]{0,5}){0,2}",
        "/[a-z/\\\\]{0,6}",
        "(javascript|data|ftp|HTTPS):[a-z/]{0,5}",
        text(),
    ];
    let data = prop::collection::vec((text(), json_value()), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    let reserved = (prop::sample::select(RESERVED.to_vec()), json_value())
        .prop_map(|(name, value)| (name.to_owned(), value));
    let unknown = ("future_[a-z]{1,4}", json_value());
    let extra = prop::option::weighted(0.15, prop_oneof![reserved, unknown]);
    (
        object(vec![
            member(
                "title",
                0.98,
                or_any(string(prop_oneof![
                    3 => "\\PC{1,12}",
                    1 => "\\PC{250,260}",
                    1 => text()
                ])),
            ),
            member("body", 0.4, or_any(string(text()))),
            member("source", 0.2, or_any(string(text()))),
            member("category", 0.3, or_any(string(text()))),
            member("link", 0.3, or_any(string(link))),
            member("data", 0.3, or_any(data)),
            member("critical", 0.2, or_any(any::<bool>().prop_map(Value::Bool))),
            member(
                "collapse_key",
                0.2,
                or_any(string(prop_oneof!["[a-z]{1,8}", "\\PC{126,130}", text()])),
            ),
            member("deliver_at", 0.3, due_time()),
            member("expires_at", 0.3, due_time()),
            member(
                "actions",
                0.3,
                or_any(prop::collection::vec(action_value(), 0..5).prop_map(Value::Array)),
            ),
        ]),
        extra,
    )
        .prop_map(|(mut notification, extra)| {
            if let (Value::Object(map), Some((name, value))) = (&mut notification, extra) {
                map.insert(name, value);
            }
            notification
        })
}

/// A `POST /publish` body (also an ingest entry's `publish`), shaped as [`notification_value`].
pub(crate) fn publish_body() -> impl Strategy<Value = Value> {
    let users = prop::collection::vec(string(prop_oneof!["[a-e]{1,2}", text()]), 0..4)
        .prop_map(Value::Array);
    let groups =
        prop::collection::vec(string(prop_oneof!["[a-e]", text()]), 0..3).prop_map(Value::Array);
    object(vec![
        member("users", 0.85, or_any(users)),
        member("groups", 0.2, or_any(groups)),
        member("notification", 0.97, or_any(notification_value())),
        member(
            "idempotency_key",
            0.2,
            or_any(string(prop_oneof![
                "[a-z0-9-]{1,12}",
                "\\PC{250,260}",
                text()
            ])),
        ),
        member("future", 0.05, json_value()),
    ])
}

/// Raw request bodies: arbitrary bytes, JSON of any shape, and publish bodies cut short.
pub(crate) fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        (publish_body(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let bytes = serde_json::to_vec(&v).unwrap_or_default();
            bytes[..cut.index(bytes.len() + 1)].to_vec()
        }),
    ]
}

/// The event id a string stands for, read by its grammar (not by `EventId::parse`'s steps):
/// ASCII whitespace around `12 lower hex` `.` `digits`, the digits a `u64`.
fn expected_event_id(s: &str) -> Option<(String, u64)> {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    let b = t.as_bytes();
    if b.len() < 14 || b[12] != b'.' {
        return None;
    }
    let lower_hex = |c: &u8| matches!(c, b'0'..=b'9' | b'a'..=b'f');
    let (epoch, seq) = (&b[..12], &b[13..]);
    if !epoch.iter().all(lower_hex) || !seq.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let digits = String::from_utf8_lossy(seq);
    let significant = digits.trim_start_matches('0');
    if significant.len() > 20 {
        return None;
    }
    let n: u128 = if significant.is_empty() {
        0
    } else {
        significant.parse().ok()?
    };
    let n = u64::try_from(n).ok()?;
    Some((String::from_utf8_lossy(epoch).into_owned(), n))
}

fn is_invalid_request(e: &Error, prefix: &str) -> bool {
    matches!(e, Error::InvalidRequest(m) if m.starts_with(prefix))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `Last-Event-ID` of any shape: an event id exactly when it is `<12 lower hex>.<u64>`
    /// (ASCII whitespace around), never a panic; what parses prints back to itself.
    #[test]
    fn event_id_parses_its_grammar_only(s in prop_oneof![
        any_text(),
        "[ \t]?[0-9a-fA-F]{11,13}\\.[0-9+\\-]{0,22}[ \t\r\n\u{a0}]?",
        "[0-9a-f.\u{ff11}]{0,30}",
    ]) {
        let parsed = EventId::parse(&s);
        let expected = expected_event_id(&s);
        prop_assert_eq!(
            parsed.map(|id| (id.epoch.to_string(), id.seq)),
            expected,
            "{:?}",
            s
        );
        if let Some(id) = parsed {
            prop_assert_eq!(EventId::parse(&id.to_string()), Some(id));
        }
    }

    /// Every event id Herald writes parses back to itself, with ASCII whitespace around too.
    #[test]
    fn event_id_round_trips(
        epoch in "[0-9a-f]{12}",
        seq in any::<u64>(),
        before in "[ \t\r\n\x0c]{0,2}",
        after in "[ \t\r\n\x0c]{0,2}",
    ) {
        let id = EventId { epoch: Epoch::parse(&epoch).expect("12 lower hex"), seq };
        let text = id.to_string();
        prop_assert_eq!(&text, &format!("{epoch}.{seq}"));
        prop_assert_eq!(EventId::parse(&text), Some(id));
        prop_assert_eq!(EventId::parse(&format!("{before}{text}{after}")), Some(id));
    }

    /// An epoch is exactly 12 lower-case hex digits, and prints as it was read.
    #[test]
    fn epoch_parses_lower_hex_only(s in prop_oneof![
        any_text(),
        "[0-9a-fA-F]{11,13}",
        "[0-9a-g]{12}",
    ]) {
        let expected = s.len() == 12 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let parsed = Epoch::parse(&s);
        prop_assert_eq!(parsed.is_some(), expected, "{:?}", s);
        if let Some(epoch) = parsed {
            prop_assert_eq!(epoch.as_str(), s.as_str());
            prop_assert_eq!(Epoch::parse(&epoch.to_string()), Some(epoch));
        }
    }

    /// A notification id read back from a store is 26 ASCII letters and digits, kept as is.
    #[test]
    fn notification_id_parses_its_shape_only(s in prop_oneof![
        any_text(),
        "[0-9A-Za-z]{25,27}",
        "[0-9A-Z_\u{e9}]{26}",
    ]) {
        let expected = s.len() == NotificationId::LEN && s.bytes().all(|b| b.is_ascii_alphanumeric());
        let parsed = NotificationId::parse(&s);
        prop_assert_eq!(parsed.is_some(), expected, "{:?}", s);
        if let Some(id) = parsed {
            prop_assert_eq!(id.as_str(), s.as_str());
        }
    }

    /// Any ULID prints as an id that parses back to itself, is the ULID's text, and sorts as
    /// the ULIDs do (creation order).
    #[test]
    fn notification_ids_round_trip_and_sort(a in any::<u128>(), b in any::<u128>()) {
        let (ia, ib) = (
            NotificationId::from_ulid(ulid::Ulid(a)),
            NotificationId::from_ulid(ulid::Ulid(b)),
        );
        prop_assert_eq!(NotificationId::parse(ia.as_str()), Some(ia));
        prop_assert_eq!(ulid::Ulid::from_string(ia.as_str()).ok(), Some(ulid::Ulid(a)));
        prop_assert_eq!(ia.cmp(&ib), a.cmp(&b));
        prop_assert_eq!(ia.as_str().cmp(ib.as_str()), a.cmp(&b));
    }

    /// `is_plain`: 1 to `max` characters, none a control character.
    #[test]
    fn plain_strings(s in prop_oneof![text(), "[a\u{85}\u{7f}é ]{0,6}"], max in 0usize..40) {
        let n = s.chars().count();
        let expected = (1..=max).contains(&n) && !s.chars().any(char::is_control);
        prop_assert_eq!(is_plain(&s, max), expected);
    }

    /// Ids: plain, at most 128 characters, no whitespace at either edge; otherwise a 400 that
    /// names what was checked.
    #[test]
    fn id_rules(s in prop_oneof![
        text(),
        "[ \t\u{a0}\u{3000}]?[a-z é]{0,4}[ \n\u{2028}]?",
        "\\PC{126,130}",
    ]) {
        let n = s.chars().count();
        let expected = (1..=MAX_ID_CHARS).contains(&n)
            && !s.chars().any(char::is_control)
            && !s.chars().next().is_some_and(char::is_whitespace)
            && !s.chars().last().is_some_and(char::is_whitespace);
        match validate_id("each user", &s) {
            Ok(()) => prop_assert!(expected, "{:?} accepted", s),
            Err(e) => {
                prop_assert!(!expected, "{:?} refused", s);
                prop_assert!(is_invalid_request(&e, "each user must be"), "{e:?}");
            }
        }
        prop_assert_eq!(is_valid_id(&s), expected);
    }

    /// A link is accepted only as an `http(s)` URL with a host or a same-site path; never a
    /// panic, never another scheme, never whitespace or a control character.
    #[test]
    fn links_are_http_or_same_site(link in prop_oneof![
        text(),
        "[ \t]?(javascript|JavaScript|data|vbscript|ftp|http|https|HTTPS)[:]{0,1}[/\\\\]{0,3}[a-z.]{0,8}",
        "[/\\\\]{1,3}[a-z.]{0,8}",
    ]) {
        if is_safe_link(&link) {
            prop_assert!(!link.chars().any(|c| c.is_control() || c.is_whitespace()));
            if let Some(path) = link.strip_prefix('/') {
                prop_assert!(!path.starts_with('/') && !path.starts_with('\\'), "{:?}", link);
            } else {
                let lower = link.to_ascii_lowercase();
                prop_assert!(lower.starts_with("http://") || lower.starts_with("https://"), "{:?}", link);
                let url = url::Url::parse(&link).expect("accepted links parse");
                prop_assert!(url.host_str().is_some_and(|h| !h.is_empty()));
            }
        }
    }

    /// Ordinary links are accepted, and another scheme never is.
    #[test]
    fn ordinary_links_pass_other_schemes_do_not(
        url in "https?://[a-z][a-z0-9]{0,9}(\\.[a-z]{2,5})?(:[0-9]{1,4})?(/[A-Za-z0-9._~-]{0,10}){0,3}(\\?[a-z=&]{0,10})?",
        path in "/([A-Za-z0-9._~-][A-Za-z0-9._~/-]{0,20})?",
        scheme in "[a-z][a-z0-9+.-]{0,8}",
        rest in "[a-z/.:@]{0,12}",
    ) {
        prop_assert!(is_safe_link(&url), "{:?}", url);
        prop_assert!(is_safe_link(&path), "{:?}", path);
        if scheme != "http" && scheme != "https" {
            let other = format!("{scheme}:{rest}");
            prop_assert!(!is_safe_link(&other), "{:?}", other);
        }
    }

    /// A publish body's `notification` of any shape: when it parses, validation either
    /// refuses it with a 400 that names a `notification.` member, or accepts it with every
    /// rule holding, the due times normalized (and validating again changes nothing); then the
    /// template writes what serde writes and reads back as the same notification.
    #[test]
    fn notifications_validate_or_name_the_member(notification in notification_value()) {
        let bytes = serde_json::to_vec(&notification).expect("a JSON value serializes");
        let mut input = match from_json::<NotificationInput>(&bytes) {
            Ok(input) => input,
            Err(message) => {
                prop_assert!(message.starts_with("invalid JSON body"), "{}", message);
                return Ok(());
            }
        };
        let schedule = match input.validate(now()) {
            Ok(schedule) => schedule,
            Err(e) => {
                prop_assert!(is_invalid_request(&e, "notification."), "{e:?}");
                return Ok(());
            }
        };
        prop_assert!((1..=MAX_TITLE_CHARS).contains(&input.title.chars().count()));
        prop_assert!(input.link.as_deref().is_none_or(is_safe_link));
        prop_assert!(input
            .collapse_key
            .as_deref()
            .is_none_or(|k| is_plain(k, MAX_COLLAPSE_KEY_CHARS)));
        prop_assert!(input.actions.len() <= MAX_ACTIONS);
        for (i, action) in input.actions.iter().enumerate() {
            prop_assert!(is_plain(&action.id, MAX_ACTION_CHARS));
            prop_assert!(is_plain(&action.label, MAX_ACTION_CHARS));
            prop_assert!(!input.actions[..i].iter().any(|a| a.id == action.id));
            if let Some(path) = &action.path {
                prop_assert!(path.starts_with("/api/"));
                prop_assert!(action.method.is_some());
            }
            let method = action.method.as_deref().unwrap_or("GET");
            prop_assert!(matches!(method, "GET" | "POST" | "PUT" | "PATCH" | "DELETE"));
        }
        let horizon = NOW_MS + MAX_AHEAD.as_millis() as u64;
        for (text, ms) in [
            (&input.deliver_at, schedule.deliver_ms),
            (&input.expires_at, schedule.expire_ms),
        ] {
            prop_assert_eq!(text.is_some(), ms.is_some());
            if let (Some(text), Some(ms)) = (text, ms) {
                prop_assert!(NOW_MS < ms && ms <= horizon, "{} out of the window", text);
                prop_assert_eq!(text, &ms_to_rfc3339(ms));
            }
        }
        if let (Some(deliver), Some(expire)) = (schedule.deliver_ms, schedule.expire_ms) {
            prop_assert!(deliver < expire);
        }
        prop_assert_eq!(input.clone().validate(now()).ok(), Some(schedule));

        let template = Template::new(&input, schedule, now()).expect("a template");
        let id = NotificationId::from_ulid(ulid::Ulid(u128::from(NOW_MS) << 80));
        let fresh = ItemState::default();
        let json = template.json(id.as_str(), "alice", &fresh);
        let notification = template.notification(id.as_str(), "alice", &fresh);
        prop_assert_eq!(&json, &serde_json::to_string(&notification).expect("serializes"));
        prop_assert_eq!(json.len(), template.json_len(id.as_str(), "alice"));
        let back: Notification = serde_json::from_str(&json).expect("reads back");
        prop_assert_eq!(back, notification);
    }

    /// `push_json_str` writes any string exactly as serde_json does, `json_str_len` is its
    /// length, and the JSON reads back as the string.
    #[test]
    fn json_strings_agree_with_serde(s in text()) {
        let mut out = String::from("x");
        push_json_str(&mut out, &s);
        let serde = serde_json::to_string(&s).expect("a string serializes");
        prop_assert_eq!(&out[1..], serde.as_str());
        prop_assert_eq!(json_str_len(&s), serde.len());
        prop_assert_eq!(serde_json::from_str::<String>(&out[1..]).ok(), Some(s));
    }
}

fn option(s: impl Strategy<Value = String>) -> impl Strategy<Value = Option<String>> {
    prop::option::of(s)
}

fn action_spec() -> impl Strategy<Value = ActionSpec> {
    (text(), text(), option(text()), option(text())).prop_map(|(id, label, method, path)| {
        ActionSpec {
            id,
            label,
            method,
            path,
        }
    })
}

/// Any notification input, validated or not: the template does not depend on the rules.
fn notification_input() -> impl Strategy<Value = NotificationInput> {
    let body = prop_oneof![
        4 => option(text()),
        1 => (15_500usize..16_300).prop_map(|n| Some("b".repeat(n))),
    ];
    let data = prop::option::of(prop::collection::btree_map(text(), json_value(), 0..4));
    (
        (text(), body, option(text()), option(text()), option(text())),
        (data, any::<bool>(), option(text())),
        (option(text()), option(text())),
        prop::collection::vec(action_spec(), 0..4),
    )
        .prop_map(
            |(
                (title, body, source, category, link),
                (data, critical, collapse_key),
                (deliver_at, expires_at),
                actions,
            )| NotificationInput {
                title,
                body,
                source,
                category,
                link,
                data: data
                    .map(|d| serde_json::from_value(serde_json::to_value(d).unwrap()).unwrap()),
                critical,
                collapse_key,
                deliver_at,
                expires_at,
                actions,
                ..NotificationInput::default()
            },
        )
}

/// Any per-recipient state, fresh or not.
fn item_state() -> impl Strategy<Value = ItemState> {
    let action =
        prop::option::of(
            (text(), text(), prop::option::of(any::<u16>()))
                .prop_map(|(id, at, status)| TakenAction { id, at, status }),
        );
    prop_oneof![
        1 => Just(ItemState::default()),
        3 => (
            (option(text()), option(text()), option(text()), option(text())),
            (action, any::<u64>(), option(text())),
        )
            .prop_map(
                |((read_at, seen_at, archived_at, snoozed_until), (action, count, replaces))| {
                    ItemState {
                        read_at,
                        seen_at,
                        archived_at,
                        snoozed_until,
                        action,
                        count,
                        replaces,
                    }
                }
            ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// For any input, id, user and state, the template's JSON is byte for byte serde's JSON of
    /// the whole notification and reads back as it; a fresh state's announced length is its
    /// length; and the size the limit applies to is the input's own JSON length.
    #[test]
    fn template_json_is_what_serde_writes(
        input in notification_input(),
        id in prop_oneof!["[0-9A-Z]{26}", text()],
        users in prop::collection::vec(prop_oneof![text(), "[\"\\\\\\x01a]{0,128}"], 1..4),
        state in item_state(),
    ) {
        let template = Template::new(&input, Schedule::default(), now()).expect("a template");
        for user in &users {
            let n = template.notification(&id, user, &state);
            let json = template.json(&id, user, &state);
            prop_assert_eq!(&json, &serde_json::to_string(&n).expect("serializes"));
            let back: Notification = serde_json::from_str(&json).expect("reads back");
            prop_assert_eq!(back, n);
            let fresh = template.json(&id, user, &ItemState::default());
            prop_assert_eq!(fresh.len(), template.json_len(&id, user));
        }
        let counted = input.json_size();
        prop_assert_eq!(counted, serde_json::to_vec(&input).expect("serializes").len());
    }
}

// The due-time and action rules of `fields`.

/// Unix milliseconds of the last instant Herald writes (9999-12-31T23:59:59.999Z).
const LAST_MS: u64 = 253_402_300_799_999;

fn action() -> impl Strategy<Value = ActionSpec> {
    (
        prop_oneof!["[a-c]{1,2}", "\\PC{60,70}", text()],
        prop_oneof!["[A-Za-z ]{1,8}", text()],
        prop::option::of(prop_oneof!["(get|post|PUT|Patch|DELETE|head|x|)", text()]),
        prop::option::of(prop_oneof![
            "/api/[a-z/]{0,8}",
            "(/admin|/api/a b|/api|api/x|/api/\t)",
            "/api/x{2040,2050}",
            text()
        ]),
    )
        .prop_map(|(id, label, method, path)| ActionSpec {
            id,
            label,
            method,
            path,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any text: a time at or after 1970 that (up to the last instant Herald writes)
    /// prints back to the same millisecond, or a 400 naming the field; never a panic.
    /// A time of year 9999 at a negative offset lies up to a day past that instant.
    #[test]
    fn times_parse_or_name_the_field(s in prop_oneof![
        any_text(),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?([Zz]|[+-][0-9]{2}:[0-9]{2})?",
        "(1969-12-31T23:59:59\\.9[0-9]{0,6}|9999-12-31T23:59:59\\.999|0000-01-01T00:00:00)([Zz]|[+-][0-9]{2}:[0-9]{2})",
    ]) {
        match parse_time("notification.deliver_at", &s) {
            Ok(ms) => {
                prop_assert!(ms <= LAST_MS + 86_400_000, "{:?} → {}", s, ms);
                if ms <= LAST_MS {
                    prop_assert_eq!(parse_time("t", &ms_to_rfc3339(ms)).ok(), Some(ms));
                }
            }
            Err(Error::InvalidRequest(m)) => {
                prop_assert!(m.starts_with("notification.deliver_at must be"), "{}", m);
            }
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }

    /// Every millisecond Herald can write reads back as itself, at any offset.
    #[test]
    fn times_round_trip(ms in 0..=LAST_MS, offset in -1439i32..=1439) {
        prop_assert_eq!(parse_time("t", &ms_to_rfc3339(ms)).ok(), Some(ms));
        let local = ms.checked_add_signed(i64::from(offset) * 60_000);
        if local.is_some_and(|l| l <= LAST_MS) {
            let text = with_offset(ms, offset);
            prop_assert_eq!(parse_time("t", &text).ok(), Some(ms), "{}", text);
        }
    }

    /// Actions of any shape: accepted with every rule holding (and validating again
    /// changes nothing), or refused with a 400 naming `notification.actions`.
    #[test]
    fn actions_validate_or_name_the_member(
        actions in prop::collection::vec(action(), 0..5),
    ) {
        let mut checked = actions.clone();
        match validate_actions(&mut checked) {
            Ok(()) => {
                prop_assert!(checked.len() <= MAX_ACTIONS);
                for (i, (a, sent)) in checked.iter().zip(&actions).enumerate() {
                    prop_assert!(is_plain(&a.id, MAX_ACTION_CHARS));
                    prop_assert!(is_plain(&a.label, MAX_ACTION_CHARS));
                    prop_assert!(!checked[..i].iter().any(|b| b.id == a.id));
                    prop_assert_eq!(
                        a.method.clone(),
                        sent.method
                            .as_ref()
                            .map(|m| m.to_ascii_uppercase())
                            .or_else(|| a.path.as_ref().map(|_| "POST".to_owned()))
                    );
                    if let Some(path) = &a.path {
                        prop_assert!(path.starts_with("/api/") && path.len() <= 2048);
                        // spaces are sent as %20; other whitespace is refused
                        prop_assert!(!path
                            .chars()
                            .any(|c| c.is_control() || (c.is_whitespace() && c != ' ')));
                    }
                }
                let mut again = checked.clone();
                prop_assert!(validate_actions(&mut again).is_ok());
                prop_assert_eq!(again, checked);
            }
            Err(Error::InvalidRequest(m)) => {
                prop_assert!(m.starts_with("notification.actions"), "{}", m);
            }
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }
}
