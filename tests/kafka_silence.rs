//! A broker that goes silent, floods the client, or hands out tokens that never expire, at the
//! protocol level: a frame-aware proxy in front of a real tansu broker black-holes connections
//! (bytes dropped both ways, sockets left open), injects answers, or fronts SASL.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use test_support::metadata::MetadataServer;
use test_support::*;

const TOPIC: &str = "silence";

/// A broker whose clients reach it through a proxy (it advertises the proxy's port).
async fn broker_behind_proxy() -> (Broker, BrokerProxy) {
    let mut broker = Broker::builder().build();
    let proxy = BrokerProxy::start(broker.port).await;
    broker.advertised_port = Some(proxy.port);
    broker.start_now().await;
    broker.create_topic(TOPIC, 1).await;
    (broker, proxy)
}

fn delivery(id: &str, data: &[u8]) -> String {
    envelope(data, &[], id, "2024-01-01T00:00:00Z", None).to_string()
}

/// Polls `done` every 10 ms until it holds; panics with `what` after `within`.
async fn eventually<F: FnMut() -> bool>(within: Duration, what: &str, mut done: F) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} (waited {within:?})");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn status(client: &HttpClient, url: String) -> u16 {
    get(client, &url).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_broker_connections_are_replaced_and_deliveries_recover_without_a_restart() {
    let (broker, proxy) = broker_behind_proxy().await;
    let produce_timeout = Duration::from_millis(3_000);
    let request_timeout = Duration::from_millis(500);
    let mut env = bridge_env(&broker, TOPIC, None);
    env.insert("KAFKA_PRODUCE_TIMEOUT_MS".into(), "3000".into());
    env.insert("KAFKA_REQUEST_TIMEOUT_MS".into(), "500".into());
    env.insert("KAFKA_METADATA_REFRESH_MS".into(), "1000".into());
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    assert_eq!(
        post(&client, &bridge.url(), delivery("warm", b"w"), None)
            .await
            .0,
        204
    );

    let opened_before = proxy.accepted().len();
    proxy.black_hole_open_connections();
    let silenced_at = Instant::now();
    let answers = futures_util::future::join_all((0..5).map(|i| {
        let (client, url) = (client.clone(), bridge.url());
        async move {
            let started = Instant::now();
            let (status, _) =
                post(&client, &url, delivery(&format!("during-{i}"), b"d"), None).await;
            (status, started.elapsed())
        }
    }))
    .await;
    for (status, took) in &answers {
        assert!(
            *status == 204 || *status == 503,
            "answered {status} while the connections were silent"
        );
        assert!(
            *took < produce_timeout + Duration::from_secs(1),
            "answered after {took:?}, beyond the produce timeout"
        );
    }
    let accepted = proxy.accepted();
    assert!(
        accepted.len() > opened_before,
        "the bridge opened no new connection while its connections were silent"
    );
    let first_new = accepted[opened_before] - silenced_at;
    eprintln!(
        "silent connections: answers {:?}; first new connection after {first_new:?}",
        answers
            .iter()
            .map(|(s, t)| format!("{s} in {} ms", t.as_millis()))
            .collect::<Vec<_>>()
    );
    // Two request timeouts: the partition's connection, then the metadata connection asked
    // for the leader, which is silent too.
    assert!(
        first_new < request_timeout * 2 + Duration::from_millis(1_000),
        "first new connection only after {first_new:?}"
    );

    // Deliveries succeed again without a restart, and the record is in Kafka with its bytes.
    let payload = b"after the silence \x00\xff";
    assert_eq!(
        post(&client, &bridge.url(), delivery("after", payload), None)
            .await
            .0,
        204
    );
    let inflight = || bridge.service.inflight().requests_in_flight();
    eventually(
        produce_timeout + request_timeout + Duration::from_secs(2),
        "the in-flight gauge never returned to 0",
        || inflight() == 0,
    )
    .await;
    assert_eq!(
        status(&client, format!("http://{}/healthz", bridge.addr)).await,
        200,
        "a connection the bridge replaced itself is no reason for a restart"
    );
    let records = broker.read_all(TOPIC).await;
    let after: Vec<_> = records
        .iter()
        .filter(|r| r.header("pubsub.message_id").as_deref() == Some("after"))
        .collect();
    assert_eq!(after.len(), 1, "the record written after the silence");
    assert_eq!(after[0].record.value.as_deref(), Some(&payload[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_client_that_cannot_make_progress_fails_liveness_and_frees_its_inflight_shares() {
    let client = http_client();
    // A cluster never reached (a cold start against an unreachable cluster) keeps liveness
    // at 200 however long it lasts: the startup probe is the one that waits for Kafka.
    let unreachable = {
        let mut env = std::collections::HashMap::new();
        env.insert(
            "KAFKA_BOOTSTRAP_SERVERS".to_owned(),
            format!("127.0.0.1:{}", free_port()),
        );
        env.insert("KAFKA_TOPIC".to_owned(), TOPIC.to_owned());
        env.insert("OIDC_DISABLED".to_owned(), "true".to_owned());
        env.insert("KAFKA_PRODUCE_TIMEOUT_MS".to_owned(), "500".to_owned());
        env.insert("KAFKA_REQUEST_TIMEOUT_MS".to_owned(), "200".to_owned());
        let config = pubsub_kafka_bridge::Config::from_map(&env).unwrap();
        Arc::new(pubsub_kafka_bridge::Service::new(
            pubsub_kafka_bridge::App::new(config).unwrap(),
        ))
    };
    let cold_start = Instant::now();
    while cold_start.elapsed() < Duration::from_millis(2_000) {
        let answer = unreachable
            .handle(
                http::Request::post("/")
                    .body(Bytes::from(delivery("cold", b"c")))
                    .unwrap(),
            )
            .await;
        assert_eq!(answer.status(), 503);
    }
    let live = unreachable
        .handle(http::Request::get("/healthz").body(Bytes::new()).unwrap())
        .await;
    assert_eq!(
        live.status(),
        200,
        "an unreachable cluster at cold start failed liveness"
    );

    // A cluster reached once that then answers nothing, on old connections and new ones.
    let (broker, proxy) = broker_behind_proxy().await;
    let produce_timeout = Duration::from_millis(1_000);
    let request_timeout = Duration::from_millis(300);
    let bound = request_timeout * 6;
    let mut env = bridge_env(&broker, TOPIC, None);
    env.insert("KAFKA_PRODUCE_TIMEOUT_MS".into(), "1000".into());
    env.insert("KAFKA_REQUEST_TIMEOUT_MS".into(), "300".into());
    env.insert("KAFKA_METADATA_REFRESH_MS".into(), "500".into());
    let bridge = Bridge::start(&env).await;
    let healthz = format!("http://{}/healthz", bridge.addr);
    assert_eq!(
        post(&client, &bridge.url(), delivery("warm", b"w"), None)
            .await
            .0,
        204
    );
    proxy.silence_new_connections(true);
    proxy.black_hole_open_connections();
    let silenced_at = Instant::now();
    let mut failed_at = None;
    let mut n = 0;
    let unhealthy_after = loop {
        let (answer, _) = post(
            &client,
            &bridge.url(),
            delivery(&format!("stuck-{n}"), b"s"),
            None,
        )
        .await;
        n += 1;
        assert_eq!(answer, 503, "a delivery succeeded with Kafka silent");
        let answered = Instant::now();
        failed_at.get_or_insert(answered);
        // Nothing else is in flight: every share of the budget is freed within one request
        // timeout of its delivery's answer.
        let inflight = || bridge.service.inflight().requests_in_flight();
        eventually(
            request_timeout + Duration::from_secs(2),
            "an unanswered produce kept its in-flight share",
            || inflight() == 0,
        )
        .await;
        if status(&client, healthz.clone()).await == 503 {
            break silenced_at.elapsed();
        }
        assert!(
            silenced_at.elapsed() < Duration::from_secs(20),
            "/healthz stayed 200 while Kafka made no progress for {:?}",
            silenced_at.elapsed()
        );
    };
    let first_failure = failed_at.unwrap() - silenced_at;
    eprintln!(
        "Kafka silent: first delivery failed after {first_failure:?}, /healthz 503 after {unhealthy_after:?} (bound {bound:?} after the first failure)"
    );
    assert!(
        unhealthy_after >= bound,
        "/healthz failed after only {unhealthy_after:?}"
    );
    assert!(
        unhealthy_after < first_failure + bound + produce_timeout * 2 + Duration::from_secs(3),
        "/healthz failed only after {unhealthy_after:?}"
    );

    // Kafka answers again: the bridge recovers by itself and liveness follows.
    proxy.silence_new_connections(false);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (answer, _) = post(&client, &bridge.url(), delivery("back", b"b"), None).await;
        if answer == 204 {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered");
    }
    assert_eq!(status(&client, healthz).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_nobody_asked_for_cost_one_log_line_per_connection_and_interval() {
    let (broker, proxy) = broker_behind_proxy().await;
    let log = std::env::temp_dir().join(format!(
        "pkb-unknown-answers-{}-{}.log",
        std::process::id(),
        free_port()
    ));
    let mut env = bridge_env(&broker, TOPIC, None);
    env.insert("RUST_LOG".into(), "warn".into());
    let (mut child, base) = spawn_bridge_process(&env, Some(&log)).await;
    let client = http_client();
    let url = format!("{base}/");
    wait_for_status(&client, &format!("{base}/readyz"), 200).await;
    assert_eq!(
        post(&client, &url, delivery("warm", b"w"), None).await.0,
        204
    );

    const FLOOD: i32 = 2_000;
    let mut connections = 0;
    for n in 0..FLOOD {
        // Correlation ids the bridge never used (it counts up from 0).
        connections = proxy.inject(&answer_frame(i32::MIN + n, &[0; 4]));
    }
    assert!(connections > 0);
    // The delivery's answer comes after the injected frames on its connection.
    assert_eq!(
        post(&client, &url, delivery("after", b"a"), None).await.0,
        204
    );
    let lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Got response for unknown request"))
            .count()
    };
    eventually(
        Duration::from_secs(10),
        "no line about the unknown answers",
        || lines() >= connections,
    )
    .await;
    let logged = lines();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "{} answers with unknown correlation ids on {connections} connections: {logged} log lines",
        FLOOD as usize * connections
    );
    assert!(
        logged <= connections,
        "{logged} log lines for {FLOOD} unknown answers on {connections} connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_server_token_that_never_expires_does_not_stop_the_bridge() {
    let metadata = MetadataServer::start(u64::MAX).await;
    let (broker, proxy) = broker_behind_proxy().await;
    // tansu has no OAUTHBEARER: the proxy accepts the SASL exchange, tansu serves the rest.
    proxy.front_sasl("OAUTHBEARER");
    let mut env = bridge_env(&broker, TOPIC, None);
    env.insert("KAFKA_SECURITY_PROTOCOL".into(), "SASL_PLAINTEXT".into());
    env.insert("KAFKA_SASL_MECHANISM".into(), "OAUTHBEARER".into());
    env.insert("GCE_METADATA_HOST".into(), metadata.host());
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let payload = b"token lives for ever";
    assert_eq!(
        post(&client, &bridge.url(), delivery("forever", payload), None)
            .await
            .0,
        204
    );
    assert!(metadata.requests.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        status(&client, format!("http://{}/healthz", bridge.addr)).await,
        200
    );
    let records = broker.read_all(TOPIC).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].record.value.as_deref(), Some(&payload[..]));
}
