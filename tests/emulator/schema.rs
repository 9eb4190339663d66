//! An Avro schema topic, made through the emulator's Schema API: the schema attributes Pub/Sub
//! adds to each message (`googclient_schemaname`, `...revisionid`, `...encoding`) arrive as
//! record headers, for JSON and BINARY encodings alike, and the data untouched.

use serde_json::json;

use test_support::emulator::*;
use test_support::*;

const ORDER_SCHEMA: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"item","type":"string"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_topic_attributes_arrive_as_headers() {
    let (emulator, broker) = tokio::join!(Emulator::shared(), Broker::start());
    broker.create_topic("typed", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let bridge = Bridge::start(&bridge_env(&broker, "typed", Some(&jwks))).await;
    let relay = Relay::start(&format!("http://{}", bridge.addr)).await;
    let schema = emulator
        .call(
            "POST",
            "schemas?schemaId=order-schema",
            json!({"type": "AVRO", "definition": ORDER_SCHEMA}),
        )
        .await;
    let schema_name = format!("projects/{PROJECT}/schemas/order-schema");
    assert_eq!(schema["name"], schema_name.as_str());
    let revision = schema["revisionId"]
        .as_str()
        .expect("a revision id")
        .to_owned();

    // {"id": 42, "item": "pen"}: Avro's JSON encoding, and its binary one (zig-zag varint 42,
    // then the string's zig-zag length and bytes).
    let cases = [
        ("JSON", br#"{"id":42,"item":"pen"}"#.to_vec()),
        ("BINARY", vec![0x54, 0x06, b'p', b'e', b'n']),
    ];
    let mut published = Vec::new();
    for (encoding, data) in &cases {
        let id = format!("orders-{}", encoding.to_lowercase());
        let topic = emulator
            .create_topic(
                &id,
                json!({"schemaSettings": {"schema": schema_name, "encoding": encoding}}),
            )
            .await;
        emulator
            .create_push_subscription(
                &format!("{id}-push"),
                &topic,
                &format!("{}/{id}", relay.url),
                json!({}),
                json!({}),
            )
            .await;
        let ids = emulator
            .publish(&topic, &[message(data, &[("source", "schema-test")])])
            .await;
        published.push((ids[0].clone(), *encoding, data.clone()));
    }
    let ids: Vec<String> = published.iter().map(|(id, _, _)| id.clone()).collect();
    let records = wait_for_ids(&broker, "typed", &ids).await;
    assert_eq!(records.len(), published.len());
    for (id, encoding, data) in &published {
        let record = records
            .iter()
            .find(|r| r.header("pubsub.message_id").as_ref() == Some(id))
            .unwrap();
        assert_eq!(
            record.record.value.as_deref(),
            Some(data.as_slice()),
            "{encoding}"
        );
        assert_eq!(
            record.header("googclient_schemaname").as_deref(),
            Some(schema_name.as_str()),
            "{encoding}"
        );
        assert_eq!(
            record.header("googclient_schemarevisionid").as_deref(),
            Some(revision.as_str()),
            "{encoding}"
        );
        assert_eq!(
            record.header("googclient_schemaencoding").as_deref(),
            Some(*encoding),
        );
        assert_eq!(record.header("source").as_deref(), Some("schema-test"));
    }
    assert!(relay.relayed().iter().all(|r| r.status == 204));
}
