//! Reading JSON request bodies: errors that name the member at fault, structs read from JSON
//! objects only, and objects kept as written ([`RawObject`]).

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// Parse a JSON body, which must be an object; an error names the member at fault
/// (`notification.deliver_at: invalid type: integer `5`, expected a string`), without the
/// parser's line and column.
pub fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    // A good body is read once, without tracking where the parser is; a bad one is read
    // again with it, for the message.
    if let Ok(value) = plain(bytes) {
        return Ok(value);
    }
    let without_position = |e: &serde_json::Error| {
        let text = e.to_string();
        text.split(" at line ").next().unwrap_or(&text).to_owned()
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut track = serde_path_to_error::Track::new();
    let value = object(serde_path_to_error::Deserializer::new(&mut de, &mut track)).map_err(
        |e: serde_json::Error| {
            let inner = without_position(&e);
            cut_short(&match track.path().to_string().as_str() {
                "." | "" => format!("invalid JSON body: {inner}"),
                path => format!("invalid JSON body: {path}: {inner}"),
            })
        },
    )?;
    de.end()
        .map_err(|e| format!("invalid JSON body: {}", without_position(&e)))?;
    Ok(value)
}

/// Most characters of a sent value an error message quotes, and of the whole message: a
/// value up to the body's limit is not sent back whole.
const QUOTED_CHARS: usize = 48;
const MESSAGE_CHARS: usize = 300;

/// `message` with the value it quotes (between its first and last `"`) and then the whole
/// cut to [`QUOTED_CHARS`] and [`MESSAGE_CHARS`], marked `…`.
fn cut_short(message: &str) -> String {
    let cut = |text: &str, keep: usize| -> Option<String> {
        let mut ends = text.char_indices().map(|(i, _)| i);
        let end = ends.nth(keep)?;
        Some(format!("{}…", &text[..end]))
    };
    let message = match (message.find('"'), message.rfind('"')) {
        (Some(start), Some(end)) if end > start => {
            match cut(&message[start + 1..end], QUOTED_CHARS) {
                Some(quoted) => format!("{}\"{quoted}\"{}", &message[..start], &message[end + 1..]),
                None => message.to_owned(),
            }
        }
        _ => message.to_owned(),
    };
    cut(&message, MESSAGE_CHARS).unwrap_or(message)
}

/// `T` from a JSON object, or why not (without the member's path).
fn plain<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = object(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Read `T` from a JSON object only (`#[serde(deserialize_with = "object")]`). A derived
/// struct also accepts an array of its members in order (`["Hi"]` for `{"title":"Hi"}`),
/// which no request means.
pub fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_map(Object(PhantomData))
}

/// Read `T`, with `null` read as its default, as an absent member is.
pub fn or_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Read a list of `T`, each from a JSON object only (see [`object`]); `null` is no items, as
/// an absent member is.
pub fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    struct List<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for List<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of JSON objects")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
            while let Some(item) = seq.next_element_seed(Object(PhantomData))? {
                out.push(item);
            }
            Ok(out)
        }
        fn visit_unit<E>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(List(PhantomData))
}

/// Reads a `T` from a JSON object; also the seed of each element in [`objects`].
struct Object<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for Object<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Object<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_map(self)
    }
}

/// A JSON object kept as its sender wrote it, but for the whitespace between tokens: numbers
/// of any size and spelling, escapes and member order travel unchanged (a parsed map rounds
/// numbers past 64 bits to a double, writes `1e2` as `100.0` and sorts the members). It is
/// written out as it came, so no line break ever reaches an SSE `data:` line.
#[derive(Clone)]
pub struct RawObject(Box<RawValue>);

impl RawObject {
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawObject {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl fmt::Debug for RawObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for RawObject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, Unexpected};
        let raw = Box::<RawValue>::deserialize(d)?;
        let what = match raw.get().as_bytes().first() {
            Some(b'{') => None,
            Some(b'[') => Some("an array"),
            Some(b'"') => Some("a string"),
            Some(b't' | b'f') => Some("a boolean"),
            _ => Some("a number"),
        };
        if let Some(what) = what {
            return Err(D::Error::invalid_type(
                Unexpected::Other(what),
                &"a JSON object",
            ));
        }
        // What parsing it would refuse, as a map did: a raw value is only checked for syntax.
        if lone_surrogate(raw.get()) {
            return Err(D::Error::custom(
                "a \\u escape of a lone UTF-16 surrogate is not text",
            ));
        }
        let spaced = raw
            .get()
            .bytes()
            .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        if !spaced {
            return Ok(RawObject(raw));
        }
        RawValue::from_string(without_spaces(raw.get()))
            .map(RawObject)
            .map_err(D::Error::custom)
    }
}

/// Whether valid JSON text escapes a UTF-16 surrogate that is not half of a pair
/// (`"\ud800"`): no character, so strict parsers (serde_json's among them) refuse it.
fn lone_surrogate(json: &str) -> bool {
    let b = json.as_bytes();
    let unit = |at: usize| {
        let hex = std::str::from_utf8(b.get(at..at + 4)?).ok()?;
        u16::from_str_radix(hex, 16).ok()
    };
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        if b.get(i + 1) != Some(&b'u') {
            i += 2;
            continue;
        }
        let first = unit(i + 2);
        i += 6;
        match first {
            Some(0xD800..=0xDBFF) => {
                let escaped = b.get(i..i + 2) == Some(&b"\\u"[..]);
                if !escaped || !matches!(unit(i + 2), Some(0xDC00..=0xDFFF)) {
                    return true;
                }
                i += 6;
            }
            Some(0xDC00..=0xDFFF) => return true,
            _ => {}
        }
    }
    false
}

/// Valid JSON text without the whitespace between its tokens (strings kept whole).
fn without_spaces(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        a: u8,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        #[serde(deserialize_with = "object")]
        one: Inner,
        #[serde(default, deserialize_with = "objects")]
        many: Vec<Inner>,
    }

    #[test]
    fn structs_are_read_from_objects_only() {
        let ok: Outer = from_json(br#"{"one":{"a":1},"many":[{"a":2},{"a":3}]}"#).unwrap();
        assert_eq!(ok.one, Inner { a: 1 });
        assert_eq!(ok.many, vec![Inner { a: 2 }, Inner { a: 3 }]);
        let no_many: Outer = from_json(br#"{"one":{"a":1}}"#).unwrap();
        assert!(no_many.many.is_empty());
        let null_many: Outer = from_json(br#"{"one":{"a":1},"many":null}"#).unwrap();
        assert!(null_many.many.is_empty());
        for (body, message) in [
            (
                &br#"[{"a":1}]"#[..],
                "invalid JSON body: invalid type: sequence, expected a JSON object",
            ),
            (
                br#"{"one":[1]}"#,
                "invalid JSON body: one: invalid type: sequence, expected a JSON object",
            ),
            (
                br#"{"one":{"a":1},"many":[[2]]}"#,
                "invalid JSON body: many[0]: invalid type: sequence, expected a JSON object",
            ),
            (
                br#"{"one":{"a":1},"many":{"a":2}}"#,
                "invalid JSON body: many: invalid type: map, expected an array of JSON objects",
            ),
            (
                br#"{"one":{"a":"x"}}"#,
                "invalid JSON body: one.a: invalid type: string \"x\", expected u8",
            ),
            (
                br#"{"one":{"a":1}} x"#,
                "invalid JSON body: trailing characters",
            ),
        ] {
            assert_eq!(from_json::<Outer>(body).unwrap_err(), message, "{body:?}");
        }
    }

    /// A value quoted in an error is cut short, and so is the whole message.
    #[test]
    fn errors_quote_values_cut_short() {
        let long = "\u{e9}".repeat(500);
        let body = format!(r#"{{"one":{{"a":"{long}"}}}}"#);
        let e = from_json::<Outer>(body.as_bytes()).unwrap_err();
        let quoted = "\u{e9}".repeat(QUOTED_CHARS);
        assert_eq!(
            e,
            format!("invalid JSON body: one.a: invalid type: string \"{quoted}…\", expected u8")
        );
        let unquoted = format!("unknown field `{}`", "k".repeat(5000));
        let cut = cut_short(&unquoted);
        assert_eq!(cut.chars().count(), MESSAGE_CHARS + 1);
        assert!(
            cut.starts_with("unknown field `kkk") && cut.ends_with("k…"),
            "{cut}"
        );
        assert_eq!(cut_short("short \"value\""), "short \"value\"");
    }

    #[derive(Debug, Deserialize)]
    struct WithData {
        data: Option<RawObject>,
    }

    /// An object is kept as written but for the spaces between tokens; anything else is
    /// refused, naming the member.
    #[test]
    fn raw_objects_keep_what_was_written() {
        let body = "{\"data\": {\"z\": 12345678901234567891234, \"a\":\n[1e2, -0.0, \"a b\\\" \\u00e9\"]}}";
        let read: WithData = from_json(body.as_bytes()).unwrap();
        let data = read.data.unwrap();
        assert_eq!(
            data.get(),
            r#"{"z":12345678901234567891234,"a":[1e2,-0.0,"a b\" \u00e9"]}"#
        );
        assert_eq!(serde_json::to_string(&data).unwrap(), data.get());
        for (text, lone) in [
            (r#"{"a":"\ud83d\ude00 \\ud800"}"#, false),
            (r#"{"a":"\ud800"}"#, true),
            (r#"{"a":"\udc00\ud800"}"#, true),
            (r#"{"a":"\ud800\u0041"}"#, true),
            (r#"{"a":"\ud800x"}"#, true),
        ] {
            assert_eq!(lone_surrogate(text), lone, "{text}");
            let body = format!(r#"{{"data":{text}}}"#);
            assert_eq!(
                from_json::<WithData>(body.as_bytes()).is_err(),
                lone,
                "{text}"
            );
        }
        let null: WithData = from_json(br#"{"data":null}"#).unwrap();
        assert!(null.data.is_none());
        for (body, what) in [
            (&br#"{"data":[1]}"#[..], "an array"),
            (br#"{"data":"{}"}"#, "a string"),
            (br#"{"data":-7}"#, "a number"),
            (br#"{"data":true}"#, "a boolean"),
        ] {
            let e = from_json::<WithData>(body).unwrap_err();
            let want =
                format!("invalid JSON body: data: invalid type: {what}, expected a JSON object");
            assert_eq!(e, want);
        }
    }
}
