//! Reading JSON request bodies: errors that name the member at fault, structs read from JSON
//! objects only, and objects kept as written ([`RawObject`]).

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// A parser's message without its ` at line … column …` (the last one: a member's name may
/// hold the words too).
pub fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    text.rsplit_once(" at line ")
        .map_or(&*text, |(message, _)| message)
        .to_owned()
}

/// Parse a JSON body, which must be an object; an error names the member at fault
/// (`notification.deliver_at: invalid type: integer `5`, expected a string`), without the
/// parser's line and column.
pub fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    // A good body is read once, without tracking where the parser is; a bad one is read
    // again with it, for the message.
    if let Ok(value) = plain(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut track = serde_path_to_error::Track::new();
    let value = object(serde_path_to_error::Deserializer::new(&mut de, &mut track)).map_err(
        |e: serde_json::Error| {
            let inner = without_position(&e);
            let inner = cut_quoted(&inner);
            cut_short(match track.path().to_string().as_str() {
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

/// The first `keep` characters of `text` and `…`, or `None` when it has no more than that.
fn first_chars(text: &str, keep: usize) -> Option<String> {
    let end = text.char_indices().nth(keep)?.0;
    Some(format!("{}…", &text[..end]))
}

/// A parser's message with the value it quotes (between its first and last `"`) cut to
/// [`QUOTED_CHARS`].
fn cut_quoted(message: &str) -> String {
    if let (Some(start), Some(end)) = (message.find('"'), message.rfind('"')) {
        if let Some(quoted) = first_chars(&message[start + 1..end.max(start + 1)], QUOTED_CHARS) {
            return format!("{}\"{quoted}\"{}", &message[..start], &message[end + 1..]);
        }
    }
    message.to_owned()
}

/// A message cut to [`MESSAGE_CHARS`] (a member's path may be long too).
fn cut_short(message: String) -> String {
    first_chars(&message, MESSAGE_CHARS).unwrap_or(message)
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

/// JSON text kept as it is: a notification's `data` read back from a store, which took it
/// checked ([`RawObject`]), so it is not checked again (a listing reads many).
#[derive(Clone)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(RawJson)
    }
}

/// A JSON object from a request, kept as its sender wrote it but for the whitespace between
/// tokens: numbers of any size and spelling, escapes and member order travel unchanged (a
/// parsed map rounds numbers past 64 bits to a double, writes `1e2` as `100.0` and sorts the
/// members), and no line break ever reaches an SSE `data:` line. It is taken only if
/// serde_json would parse it (no lone surrogate escape, no number past a double's range,
/// nesting within its limit) and no object in it names a member twice (parsers disagree on
/// which one counts).
#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct RawObject(RawJson);

impl RawObject {
    /// The text, as stored.
    pub fn raw(&self) -> RawJson {
        self.0.clone()
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
        // A raw value is only checked for syntax: parse it once, keeping nothing.
        let mut de = serde_json::Deserializer::from_str(raw.get());
        Strict
            .deserialize(&mut de)
            .map_err(|e| D::Error::custom(without_position(&e)))?;
        let spaced = raw
            .get()
            .bytes()
            .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        if !spaced {
            return Ok(RawObject(RawJson(raw)));
        }
        RawValue::from_string(without_spaces(raw.get()))
            .map(|raw| RawObject(RawJson(raw)))
            .map_err(D::Error::custom)
    }
}

/// Any JSON value, parsed and kept nothing of: what serde_json refuses, and an object naming
/// a member twice, fail.
#[derive(Clone, Copy)]
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut names = std::collections::HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            if names.contains(&name) {
                // JSON-quoted, and short enough that the message's cut leaves it whole (its
                // escapes may make it longer than the name)
                let quoted = (0..=QUOTED_CHARS)
                    .rev()
                    .map(|keep| first_chars(&name, keep).unwrap_or_else(|| name.clone()))
                    .map(|cut| serde_json::Value::String(cut).to_string())
                    .find(|quoted| quoted.chars().count() <= QUOTED_CHARS + 2)
                    .unwrap_or_else(|| "\"…\"".to_owned());
                return Err(serde::de::Error::custom(format!(
                    "the member {quoted} is named twice"
                )));
            }
            names.insert(name);
            map.next_value_seed(self)?;
        }
        Ok(())
    }
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
        let cut = cut_short(unquoted);
        assert_eq!(cut.chars().count(), MESSAGE_CHARS + 1);
        assert!(
            cut.starts_with("unknown field `kkk") && cut.ends_with("k…"),
            "{cut}"
        );
        assert_eq!(cut_quoted("short \"value\""), "short \"value\"");
        assert_eq!(cut_quoted("one \" quote"), "one \" quote");
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
        let data = read.data.unwrap().raw();
        assert_eq!(
            data.get(),
            r#"{"z":12345678901234567891234,"a":[1e2,-0.0,"a b\" \u00e9"]}"#
        );
        assert_eq!(serde_json::to_string(&data).unwrap(), data.get());
        // what serde_json would not parse, or a member named twice, is refused
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for (text, refused) in [
            (r#"{"a":"\ud83d\ude00 \\ud800"}"#, false),
            (r#"{"a":{"b":1},"b":{"b":2}}"#, false),
            (r#"{"a":"\ud800"}"#, true),
            (r#"{"a":"\udc00\ud800"}"#, true),
            (r#"{"a":"\ud800x"}"#, true),
            (r#"{"a":1e400}"#, true),
            (r#"{"a":1,"a":2}"#, true),
            (r#"{"a":[{"b":1,"b":1}]}"#, true),
            (&format!(r#"{{"a":{deep}}}"#), true),
        ] {
            let body = format!(r#"{{"data":{text}}}"#);
            let read = from_json::<WithData>(body.as_bytes());
            assert_eq!(read.is_err(), refused, "{text}: {read:?}");
        }
        let twice = from_json::<WithData>(br#"{"data":{"a":1,"a":2}}"#).unwrap_err();
        assert_eq!(
            twice,
            r#"invalid JSON body: data: the member "a" is named twice"#
        );
        // a member's name that reads like the parser's position is kept whole, one with a
        // quote escaped
        let body = br#"{"data":{"x at line 3":1,"x at line 3":2}}"#;
        assert_eq!(
            from_json::<WithData>(body).unwrap_err(),
            r#"invalid JSON body: data: the member "x at line 3" is named twice"#
        );
        let body = br#"{"data":{"a\"b":1,"a\"b":2}}"#;
        assert_eq!(
            from_json::<WithData>(body).unwrap_err(),
            r#"invalid JSON body: data: the member "a\"b" is named twice"#
        );
        // a long one of escapes is cut between them, never inside one
        let name = "\\u0001".repeat(40);
        let body = format!(r#"{{"data":{{"{name}":1,"{name}":2}}}}"#);
        let message = from_json::<WithData>(body.as_bytes()).unwrap_err();
        let quoted = format!(r#""{}…""#, "\\u0001".repeat(7));
        assert_eq!(
            message,
            format!("invalid JSON body: data: the member {quoted} is named twice")
        );
        // 127 levels of nesting, `data` itself the first, are taken; 128 are not
        for (levels, refused) in [(127, false), (128, true)] {
            let inner = format!("{}1{}", "[".repeat(levels - 1), "]".repeat(levels - 1));
            let body = format!(r#"{{"data":{{"a":{inner}}}}}"#);
            let read = from_json::<WithData>(body.as_bytes());
            assert_eq!(read.is_err(), refused, "{levels}: {read:?}");
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
