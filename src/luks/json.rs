//! The LUKS2 JSON area as an order-keeping tree.
//!
//! Order matters in LUKS2 JSON: cryptsetup (json-c) keeps objects in the
//! order of the text and tries keyslots of equal priority in that order, and
//! a header rewritten by evfs should keep everything cryptsetup or other
//! tools stored, unknown fields included, where it was. `serde_json::Value`
//! sorts object keys (the crate is built without `preserve_order`, and
//! turning that on would change every other JSON evfs prints), so this
//! module parses into its own tree with serde_json's parser, which also
//! bounds nesting depth (128), and writes compact JSON back.

use std::fmt::{self, Write as _};

use std::cell::Cell;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

/// Most values (objects, arrays, strings, numbers… each counts one) a JSON
/// text may hold. A header cryptsetup writes holds a few hundred; the bound
/// keeps the tree of a hostile 4 MiB JSON area (two million `0,` in an
/// array) to a few megabytes instead of hundreds.
pub const MAX_VALUES: usize = 1 << 16;

/// A JSON value whose objects keep their key order.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parse JSON text; objects with a key twice are refused (json-c would
    /// keep the last value, and a header written that way is not one
    /// cryptsetup produces).
    pub fn parse(text: &[u8]) -> Result<Json, String> {
        let budget = Cell::new(MAX_VALUES);
        let mut d = serde_json::Deserializer::from_slice(text);
        let value = JsonSeed(&budget)
            .deserialize(&mut d)
            .map_err(|e| e.to_string())?;
        d.end().map_err(|e| e.to_string())?;
        Ok(value)
    }

    /// Compact text (no spaces), as cryptsetup writes the JSON area.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => {
                let _ = write!(out, "{n}");
            }
            Json::String(s) => write_string(s, out),
            Json::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Json::Object(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The member `key` of an object, mutable.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        match self {
            Json::Object(m) => m.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Set member `key` of an object: replaced in place if present,
    /// appended otherwise (as json-c's `json_object_object_add` does).
    /// No effect on other values.
    pub fn set(&mut self, key: &str, value: Json) {
        if let Json::Object(m) = self {
            match m.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v = value,
                None => m.push((key.to_string(), value)),
            }
        }
    }

    /// Remove member `key` of an object; whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        if let Json::Object(m) = self {
            let before = m.len();
            m.retain(|(k, _)| k != key);
            return m.len() != before;
        }
        false
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&[(String, Json)]> {
        match self {
            Json::Object(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Array(a) => Some(a),
            _ => None,
        }
    }

    /// An integer in `0..=u32::MAX` (cryptsetup's `validate_json_uint32`).
    pub fn as_u32(&self) -> Option<u32> {
        match self {
            Json::Number(n) => n.as_u64().and_then(|v| u32::try_from(v).ok()),
            _ => None,
        }
    }

    /// Any integer that fits in an `i64` (keyslot priorities).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    pub fn str(s: impl Into<String>) -> Json {
        Json::String(s.into())
    }

    pub fn u64(v: u64) -> Json {
        Json::Number(v.into())
    }

    /// A 64-bit value the LUKS2 way: a string of decimal digits.
    pub fn u64_string(v: u64) -> Json {
        Json::String(v.to_string())
    }
}

/// A JSON string literal with the escapes JSON requires (serde_json's own
/// escaping, so the text always parses back to the same string).
fn write_string(s: &str, out: &mut String) {
    match serde_json::to_string(s) {
        Ok(text) => out.push_str(&text),
        // Serializing a `str` cannot fail; keep the output valid anyway.
        Err(_) => out.push_str("\"\""),
    }
}

impl From<&serde_json::Value> for Json {
    fn from(v: &serde_json::Value) -> Json {
        match v {
            serde_json::Value::Null => Json::Null,
            serde_json::Value::Bool(b) => Json::Bool(*b),
            serde_json::Value::Number(n) => Json::Number(n.clone()),
            serde_json::Value::String(s) => Json::String(s.clone()),
            serde_json::Value::Array(a) => Json::Array(a.iter().map(Json::from).collect()),
            serde_json::Value::Object(m) => {
                Json::Object(m.iter().map(|(k, v)| (k.clone(), Json::from(v))).collect())
            }
        }
    }
}

impl From<&Json> for serde_json::Value {
    fn from(v: &Json) -> serde_json::Value {
        match v {
            Json::Null => serde_json::Value::Null,
            Json::Bool(b) => serde_json::Value::Bool(*b),
            Json::Number(n) => serde_json::Value::Number(n.clone()),
            Json::String(s) => serde_json::Value::String(s.clone()),
            Json::Array(a) => serde_json::Value::Array(a.iter().map(Into::into).collect()),
            Json::Object(m) => serde_json::Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::from(v)))
                    .collect(),
            ),
        }
    }
}

/// Parses one value, counting it (and, through its children, everything
/// inside it) against a shared budget of [`MAX_VALUES`].
#[derive(Clone, Copy)]
struct JsonSeed<'b>(&'b Cell<usize>);

impl<'de> DeserializeSeed<'de> for JsonSeed<'_> {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        let left = self.0.get();
        if left == 0 {
            return Err(de::Error::custom(format!(
                "more than {MAX_VALUES} JSON values"
            )));
        }
        self.0.set(left - 1);
        d.deserialize_any(JsonVisitor(self))
    }
}

struct JsonVisitor<'b>(JsonSeed<'b>);

impl<'de> Visitor<'de> for JsonVisitor<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self.0)? {
            items.push(v);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members: Vec<(String, Json)> = Vec::new();
        // A set beside the list: hostile text may hold objects with tens of
        // thousands of keys, where a linear scan per key would take long.
        let mut seen = std::collections::HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(self.0)?;
            if !seen.insert(k.clone()) {
                return Err(de::Error::custom(format!("duplicate key {k:?}")));
            }
            members.push((k, v));
        }
        Ok(Json::Object(members))
    }
}
