//! JSON text exactly as Python's `json.dumps` writes it with its default settings, which is how
//! the Python SDK writes the brain's files and tables: `", "` between items, `": "` after keys,
//! keys in insertion order, floats as Python's `repr` (`1e+16`, `1.4e-06`, `100.0`), and, with
//! `ensure_ascii` on, every character outside printable ASCII as a `\uXXXX` escape (surrogate
//! pairs beyond the BMP). The brain's `events` table stores its JSON with the escapes, its
//! `events.jsonl` without.
//!
//! [`PythonFormatter`] does the layout for anything `serde` serializes. Key order needs a value
//! that keeps it: [`Value`] (objects in an [`IndexMap`]). serde_json's own `Value` sorts its keys
//! unless its `preserve_order` feature is on, and that feature would change every JSON map in the
//! crate: the outbox payloads would carry a client's keys in the client's order instead of
//! sorted, and code that builds JSON with `json!` would print it differently. So the brain keeps
//! its own value type and leaves the rest of the crate as it is.
//!
//! Parsing into [`Value`] keeps Python's `json.loads` semantics for repeated keys: the last value
//! wins, at the place of the first. Two differences remain, both for input Python accepts and
//! serde_json refuses or rounds: integers beyond 64 bits become floats, and `NaN`/`Infinity`
//! literals and lone surrogate escapes are rejected.
//!
//! Pure: no I/O, nothing about events or routes.

use std::fmt;
use std::io;

use indexmap::IndexMap;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::ser::{CharEscape, Formatter};

/// A JSON object that keeps its keys in insertion order, as a Python `dict` does.
pub type Object = IndexMap<String, Value>;

/// A JSON value whose objects keep their key order.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// `null` (`None`).
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer or a finite float.
    Number(serde_json::Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object, keys in insertion order.
    Object(Object),
}

impl Value {
    /// The object, if this is one.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(object) => Some(object),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    /// Whether Python would find this value false (`not value`): `null`, `false`, zero, and the
    /// empty string, array and object.
    pub fn is_falsy(&self) -> bool {
        match self {
            Value::Null => true,
            Value::Bool(flag) => !flag,
            Value::Number(number) => number.as_f64() == Some(0.0),
            Value::String(text) => text.is_empty(),
            Value::Array(items) => items.is_empty(),
            Value::Object(object) => object.is_empty(),
        }
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::String(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Value {
        Value::String(text)
    }
}

impl From<bool> for Value {
    fn from(flag: bool) -> Value {
        Value::Bool(flag)
    }
}

impl From<i64> for Value {
    fn from(number: i64) -> Value {
        Value::Number(number.into())
    }
}

impl From<u64> for Value {
    fn from(number: u64) -> Value {
        Value::Number(number.into())
    }
}

impl From<f64> for Value {
    /// A non-finite float, which JSON cannot carry, becomes `null`.
    fn from(number: f64) -> Value {
        serde_json::Number::from_f64(number).map_or(Value::Null, Value::Number)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Value {
        Value::Array(items)
    }
}

impl From<Object> for Value {
    fn from(object: Object) -> Value {
        Value::Object(object)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Value {
        value.map_or(Value::Null, Into::into)
    }
}

impl From<serde_json::Value> for Value {
    /// Objects keep serde_json's order, which is sorted by key.
    fn from(value: serde_json::Value) -> Value {
        match value {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(flag) => Value::Bool(flag),
            serde_json::Value::Number(number) => Value::Number(number),
            serde_json::Value::String(text) => Value::String(text),
            serde_json::Value::Array(items) => {
                Value::Array(items.into_iter().map(Value::from).collect())
            }
            serde_json::Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(key, value)| (key, Value::from(value)))
                    .collect(),
            ),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(flag) => serializer.serialize_bool(*flag),
            Value::Number(number) => number.serialize(serializer),
            Value::String(text) => serializer.serialize_str(text),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Object(object) => {
                let mut map = serializer.serialize_map(Some(object.len()))?;
                for (key, value) in object {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_bool<E>(self, flag: bool) -> Result<Value, E> {
        Ok(Value::Bool(flag))
    }

    fn visit_i64<E>(self, number: i64) -> Result<Value, E> {
        Ok(Value::from(number))
    }

    fn visit_u64<E>(self, number: u64) -> Result<Value, E> {
        Ok(Value::from(number))
    }

    fn visit_f64<E>(self, number: f64) -> Result<Value, E> {
        Ok(Value::from(number))
    }

    fn visit_str<E>(self, text: &str) -> Result<Value, E> {
        Ok(Value::from(text))
    }

    fn visit_string<E>(self, text: String) -> Result<Value, E> {
        Ok(Value::String(text))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Object::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            // As a Python dict: a repeated key keeps its first place and takes the last value.
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Parses JSON text into a [`Value`] that keeps its key order.
pub fn from_str(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(text)
}

/// Whether characters outside printable ASCII are escaped (`ensure_ascii`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ascii {
    /// `ensure_ascii=True`, Python's default: `\u00e9`.
    Escape,
    /// `ensure_ascii=False`: the characters as they are, in UTF-8.
    Keep,
}

/// A serde_json [`Formatter`] that lays JSON out as Python's `json.dumps` does by default.
#[derive(Debug, Clone, Copy)]
pub struct PythonFormatter {
    ascii: Ascii,
}

impl PythonFormatter {
    /// A formatter escaping (or keeping) non-ASCII text as `ascii` says.
    pub fn new(ascii: Ascii) -> PythonFormatter {
        PythonFormatter { ascii }
    }
}

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        separate(writer, first)
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        separate(writer, first)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(writer, f64::from(value))
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if self.ascii == Ascii::Keep {
            return writer.write_all(fragment.as_bytes());
        }
        // serde_json escapes the control characters, `"` and `\` itself; what is left to escape
        // is DEL and everything beyond ASCII, which Python writes as lower-case `\uXXXX` units.
        let mut start = 0;
        for (at, c) in fragment.char_indices() {
            if (' '..='~').contains(&c) {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..at])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = at + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        char_escape: CharEscape,
    ) -> io::Result<()> {
        // Python never escapes `/`; otherwise serde_json's escapes are Python's (`\n`, `\u001f`).
        match char_escape {
            CharEscape::Solidus => writer.write_all(b"/"),
            other => serde_json::ser::CompactFormatter.write_char_escape(writer, other),
        }
    }
}

/// Writes the `", "` Python puts between items (array values, object entries), unless `first`.
fn separate<W: ?Sized + io::Write>(writer: &mut W, first: bool) -> io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

/// `value` as JSON text in Python's layout.
pub fn to_string<T: Serialize + ?Sized>(value: &T, ascii: Ascii) -> serde_json::Result<String> {
    let mut out = Vec::with_capacity(128);
    to_writer(&mut out, value, ascii)?;
    // Both the serializer and the formatter write UTF-8 only.
    String::from_utf8(out).map_err(|err| serde::ser::Error::custom(err.utf8_error()))
}

/// Writes `value` as JSON text in Python's layout.
pub fn to_writer<W: io::Write, T: Serialize + ?Sized>(
    writer: W,
    value: &T,
    ascii: Ascii,
) -> serde_json::Result<()> {
    let mut serializer =
        serde_json::Serializer::with_formatter(writer, PythonFormatter::new(ascii));
    value.serialize(&mut serializer)
}

/// A finite float as Python's `repr` writes it: the shortest digits that read back as the same
/// float, positional for decimal exponents from -4 to 15 (always with a fraction: `100.0`),
/// scientific otherwise with a signed exponent of at least two digits (`1e+16`, `1.4e-06`).
pub fn float_repr(value: f64) -> String {
    if !value.is_finite() {
        // Never reached through serde_json, which writes non-finite floats as `null`; these are
        // Python's spellings.
        return if value.is_nan() {
            "NaN".to_owned()
        } else if value > 0.0 {
            "Infinity".to_owned()
        } else {
            "-Infinity".to_owned()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `-1.4e-6`, `1e16`, `0e0`.
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::from(sign);
    if (-4..16).contains(&exponent) {
        if exponent < 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n(
                '0',
                exponent.unsigned_abs() as usize - 1,
            ));
            out.push_str(&digits);
        } else {
            let whole = exponent.unsigned_abs() as usize + 1;
            if digits.len() <= whole {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', whole - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..whole]);
                out.push('.');
                out.push_str(&digits[whole..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exponent < 0 { '-' } else { '+' };
        out.push_str(&format!("e{sign}{:02}", exponent.unsigned_abs()));
    }
    out
}

impl fmt::Display for Value {
    /// The value as `json.dumps` writes it by default (ASCII escapes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = to_string(self, Ascii::Escape).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parsed from this text, written back, the result must be what Python 3.11's `json.dumps`
    /// printed for the same dict (recorded below).
    const SAMPLE: &str = "{\"z\": \"caf\\u00e9 \\u2014 \\ud83d\\ude00 \\u007f \\u0001\\t\\n\\\"\\\\/\", \
        \"a\": [1, 2.5, null, true, false, -0.0, 1e16, 1e15, 1.4e-06, 0.0001, 123456789.125, \
        1e-05, 1.5e300, 0.30000000000000004, 100.0, -3], \"nested\": {\"b\": {}, \"a\": []}, \
        \"\\u00e9key\": 18446744073709551615}";

    #[test]
    fn the_layout_is_that_of_python_json_dumps() {
        let value = from_str(SAMPLE).unwrap();
        assert_eq!(
            to_string(&value, Ascii::Escape).unwrap(),
            "{\"z\": \"caf\\u00e9 \\u2014 \\ud83d\\ude00 \\u007f \\u0001\\t\\n\\\"\\\\/\", \
             \"a\": [1, 2.5, null, true, false, -0.0, 1e+16, 1000000000000000.0, 1.4e-06, 0.0001, \
             123456789.125, 1e-05, 1.5e+300, 0.30000000000000004, 100.0, -3], \
             \"nested\": {\"b\": {}, \"a\": []}, \"\\u00e9key\": 18446744073709551615}"
        );
        assert_eq!(
            to_string(&value, Ascii::Keep).unwrap(),
            "{\"z\": \"café — 😀 \u{7f} \\u0001\\t\\n\\\"\\\\/\", \
             \"a\": [1, 2.5, null, true, false, -0.0, 1e+16, 1000000000000000.0, 1.4e-06, 0.0001, \
             123456789.125, 1e-05, 1.5e+300, 0.30000000000000004, 100.0, -3], \
             \"nested\": {\"b\": {}, \"a\": []}, \"ékey\": 18446744073709551615}"
        );
    }

    #[test]
    fn floats_are_written_as_python_repr() {
        // Python 3.11 `repr` of each.
        for (value, repr) in [
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e22, "1e+22"),
            (1.2345678901234567e-7, "1.2345678901234566e-07"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (12345678901234567.0, "1.2345678901234568e+16"),
            (0.5, "0.5"),
            (2f64.powi(60), "1.152921504606847e+18"),
            (9999999999999998.0, "9999999999999998.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (-2.5e-5, "-2.5e-05"),
            (0.8800000000000001, "0.8800000000000001"),
        ] {
            assert_eq!(float_repr(value), repr, "{value:e}");
        }
    }

    #[test]
    fn a_repeated_key_keeps_its_first_place_and_its_last_value() {
        let value = from_str(r#"{"b": 1, "a": 2, "b": 3}"#).unwrap();
        assert_eq!(
            to_string(&value, Ascii::Escape).unwrap(),
            r#"{"b": 3, "a": 2}"#
        );
    }

    #[test]
    fn structs_keep_their_field_order() {
        #[derive(serde::Serialize)]
        struct Answer {
            zeta: u8,
            alpha: Vec<&'static str>,
        }
        let answer = Answer {
            zeta: 1,
            alpha: vec!["é"],
        };
        assert_eq!(
            to_string(&answer, Ascii::Escape).unwrap(),
            r#"{"zeta": 1, "alpha": ["\u00e9"]}"#
        );
    }

    #[test]
    fn python_truthiness() {
        for (text, falsy) in [
            ("null", true),
            ("false", true),
            ("0", true),
            ("0.0", true),
            ("\"\"", true),
            ("[]", true),
            ("{}", true),
            ("true", false),
            ("1", false),
            ("\"x\"", false),
            ("[0]", false),
            ("{\"a\": null}", false),
        ] {
            assert_eq!(from_str(text).unwrap().is_falsy(), falsy, "{text}");
        }
    }

    #[test]
    fn serde_json_values_convert_with_their_sorted_keys() {
        let value = Value::from(serde_json::json!({"b": [1.5, "x"], "a": null}));
        assert_eq!(value.to_string(), r#"{"a": null, "b": [1.5, "x"]}"#);
        assert_eq!(Value::from(f64::NAN), Value::Null);
    }
}
