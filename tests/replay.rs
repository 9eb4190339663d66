//! `pubsub-kafka-bridge replay` end to end: dead letters made by a real bridge on tansu, the
//! cause fixed, the binary replaying them with the fixed settings, and the records read back.

use std::collections::HashMap;
use std::process::Command;

use bytes::Bytes;
use http_body_util::Full;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;
use test_support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_pubsub-kafka-bridge");

/// What one run of `replay` did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    fn final_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or_default()
    }

    fn has_line(&self, line: &str) -> bool {
        self.stdout.lines().any(|l| l == line)
    }

    /// The position it printed, as `--from` takes it.
    fn position(&self) -> String {
        let line = self
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("position: "))
            .unwrap_or_else(|| panic!("no position in {self:#?}"));
        line.split(" (").next().unwrap().to_owned()
    }
}

async fn replay(env: &HashMap<String, String>, args: &[&str]) -> Run {
    let env = env.clone();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(BINARY)
            .arg("replay")
            .args(args)
            .env_clear()
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

const PUBLISH_TIME: &str = "2024-05-06T07:08:09.123Z";
const PUBLISH_MS: i64 = 1_714_979_289_123;

fn wrapped(id: &str, size: usize) -> String {
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let attributes = [("tenant".to_owned(), "acme".to_owned())];
    envelope(&data, &attributes, id, PUBLISH_TIME, Some("k1")).to_string()
}

/// An unwrapped push with its metadata and one attribute, as Pub/Sub sends it.
fn unwrapped(url: &str, token: &str, id: &str, size: usize) -> http::Request<Full<Bytes>> {
    let data: Vec<u8> = (0..size).map(|i| (i % 7) as u8).collect();
    http::Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/octet-stream")
        .header("x-goog-pubsub-message-id", id)
        .header("x-goog-pubsub-publish-time", PUBLISH_TIME)
        .header(
            "x-goog-pubsub-subscription-name",
            "projects/test-project/subscriptions/bridge-sub",
        )
        .header("x-goog-pubsub-ordering-key", "k2")
        .header("colour", "blue")
        .body(Full::new(Bytes::from(data)))
        .unwrap()
}

/// Writes a record to `topic` that no bridge wrote.
async fn produce_foreign(broker: &Broker, topic: &str) {
    let client = broker.client().await.unwrap();
    let partition = client
        .partition_client(topic, 0, UnknownTopicHandling::Retry)
        .await
        .unwrap();
    let record = Record {
        key: Some(b"someone".to_vec()),
        value: Some(b"else's record".to_vec()),
        headers: [("source".to_owned(), b"elsewhere".to_vec())].into(),
        timestamp: chrono::Utc::now(),
    };
    partition
        .produce(vec![record], Compression::NoCompression)
        .await
        .unwrap();
}

fn by_id(records: Vec<Consumed>) -> HashMap<String, Consumed> {
    records
        .into_iter()
        .map(|r| (r.header("pubsub.message_id").unwrap(), r))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_replayed_once_the_cause_is_fixed_and_never_twice() {
    let broker = Broker::start().await;
    broker.create_topic("main", 3).await;
    broker.create_topic("reference", 3).await;
    broker.create_topic("dlq", 2).await;
    let mut jwks = JwksServer::start(&[key(1)]).await;
    let token = mint(&key(1), &google_claims());
    let mut env = bridge_env(&broker, "main", Some(&jwks));
    env.insert("KAFKA_DLQ_TOPIC".into(), "dlq".into());
    env.insert("KAFKA_MAX_RECORD_BYTES".into(), "4096".into());
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    // Too large for 4096 bytes: two wrapped deliveries of one message (a redelivery), one
    // unwrapped, one that stays too large for the fixed limit; and one that can never pass.
    let bodies = [
        wrapped("big-1", 5_000),
        wrapped("big-1", 5_000),
        wrapped("huge", 20_000),
        r#"{"message":{"data":"@@@","messageId":"b64","publishTime":"2024-01-01T00:00:00Z"},"subscription":"s"}"#.to_owned(),
    ];
    for body in &bodies {
        let (status, text) = post(&client, &bridge.url(), body.clone(), Some(&token)).await;
        assert_eq!(status, 204, "{text}");
    }
    let (status, text) = send(&client, unwrapped(&bridge.url(), &token, "big-u", 6_000)).await;
    assert_eq!(status, 204, "{text}");
    produce_foreign(&broker, "dlq").await;
    let dead = broker.read_all("dlq").await;
    assert_eq!(dead.len(), 6);
    assert!(broker.read_all("main").await.is_empty());

    // The cause fixed: a larger limit. The JWKS endpoint is gone: replay checks no token.
    jwks.stop();
    let mut fixed = env.clone();
    fixed.insert("KAFKA_MAX_RECORD_BYTES".into(), "10000".into());

    let dry = replay(&fixed, &["--dry-run"]).await;
    assert_eq!(dry.code, Some(0), "{dry:#?}");
    assert_eq!(dry.final_line(), "replayed 2, still failing 2", "{dry:#?}");
    assert!(
        broker.read_all("main").await.is_empty(),
        "a dry run writes nothing"
    );
    assert_eq!(broker.read_all("dlq").await.len(), 6, "not even a marker");

    let first = replay(&fixed, &[]).await;
    assert_eq!(first.code, Some(0), "{first:#?}");
    assert_eq!(
        first.lines()[first.lines().len() - 5..],
        [
            "records read: 6 (skipped: already replayed 1, not dead letters of the bridge 1, replay markers 0)",
            "invalid_base64: replayed 0, still failing 1",
            "record_too_large: replayed 2, still failing 1",
            format!(
                "position: {} (read to the end of the topic as it was when the run started)",
                first.position()
            )
            .as_str(),
            "replayed 2, still failing 2",
        ],
        "{first:#?}"
    );
    assert!(
        first
            .stderr
            .contains("not a dead letter of the bridge, skipped: no pubsub.error header"),
        "{}",
        first.stderr
    );
    assert!(
        first.stderr.contains(
            "still failing (record_too_large when dead-lettered): record_too_large: main/"
        ),
        "{}",
        first.stderr
    );

    // Read back: exactly what the bridge writes for the same deliveries with the fixed limit.
    let mut reference = bridge_env(&broker, "reference", None);
    reference.insert("KAFKA_MAX_RECORD_BYTES".into(), "10000".into());
    let reference_bridge = Bridge::start(&reference).await;
    let (status, _) = post(&client, &reference_bridge.url(), bodies[0].clone(), None).await;
    assert_eq!(status, 204);
    let request = unwrapped(&reference_bridge.url(), &token, "big-u", 6_000);
    assert_eq!(send(&client, request).await.0, 204);
    let expected = by_id(broker.read_all("reference").await);
    let replayed = by_id(broker.read_all("main").await);
    assert_eq!(replayed.len(), 2, "{replayed:#?}");
    for (id, record) in &replayed {
        let want = &expected[id];
        assert_eq!(
            record.record, want.record,
            "{id}: key, value, headers, timestamp"
        );
        assert_eq!(record.partition, want.partition, "{id}: partition");
        assert_eq!(record.record.timestamp.timestamp_millis(), PUBLISH_MS);
    }
    let big = &replayed["big-1"];
    assert_eq!(big.record.key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(big.header("tenant").as_deref(), Some("acme"));
    assert_eq!(big.record.value.as_ref().unwrap().len(), 5_000);
    let unwrapped_record = &replayed["big-u"];
    assert_eq!(unwrapped_record.record.key.as_deref(), Some(&b"k2"[..]));
    assert_eq!(unwrapped_record.header("colour").as_deref(), Some("blue"));
    assert_eq!(
        unwrapped_record.header("pubsub.subscription").as_deref(),
        Some("projects/test-project/subscriptions/bridge-sub")
    );
    assert_eq!(unwrapped_record.record.value.as_ref().unwrap().len(), 6_000);

    // A second run writes nothing: the markers of the first name what it replayed.
    let markers: Vec<Consumed> = broker
        .read_all("dlq")
        .await
        .into_iter()
        .filter(|r| r.header("pubsub.replay_of").is_some())
        .collect();
    assert_eq!(markers.len(), 2);
    let second = replay(&fixed, &[]).await;
    assert_eq!(second.code, Some(0), "{second:#?}");
    assert!(
        second.has_line(
            "records read: 8 (skipped: already replayed 3, not dead letters of the bridge 1, replay markers 2)"
        ),
        "{second:#?}"
    );
    assert_eq!(second.final_line(), "replayed 0, still failing 2");
    assert_eq!(
        broker.read_all("main").await.len(),
        2,
        "nothing written twice"
    );
    assert_eq!(broker.read_all("dlq").await.len(), 8, "no new marker");

    // Resume from the printed position: only what was dead-lettered since is read.
    let (status, _) = post(
        &client,
        &bridge.url(),
        wrapped("big-2", 5_000),
        Some(&token),
    )
    .await;
    assert_eq!(status, 204);
    let resumed = replay(&fixed, &["--from", &second.position()]).await;
    assert_eq!(resumed.code, Some(0), "{resumed:#?}");
    assert!(
        resumed.has_line(
            "records read: 1 (skipped: already replayed 0, not dead letters of the bridge 0, replay markers 0)"
        ),
        "{resumed:#?}"
    );
    assert_eq!(resumed.final_line(), "replayed 1, still failing 0");
    let ids = broker.message_ids("main").await;
    assert_eq!(ids.len(), 3);
    assert!(ids.contains(&"big-2".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_by_a_missing_topic_resumes_where_it_stopped() {
    let broker = Broker::start().await;
    broker.create_topic("main", 2).await;
    broker.create_topic("dlq", 1).await;
    let mut env = bridge_env(&broker, "main", None);
    env.remove("KAFKA_TOPIC");
    env.insert(
        "KAFKA_TOPIC_BY_SUBSCRIPTION".into(),
        "projects/p/subscriptions/a=main,projects/p/subscriptions/b=main".into(),
    );
    env.insert("KAFKA_DLQ_TOPIC".into(), "dlq".into());
    env.insert("KAFKA_MAX_RECORD_BYTES".into(), "4096".into());
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let body = |subscription: &str, id: &str| {
        let mut body = envelope(&[7u8; 5_000], &[], id, PUBLISH_TIME, None);
        body["subscription"] = format!("projects/p/subscriptions/{subscription}").into();
        body.to_string()
    };
    for (subscription, id) in [("a", "a1"), ("a", "a2"), ("b", "b1"), ("a", "a3")] {
        let (status, text) = post(&client, &bridge.url(), body(subscription, id), None).await;
        assert_eq!(status, 204, "{text}");
    }
    assert_eq!(broker.read_all("dlq").await.len(), 4);

    // Fixed, but subscription b now goes to a topic nobody created yet.
    let mut fixed = env.clone();
    fixed.insert("KAFKA_MAX_RECORD_BYTES".into(), "10000".into());
    fixed.insert(
        "KAFKA_TOPIC_BY_SUBSCRIPTION".into(),
        "projects/p/subscriptions/a=main,projects/p/subscriptions/b=later".into(),
    );
    fixed.insert("KAFKA_PRODUCE_TIMEOUT_MS".into(), "3000".into());
    let stopped = replay(&fixed, &[]).await;
    assert_eq!(stopped.code, Some(1), "{stopped:#?}");
    assert_eq!(stopped.position(), "0:2", "{stopped:#?}");
    assert!(
        stopped
            .stdout
            .contains("(stopped: dlq/0:2: unknown_topic: ")
            && stopped.stdout.contains("resume with --from 0:2)"),
        "{stopped:#?}"
    );
    // a1 and a2 before the stop, and a3, replayed while b1 was under way.
    let mut ids = broker.message_ids("main").await;
    ids.sort();
    assert_eq!(ids, ["a1", "a2", "a3"]);

    broker.create_topic("later", 1).await;
    let resumed = replay(&fixed, &["--from", &stopped.position()]).await;
    assert_eq!(resumed.code, Some(0), "{resumed:#?}");
    assert!(
        resumed.has_line(
            "records read: 5 (skipped: already replayed 1, not dead letters of the bridge 0, replay markers 3)"
        ),
        "{resumed:#?}"
    );
    assert_eq!(resumed.final_line(), "replayed 1, still failing 0");
    let mut ids = broker.message_ids("main").await;
    ids.sort();
    assert_eq!(ids, ["a1", "a2", "a3"], "a3 not written twice");
    assert_eq!(broker.message_ids("later").await, ["b1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_a_failing_routing_rule_are_replayed_once_the_rule_is_fixed() {
    let broker = Broker::start().await;
    broker.create_topic("orders", 2).await;
    broker.create_topic("dlq", 1).await;
    let mut env = bridge_env(&broker, "orders", None);
    env.remove("KAFKA_TOPIC");
    env.insert("KAFKA_DLQ_TOPIC".into(), "dlq".into());
    // The key reads an attribute some messages lack, without `has()`.
    env.insert(
        "ROUTES".into(),
        r#"[{"topic": "orders", "key": "attributes.customer"}]"#.into(),
    );
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let body = |id: &str, customer: Option<&str>| {
        let attributes: Vec<(String, String)> = customer
            .map(|c| vec![("customer".to_owned(), c.to_owned())])
            .unwrap_or_default();
        envelope(b"{}", &attributes, id, PUBLISH_TIME, None).to_string()
    };
    for (id, customer) in [("o1", Some("c-7")), ("o2", None), ("o3", None)] {
        let (status, text) = post(&client, &bridge.url(), body(id, customer), None).await;
        assert_eq!(status, 204, "{text}");
    }
    bridge.shutdown().await;
    let dead = broker.read_all("dlq").await;
    assert_eq!(dead.len(), 2);
    assert!(
        dead.iter()
            .all(|r| r.header("pubsub.error").as_deref() == Some("route_failed")),
        "{dead:?}"
    );
    assert_eq!(broker.message_ids("orders").await, ["o1"]);

    let mut fixed = env.clone();
    fixed.insert(
        "ROUTES".into(),
        r#"[{"topic": "orders", "key": "has(attributes.customer) ? attributes.customer : message_id"}]"#.into(),
    );
    let run = replay(&fixed, &[]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.has_line("route_failed: replayed 2, still failing 0"),
        "{run:#?}"
    );
    assert_eq!(run.final_line(), "replayed 2, still failing 0");
    let written = by_id(broker.read_all("orders").await);
    assert_eq!(written.len(), 3);
    for id in ["o2", "o3"] {
        assert_eq!(
            written[id].record.key.as_deref(),
            Some(id.as_bytes()),
            "{id}"
        );
        assert_eq!(
            written[id].record.value.as_deref(),
            Some(&b"{}"[..]),
            "{id}"
        );
    }
    let again = replay(&fixed, &[]).await;
    assert_eq!(
        again.final_line(),
        "replayed 0, still failing 0",
        "{again:#?}"
    );
    assert_eq!(
        broker.read_all("orders").await.len(),
        3,
        "nothing written twice"
    );
}

#[tokio::test]
async fn replay_without_a_dead_letter_topic_says_so() {
    let broker = Broker::start().await;
    let run = replay(&bridge_env(&broker, "main", None), &[]).await;
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr.contains("KAFKA_DLQ_TOPIC is not set"),
        "{run:#?}"
    );
    let bad = replay(&bridge_env(&broker, "main", None), &["--from", "0:x"]).await;
    assert_eq!(bad.code, Some(2), "{bad:#?}");
    assert!(bad.stderr.contains("is not PARTITION:OFFSET"), "{bad:#?}");
}

#[test]
fn docs_show_the_replay_options_as_the_binary_prints_them() {
    let output = Command::new(BINARY)
        .args(["replay", "-h"])
        .env_clear()
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    // The command's own part: the settings every command takes follow, under their headings.
    let own = help.split("\nHTTP:\n").next().unwrap();
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/replay.md")).unwrap();
    let block = docs
        .split("<!-- help: pubsub-kafka-bridge replay -h (its own options) -->\n```text\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/replay.md has the replay -h block");
    assert_eq!(
        block, own,
        "docs/replay.md's replay -h block is out of date"
    );
}
