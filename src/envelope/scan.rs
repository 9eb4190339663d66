//! The one-pass reading of a wrapped push body of the shape Pub/Sub sends (Google's "Push
//! subscriptions" page: `message` with `data`, `attributes`, the id, time and ordering key
//! fields in either spelling; `subscription`; `deliveryAttempt`).
//!
//! It reads a strict subset of what [`super::parse_wrapped`]'s serde reading accepts: plain
//! strings (no escapes, no control characters, valid UTF-8), no `null`s, no unknown or
//! repeated fields, a plain integer `deliveryAttempt`, nothing after the object. Anything
//! else is `None`, and the caller reads the body the serde way, whose verdicts and messages
//! stand; for whatever this accepts, the serde reading yields the same fields (a property
//! test holds it to that). Per 1 KiB delivery it costs a fraction of serde's field matching,
//! allocation-free `&str` borrowing and per-string UTF-8 and escape scans.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::{RawEnvelope, RawMessage};

/// The envelope's fields, borrowed from `body`, when `body` is within the plain subset.
pub(super) fn envelope(body: &[u8]) -> Option<RawEnvelope<'_, &[u8]>> {
    let mut cursor = Cursor { body, at: 0 };
    let mut envelope = RawEnvelope {
        message: None,
        subscription: None,
        delivery_attempt: None,
    };
    cursor.object(|cursor, key| match key {
        b"message" => set(&mut envelope.message, cursor.message()?),
        b"subscription" => set(&mut envelope.subscription, cursor.text()?),
        b"deliveryAttempt" => set(&mut envelope.delivery_attempt, cursor.integer()?),
        _ => None,
    })?;
    cursor.whitespace();
    (cursor.at == body.len()).then_some(envelope)
}

/// Fills a field seen for the first time; a repeated field is `None` (serde refuses it).
fn set<T>(field: &mut Option<T>, value: T) -> Option<()> {
    match field {
        Some(_) => None,
        None => {
            *field = Some(value);
            Some(())
        }
    }
}

struct Cursor<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    /// Skips JSON whitespace.
    fn whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.body.get(self.at) {
            self.at += 1;
        }
    }

    /// Takes `byte` after any whitespace.
    fn expect(&mut self, byte: u8) -> Option<()> {
        self.whitespace();
        (self.body.get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    /// An object, `field` reading the value of each key (given as its raw bytes).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        self.whitespace();
        if self.body.get(self.at) == Some(&b'}') {
            self.at += 1;
            return Some(());
        }
        loop {
            let key = self.raw_string()?;
            self.expect(b':')?;
            field(self, key)?;
            self.whitespace();
            match self.body.get(self.at)? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string's bytes between its quotes, if it has no escape. Control characters and
    /// invalid UTF-8 are left for [`Cursor::text`] to refuse, or for base64 (`data`).
    fn raw_string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let rest = &self.body[self.at..];
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[end] != b'"' {
            return None;
        }
        self.at += end + 1;
        Some(&rest[..end])
    }

    /// A string JSON allows as it is: no escapes, no control characters, valid UTF-8.
    fn text(&mut self) -> Option<Cow<'a, str>> {
        plain_text(self.raw_string()?).map(Cow::Borrowed)
    }

    /// A non-negative integer within `u32`, written plainly (no sign, fraction, exponent or
    /// leading zero).
    fn integer(&mut self) -> Option<u32> {
        self.whitespace();
        let digits = self.body[self.at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let text = &self.body[self.at..self.at + digits];
        if digits == 0 || (digits > 1 && text[0] == b'0') {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.body.get(self.at + digits) {
            return None;
        }
        self.at += digits;
        std::str::from_utf8(text).ok()?.parse().ok()
    }

    /// `message`: its `data` borrowed as bytes, the rest as text.
    fn message(&mut self) -> Option<RawMessage<'a, &'a [u8]>> {
        let mut message = RawMessage {
            data: None,
            attributes: None,
            message_id_camel: None,
            message_id_snake: None,
            publish_time_camel: None,
            publish_time_snake: None,
            ordering_key_camel: None,
            ordering_key_snake: None,
        };
        self.object(|cursor, key| match key {
            b"data" => set(&mut message.data, cursor.raw_string()?),
            b"attributes" => set(&mut message.attributes, cursor.attributes()?),
            b"messageId" => set(&mut message.message_id_camel, cursor.text()?),
            b"message_id" => set(&mut message.message_id_snake, cursor.text()?),
            b"publishTime" => set(&mut message.publish_time_camel, cursor.text()?),
            b"publish_time" => set(&mut message.publish_time_snake, cursor.text()?),
            b"orderingKey" => set(&mut message.ordering_key_camel, cursor.text()?),
            b"ordering_key" => set(&mut message.ordering_key_snake, cursor.text()?),
            _ => None,
        })?;
        Some(message)
    }

    /// `attributes`: names to values, each name once.
    fn attributes(&mut self) -> Option<BTreeMap<String, String>> {
        let mut attributes = BTreeMap::new();
        self.object(|cursor, key| {
            let name = plain_text(key)?;
            let value = cursor.text()?;
            match attributes.insert(name.to_owned(), value.into_owned()) {
                None => Some(()),
                Some(_) => None,
            }
        })?;
        Some(attributes)
    }
}

/// A string's raw bytes (escapes already refused) as text: no control characters, valid UTF-8.
fn plain_text(raw: &[u8]) -> Option<&str> {
    if raw.iter().any(|&b| b < 0x20) {
        return None;
    }
    std::str::from_utf8(raw).ok()
}

#[cfg(test)]
mod tests {
    use super::super::{BASE64, EnvelopeError, PubsubMessage, decode_base64, message_from};
    use super::*;
    use base64::Engine as _;
    use proptest::prelude::*;

    /// The message as the scan reads it (SIMD base64, as `parse_wrapped` decodes it).
    fn scanned(body: &[u8]) -> Option<PubsubMessage> {
        message_from(envelope(body)?, |data| {
            decode_base64(data).map_err(|_| EnvelopeError::InvalidBase64(String::new()))
        })
        .ok()
    }

    /// The message as the strict serde reading gives it, which is what must be answered.
    fn strict(body: &[u8]) -> Result<PubsubMessage, EnvelopeError> {
        let raw: RawEnvelope<'_, Cow<'_, str>> = serde_json::from_slice(body)
            .map_err(|e| EnvelopeError::NotAnEnvelope(e.to_string()))?;
        message_from(raw, |data| {
            BASE64
                .decode(data.as_bytes())
                .map_err(|e| EnvelopeError::InvalidBase64(e.to_string()))
        })
    }

    #[test]
    fn reads_what_pubsub_sends_in_one_pass() {
        let body = br#"{
          "message": {
            "attributes": {"key": "value", "seq": "7"},
            "data": "SGVsbG8gQ2xvdWQgUHViL1N1YiEgSGVyZSBpcyBteSBtZXNzYWdlIQ==",
            "messageId": "2070443601311540",
            "message_id": "2070443601311540",
            "publishTime": "2021-02-26T19:13:55.749Z",
            "publish_time": "2021-02-26T19:13:55.749Z",
            "orderingKey": "k", "ordering_key": "k"
          },
          "subscription": "projects/myproject/subscriptions/mysubscription",
          "deliveryAttempt": 3
        }"#;
        let message = scanned(body).expect("the scan reads Pub/Sub's own shape");
        assert_eq!(message.data, b"Hello Cloud Pub/Sub! Here is my message!");
        assert_eq!(message.attributes.len(), 2);
        assert_eq!(message.attributes["seq"], "7");
        assert_eq!(message.ordering_key.as_deref(), Some("k"));
        assert_eq!(message.delivery_attempt, Some(3));
        assert_eq!(Ok(message), strict(body));
        // Empty objects, no data, no attributes.
        let bare = br#"{"message":{"messageId":"1","publishTime":"2024-01-01T00:00:00Z","attributes":{}},"subscription":"s"}"#;
        assert_eq!(scanned(bare).map(|m| m.data), Some(Vec::new()));
    }

    #[test]
    fn leaves_everything_outside_the_plain_subset_to_serde() {
        let ok = r#""messageId":"1","publishTime":"2024-01-01T00:00:00Z""#;
        for body in [
            format!(r#"{{"message":{{{ok},"x":1}},"subscription":"s"}}"#),
            format!(r#"{{"message":{{{ok}}},"subscription":"s","extra":true}}"#),
            format!(r#"{{"message":{{{ok}}},"subscription":"s\u0041"}}"#),
            format!(r#"{{"message":{{{ok}}},"subscription":"s\n"}}"#),
            format!(r#"{{"message":{{{ok}}},"subscription":"s"}} x"#),
            format!(r#"{{"message":{{{ok}}},"subscription":"s","subscription":"t"}}"#),
            format!(r#"{{"message":{{{ok},"data":null}},"subscription":"s"}}"#),
            format!(
                r#"{{"message":{{{ok},"attributes":{{"a":"1","a":"2"}}}},"subscription":"s"}}"#
            ),
            format!(r#"{{"message":{{{ok}}},"subscription":"s","deliveryAttempt":03}}"#),
            format!(r#"{{"message":{{{ok}}},"subscription":"s","deliveryAttempt":3.0}}"#),
            format!(r#"{{"message":{{{ok}}},"subscription":"s","deliveryAttempt":4294967296}}"#),
            format!("{{\"message\":{{{ok}}},\"subscription\":\"s\u{1}\"}}"),
            format!(r#"{{"message":{{{ok}}},"subscription":"s""#),
        ] {
            assert!(envelope(body.as_bytes()).is_none(), "{body}");
        }
        let ok =
            format!(r#"{{"message":{{{ok}}},"subscription":"s","deliveryAttempt":4294967295}}"#);
        assert_eq!(
            envelope(ok.as_bytes()).and_then(|e| e.delivery_attempt),
            Some(u32::MAX)
        );
    }

    /// Bodies near the Pub/Sub shape: fields in any order, repeated or missing, odd values,
    /// whitespace, escapes, control characters, non-ASCII text, then maybe one byte changed or
    /// the end cut off.
    fn near_envelope() -> impl Strategy<Value = Vec<u8>> {
        let text = prop_oneof![
            4 => "[a-z0-9:./ -]{0,6}",
            1 => "[a-z\"\\\\é\u{7f}\u{1}\n]{0,4}",
            1 => Just("\\u0041".to_owned()),
            1 => Just("2024-01-01T00:00:00.5Z".to_owned()),
        ]
        .prop_map(|t| format!("\"{t}\""))
        .boxed();
        let value = prop_oneof![
            4 => text.clone(),
            1 => Just("null".to_owned()),
            1 => prop_oneof![Just("0"), Just("3"), Just("03"), Just("-1"), Just("3.0"), Just("1e2"),
                            Just("4294967295"), Just("4294967296"), Just("true"), Just("[]")]
                .prop_map(str::to_owned),
        ]
        .boxed();
        let data = proptest::collection::vec(any::<u8>(), 0..12)
            .prop_flat_map(|bytes| {
                let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
                prop_oneof![
                    Just(format!("\"{encoded}\"")),
                    Just(format!("\"{}\"", encoded.trim_end_matches('='))),
                    Just(format!("\"{encoded}=\"")),
                    Just(format!("\"{}\"", encoded.replace('A', "\\u0041"))),
                ]
            })
            .boxed();
        let attributes = proptest::collection::vec((text.clone(), text.clone()), 0..3)
            .prop_map(|pairs| {
                let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", pairs.join(","))
            })
            .boxed();
        let message_field = prop_oneof![
            data.prop_map(|v| ("data", v)),
            attributes.prop_map(|v| ("attributes", v)),
            prop_oneof![Just("\"1\"".to_owned()), value.clone()].prop_map(|v| ("messageId", v)),
            value.clone().prop_map(|v| ("message_id", v)),
            prop_oneof![Just("\"2024-01-01T00:00:00Z\"".to_owned()), value.clone()]
                .prop_map(|v| ("publishTime", v)),
            value.clone().prop_map(|v| ("publish_time", v)),
            value.clone().prop_map(|v| ("orderingKey", v)),
            value.clone().prop_map(|v| ("ordering_key", v)),
            value.clone().prop_map(|v| ("other", v)),
        ]
        .boxed();
        // The required fields are there most of the time, so most bodies are deliveries.
        let required = |field: &'static str, good: &'static str| {
            prop_oneof![
                6 => Just(vec![(field, good.to_owned())]),
                1 => Just(Vec::new()),
            ]
        };
        let message = (
            required("messageId", "\"1\""),
            required("publishTime", "\"2024-01-01T00:00:00Z\""),
            proptest::collection::vec(message_field, 0..3),
        )
            .prop_flat_map(|(id, time, extra)| Just([id, time, extra].concat()).prop_shuffle())
            .prop_map(|fields| {
                let fields: Vec<String> =
                    fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", fields.join(","))
            })
            .boxed();
        let top_field = prop_oneof![
            2 => value.clone().prop_map(|v| ("subscription", v)),
            1 => value.clone().prop_map(|v| ("deliveryAttempt", v)),
            1 => value.clone().prop_map(|v| ("message", v)),
            1 => value.prop_map(|v| ("extra", v)),
        ]
        .boxed();
        let top = (
            message.prop_map(|v| vec![("message", v)]),
            required("subscription", "\"projects/p/subscriptions/s\""),
            proptest::option::weighted(0.3, top_field),
        )
            .prop_flat_map(|(message, subscription, extra)| {
                Just([message, subscription, extra.into_iter().collect()].concat()).prop_shuffle()
            })
            .boxed();
        let whitespace = prop_oneof![
            3 => Just(""),
            2 => Just(" "),
            1 => Just("\n\t"),
            1 => Just("\r "),
            1 => Just("\u{a0}"),
        ];
        (
            top,
            whitespace,
            prop_oneof![8 => Just(""), 1 => Just(" "), 1 => Just("x"), 1 => Just("}")],
            proptest::option::weighted(0.2, (any::<proptest::sample::Index>(), any::<u8>())),
            proptest::option::weighted(0.1, any::<proptest::sample::Index>()),
        )
            .prop_map(|(fields, space, trailer, change, cut)| {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{space}\"{k}\"{space}:{space}{v}{space}"))
                    .collect();
                let mut body = format!("{space}{{{}}}{trailer}", fields.join(",")).into_bytes();
                if let Some((at, byte)) = change {
                    let at = at.index(body.len());
                    body[at] = byte;
                }
                if let Some(cut) = cut {
                    body.truncate(cut.index(body.len() + 1));
                }
                body
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Whatever the scan reads, the strict reading reads the same.
        #[test]
        fn whatever_the_scan_reads_the_strict_reading_reads_alike(body in near_envelope()) {
            if let Some(message) = scanned(&body) {
                prop_assert_eq!(Ok(message), strict(&body), "{}", String::from_utf8_lossy(&body));
            }
        }
    }
}
