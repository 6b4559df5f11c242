//! Reading JSON request bodies: errors that name the member at fault, and structs read from
//! JSON objects only.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

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
            match track.path().to_string().as_str() {
                "." | "" => format!("invalid JSON body: {inner}"),
                path => format!("invalid JSON body: {path}: {inner}"),
            }
        },
    )?;
    de.end()
        .map_err(|e| format!("invalid JSON body: {}", without_position(&e)))?;
    Ok(value)
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
}
