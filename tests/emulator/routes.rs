//! Routing rules on what the emulator's client published: two event types to two topics, keyed
//! by a customer id inside the JSON payload, test events dropped with a 204 the emulator takes
//! as an ack (it does not push them again), a wrapped and an unwrapped subscription alike.

use serde_json::json;

use test_support::emulator::*;
use test_support::*;

const RULES: &str = r#"[
  {"when": "attributes.?env.orValue('') == 'test'", "drop": true},
  {"when": "attributes.type == 'order'", "topic": "routed-orders", "key": "json.customer"},
  {"when": "attributes.type == 'click'", "topic": "routed-clicks",
   "headers": {"via": "subscription.endsWith('/routes-unwrapped') ? 'unwrapped' : 'wrapped'"}}
]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_route_two_event_types_to_two_topics_and_drop_test_events() {
    let (emulator, broker) = tokio::join!(Emulator::shared(), Broker::start());
    broker.create_topic("routed-orders", 3).await;
    broker.create_topic("routed-clicks", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let mut env = bridge_env(&broker, "unused", Some(&jwks));
    env.remove("KAFKA_TOPIC");
    env.insert("ROUTES".into(), RULES.into());
    let bridge = Bridge::start(&env).await;
    let relay = Relay::start(&format!("http://{}", bridge.addr)).await;
    let topic = emulator.create_topic("routes", json!({})).await;
    emulator
        .create_push_subscription(
            "routes-wrapped",
            &topic,
            &format!("{}/wrapped", relay.url),
            json!({}),
            json!({}),
        )
        .await;
    emulator
        .create_push_subscription(
            "routes-unwrapped",
            &topic,
            &format!("{}/unwrapped", relay.url),
            json!({"noWrapper": {"writeMetadata": true}}),
            json!({}),
        )
        .await;

    let ids = emulator
        .publish(
            &topic,
            &[
                message(br#"{"customer": "c-1", "total": 5}"#, &[("type", "order")]),
                message(br#"{"page": "/home"}"#, &[("type", "click")]),
                message(
                    br#"{"customer": "c-2"}"#,
                    &[("type", "order"), ("env", "test")],
                ),
            ],
        )
        .await;
    let (order, click, test_event) = (&ids[0], &ids[1], &ids[2]);

    // Each subscription delivers each message: two records per routed message.
    let orders = wait_for_ids(&broker, "routed-orders", std::slice::from_ref(order)).await;
    let clicks = wait_for_ids(&broker, "routed-clicks", std::slice::from_ref(click)).await;
    relay
        .wait_until("both test-event pushes answered 204", |relayed| {
            relayed
                .iter()
                .filter(|r| r.message_id.as_ref() == Some(test_event) && r.status == 204)
                .count()
                == 2
        })
        .await;
    let orders = if orders.len() < 2 {
        wait_for_count(&broker, "routed-orders", 2).await
    } else {
        orders
    };
    let clicks = if clicks.len() < 2 {
        wait_for_count(&broker, "routed-clicks", 2).await
    } else {
        clicks
    };
    assert_eq!(orders.len(), 2, "no test event among the orders");
    for record in &orders {
        assert_eq!(record.header("pubsub.message_id").as_ref(), Some(order));
        assert_eq!(record.record.key.as_deref(), Some(&b"c-1"[..]));
        assert_eq!(record.partition as u32, java_partition(b"c-1", 3));
    }
    let mut via: Vec<String> = clicks.iter().map(|r| r.header("via").unwrap()).collect();
    via.sort();
    assert_eq!(via, ["unwrapped", "wrapped"]);
    // Answered 204, the drop is an ack: pushed once per subscription.
    let pushes = relay.deliveries_by_id();
    assert_eq!(pushes[test_event], 2, "{pushes:?}");
    let (_, metrics) = get(&http_client(), &format!("{}metrics", bridge.url())).await;
    assert_eq!(metric(&metrics, "pubsub_kafka_bridge_dropped_total"), 2.0);
    emulator.delete_subscription("routes-wrapped").await;
    emulator.delete_subscription("routes-unwrapped").await;
}
