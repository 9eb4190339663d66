//! What Pub/Sub does when the bridge cannot take a message now: a broker outage (503) and a
//! bridge slower than the subscription's ack deadline. Nothing may be lost; the duplicates
//! this creates are counted and printed (docs/emulator.md keeps the figures).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use test_support::emulator::*;
use test_support::*;

/// How many records of `records` repeat a message id already seen.
fn duplicates(records: &[Consumed]) -> usize {
    let mut seen = std::collections::HashSet::new();
    records
        .iter()
        .filter(|r| !seen.insert(r.header("pubsub.message_id").unwrap()))
        .count()
}

/// The message ids `records` holds more than once.
fn duplicated(records: &[Consumed]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut twice: Vec<String> = records
        .iter()
        .map(|r| r.header("pubsub.message_id").unwrap())
        .filter(|id| !seen.insert(id.clone()))
        .collect();
    twice.sort();
    twice.dedup();
    twice
}

/// Pushes per message id: `(first, most)` over `ids`.
fn pushes_per_message(relay: &Relay, ids: &[String]) -> (usize, usize) {
    let counts: HashMap<String, usize> = relay.deliveries_by_id();
    let per: Vec<usize> = ids
        .iter()
        .map(|id| counts.get(id).copied().unwrap_or(0))
        .collect();
    (*per.iter().min().unwrap(), *per.iter().max().unwrap())
}

/// The broker killed while messages are published: the bridge answers 503, the emulator pushes
/// again, and once the broker is back every message is in Kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_nothing_the_emulator_redelivers_every_503() {
    // An emulator of its own: pushes held seconds by the outage would slow the shared one's
    // pushes to other tests.
    let (emulator, mut broker) = tokio::join!(Emulator::start(), Broker::start_sqlite());
    broker.create_topic("outage", 3).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let bridge = Bridge::start(&bridge_env(&broker, "outage", Some(&jwks))).await;
    let relay = Relay::start(&format!("http://{}", bridge.addr)).await;
    let topic = emulator.create_topic("outage", json!({})).await;
    emulator
        .create_push_subscription(
            "outage-push",
            &topic,
            &format!("{}/outage", relay.url),
            json!({}),
            json!({}),
        )
        .await;
    let batch = |from: usize| -> Vec<serde_json::Value> {
        (from..from + 10)
            .map(|i| message(format!("message {i}").as_bytes(), &[("n", &i.to_string())]))
            .collect()
    };

    let before = emulator.publish(&topic, &batch(0)).await;
    wait_for_ids(&broker, "outage", &before).await;
    broker.kill();
    let during = emulator.publish(&topic, &batch(20)).await;
    // Refused and pushed again: the emulator pushes the oldest messages first, so while they
    // keep failing the later ones may not be pushed at all yet.
    relay
        .wait_until(
            "messages of the outage refused, one of them twice",
            |relayed| {
                let refused: Vec<&Relayed> = relayed.iter().filter(|r| r.status == 503).collect();
                refused.len() >= 2 * during.len()
                    && during.iter().any(|id| {
                        refused
                            .iter()
                            .filter(|r| r.message_id.as_ref() == Some(id))
                            .count()
                            >= 2
                    })
            },
        )
        .await;
    let refused = relay.relayed().iter().filter(|r| r.status == 503).count();
    let outage_ended = Instant::now();
    broker.restart().await;
    let all: Vec<String> = before.iter().chain(&during).cloned().collect();
    relay
        .wait_until("each message acknowledged", |relayed| {
            all.iter().all(|id| {
                relayed
                    .iter()
                    .any(|r| r.message_id.as_ref() == Some(id) && r.status == 204)
            })
        })
        .await;
    let records = wait_for_ids(&broker, "outage", &all).await;
    let recovered = outage_ended.elapsed();
    let records_now = broker.read_all("outage").await;
    let (fewest, most) = pushes_per_message(&relay, &during);
    println!(
        "broker outage: {} messages published ({} during the outage), {refused} pushes answered \
         503, {fewest}-{most} pushes per outage message; all in Kafka {recovered:?} after the \
         broker returned; {} records, {} duplicates",
        all.len(),
        during.len(),
        records_now.len(),
        duplicates(&records_now)
    );
    for id in duplicated(&records_now) {
        let answers: Vec<u16> = relay
            .relayed()
            .iter()
            .filter(|r| r.message_id.as_ref() == Some(&id))
            .map(|r| r.status)
            .collect();
        println!(
            "broker outage: message {id} written more than once; its pushes were answered {answers:?}"
        );
    }
    assert!(records.len() >= all.len());
    let statuses: Vec<u16> = relay.relayed().iter().map(|r| r.status).collect();
    assert!(
        statuses.iter().all(|s| matches!(s, 204 | 503)),
        "{statuses:?}"
    );
}

/// A bridge slower than the ack deadline (10 s, Pub/Sub's least): Kafka's answers held 15 s by
/// a proxy. What the emulator then does is measured and printed; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_slower_than_the_ack_deadline_gets_duplicates_and_loses_nothing() {
    const ACK_DEADLINE: Duration = Duration::from_secs(10);
    const KAFKA_DELAY: Duration = Duration::from_secs(15);
    // An emulator of its own: pushes held past the deadline would slow the shared one's pushes
    // to other tests.
    let emulator = Emulator::start().await;
    let mut broker = Broker::builder().build();
    let proxy = BrokerProxy::start(broker.port).await;
    broker.advertised_port = Some(proxy.port);
    broker.start_now().await;
    broker.create_topic("slow", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let mut env = bridge_env(&broker, "slow", Some(&jwks));
    // The bridge waits for Kafka longer than Pub/Sub waits for it.
    env.insert("KAFKA_PRODUCE_TIMEOUT_MS".into(), "40000".into());
    env.insert("KAFKA_REQUEST_TIMEOUT_MS".into(), "40000".into());
    let bridge = Bridge::start(&env).await;
    let relay = Relay::start(&format!("http://{}", bridge.addr)).await;
    let topic = emulator.create_topic("slow", json!({})).await;
    emulator
        .create_push_subscription(
            "slow-push",
            &topic,
            &format!("{}/slow", relay.url),
            json!({}),
            json!({"ackDeadlineSeconds": ACK_DEADLINE.as_secs()}),
        )
        .await;

    proxy.delay_answers(PRODUCE, KAFKA_DELAY);
    let published = Instant::now();
    let ids = emulator
        .publish(
            &topic,
            &(0..3)
                .map(|i| message(format!("slow {i}").as_bytes(), &[]))
                .collect::<Vec<_>>(),
        )
        .await;
    // Until a message answered after its deadline is pushed again. The emulator pushes the
    // oldest message first, so while answers stay slow a later one may wait its turn.
    relay
        .wait_until("a message pushed again after its deadline", |relayed| {
            let in_flight = relay.in_flight();
            ids.iter().any(|id| {
                relayed.iter().any(|r| r.message_id.as_ref() == Some(id))
                    && relayed
                        .iter()
                        .map(|r| &r.message_id)
                        .chain(in_flight.iter().map(|p| &p.message_id))
                        .filter(|pushed| pushed.as_ref() == Some(id))
                        .count()
                        >= 2
            })
        })
        .await;
    proxy.delay_answers(PRODUCE, Duration::ZERO);
    let records = wait_for_ids(&broker, "slow", &ids).await;
    assert!(records.len() >= ids.len());
    // A measurement, not a synchronisation: whatever the emulator still pushes within a
    // deadline and a backoff after Kafka is fast again is counted.
    tokio::time::sleep(ACK_DEADLINE + Duration::from_secs(5)).await;
    let relayed = relay.relayed();
    let records = broker.read_all("slow").await;
    for id in &ids {
        let pushes: Vec<String> = relayed
            .iter()
            .filter(|r| r.message_id.as_ref() == Some(id))
            .map(|r| {
                format!(
                    "received at {:.1} s, answered {} at {:.1} s",
                    (r.received - published).as_secs_f64(),
                    r.status,
                    (r.answered - published).as_secs_f64()
                )
            })
            .collect();
        println!("slow bridge, message {id}: {}", pushes.join("; "));
    }
    println!(
        "slow bridge (ack deadline {ACK_DEADLINE:?}, Kafka answers held {KAFKA_DELAY:?}): {} \
         messages, {} pushes, {} records, {} duplicates",
        ids.len(),
        relayed.len(),
        records.len(),
        duplicates(&records)
    );
    // A push queued behind the held answers longer than the produce timeout is a 503: also
    // redelivered, also nothing lost.
    assert!(
        relayed.iter().all(|r| matches!(r.status, 204 | 503)),
        "{relayed:?}"
    );
}
