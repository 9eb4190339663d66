//! Routing rules end to end: real pushes with real RSA-signed tokens from a local JWKS, the
//! records read back from tansu; the binary refusing bad rules and `check` checking their
//! topics; trace continuation read by OpenTelemetry's own W3C propagator.

// Tests read their own environment (the Python to run).
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use test_support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_pubsub-kafka-bridge");

/// Orders keyed by the customer in their JSON payload, with event time from it and a header
/// renamed; clicks to their own topic; test events dropped; the rest to `KAFKA_TOPIC`.
const RULES: &str = r#"[
  {"when": "has(attributes.env) && attributes.env == 'test'", "drop": true},
  {"when": "attributes.type == 'order'", "topic": "orders",
   "key": "json.customer.id",
   "headers": {"event_type": "attributes.type", "type": null, "source": "'bridge'"},
   "timestamp": "timestamp(json.at)"},
  {"when": "attributes.type == 'click'", "topic": "clicks"}
]"#;

fn attributes(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn push(data: &[u8], pairs: &[(&str, &str)], id: &str) -> String {
    envelope(
        data,
        &attributes(pairs),
        id,
        "2024-05-06T07:08:09.123Z",
        None,
    )
    .to_string()
}

fn headers(record: &Consumed) -> BTreeMap<String, String> {
    record
        .record
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.clone()).unwrap()))
        .collect()
}

#[tokio::test]
async fn rules_route_drop_key_and_shape_records() {
    let broker = Broker::start().await;
    for (topic, partitions) in [("orders", 4), ("clicks", 1), ("other", 1)] {
        broker.create_topic(topic, partitions).await;
    }
    let jwks = JwksServer::start(&[key(1)]).await;
    let token = mint(&key(1), &google_claims());
    let mut env = bridge_env(&broker, "other", Some(&jwks));
    env.insert("ROUTES".into(), RULES.into());
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let deliver = |body: String| {
        let (client, url, token) = (client.clone(), bridge.url(), token.clone());
        async move { post(&client, &url, body, Some(&token)).await }
    };

    let order = br#"{"customer": {"id": "c-42"}, "at": "2024-01-02T03:04:05.678Z"}"#;
    let (status, text) = deliver(push(order, &[("type", "order"), ("region", "eu")], "o1")).await;
    assert_eq!(status, 204, "{text}");
    let (status, text) = deliver(push(b"click", &[("type", "click")], "c1")).await;
    assert_eq!(status, 204, "{text}");
    let (status, text) = deliver(push(order, &[("type", "order"), ("env", "test")], "t1")).await;
    assert_eq!(
        (status, text.as_str()),
        (204, ""),
        "a dropped delivery answers 204"
    );
    let (status, text) = deliver(push(b"other", &[("type", "view")], "v1")).await;
    assert_eq!(status, 204, "{text}");

    let orders = broker.read_all("orders").await;
    assert_eq!(orders.len(), 1);
    let record = &orders[0];
    assert_eq!(record.record.key.as_deref(), Some(&b"c-42"[..]));
    assert_eq!(record.partition as u32, java_partition(b"c-42", 4));
    assert_eq!(record.record.value.as_deref(), Some(&order[..]));
    assert_eq!(
        record.record.timestamp.timestamp_millis(),
        1_704_164_645_678
    );
    let expected: BTreeMap<String, String> = [
        ("event_type", "order"),
        ("source", "bridge"),
        ("region", "eu"),
        ("pubsub.message_id", "o1"),
        ("pubsub.publish_time", "2024-05-06T07:08:09.123Z"),
        (
            "pubsub.subscription",
            "projects/test-project/subscriptions/bridge-sub",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(headers(record), expected);
    assert_eq!(broker.message_ids("clicks").await, ["c1"]);
    // No rule matched: KAFKA_TOPIC, with the record as the bridge maps it without rules.
    let other = broker.read_all("other").await;
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].header("type").as_deref(), Some("view"));
    assert_eq!(other[0].header("pubsub.message_id").as_deref(), Some("v1"));
    // The dropped delivery is nowhere, and counted.
    let (_, metrics) = get(&client, &format!("{}metrics", bridge.url())).await;
    assert_eq!(metric(&metrics, "pubsub_kafka_bridge_dropped_total"), 1.0);
    assert_eq!(
        metric(
            &metrics,
            "pubsub_kafka_bridge_deliveries_total{status=\"204\"}"
        ),
        4.0
    );
}

#[tokio::test]
async fn without_a_fallback_topic_an_unmatched_delivery_is_404_no_route_and_a_failing_rule_422() {
    let broker = Broker::start().await;
    broker.create_topic("orders", 1).await;
    broker.create_topic("clicks", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let token = mint(&key(1), &google_claims());
    let mut env = bridge_env(&broker, "unused", Some(&jwks));
    env.remove("KAFKA_TOPIC");
    env.insert("ROUTES".into(), RULES.into());
    let bridge = Bridge::start(&env).await;
    let client = http_client();

    let (status, text) = post(
        &client,
        &bridge.url(),
        push(b"x", &[("type", "view")], "v1"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 404, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"], "no_route");

    // An order whose payload is not JSON: the rule that reads json cannot be evaluated.
    let (status, text) = post(
        &client,
        &bridge.url(),
        push(b"not json", &[("type", "order")], "o1"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 422, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"], "route_failed");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("rule 1 key: data is not JSON: "),
        "{message}"
    );
    // A missing field, not guarded by has().
    let (status, text) = post(
        &client,
        &bridge.url(),
        push(br#"{"customer": {}}"#, &[("type", "order")], "o2"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("rule 1 key: No such key: id"), "{text}");
    // A missing attribute not guarded by has().
    let (status, text) = post(
        &client,
        &bridge.url(),
        push(b"x", &[("kind", "none")], "n1"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("rule 1 when: No such key: type"), "{text}");
    assert!(broker.message_ids("orders").await.is_empty());
    // Unverified pushes never reach the rules.
    let (status, _) = post(
        &client,
        &bridge.url(),
        push(b"x", &[("type", "click")], "u1"),
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert!(broker.message_ids("clicks").await.is_empty());
}

#[tokio::test]
async fn a_failing_rule_dead_letters_the_delivery_when_a_dlq_is_set() {
    let broker = Broker::start().await;
    for topic in ["orders", "clicks", "dlq"] {
        broker.create_topic(topic, 1).await;
    }
    let jwks = JwksServer::start(&[key(1)]).await;
    let token = mint(&key(1), &google_claims());
    let mut env = bridge_env(&broker, "unused", Some(&jwks));
    env.remove("KAFKA_TOPIC");
    env.insert("ROUTES".into(), RULES.into());
    env.insert("KAFKA_DLQ_TOPIC".into(), "dlq".into());
    let bridge = Bridge::start(&env).await;
    let body = push(br#"{"customer": {"id": true}}"#, &[("type", "order")], "o1");
    let (status, text) = post(&http_client(), &bridge.url(), body.clone(), Some(&token)).await;
    assert_eq!(status, 204, "{text}");
    let dead = broker.read_all("dlq").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].header("pubsub.error").as_deref(),
        Some("route_failed")
    );
    assert_eq!(
        dead[0].header("pubsub.error_message").as_deref(),
        Some("rule 1 key: yielded bool, not a string, bytes or an int")
    );
    assert_eq!(dead[0].record.value.as_deref(), Some(body.as_bytes()));
    assert!(broker.message_ids("orders").await.is_empty());
}

fn run(args: &[&str], env: &HashMap<String, String>) -> (Option<i32>, String, String) {
    let output = Command::new(BINARY)
        .args(args)
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn bad_rules_refuse_to_start_each_named_by_its_index() {
    let env: HashMap<String, String> = [
        ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9"),
        ("OIDC_DISABLED", "true"),
        (
            "ROUTES",
            r#"[{"when": "attributes.type ==", "topic": "a"},
                {"topic": "b", "partition": 1},
                {"when": "json.l.exists(x, x == 1)", "topic": "c"},
                {"topic": "d"},
                {"topic": "e"}]"#,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let (code, _, stderr) = run(&[], &env);
    assert_eq!(code, Some(2), "{stderr}");
    // One line per error, each showing its rule as written.
    let expected = [
        r#"ROUTES="{\"topic\":\"a\",\"when\":\"attributes.type ==\"}" is invalid: rule 0: when: "#,
        r#"ROUTES="{\"partition\":1,\"topic\":\"b\"}" is invalid: rule 1: unknown field `partition`"#,
        "is invalid: rule 2: when: comprehensions",
        r#"ROUTES="{\"topic\":\"e\"}" is invalid: rule 4: never reached: rule 3 before it matches every message"#,
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, expected) in lines.iter().zip(expected) {
        assert!(line.contains(expected), "{expected}: {line}");
    }
    let mut with_table = env.clone();
    with_table.insert("ROUTES".into(), r#"[{"topic": "a"}]"#.into());
    with_table.insert("KAFKA_TOPIC_BY_SUBSCRIPTION".into(), "s=t".into());
    let (code, _, stderr) = run(&[], &with_table);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("or KAFKA_TOPIC_BY_SUBSCRIPTION"),
        "{stderr}"
    );
    let mut both = env;
    both.insert("ROUTES".into(), r#"[{"topic": "a"}]"#.into());
    both.insert("ROUTES_FILE".into(), BINARY.into());
    let (code, _, stderr) = run(&[], &both);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("set either ROUTES or ROUTES_FILE"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_compiles_the_rules_from_a_file_and_checks_every_topic_they_name() {
    let broker = Broker::start().await;
    broker.create_topic("orders", 2).await;
    let path = std::env::temp_dir().join(format!("routes-check-{}.json", std::process::id()));
    std::fs::write(
        &path,
        r#"[{"when": "attributes.type == 'order'", "topic": "orders"}, {"topic": "missing"}]"#,
    )
    .unwrap();
    let env: HashMap<String, String> = [
        ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap()),
        ("OIDC_DISABLED", "true".to_owned()),
        ("ROUTES_FILE", path.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run(&["check"], &env))
        .await
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&"✓ routing rules: 2 compiled"), "{stdout}");
    assert!(lines.contains(&"✓ topic orders: 2 partitions"), "{stdout}");
    assert!(
        lines.contains(&"✗ topic missing: not found in cluster metadata"),
        "{stdout}"
    );
}

/// OpenTelemetry's W3C propagator extracting each record's headers: one JSON line each with the
/// span context it finds (or `null`).
const EXTRACT: &str = r#"
import json, sys
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
for line in sys.stdin:
    carrier = json.loads(line)
    context = trace.get_current_span(TraceContextTextMapPropagator().extract(carrier)).get_span_context()
    if not context.is_valid:
        print("null")
        continue
    print(json.dumps({
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "sampled": context.trace_flags.sampled,
        "remote": context.is_remote,
        "tracestate": context.trace_state.to_header(),
    }))
"#;

fn extract_in_python(carriers: &[BTreeMap<String, String>]) -> Vec<Value> {
    let mut child = Command::new(python())
        .args(["-W", "ignore", "-c", EXTRACT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = carriers
        .iter()
        .map(|c| format!("{}\n", serde_json::to_string(c).unwrap()))
        .collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn a_published_trace_continues_in_the_record_headers_as_opentelemetry_reads_them() {
    let broker = Broker::start().await;
    broker.create_topic("traced", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let token = mint(&key(1), &google_claims());
    // Attributes as headers off: the trace context is written all the same.
    let mut env = bridge_env(&broker, "traced", Some(&jwks));
    env.insert("KAFKA_ATTRIBUTE_HEADERS".into(), "none".into());
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let cases: [(&str, Vec<(&str, &str)>); 4] = [
        (
            "with-state",
            vec![
                ("googclient_traceparent", parent),
                (
                    "googclient_tracestate",
                    "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
                ),
            ],
        ),
        (
            "bad-state",
            vec![
                ("googclient_traceparent", parent),
                ("googclient_tracestate", "Not A List"),
            ],
        ),
        (
            "bad-parent",
            vec![(
                "googclient_traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )],
        ),
        ("untraced", vec![]),
    ];
    for (id, pairs) in &cases {
        let (status, text) =
            post(&client, &bridge.url(), push(b"x", pairs, id), Some(&token)).await;
        assert_eq!(status, 204, "{text}");
    }
    let records = broker.read_all("traced").await;
    let by_id: HashMap<String, &Consumed> = records
        .iter()
        .map(|r| (r.header("pubsub.message_id").unwrap(), r))
        .collect();
    let carriers: Vec<BTreeMap<String, String>> =
        cases.iter().map(|(id, _)| headers(by_id[*id])).collect();
    for carrier in &carriers[2..] {
        assert!(!carrier.contains_key("traceparent"), "{carrier:?}");
    }
    let extracted = extract_in_python(&carriers);
    let span = |tracestate: &str| {
        json!({
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id": "00f067aa0ba902b7",
            "sampled": true,
            "remote": true,
            "tracestate": tracestate,
        })
    };
    assert_eq!(
        extracted,
        [
            span("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
            span(""),
            Value::Null,
            Value::Null,
        ]
    );
}
