//! JSON values that keep their objects' key order through a parse and a re-serialization.
//!
//! `serde_json::Value` sorts object keys (the workspace does not enable `preserve_order`, and
//! turning it on would change every crate's maps). Files Ferry rewrites for the runtime must
//! keep Next's order: the entrypoints read `required-server-files.json`'s `config` verbatim, and
//! the pages router serializes `i18n.domains` entries into `__NEXT_DATA__.domainLocales` as they
//! come (`{"domain":…,"defaultLocale":…}`, as `next start` sends them).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A JSON value whose objects keep their keys in document order.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderedJson {
    /// `null`, a boolean, a number or a string.
    Scalar(serde_json::Value),
    /// An array.
    Array(Vec<OrderedJson>),
    /// An object, keys in document order (a repeated key keeps its first position and last value).
    Object(Vec<(String, OrderedJson)>),
}

impl OrderedJson {
    /// The object's value for `key`.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut OrderedJson> {
        match self {
            OrderedJson::Object(entries) => {
                entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// The string value, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            OrderedJson::Scalar(v) => v.as_str(),
            _ => None,
        }
    }

    /// Sets `key` on an object: in place when present, appended otherwise. `false` when this is
    /// not an object.
    pub fn insert(&mut self, key: &str, value: OrderedJson) -> bool {
        let OrderedJson::Object(entries) = self else {
            return false;
        };
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => entries.push((key.to_owned(), value)),
        }
        true
    }
}

impl Serialize for OrderedJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            OrderedJson::Scalar(v) => v.serialize(serializer),
            OrderedJson::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            OrderedJson::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for OrderedJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OrderedVisitor)
    }
}

struct OrderedVisitor;

impl<'de> Visitor<'de> for OrderedVisitor {
    type Value = OrderedJson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Scalar(v.into()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Scalar(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Scalar(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Scalar(v.into()))
    }

    fn visit_str<E>(self, v: &str) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Scalar(v.into()))
    }

    fn visit_string<E>(self, v: String) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Scalar(v.into()))
    }

    fn visit_unit<E>(self) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Scalar(serde_json::Value::Null))
    }

    fn visit_none<E>(self) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Scalar(serde_json::Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OrderedJson, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(OrderedJson::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedJson, A::Error> {
        let mut entries: Vec<(String, OrderedJson)> = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, OrderedJson>()? {
            // JSON.parse keeps the last value of a repeated key, at the first key's position.
            match entries.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => entries.push((k, v)),
            }
        }
        Ok(OrderedJson::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_locales_keep_their_key_order_through_a_rewrite() {
        let text = r#"{"version":1,"config":{"i18n":{"locales":["en-US","fr"],"defaultLocale":"en-US","domains":[{"domain":"example.com","defaultLocale":"en-US"},{"domain":"fr.example.test","defaultLocale":"fr","http":true}]},"deploymentId":"a","n":1.5,"z":null}}"#;
        let mut v: OrderedJson = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        let config = v.get_mut("config").unwrap_or_else(|| panic!("config"));
        assert!(config.insert("deploymentId", OrderedJson::Scalar("b".into())));
        let out = serde_json::to_string(&v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            out,
            text.replace(r#""deploymentId":"a""#, r#""deploymentId":"b""#)
        );
    }

    #[test]
    fn repeated_keys_keep_the_first_position_and_the_last_value() {
        let v: OrderedJson =
            serde_json::from_str(r#"{"a":1,"b":2,"a":3}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            serde_json::to_string(&v).unwrap_or_default(),
            r#"{"a":3,"b":2}"#
        );
    }
}
