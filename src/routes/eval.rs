//! The CEL variables of one delivery, each built on its first read and borrowing the message.
//!
//! `json` is the payload parsed once, on the first read, straight into CEL values (no
//! intermediate `serde_json::Value`): strings without escapes borrow the payload. A key repeated
//! in an object keeps its first value. Its nesting is
//! bounded by serde_json's recursion limit (128 levels; deeper input is a parse error, see
//! <https://docs.rs/serde_json/1/serde_json/struct.Deserializer.html#method.disable_recursion_limit>),
//! so a hostile payload cannot exhaust the stack, and the values take memory in proportion to
//! the payload, which the body limit bounds.

use std::sync::OnceLock;

use cel::common::types::{
    CelBool, CelBytes, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString,
    CelTimestamp, CelUInt,
};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::envelope::PubsubMessage;

type Boxed<'m> = Box<dyn Val + 'm>;

/// One message's variables, for [`cel::Context::set_variable_resolver`].
pub(super) struct Delivery<'m> {
    message: &'m PubsubMessage,
    attributes: OnceLock<Boxed<'m>>,
    json: OnceLock<Result<Boxed<'m>, String>>,
}

impl<'m> Delivery<'m> {
    pub(super) fn new(message: &'m PubsubMessage) -> Self {
        Self {
            message,
            attributes: OnceLock::new(),
            json: OnceLock::new(),
        }
    }

    /// CEL's message for a failed evaluation; when the payload was read as JSON and is not
    /// JSON, that is the reason (CEL itself only sees an undefined `json`).
    pub(super) fn explain(&self, error: cel::ExecutionError) -> String {
        match self.json.get() {
            Some(Err(reason)) => format!("data is not JSON: {reason}"),
            _ => error.to_string(),
        }
    }

    fn json(&self) -> &Result<Boxed<'m>, String> {
        self.json.get_or_init(|| {
            let mut deserializer = serde_json::Deserializer::from_slice(&self.message.data);
            let value = ValSeed
                .deserialize(&mut deserializer)
                .and_then(|value| deserializer.end().map(|()| value));
            value.map_err(|e| e.to_string())
        })
    }
}

impl std::fmt::Debug for Delivery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").finish_non_exhaustive()
    }
}

impl<'m> VariableResolver for Delivery<'m> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let message = self.message;
        let text = |s: &'b str| Some(CowVal::owned(CelString::from(s)));
        match variable {
            "attributes" => {
                let map = self.attributes.get_or_init(|| {
                    let entries = message
                        .attributes
                        .iter()
                        .map(|(name, value)| {
                            let value: Boxed<'m> = Box::new(CelString::from(value.as_str()));
                            (CelMapKey::from(name.as_str()), value)
                        })
                        .collect::<std::collections::HashMap<_, _>>();
                    Box::new(CelMap::from(entries))
                });
                Some(CowVal::Borrowed(&**map))
            }
            "data" => Some(CowVal::owned(CelBytes::from(message.data.as_slice()))),
            "json" => self.json().as_ref().ok().map(|v| CowVal::Borrowed(&**v)),
            "message_id" => text(&message.message_id),
            "ordering_key" => text(message.ordering_key.as_deref().unwrap_or_default()),
            "subscription" => text(&message.subscription),
            "publish_time" => {
                // Parsed from RFC 3339 by the envelope, so always within chrono's range.
                let time = chrono::DateTime::from_timestamp_millis(message.publish_time_ms)
                    .unwrap_or_default()
                    .fixed_offset();
                Some(CowVal::owned(CelTimestamp::from(time)))
            }
            _ => None,
        }
    }
}

/// Deserializes one JSON value into a CEL value borrowing the input where it can.
struct ValSeed;

impl<'de> DeserializeSeed<'de> for ValSeed {
    type Value = Boxed<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValSeed {
    type Value = Boxed<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Box::new(CelBool::from(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Box::new(CelInt::from(v)))
    }

    /// Integers are ints where they fit (so `json.id` can be a key), uints beyond.
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(match i64::try_from(v) {
            Ok(v) => Box::new(CelInt::from(v)),
            Err(_) => Box::new(CelUInt::from(v)),
        })
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Box::new(CelDouble::from(v)))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Box::new(CelString::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Box::new(CelString::from(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Box::new(CelString::from(v)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Box::new(CelNull))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Self)? {
            items.push(item);
        }
        Ok(Box::new(CelList::from(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = std::collections::HashMap::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value_seed(Self)?;
            // A repeated key keeps its first value, as the direct reading of fields does.
            entries.entry(key).or_insert(value);
        }
        Ok(Box::new(CelMap::from(entries)))
    }
}

/// An object's key, borrowing the input where it can.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = CelMapKey<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = CelMapKey<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(CelMapKey::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(CelMapKey::from(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(CelMapKey::from(v))
    }
}
