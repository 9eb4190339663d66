//! The handler tier: the whole service (routes, token, budget, pipeline, dead letters, panics)
//! with real RSA-signed tokens from a local JWKS endpoint, but Kafka replaced by a scripted
//! producer behind the `Produce` seam, so each Kafka answer is exactly what the test needs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pubsub_kafka_bridge::{App, Config, Service};
use serde_json::Value;
use test_support::scripted::{ScriptedProducer, Step};
use test_support::*;

struct Harness {
    service: Arc<Service<ScriptedProducer>>,
    producer: ScriptedProducer,
    jwks: JwksServer,
    token: String,
}

async fn harness(extra: &[(&str, &str)]) -> Harness {
    let jwks = JwksServer::start(&[key(1)]).await;
    let mut env: HashMap<String, String> = [
        // Never dialled: the scripted producer stands in for Kafka.
        ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9"),
        ("KAFKA_TOPIC", "events"),
        ("OIDC_AUDIENCE", AUDIENCE),
        ("OIDC_ALLOWED_EMAILS", PUSH_EMAIL),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.insert("OIDC_JWKS_URL".into(), jwks.url.clone());
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let producer = ScriptedProducer::new();
    let config = Config::from_map(&env).expect("valid config");
    let app = App::with_producer(config, producer.clone()).expect("app");
    Harness {
        service: Arc::new(Service::new(app)),
        producer,
        jwks,
        token: mint(&key(1), &google_claims()),
    }
}

fn push(body: &Value, token: Option<&str>) -> http::Request<Bytes> {
    let mut request = http::Request::post("/").header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(Bytes::from(body.to_string())).unwrap()
}

fn message(id: &str) -> Value {
    envelope(
        b"payload-bytes",
        &[("origin".into(), "handler".into())],
        id,
        "2026-03-04T05:06:07.891Z",
        Some("order-7"),
    )
}

fn error_code(response: &http::Response<Bytes>) -> String {
    let body: Value = serde_json::from_slice(response.body()).unwrap();
    body["error"].as_str().unwrap().to_owned()
}

fn metric(service: &Service<ScriptedProducer>, status: &str) -> u64 {
    let text = futures_util::FutureExt::now_or_never(
        service.handle(http::Request::get("/metrics").body(Bytes::new()).unwrap()),
    )
    .expect("metrics answer at once");
    let text = String::from_utf8(text.into_body().to_vec()).unwrap();
    let prefix = format!("pubsub_kafka_bridge_deliveries_total{{status=\"{status}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn an_acknowledged_delivery_is_204_with_the_record_as_mapped() {
    let h = harness(&[]).await;
    let response = h
        .service
        .handle(push(&message("m-1"), Some(&h.token)))
        .await;
    assert_eq!(response.status(), 204);
    assert!(response.body().is_empty());
    let produced = h.producer.produced();
    assert_eq!(produced.len(), 1);
    let (topic, record) = &produced[0];
    assert_eq!(topic, "events");
    assert_eq!(record.value, b"payload-bytes");
    assert_eq!(record.key.as_deref(), Some(&b"order-7"[..]));
    assert_eq!(record.timestamp.millis(), 1_772_600_767_891);
    let header = |name: &str| record.headers.get(name).map(|v| v.as_slice());
    assert_eq!(header("origin"), Some(&b"handler"[..]));
    assert_eq!(header("pubsub.message_id"), Some(&b"m-1"[..]));
    assert_eq!(header("pubsub.ordering_key"), Some(&b"order-7"[..]));
    assert_eq!(
        header("pubsub.subscription"),
        Some(&b"projects/test-project/subscriptions/bridge-sub"[..])
    );
    assert_eq!(metric(&h.service, "204"), 1);
}

#[tokio::test]
async fn kafka_answers_become_their_statuses() {
    let h = harness(&[]).await;
    h.producer.then([Step::Retriable, Step::TooLarge]);
    let retriable = h
        .service
        .handle(push(&message("m-1"), Some(&h.token)))
        .await;
    assert_eq!(retriable.status(), 503);
    assert_eq!(error_code(&retriable), "broker_error");
    let permanent = h
        .service
        .handle(push(&message("m-2"), Some(&h.token)))
        .await;
    assert_eq!(permanent.status(), 422);
    assert_eq!(error_code(&permanent), "record_too_large");
    assert!(h.producer.produced().is_empty());
    assert_eq!(
        (metric(&h.service, "503"), metric(&h.service, "422")),
        (1, 1)
    );
}

#[tokio::test]
async fn a_slow_acknowledgement_is_waited_for() {
    let h = harness(&[]).await;
    h.producer
        .then([Step::AckAfter(Duration::from_millis(300))]);
    let started = std::time::Instant::now();
    let response = h
        .service
        .handle(push(&message("m-1"), Some(&h.token)))
        .await;
    assert_eq!(response.status(), 204);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(h.producer.produced().len(), 1);
}

#[tokio::test]
async fn a_permanent_refusal_with_a_dlq_is_dead_lettered_with_the_original_body() {
    let h = harness(&[("KAFKA_DLQ_TOPIC", "dead")]).await;
    h.producer.then([Step::TooLarge]);
    let request = push(&message("m-1"), Some(&h.token));
    let original = request.body().clone();
    let response = h.service.handle(request).await;
    assert_eq!(response.status(), 204);
    let produced = h.producer.produced();
    assert_eq!(produced.len(), 1);
    let (topic, record) = &produced[0];
    assert_eq!(topic, "dead");
    assert_eq!(record.value, original.to_vec());
    assert_eq!(record.key.as_deref(), Some(&b"m-1"[..]));
    assert_eq!(
        record.headers.get("pubsub.error").map(Vec::as_slice),
        Some(&b"record_too_large"[..])
    );
}

#[tokio::test]
async fn a_dead_letter_refused_for_good_answers_the_original_failure() {
    let h = harness(&[("KAFKA_DLQ_TOPIC", "dead")]).await;
    h.producer.then([Step::TooLarge, Step::TooLarge]);
    let response = h
        .service
        .handle(push(&message("m-1"), Some(&h.token)))
        .await;
    assert_eq!(response.status(), 422);
    assert_eq!(h.producer.calls(), 2);
    assert!(h.producer.produced().is_empty());
}

#[tokio::test]
async fn a_dead_letter_kafka_cannot_take_now_is_503() {
    let h = harness(&[("KAFKA_DLQ_TOPIC", "dead")]).await;
    h.producer.then([Step::TooLarge, Step::Retriable]);
    let response = h
        .service
        .handle(push(&message("m-1"), Some(&h.token)))
        .await;
    assert_eq!(response.status(), 503);
    assert!(h.producer.produced().is_empty());
}

#[tokio::test]
async fn a_malformed_delivery_is_400_or_its_dead_letter() {
    let h = harness(&[]).await;
    let bad = serde_json::json!({ "subscription": "projects/p/subscriptions/s" });
    let response = h.service.handle(push(&bad, Some(&h.token))).await;
    assert_eq!(response.status(), 400);
    assert_eq!(h.producer.calls(), 0);

    let h = harness(&[("KAFKA_DLQ_TOPIC", "dead")]).await;
    let response = h.service.handle(push(&bad, Some(&h.token))).await;
    assert_eq!(response.status(), 204);
    let produced = h.producer.produced();
    assert_eq!(produced[0].0, "dead");
    assert_eq!(produced[0].1.value, bad.to_string().into_bytes());
}

#[tokio::test]
async fn a_panic_in_the_pipeline_is_a_counted_500_and_the_service_goes_on() {
    let h = harness(&[]).await;
    h.producer.then([Step::Panic]);
    let response = h
        .service
        .handle(push(&message("m-1"), Some(&h.token)))
        .await;
    assert_eq!(response.status(), 500);
    assert_eq!(error_code(&response), "internal_error");
    assert_eq!(metric(&h.service, "500"), 1);
    assert_eq!(h.service.inflight().requests_in_flight(), 0);
    let next = h
        .service
        .handle(push(&message("m-2"), Some(&h.token)))
        .await;
    assert_eq!(next.status(), 204);
}

#[tokio::test]
async fn requests_without_a_valid_token_never_reach_the_producer() {
    let h = harness(&[]).await;
    let none = h.service.handle(push(&message("m-1"), None)).await;
    assert_eq!(
        (none.status().as_u16(), error_code(&none)),
        (401, "missing_authorization".into())
    );
    let mut claims = google_claims();
    claims["email"] = "someone@else.iam.gserviceaccount.com".into();
    let other = h
        .service
        .handle(push(&message("m-2"), Some(&mint(&key(1), &claims))))
        .await;
    assert_eq!(other.status(), 403);
    let unknown = h
        .service
        .handle(push(
            &message("m-3"),
            Some(&mint(&key(2), &google_claims())),
        ))
        .await;
    assert_eq!(unknown.status(), 401);
    assert_eq!(h.producer.calls(), 0);
    assert_eq!(metric(&h.service, "401"), 2);
    assert_eq!(metric(&h.service, "403"), 1);
}

#[tokio::test]
async fn the_in_flight_budget_refuses_beyond_its_count_and_a_cancelled_delivery_frees_its_share() {
    let h = harness(&[("MAX_INFLIGHT_REQUESTS", "1")]).await;
    h.producer.then([Step::Hang]);
    let waiting = tokio::spawn({
        let (service, request) = (
            Arc::clone(&h.service),
            push(&message("m-1"), Some(&h.token)),
        );
        async move { service.handle(request).await }
    });
    while h.service.inflight().requests_in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(h.service.inflight().bytes_in_flight() > 0);
    let refused = h
        .service
        .handle(push(&message("m-2"), Some(&h.token)))
        .await;
    assert_eq!(refused.status(), 503);
    assert_eq!(error_code(&refused), "overloaded");
    assert_eq!(refused.headers()["retry-after"], "1");
    // The client goes away: its delivery is dropped, and with it its share of the budget.
    waiting.abort();
    let _ = waiting.await;
    assert_eq!(h.service.inflight().requests_in_flight(), 0);
    assert_eq!(h.service.inflight().bytes_in_flight(), 0);
    let next = h
        .service
        .handle(push(&message("m-3"), Some(&h.token)))
        .await;
    assert_eq!(next.status(), 204);
}

#[tokio::test]
async fn the_end_of_the_shutdown_grace_answers_waiting_deliveries_503() {
    let h = harness(&[]).await;
    h.producer.then([Step::Hang]);
    let waiting = tokio::spawn({
        let (service, request) = (
            Arc::clone(&h.service),
            push(&message("m-1"), Some(&h.token)),
        );
        async move { service.handle(request).await }
    });
    while h.producer.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.service.abandon_in_flight();
    let response = waiting.await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(error_code(&response), "shutting_down");
}

#[tokio::test]
async fn a_delivery_arriving_after_the_grace_period_is_503_without_reaching_kafka() {
    let h = harness(&[]).await;
    h.service.abandon_in_flight();
    let response = h
        .service
        .handle(push(&message("m-late"), Some(&h.token)))
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(error_code(&response), "shutting_down");
    assert_eq!(h.producer.calls(), 0);
}

#[tokio::test]
async fn an_oversized_body_is_413_before_the_pipeline() {
    let h = harness(&[("MAX_BODY_BYTES", "2048")]).await;
    let big = message(&"x".repeat(4096));
    let response = h.service.handle(push(&big, Some(&h.token))).await;
    assert_eq!(response.status(), 413);
    assert_eq!(h.producer.calls(), 0);
    assert_eq!(metric(&h.service, "413"), 1);
}

#[tokio::test]
async fn readiness_follows_the_producer() {
    let h = harness(&[]).await;
    let ready = || {
        h.service
            .handle(http::Request::get("/readyz").body(Bytes::new()).unwrap())
    };
    assert_eq!(ready().await.status(), 200);
    h.producer.set_reachable(false);
    assert_eq!(ready().await.status(), 503);
    let health = h
        .service
        .handle(http::Request::get("/healthz").body(Bytes::new()).unwrap());
    assert_eq!(health.await.status(), 200);
}

#[tokio::test]
async fn keys_that_are_still_fresh_are_never_fetched_again() {
    let h = harness(&[]).await;
    h.service.app().warm_up().await;
    assert_eq!(h.jwks.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Past the refresh rate limit, so only freshness can keep a lookup from fetching.
    tokio::time::sleep(Duration::from_millis(5_200)).await;
    for i in 0..20 {
        let mut claims = google_claims();
        claims["jti"] = format!("token-{i}").into();
        let token = mint(&key(1), &claims);
        let response = h
            .service
            .handle(push(&message(&format!("m-{i}")), Some(&token)))
            .await;
        assert_eq!(response.status(), 204);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        h.jwks.hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "keys within their max-age are served from the cache"
    );
    // The endpoint fails: a key id it never published is the token's fault (401), not a
    // lack of keys (503), since cached keys exist.
    *h.jwks.failing.lock().unwrap() = true;
    let unknown = mint(&key(2), &google_claims());
    let response = h
        .service
        .handle(push(&message("m-x"), Some(&unknown)))
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(error_code(&response), "unknown_key");
}

/// A schema registry that answers every registration with `status` and `body`.
async fn registry(status: u16, body: String) -> String {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/vnd.schemaregistry.v1+json")
                                .body(http_body_util::Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_registry_that_fails_is_503_naming_its_answer() {
    let url = registry(500, "{}".into()).await;
    let h = harness(&[
        ("KAFKA_VALUE_FORMAT", "avro"),
        ("SCHEMA_REGISTRY_URL", &url),
    ])
    .await;
    let response = h
        .service
        .handle(push(&message("m-1"), Some(&h.token)))
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(error_code(&response), "schema_registry_unavailable");
    let body: Value = serde_json::from_slice(response.body()).unwrap();
    let reason = body["message"].as_str().unwrap();
    assert!(
        reason.contains("events-value") && reason.contains("HTTP 500"),
        "{reason}"
    );
    assert_eq!(h.producer.calls(), 0);
}

#[tokio::test]
async fn a_registry_answer_of_several_kilobytes_is_read() {
    // Registries may pretty-print or pad; the answer is read up to 64 KiB.
    let url = registry(200, format!("{{\"id\": 7}}{}", " ".repeat(8 * 1024))).await;
    let h = harness(&[
        ("KAFKA_VALUE_FORMAT", "avro"),
        ("SCHEMA_REGISTRY_URL", &url),
    ])
    .await;
    let response = h
        .service
        .handle(push(&message("m-1"), Some(&h.token)))
        .await;
    assert_eq!(response.status(), 204);
    let produced = h.producer.produced();
    assert_eq!(
        &produced[0].1.value[..5],
        &[0, 0, 0, 0, 7],
        "Confluent wire format, id 7"
    );
}

#[tokio::test]
async fn a_retriable_kafka_failure_is_503_even_with_a_dlq_and_never_dead_lettered() {
    let h = harness(&[("KAFKA_DLQ_TOPIC", "dead")]).await;
    h.producer.then([Step::Retriable]);
    let response = h
        .service
        .handle(push(&message("m-1"), Some(&h.token)))
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(h.producer.calls(), 1, "no dead letter was attempted");
    assert!(h.producer.produced().is_empty());
}

#[tokio::test]
async fn a_dead_letter_refused_for_good_answers_the_original_400_not_kafkas_refusal() {
    let h = harness(&[("KAFKA_DLQ_TOPIC", "dead")]).await;
    h.producer.then([Step::TooLarge]);
    let bad = serde_json::json!({ "subscription": "projects/p/subscriptions/s" });
    let response = h.service.handle(push(&bad, Some(&h.token))).await;
    assert_eq!(
        response.status(),
        400,
        "the delivery's own failure, so Pub/Sub keeps it"
    );
    assert_eq!(h.producer.calls(), 1);
}

#[tokio::test]
async fn a_dead_letter_is_stamped_with_the_time_it_was_written() {
    let h = harness(&[("KAFKA_DLQ_TOPIC", "dead")]).await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let bad = serde_json::json!({ "subscription": "projects/p/subscriptions/s" });
    assert_eq!(
        h.service.handle(push(&bad, Some(&h.token))).await.status(),
        204
    );
    let stamped = h.producer.produced()[0].1.timestamp.millis();
    assert!(
        (before..before + 10_000).contains(&stamped),
        "{stamped} not within 10 s after {before}"
    );
}

/// A delivery of `message(id)` whose `event_time` attribute is `time`.
fn timed(id: &str, time: &str) -> Value {
    let mut body = message(id);
    body["message"]["attributes"]["event_time"] = time.into();
    body
}

#[tokio::test]
async fn event_times_outside_kafkas_range_are_400_timestamp_out_of_range_never_replaced() {
    let h = harness(&[("KAFKA_TIMESTAMP_ATTRIBUTE", "event_time")]).await;
    for (i, time) in [
        "-1",
        "1969-12-31T23:59:59.999Z",
        "253402300800000",
        "9223372036854775807",
        "99999999999999999999",
        "9999-12-31T23:59:59.999-00:01",
    ]
    .into_iter()
    .enumerate()
    {
        let response = h
            .service
            .handle(push(&timed(&format!("out-{i}"), time), Some(&h.token)))
            .await;
        assert_eq!(response.status(), 400, "{time}");
        assert_eq!(error_code(&response), "timestamp_out_of_range", "{time}");
    }
    assert_eq!(h.producer.calls(), 0, "nothing reaches Kafka");
    // The edges of the range are kept to the millisecond.
    for (i, (time, millis)) in [
        ("0", 0),
        ("253402300799999", 253_402_300_799_999),
        ("9999-12-31T23:59:59.999Z", 253_402_300_799_999),
        ("1970-01-01T00:00:00Z", 0),
    ]
    .into_iter()
    .enumerate()
    {
        let response = h
            .service
            .handle(push(&timed(&format!("in-{i}"), time), Some(&h.token)))
            .await;
        assert_eq!(response.status(), 204, "{time}");
        assert_eq!(
            h.producer.produced()[i].1.timestamp.millis(),
            millis,
            "{time}"
        );
    }
    assert_eq!(metric(&h.service, "400"), 6);
}

#[tokio::test]
async fn an_event_time_out_of_range_is_dead_lettered_with_its_code() {
    let h = harness(&[
        ("KAFKA_TIMESTAMP_ATTRIBUTE", "event_time"),
        ("KAFKA_DLQ_TOPIC", "dead"),
    ])
    .await;
    let request = push(&timed("early", "1969-12-31T23:59:59.999Z"), Some(&h.token));
    let original = request.body().clone();
    assert_eq!(h.service.handle(request).await.status(), 204);
    let produced = h.producer.produced();
    assert_eq!(produced.len(), 1);
    let (topic, record) = &produced[0];
    assert_eq!(topic, "dead");
    assert_eq!(record.value, original.to_vec());
    let header = |name: &str| String::from_utf8(record.headers[name].clone()).unwrap();
    assert_eq!(header("pubsub.error"), "timestamp_out_of_range");
    assert_eq!(header("pubsub.message_id"), "early");
    assert_eq!(
        header("pubsub.error_message"),
        "attribute \"event_time\" \"1969-12-31T23:59:59.999Z\" is outside Kafka's timestamp \
         range 1970-01-01T00:00:00.000Z..=9999-12-31T23:59:59.999Z"
    );
}

#[tokio::test]
async fn a_publish_time_beyond_kafkas_range_is_400_on_both_paths() {
    let h = harness(&[]).await;
    let late = "9999-12-31T23:59:59-23:59";
    let wrapped = envelope(b"x", &[], "late", late, None);
    let response = h.service.handle(push(&wrapped, Some(&h.token))).await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(&response), "invalid_publish_time");
    let unwrapped = http::Request::post("/")
        .header("authorization", format!("Bearer {}", h.token))
        .header("x-goog-pubsub-message-id", "late-unwrapped")
        .header("x-goog-pubsub-publish-time", late)
        .body(Bytes::from_static(b"x"))
        .unwrap();
    let response = h.service.handle(unwrapped).await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(&response), "invalid_publish_time");
    assert_eq!(h.producer.calls(), 0);
}

#[tokio::test]
async fn a_delivery_attempt_beyond_int32_is_400_and_int32_max_is_written_alike_in_every_format() {
    for format in ["raw", "json", "avro"] {
        let h = harness(&[("KAFKA_VALUE_FORMAT", format)]).await;
        let mut body = message("beyond");
        body["deliveryAttempt"] = 2_147_483_648u64.into();
        let response = h.service.handle(push(&body, Some(&h.token))).await;
        assert_eq!(response.status(), 400, "{format}");
        assert_eq!(error_code(&response), "invalid_envelope", "{format}");
        assert_eq!(h.producer.calls(), 0, "{format}");

        body["message"]["messageId"] = "max".into();
        body["deliveryAttempt"] = i32::MAX.into();
        let response = h.service.handle(push(&body, Some(&h.token))).await;
        assert_eq!(response.status(), 204, "{format}");
        let record = &h.producer.produced()[0].1;
        assert_eq!(
            record.headers["pubsub.delivery_attempt"], b"2147483647",
            "{format}"
        );
        let written = match format {
            "json" => {
                serde_json::from_slice::<Value>(&record.value).unwrap()["delivery_attempt"].as_i64()
            }
            "avro" => {
                let schema =
                    apache_avro::Schema::parse_str(pubsub_kafka_bridge::encode::AVRO_SCHEMA)
                        .unwrap();
                let datum =
                    apache_avro::from_avro_datum(&schema, &mut &record.value[10..], None).unwrap();
                let apache_avro::types::Value::Record(fields) = datum else {
                    panic!("not a record: {datum:?}")
                };
                match &fields
                    .iter()
                    .find(|(name, _)| name == "delivery_attempt")
                    .unwrap()
                    .1
                {
                    apache_avro::types::Value::Union(1, attempt) => match **attempt {
                        apache_avro::types::Value::Int(attempt) => Some(i64::from(attempt)),
                        ref other => panic!("{other:?}"),
                    },
                    other => panic!("{other:?}"),
                }
            }
            _ => continue,
        };
        assert_eq!(written, Some(2_147_483_647), "{format}");
    }
}
