//! Property tests on hostile input: the envelope parser, the token parser and the header mapping
//! never panic, and well-formed data round-trips exactly.

use std::collections::BTreeMap;

use base64::Engine as _;
use http::HeaderMap;
use proptest::prelude::*;
use pubsub_kafka_bridge::auth::{Claims, bearer_token, check_email};
use pubsub_kafka_bridge::envelope::{PushPayload, parse_push, parse_wrapped};
use pubsub_kafka_bridge::kafka::partition::{murmur2, partition_for_key};
use pubsub_kafka_bridge::record::{
    AttributeHeaders, HEADER_MESSAGE_ID, RecordOptions, TimestampOutOfRange, build_record,
    record_headers,
};
use pubsub_kafka_bridge::timestamp::RecordTimestamp;

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "\\PC{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-zA-Z_]{1,12}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn attribute_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map("[a-zA-Z0-9_.-]{1,20}", "\\PC{0,40}", 0..20)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_envelope_parser(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_wrapped(&body);
        let _ = parse_push(&HeaderMap::new(), &body, PushPayload::Auto, chrono::Utc::now);
    }

    #[test]
    fn json_shaped_garbage_never_panics(
        message in prop::option::of(prop::collection::btree_map(
            prop_oneof![Just("data".to_owned()), Just("messageId".to_owned()), Just("publishTime".to_owned()), Just("attributes".to_owned()), "[a-zA-Z_]{1,12}"],
            json_value(),
            0..8,
        )),
        subscription in prop::option::of(any::<i64>()),
    ) {
        let body = serde_json::json!({ "message": message, "subscription": subscription });
        let _ = parse_wrapped(body.to_string().as_bytes());
    }

    #[test]
    fn well_formed_envelopes_round_trip(
        data in prop::collection::vec(any::<u8>(), 0..512),
        attributes in attribute_map(),
        id in "[0-9]{1,20}",
        millis in 0i64..4_000_000_000_000,
        nanos_digits in 0usize..10,
        ordering_key in prop::option::of("\\PC{1,30}"),
        attempt in prop::option::of(1i32..100),
        padded in any::<bool>(),
    ) {
        let time = chrono::DateTime::from_timestamp_millis(millis).unwrap();
        let fraction = format!("{:09}", time.timestamp_subsec_nanos());
        let publish_time = format!(
            "{}{}Z",
            time.format("%Y-%m-%dT%H:%M:%S"),
            if nanos_digits == 0 { String::new() } else { format!(".{}", &fraction[..nanos_digits]) }
        );
        let mut encoded = base64::engine::general_purpose::STANDARD.encode(&data);
        if !padded {
            encoded = encoded.trim_end_matches('=').to_owned();
        }
        let mut body = serde_json::json!({
            "message": {"data": encoded, "attributes": attributes, "messageId": id, "publishTime": publish_time},
            "subscription": "projects/p/subscriptions/s",
        });
        if let Some(k) = &ordering_key { body["message"]["orderingKey"] = k.clone().into(); }
        if let Some(a) = attempt { body["deliveryAttempt"] = a.into(); }
        let m = parse_wrapped(body.to_string().as_bytes()).unwrap();
        prop_assert_eq!(&m.data, &data);
        prop_assert_eq!(&m.attributes, &attributes);
        prop_assert_eq!(&m.message_id, &id);
        prop_assert_eq!(m.publish_time_ms, chrono::DateTime::parse_from_rfc3339(&publish_time).unwrap().timestamp_millis());
        prop_assert_eq!(m.ordering_key, ordering_key);
        prop_assert_eq!(m.delivery_attempt, attempt);
    }

    #[test]
    fn arbitrary_authorization_values_never_panic(value in "\\PC{0,200}", raw in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = bearer_token(Some(value.as_bytes()));
        let _ = bearer_token(Some(&raw));
        let _ = jsonwebtoken::decode_header(&value);
        let _ = jsonwebtoken::decode_header(&raw);
        let _ = pubsub_kafka_bridge::auth::token::parse(&value);
        let _ = pubsub_kafka_bridge::auth::token::parse(&String::from_utf8_lossy(&raw));
        let claims = Claims {
            exp: 0, iat: None, nbf: None,
            aud: pubsub_kafka_bridge::auth::token::Audience::One(value.clone()),
            iss: value.clone(), email: Some(value.clone()), email_verified: Some(true), sub: None,
        };
        let _ = check_email(&claims, Some(std::slice::from_ref(&value)));
    }

    #[test]
    fn headers_carry_every_selected_attribute_and_metadata_wins(
        attributes in attribute_map(),
        prefix in "[a-z.]{0,5}",
        only in prop::collection::vec("[a-zA-Z0-9_.-]{1,20}", 0..5),
        use_only in any::<bool>(),
    ) {
        let mut attributes = attributes;
        attributes.insert(HEADER_MESSAGE_ID.to_owned(), "forged".to_owned());
        let message = pubsub_kafka_bridge::envelope::PubsubMessage {
            data: Vec::new(),
            attributes: attributes.clone(),
            message_id: "real".into(),
            publish_time: "2024-01-01T00:00:00Z".into(),
            publish_time_ms: 1_704_067_200_000,
            ordering_key: None,
            subscription: "projects/p/subscriptions/s".into(),
            delivery_attempt: None,
        };
        let selection = if use_only { AttributeHeaders::Only(only.clone()) } else { AttributeHeaders::All };
        let options = RecordOptions { attribute_prefix: prefix.clone(), attribute_headers: selection, ..RecordOptions::default() };
        let headers = record_headers(message, &options);
        prop_assert_eq!(headers.get(HEADER_MESSAGE_ID).map(Vec::as_slice), Some(&b"real"[..]));
        for (name, value) in &attributes {
            let selected = !use_only || only.contains(name);
            let header = format!("{prefix}{name}");
            if selected && header != HEADER_MESSAGE_ID {
                prop_assert_eq!(headers.get(&header).map(Vec::as_slice), Some(value.as_bytes()));
            }
        }
    }

    /// Whatever the event-time attribute holds (epoch milliseconds of any size and sign, RFC
    /// 3339 of any year and offset), the record's time is exactly it within Kafka's range, and
    /// the delivery is refused outside it; nothing else is ever written.
    #[test]
    fn record_timestamps_are_the_given_time_within_kafkas_range_or_refused(
        millis in prop_oneof![
            any::<i64>(),
            -10_000i64..10_000,
            RecordTimestamp::MAX.millis() - 10_000..RecordTimestamp::MAX.millis() + 10_000,
        ],
        offset_minutes in -1439i32..1440,
        rfc3339 in any::<bool>(),
        padded in any::<bool>(),
    ) {
        let (value, expected) = if rfc3339 {
            // chrono's range for an RFC 3339 of four-digit years, written with an offset.
            let Some(utc) = chrono::DateTime::from_timestamp_millis(millis % 253_402_300_800_000) else {
                return Ok(());
            };
            let offset = chrono::FixedOffset::east_opt(offset_minutes * 60).unwrap();
            let local = utc.with_timezone(&offset);
            if !(0..=9999).contains(&chrono::Datelike::year(&local)) {
                return Ok(());
            }
            let text = local.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            (text, utc.timestamp_millis())
        } else {
            let text = if padded { format!(" {millis} ") } else { millis.to_string() };
            (text, millis)
        };
        let message = pubsub_kafka_bridge::envelope::PubsubMessage {
            data: Vec::new(),
            attributes: [("t".to_owned(), value.clone())].into_iter().collect(),
            message_id: "m".into(),
            publish_time: "2024-01-01T00:00:00Z".into(),
            publish_time_ms: 1_704_067_200_000,
            ordering_key: None,
            subscription: "projects/p/subscriptions/s".into(),
            delivery_attempt: None,
        };
        let options = RecordOptions { timestamp_attribute: Some("t".into()), ..RecordOptions::default() };
        let built = build_record(message, &options, |_| Ok::<_, TimestampOutOfRange>(Vec::new()));
        match RecordTimestamp::from_millis(expected) {
            Some(in_range) => {
                let (record, fallback) = built.unwrap();
                prop_assert_eq!(record.timestamp, in_range, "{}", value);
                prop_assert!(fallback.is_none());
            }
            None => {
                let refused = built.unwrap_err();
                prop_assert_eq!(refused.value, value);
            }
        }
    }

    /// Any `deliveryAttempt` number is either refused or kept exactly, within int32.
    #[test]
    fn delivery_attempts_are_int32_or_refused(attempt in prop_oneof![any::<u64>(), 0u64..=u64::from(u32::MAX)]) {
        let body = format!(
            r#"{{"message":{{"messageId":"1","publishTime":"2024-01-01T00:00:00Z"}},"subscription":"s","deliveryAttempt":{attempt}}}"#
        );
        match parse_wrapped(body.as_bytes()) {
            Ok(message) => {
                prop_assert!(attempt <= i32::MAX as u64);
                prop_assert_eq!(message.delivery_attempt.map(i64::from), Some(attempt as i64));
            }
            Err(refused) => {
                prop_assert!(attempt > i32::MAX as u64);
                prop_assert_eq!(refused.code(), "invalid_envelope");
            }
        }
    }

    #[test]
    fn keyed_partition_is_stable_and_in_range(key in prop::collection::vec(any::<u8>(), 0..64), partitions in 1u32..1000) {
        let p = partition_for_key(&key, partitions);
        prop_assert!(p < partitions);
        prop_assert_eq!(p, (murmur2(&key) & 0x7fff_ffff) as u32 % partitions);
    }
}
