//! Typed records (`KAFKA_VALUE_FORMAT=pubsub-schema`): what Pub/Sub validated against a topic
//! schema arrives in Kafka as a record of that schema revision, read back from tansu and
//! decoded by code that shares nothing with the bridge (confluent-kafka's deserializers against
//! the test registry, fastavro, Python's protobuf runtime: tests/decode_typed.py).
//!
//! Avro goes through the emulator: its Schema API, its schema topics (JSON and BINARY), its
//! revisions and deletion. Protobuf goes through a local Schema API serving a real `.proto`
//! (the emulator refuses Protocol Buffer schemas), with hand-made pushes. The registry is the
//! one fake part (`test_support::registry`); the local Schema API is the other
//! (`test_support::schema_api`), also put in front of the emulator to count the bridge's
//! requests and to take the API away.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use test_support::emulator::*;
use test_support::registry::TestRegistry;
use test_support::schema_api::{ApiMode, LocalSchemaApi};
use test_support::*;

/// An order with a union (`note`) written the way Avro's JSON encoding requires.
const ORDER_V1: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"long"},{"name":"item","type":"string"},{"name":"note","type":["null","string"],"default":null}]}"#;
/// ORDER_V1 and a field with a default: a compatible new revision.
const ORDER_V2: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"long"},{"name":"item","type":"string"},{"name":"note","type":["null","string"],"default":null},{"name":"qty","type":"int","default":1}]}"#;

const PROTO_NAME: &str = "projects/emulated-project/schemas/shop-order-proto";
const PROTO_REVISION: &str = "0a1b2c3d";

fn proto_path() -> String {
    data_dir()
        .join("typed/shop_order.proto")
        .display()
        .to_string()
}

/// Runs tests/decode_typed.py on `lines`: one decoded value per line.
fn decode(lines: &[Value]) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/decode_typed.py");
    let mut child = Command::new(python())
        .args(["-W", "ignore", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    // A decoder that stops at a failure closes its input early: its own report says why.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "decoder: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A `pubsub-schema` bridge's settings.
fn typed_env(
    broker: &Broker,
    topic: &str,
    jwks: &JwksServer,
    api: &str,
    registry: Option<&TestRegistry>,
) -> HashMap<String, String> {
    let mut env = bridge_env(broker, topic, Some(jwks));
    env.insert("KAFKA_VALUE_FORMAT".into(), "pubsub-schema".into());
    env.insert("PUBSUB_API_URL".into(), api.to_owned());
    if let Some(registry) = registry {
        env.insert("SCHEMA_REGISTRY_URL".into(), registry.url.clone());
    }
    env
}

/// Creates Avro schema `id` in the emulator; its full name and first revision.
async fn avro_schema(emulator: &Emulator, id: &str, definition: &str) -> (String, String) {
    let schema = emulator
        .call(
            "POST",
            &format!("schemas?schemaId={id}"),
            json!({"type": "AVRO", "definition": definition}),
        )
        .await;
    let revision = schema["revisionId"].as_str().unwrap().to_owned();
    (schema["name"].as_str().unwrap().to_owned(), revision)
}

/// A push the way Pub/Sub makes it for a schema topic, straight to the bridge with a token.
async fn push(bridge: &Bridge, id: &str, data: &[u8], schema: (&str, &str, &str)) -> (u16, Value) {
    let (name, revision, encoding) = schema;
    let attributes = [
        ("googclient_schemaname", name),
        ("googclient_schemarevisionid", revision),
        ("googclient_schemaencoding", encoding),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let body = envelope(data, &attributes, id, "2026-01-02T03:04:05.678Z", None);
    let token = mint(&key(1), &google_claims());
    let (status, answer) = post(
        &http_client(),
        &bridge.url(),
        body.to_string(),
        Some(&token),
    )
    .await;
    (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
}

fn record_with<'a>(records: &'a [Consumed], id: &str) -> &'a Consumed {
    records
        .iter()
        .find(|r| r.header("pubsub.message_id").as_deref() == Some(id))
        .unwrap_or_else(|| panic!("no record of {id}"))
}

/// `{"id": 42, "item": "pen", "note": "blue"}` and `{"id": 7, "item": "ink", "note": null}` in
/// Avro's JSON encoding (a union value as `{"string": ...}`) and its binary one (zig-zag
/// varints, length-prefixed strings, a union's branch index).
fn orders() -> [(&'static str, Vec<u8>, Value); 4] {
    let pen = json!({"id": 42, "item": "pen", "note": "blue"});
    let ink = json!({"id": 7, "item": "ink", "note": null});
    [
        (
            "JSON",
            br#"{"id":42,"item":"pen","note":{"string":"blue"}}"#.to_vec(),
            pen.clone(),
        ),
        (
            "JSON",
            br#"{"id":7,"item":"ink","note":null}"#.to_vec(),
            ink.clone(),
        ),
        ("BINARY", b"\x54\x06pen\x02\x08blue".to_vec(), pen),
        ("BINARY", b"\x0e\x06ink\x00".to_vec(), ink),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_schema_topics_arrive_as_records_of_their_revision() {
    let (emulator, broker, registry) =
        tokio::join!(Emulator::shared(), Broker::start(), TestRegistry::start());
    broker.create_topic("typed-avro-registry", 1).await;
    broker.create_topic("typed-avro-plain", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let api = format!("http://{}", emulator.host);
    let with_registry = Bridge::start(&typed_env(
        &broker,
        "typed-avro-registry",
        &jwks,
        &api,
        Some(&registry),
    ))
    .await;
    let without = Bridge::start(&typed_env(&broker, "typed-avro-plain", &jwks, &api, None)).await;
    let relays = [
        Relay::start(&format!("http://{}", with_registry.addr)).await,
        Relay::start(&format!("http://{}", without.addr)).await,
    ];
    let (schema, revision) = avro_schema(&emulator, "typed-order", ORDER_V1).await;

    let mut published = Vec::new();
    for encoding in ["JSON", "BINARY"] {
        let id = format!("typed-orders-{}", encoding.to_lowercase());
        let topic = emulator
            .create_topic(
                &id,
                json!({"schemaSettings": {"schema": schema, "encoding": encoding}}),
            )
            .await;
        for (n, relay) in relays.iter().enumerate() {
            emulator
                .create_push_subscription(
                    &format!("{id}-push-{n}"),
                    &topic,
                    &format!("{}/{id}", relay.url),
                    json!({}),
                    json!({}),
                )
                .await;
        }
        let cases: Vec<_> = orders()
            .into_iter()
            .filter(|(e, _, _)| *e == encoding)
            .collect();
        let messages: Vec<Value> = cases
            .iter()
            .map(|(_, data, _)| message(data, &[("source", "typed-test")]))
            .collect();
        let ids = emulator.publish(&topic, &messages).await;
        for (id, (encoding, data, expected)) in ids.into_iter().zip(cases) {
            published.push((id, encoding, data, expected));
        }
    }
    // A topic without a schema: its messages are written as they are.
    let plain_topic = emulator.create_topic("typed-no-schema", json!({})).await;
    emulator
        .create_push_subscription(
            "typed-no-schema-push",
            &plain_topic,
            &format!("{}/typed-no-schema", relays[0].url),
            json!({}),
            json!({}),
        )
        .await;
    let raw_id = emulator
        .publish(&plain_topic, &[message(b"not typed \xff", &[])])
        .await
        .remove(0);

    let ids: Vec<String> = published.iter().map(|(id, ..)| id.clone()).collect();
    let mut with_raw = ids.clone();
    with_raw.push(raw_id.clone());
    let registered = wait_for_ids(&broker, "typed-avro-registry", &with_raw).await;
    let plain = wait_for_ids(&broker, "typed-avro-plain", &ids).await;

    // Registry: the Confluent wire format, decoded by AvroDeserializer with the writer's
    // schema it fetched by id; no registry: single-object encoding, decoded by fastavro.
    let mut lines = Vec::new();
    for (id, ..) in &published {
        let value = record_with(&registered, id).record.value.clone().unwrap();
        assert_eq!(value[0], 0, "Confluent magic byte");
        lines.push(
            json!({"decoder": "confluent-avro", "registry": registry.url, "value": b64(&value)}),
        );
    }
    for (id, ..) in &published {
        let value = record_with(&plain, id).record.value.clone().unwrap();
        lines.push(
            json!({"decoder": "avro-single-object", "schema": ORDER_V1, "value": b64(&value)}),
        );
    }
    let decoded = decode(&lines);
    let expected: Vec<Value> = published
        .iter()
        .chain(&published)
        .map(|(.., expected)| expected.clone())
        .collect();
    assert_eq!(decoded, expected);

    for records in [&registered, &plain] {
        for (id, encoding, ..) in &published {
            let record = record_with(records, id);
            assert_eq!(
                record.header("googclient_schemaname").as_deref(),
                Some(schema.as_str())
            );
            assert_eq!(
                record.header("googclient_schemarevisionid").as_deref(),
                Some(revision.as_str())
            );
            assert_eq!(
                record.header("googclient_schemaencoding").as_deref(),
                Some(*encoding)
            );
            assert_eq!(record.header("source").as_deref(), Some("typed-test"));
        }
    }
    let raw = record_with(&registered, &raw_id);
    assert_eq!(raw.record.value.as_deref(), Some(&b"not typed \xff"[..]));
    assert_eq!(raw.header("googclient_schemaname"), None);

    // One registration for the one revision, under the topic's value subject, as Avro.
    let registrations = registry.registrations();
    assert_eq!(registrations.len(), 1, "{registrations:?}");
    assert_eq!(registrations[0].subject, "typed-avro-registry-value");
    assert_eq!(registrations[0].schema_type, "AVRO");
    assert_eq!(registrations[0].schema, ORDER_V1);
    let id = registrations[0].id.to_be_bytes();
    let value = record_with(&registered, &published[0].0)
        .record
        .value
        .clone()
        .unwrap();
    assert_eq!(
        &value[1..5],
        &id,
        "the registered id follows the magic byte"
    );
    for relay in &relays {
        assert!(relay.relayed().iter().all(|r| r.status == 204));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_revision_and_revisions_in_flight_are_fetched_and_registered_once_each() {
    let (emulator, broker, registry) =
        tokio::join!(Emulator::shared(), Broker::start(), TestRegistry::start());
    broker.create_topic("typed-revisions", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let api = LocalSchemaApi::start(Some(format!("http://{}", emulator.host))).await;
    let env = typed_env(&broker, "typed-revisions", &jwks, &api.url, Some(&registry));
    let bridge = Bridge::start(&env).await;
    let relay = Relay::start(&format!("http://{}", bridge.addr)).await;
    let (schema, first) = avro_schema(&emulator, "typed-evolving", ORDER_V1).await;
    let committed = emulator
        .call(
            "POST",
            "schemas/typed-evolving:commit",
            json!({"schema": {"type": "AVRO", "definition": ORDER_V2}}),
        )
        .await;
    let second = committed["revisionId"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let topic = emulator
        .create_topic(
            "typed-evolving-orders",
            json!({"schemaSettings": {"schema": schema, "encoding": "JSON"}}),
        )
        .await;
    emulator
        .create_push_subscription(
            "typed-evolving-push",
            &topic,
            &format!("{}/evolving", relay.url),
            json!({}),
            json!({}),
        )
        .await;
    // Every delivery waits on the slow API, so both revisions are in flight at once, each
    // wanted by many deliveries.
    api.set_mode(ApiMode::Slow(Duration::from_secs(1)));
    // Pub/Sub matches each message against the newest revision first: a message without
    // `qty` is not valid for the second revision (Avro's JSON encoding names every field).
    let messages: Vec<Value> = (0..12)
        .map(|n| match n % 2 {
            0 => message(
                format!(r#"{{"id":{n},"item":"a","note":null}}"#).as_bytes(),
                &[],
            ),
            _ => message(
                format!(r#"{{"id":{n},"item":"b","note":null,"qty":{n}}}"#).as_bytes(),
                &[],
            ),
        })
        .collect();
    let ids = emulator.publish(&topic, &messages).await;
    let records = wait_for_ids(&broker, "typed-revisions", &ids).await;
    api.set_mode(ApiMode::Serve);

    let lines: Vec<Value> = ids
        .iter()
        .map(|id| {
            let value = record_with(&records, id).record.value.clone().unwrap();
            json!({"decoder": "confluent-avro", "registry": registry.url, "value": b64(&value)})
        })
        .collect();
    let expected: Vec<Value> = (0..12)
        .map(|n| match n % 2 {
            0 => json!({"id": n, "item": "a", "note": null}),
            _ => json!({"id": n, "item": "b", "note": null, "qty": n}),
        })
        .collect();
    assert_eq!(decode(&lines), expected);
    for (n, id) in ids.iter().enumerate() {
        let revision = record_with(&records, id).header("googclient_schemarevisionid");
        let expected = if n % 2 == 0 { &first } else { &second };
        assert_eq!(revision.as_ref(), Some(expected), "message {n}");
    }
    assert_eq!(api.requests_for(&schema, &first), 1, "{:?}", api.requests());
    assert_eq!(
        api.requests_for(&schema, &second),
        1,
        "{:?}",
        api.requests()
    );
    assert!(
        api.authorizations().iter().all(Option::is_none),
        "loopback: no token"
    );
    let registrations = registry.registrations();
    assert_eq!(registrations.len(), 2, "{registrations:?}");
    let schemas: Vec<&str> = registrations.iter().map(|r| r.schema.as_str()).collect();
    assert!(schemas.contains(&ORDER_V1) && schemas.contains(&ORDER_V2));
    assert_ne!(registrations[0].id, registrations[1].id);
    assert!(
        registrations
            .iter()
            .all(|r| r.subject == "typed-revisions-value")
    );

    let (_, metrics) = get(&http_client(), &format!("http://{}/metrics", bridge.addr)).await;
    let hits = metric(&metrics, "pubsub_kafka_bridge_schema_cache_hits_total");
    let misses = metric(&metrics, "pubsub_kafka_bridge_schema_cache_misses_total");
    assert!(misses >= 2.0, "{metrics}");
    assert!(hits + misses >= 12.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_schema_is_dead_lettered_with_its_code_or_refused() {
    let (emulator, broker) = tokio::join!(Emulator::shared(), Broker::start());
    broker.create_topic("typed-deleted", 1).await;
    broker.create_topic("typed-deleted-dlq", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let api = format!("http://{}", emulator.host);
    let mut env = typed_env(&broker, "typed-deleted", &jwks, &api, None);
    env.insert("KAFKA_DLQ_TOPIC".into(), "typed-deleted-dlq".into());
    let with_dlq = Bridge::start(&env).await;
    let without_dlq = Bridge::start(&typed_env(&broker, "typed-deleted", &jwks, &api, None)).await;
    let relay = Relay::start(&format!("http://{}", with_dlq.addr)).await;

    // Published while the schema exists, pushed after it is deleted: Pub/Sub then names the
    // schema `_deleted-schema_` and the revision `_deleted-schema-revision_`.
    let (schema, revision) = avro_schema(&emulator, "typed-doomed", ORDER_V1).await;
    let topic = emulator
        .create_topic(
            "typed-doomed-orders",
            json!({"schemaSettings": {"schema": schema, "encoding": "JSON"}}),
        )
        .await;
    emulator
        .call(
            "PUT",
            "subscriptions/typed-doomed-sub",
            json!({"topic": topic}),
        )
        .await;
    let ids = emulator
        .publish(
            &topic,
            &[message(br#"{"id":1,"item":"a","note":null}"#, &[])],
        )
        .await;
    emulator
        .call("DELETE", "schemas/typed-doomed", json!({}))
        .await;
    emulator
        .call(
            "POST",
            "subscriptions/typed-doomed-sub:modifyPushConfig",
            json!({"pushConfig": {"pushEndpoint": format!("{}/doomed", relay.url)}}),
        )
        .await;
    let dead = wait_for_ids(&broker, "typed-deleted-dlq", &ids).await;
    let letter = record_with(&dead, &ids[0]);
    assert_eq!(
        letter.header("pubsub.error").as_deref(),
        Some("schema_not_found")
    );
    assert!(
        letter
            .header("pubsub.error_message")
            .unwrap()
            .contains("deleted"),
        "{:?}",
        letter.header("pubsub.error_message")
    );
    relay
        .wait_until("the dead letter acknowledged", |r| {
            r.iter().any(|r| r.status == 204)
        })
        .await;
    assert!(broker.read_all("typed-deleted").await.is_empty());

    // Without a dead-letter topic: 422 with the code, for the deleted attributes and for a
    // revision the Schema API does not have.
    let deleted = ("_deleted-schema_", "_deleted-schema-revision_", "JSON");
    let (status, body) = push(&without_dlq, "gone-1", br#"{"id":1}"#, deleted).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("schema_not_found")),
        "{body}"
    );
    let missing = (schema.as_str(), "deadbeef", "JSON");
    let (status, body) = push(&without_dlq, "gone-2", br#"{"id":1}"#, missing).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("schema_not_found")),
        "{body}"
    );
    let named = (schema.as_str(), revision.as_str(), "JSON");
    let (status, body) = push(&without_dlq, "gone-3", br#"{"id":1}"#, named).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("schema_not_found")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_that_does_not_decode_with_its_revision_is_a_schema_mismatch() {
    let (emulator, broker) = tokio::join!(Emulator::shared(), Broker::start());
    broker.create_topic("typed-mismatch", 1).await;
    broker.create_topic("typed-mismatch-dlq", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let api = format!("http://{}", emulator.host);
    let without_dlq = Bridge::start(&typed_env(&broker, "typed-mismatch", &jwks, &api, None)).await;
    let mut env = typed_env(&broker, "typed-mismatch", &jwks, &api, None);
    env.insert("KAFKA_DLQ_TOPIC".into(), "typed-mismatch-dlq".into());
    let with_dlq = Bridge::start(&env).await;
    let (schema, revision) = avro_schema(&emulator, "typed-strict", ORDER_V1).await;
    // Pub/Sub validates at publish time, so these can only be hand-made pushes.
    let cases: [(&str, &[u8]); 4] = [
        ("JSON", br#"{"id":"not a long","item":"a","note":null}"#),
        ("JSON", b"not json"),
        ("BINARY", b"\x54\x06pe"),
        ("BINARY", b"\x54\x06pen\x00trailing"),
    ];
    for (n, (encoding, data)) in cases.iter().enumerate() {
        let named = (schema.as_str(), revision.as_str(), *encoding);
        let (status, body) = push(&without_dlq, &format!("bad-{n}"), data, named).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (422, Some("schema_mismatch")),
            "{n}: {body}"
        );
        assert!(
            body["message"].as_str().unwrap().contains(&revision),
            "{body}"
        );
    }
    let named = (schema.as_str(), revision.as_str(), "BINARY");
    let (status, _) = push(&with_dlq, "bad-dlq", b"\x54\x06pe", named).await;
    assert_eq!(status, 204);
    let dead = wait_for_ids(&broker, "typed-mismatch-dlq", &["bad-dlq".to_owned()]).await;
    assert_eq!(
        dead[0].header("pubsub.error").as_deref(),
        Some("schema_mismatch")
    );
    assert!(broker.read_all("typed-mismatch").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_schema_api_answers_503_within_the_produce_timeout_then_delivers() {
    let (emulator, broker) = tokio::join!(Emulator::shared(), Broker::start());
    broker.create_topic("typed-outage", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let api = LocalSchemaApi::start(Some(format!("http://{}", emulator.host))).await;
    // bridge_env sets KAFKA_PRODUCE_TIMEOUT_MS=5000.
    let produce_timeout = Duration::from_secs(5);
    let bridge = Bridge::start(&typed_env(&broker, "typed-outage", &jwks, &api.url, None)).await;
    let relay = Relay::start(&format!("http://{}", bridge.addr)).await;
    let (schema, revision) = avro_schema(&emulator, "typed-outage", ORDER_V1).await;
    let named = (schema.as_str(), revision.as_str(), "BINARY");

    for (n, mode) in [
        ApiMode::Down,
        ApiMode::Status(500),
        ApiMode::Status(503),
        ApiMode::Status(403),
        ApiMode::Slow(Duration::from_secs(30)),
    ]
    .into_iter()
    .enumerate()
    {
        api.set_mode(mode);
        let started = Instant::now();
        let (status, body) = push(&bridge, &format!("outage-{n}"), b"\x0e\x06ink\x00", named).await;
        let took = started.elapsed();
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("schema_api_unavailable")),
            "{mode:?}: {body}"
        );
        assert!(took < produce_timeout, "{mode:?}: answered after {took:?}");
    }

    // Through the emulator: refused while the API is down, delivered once it is back.
    api.set_mode(ApiMode::Down);
    let topic = emulator
        .create_topic(
            "typed-outage-orders",
            json!({"schemaSettings": {"schema": schema, "encoding": "JSON"}}),
        )
        .await;
    emulator
        .create_push_subscription(
            "typed-outage-push",
            &topic,
            &format!("{}/outage", relay.url),
            json!({}),
            json!({}),
        )
        .await;
    let ids = emulator
        .publish(
            &topic,
            &[message(br#"{"id":7,"item":"ink","note":null}"#, &[])],
        )
        .await;
    relay
        .wait_until("a 503 while the API is down", |r| {
            r.iter().any(|r| r.status == 503)
        })
        .await;
    api.set_mode(ApiMode::Serve);
    let records = wait_for_ids(&broker, "typed-outage", &ids).await;
    assert_eq!(records.len(), 1);
    let value = records[0].record.value.clone().unwrap();
    let line = json!({"decoder": "avro-single-object", "schema": ORDER_V1, "value": b64(&value)});
    assert_eq!(
        decode(&[line]),
        [json!({"id": 7, "item": "ink", "note": null})]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_or_deep_definition_is_refused_with_a_clear_error() {
    let broker = Broker::start().await;
    broker.create_topic("typed-refused", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let api = LocalSchemaApi::start(None).await;
    let fields: Vec<String> = (0..20_000)
        .map(|n| format!(r#"{{"name":"field_{n}","type":"string"}}"#))
        .collect();
    let huge = format!(
        r#"{{"type":"record","name":"Huge","fields":[{}]}}"#,
        fields.join(",")
    );
    assert!(huge.len() > 300 * 1024);
    let name = "projects/emulated-project/schemas/huge";
    api.add(name, "1", "AVRO", &huge);
    let mut deep = r#""string""#.to_owned();
    for _ in 0..200 {
        deep = format!(r#"{{"type":"array","items":{deep}}}"#);
    }
    let deep_name = "projects/emulated-project/schemas/deep";
    api.add(deep_name, "1", "AVRO", &deep);
    let bridge = Bridge::start(&typed_env(&broker, "typed-refused", &jwks, &api.url, None)).await;

    for n in 0..2 {
        let (status, body) = push(&bridge, &format!("huge-{n}"), b"", (name, "1", "BINARY")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (422, Some("schema_refused")),
            "{body}"
        );
        assert!(
            body["message"].as_str().unwrap().contains("bytes"),
            "{body}"
        );
        let (status, body) = push(
            &bridge,
            &format!("deep-{n}"),
            b"\x00",
            (deep_name, "1", "BINARY"),
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (422, Some("schema_refused")),
            "{body}"
        );
        assert!(
            body["message"].as_str().unwrap().contains("deeper"),
            "{body}"
        );
    }
    // A revision never changes: the refusal is kept, not fetched again.
    assert_eq!(api.requests_for(name, "1"), 1);
    assert_eq!(api.requests_for(deep_name, "1"), 1);
    assert!(broker.read_all("typed-refused").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_revisions_arrive_as_messages_python_decodes() {
    let (broker, registry) = tokio::join!(Broker::start(), TestRegistry::start());
    broker.create_topic("typed-proto-registry", 1).await;
    broker.create_topic("typed-proto-plain", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let api = LocalSchemaApi::start(None).await;
    let definition = std::fs::read_to_string(proto_path()).unwrap();
    api.add(PROTO_NAME, PROTO_REVISION, "PROTOCOL_BUFFER", &definition);
    let with_registry = Bridge::start(&typed_env(
        &broker,
        "typed-proto-registry",
        &jwks,
        &api.url,
        Some(&registry),
    ))
    .await;
    let without = Bridge::start(&typed_env(
        &broker,
        "typed-proto-plain",
        &jwks,
        &api.url,
        None,
    ))
    .await;

    // proto3's JSON mapping (int64 as a string, enums by name, bytes as base64) and the wire
    // bytes of the same message: id=1 varint, item=2, tags=3, counts=4 (a map entry: key=1,
    // value=2), status=5, line=6 (sku=1, quantity=2), blob=7.
    let json_order = br#"{"id":"42","item":"pen","tags":["a","b"],"counts":{"x":3},"status":"SHIPPED","line":{"sku":"p-1","quantity":2},"blob":"AP8="}"#;
    let mut wire = vec![0x08, 42, 0x12, 3];
    wire.extend_from_slice(b"pen");
    wire.extend_from_slice(&[0x1a, 1, b'a', 0x1a, 1, b'b']);
    wire.extend_from_slice(&[0x22, 5, 0x0a, 1, b'x', 0x10, 3]);
    wire.extend_from_slice(&[0x28, 1]);
    wire.extend_from_slice(&[0x32, 7, 0x0a, 3]);
    wire.extend_from_slice(b"p-1");
    wire.extend_from_slice(&[0x10, 2]);
    wire.extend_from_slice(&[0x3a, 2, 0x00, 0xff]);
    let expected = json!({
        "id": "42", "item": "pen", "tags": ["a", "b"], "counts": {"x": 3},
        "status": "SHIPPED", "line": {"sku": "p-1", "quantity": 2}, "blob": "AP8=",
    });
    let cases = [("JSON", json_order.to_vec()), ("BINARY", wire)];
    let mut lines = Vec::new();
    for (bridge, topic, decoder) in [
        (&with_registry, "typed-proto-registry", "confluent-protobuf"),
        (&without, "typed-proto-plain", "protobuf"),
    ] {
        for (encoding, data) in &cases {
            let id = format!("{topic}-{encoding}");
            let (status, body) =
                push(bridge, &id, data, (PROTO_NAME, PROTO_REVISION, encoding)).await;
            assert_eq!(status, 204, "{id}: {body}");
            let records = wait_for_ids(&broker, topic, std::slice::from_ref(&id)).await;
            let value = record_with(&records, &id).record.value.clone().unwrap();
            lines.push(json!({
                "decoder": decoder, "proto": proto_path(), "message": "Order", "value": b64(&value),
            }));
        }
    }
    assert_eq!(decode(&lines), vec![expected; 4]);
    let registrations = registry.registrations();
    assert_eq!(registrations.len(), 1, "{registrations:?}");
    assert_eq!(registrations[0].subject, "typed-proto-registry-value");
    assert_eq!(registrations[0].schema_type, "PROTOBUF");
    assert_eq!(registrations[0].schema, definition);
    assert_eq!(
        api.requests_for(PROTO_NAME, PROTO_REVISION),
        2,
        "one per bridge"
    );
}

/// `pubsub-kafka-bridge check` with `env`: its exit code and lines.
async fn check(env: &HashMap<String, String>) -> (Option<i32>, Vec<String>) {
    let env = env.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_pubsub-kafka-bridge"))
            .arg("check")
            .env_clear()
            .envs(&env)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let lines = String::from_utf8(output.stdout).unwrap();
    (
        output.status.code(),
        lines.lines().map(str::to_owned).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_whether_the_schema_api_answers() {
    let (emulator, broker) = tokio::join!(Emulator::shared(), Broker::start());
    broker.create_topic("typed-checked", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let api = format!("http://{}", emulator.host);
    let mut env = typed_env(&broker, "typed-checked", &jwks, &api, None);
    env.insert("GOOGLE_CLOUD_PROJECT".into(), PROJECT.into());
    let (code, lines) = check(&env).await;
    assert_eq!(code, Some(0), "{lines:#?}");
    assert_eq!(
        lines.last().unwrap(),
        &format!("✓ pubsub schema api {api}: reachable (loopback: no token sent)")
    );

    let refusing = LocalSchemaApi::start(None).await;
    refusing.set_mode(ApiMode::Status(403));
    env.insert("PUBSUB_API_URL".into(), refusing.url.clone());
    let (code, lines) = check(&env).await;
    assert_eq!(code, Some(1), "{lines:#?}");
    assert_eq!(
        lines.last().unwrap(),
        &format!("✗ pubsub schema api {}: HTTP 403 Forbidden", refusing.url)
    );
    assert_eq!(
        refusing.requests(),
        [format!(
            "/v1/projects/{PROJECT}/schemas/pubsub-kafka-bridge-check@0?view=FULL"
        )]
    );
}
