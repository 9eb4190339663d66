//! Hostile and malformed requests: each gets the right 4xx, nothing reaches Kafka, the server keeps serving.

use bytes::Bytes;
use http_body_util::Full;
use test_support::*;

fn msg(fields: &str) -> String {
    format!(r#"{{"message":{{{fields}}},"subscription":"projects/p/subscriptions/s"}}"#)
}

const OK_FIELDS: &str = r#""data":"aGk=","messageId":"1","publishTime":"2024-01-01T00:00:00Z""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_clear_4xx_and_the_server_still_serves() {
    let broker = Broker::start().await;
    broker.create_topic("malformed", 2).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let mut env = bridge_env(&broker, "malformed", Some(&jwks));
    env.insert("MAX_BODY_BYTES".into(), (1 << 20).to_string());
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let token = mint(&key(1), &google_claims());
    let url = bridge.url();

    let huge = format!(
        r#"{{"message":{{"data":"{}","messageId":"1","publishTime":"2024-01-01T00:00:00Z"}},"subscription":"s"}}"#,
        "A".repeat(2 << 20)
    );
    let bodies: Vec<(&str, String, u16)> = vec![
        ("empty body", String::new(), 400),
        ("not json", "hello".into(), 400),
        ("truncated json", r#"{"message":{"data":"aGk="#.into(), 400),
        ("json array", "[1,2,3]".into(), 400),
        ("json string", r#""message""#.into(), 400),
        ("json null", "null".into(), 400),
        ("empty object", "{}".into(), 400),
        (
            "message null",
            r#"{"message":null,"subscription":"s"}"#.into(),
            400,
        ),
        (
            "message is a string",
            r#"{"message":"hi","subscription":"s"}"#.into(),
            400,
        ),
        (
            "message is an array",
            r#"{"message":[],"subscription":"s"}"#.into(),
            400,
        ),
        (
            "data is a number",
            msg(r#""data":5,"messageId":"1","publishTime":"2024-01-01T00:00:00Z""#),
            400,
        ),
        (
            "data not base64",
            msg(r#""data":"@@@@","messageId":"1","publishTime":"2024-01-01T00:00:00Z""#),
            400,
        ),
        (
            "data url-safe alphabet",
            msg(r#""data":"_-_-","messageId":"1","publishTime":"2024-01-01T00:00:00Z""#),
            400,
        ),
        (
            "data bad length",
            msg(r#""data":"aGk=a","messageId":"1","publishTime":"2024-01-01T00:00:00Z""#),
            400,
        ),
        (
            "data with spaces",
            msg(r#""data":"aG k=","messageId":"1","publishTime":"2024-01-01T00:00:00Z""#),
            400,
        ),
        (
            "attributes not an object",
            msg(
                r#""data":"aGk=","attributes":"a=b","messageId":"1","publishTime":"2024-01-01T00:00:00Z""#,
            ),
            400,
        ),
        (
            "attribute value a number",
            msg(
                r#""data":"aGk=","attributes":{"a":1},"messageId":"1","publishTime":"2024-01-01T00:00:00Z""#,
            ),
            400,
        ),
        (
            "attribute value null",
            msg(
                r#""data":"aGk=","attributes":{"a":null},"messageId":"1","publishTime":"2024-01-01T00:00:00Z""#,
            ),
            400,
        ),
        (
            "no message id",
            msg(r#""data":"aGk=","publishTime":"2024-01-01T00:00:00Z""#),
            400,
        ),
        (
            "empty message id",
            msg(r#""data":"aGk=","messageId":"","publishTime":"2024-01-01T00:00:00Z""#),
            400,
        ),
        (
            "message id a number",
            msg(r#""data":"aGk=","messageId":12,"publishTime":"2024-01-01T00:00:00Z""#),
            400,
        ),
        (
            "no publish time",
            msg(r#""data":"aGk=","messageId":"1""#),
            400,
        ),
        (
            "publish time not RFC 3339",
            msg(r#""data":"aGk=","messageId":"1","publishTime":"01/01/2024""#),
            400,
        ),
        (
            "publish time without zone",
            msg(r#""data":"aGk=","messageId":"1","publishTime":"2024-01-01T00:00:00""#),
            400,
        ),
        (
            "publish time a number",
            msg(r#""data":"aGk=","messageId":"1","publishTime":1704067200"#),
            400,
        ),
        (
            "ordering key a number",
            msg(
                r#""data":"aGk=","messageId":"1","publishTime":"2024-01-01T00:00:00Z","orderingKey":7"#,
            ),
            400,
        ),
        (
            "no subscription",
            format!(r#"{{"message":{{{OK_FIELDS}}}}}"#),
            400,
        ),
        (
            "subscription a number",
            format!(r#"{{"message":{{{OK_FIELDS}}},"subscription":1}}"#),
            400,
        ),
        (
            "delivery attempt a string",
            format!(r#"{{"message":{{{OK_FIELDS}}},"subscription":"s","deliveryAttempt":"2"}}"#),
            400,
        ),
        (
            "delivery attempt negative",
            format!(r#"{{"message":{{{OK_FIELDS}}},"subscription":"s","deliveryAttempt":-1}}"#),
            400,
        ),
        (
            "invalid utf-8 in json",
            String::from_utf8_lossy(b"{\"message\":\xff}").into_owned(),
            400,
        ),
        (
            "deeply nested json",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            400,
        ),
        ("huge body", huge, 413),
    ];
    for (name, body, expected) in &bodies {
        let (status, text) = post(&client, &url, body.clone(), Some(&token)).await;
        assert_eq!(status, *expected, "{name}: {text}");
        assert!(
            text.contains("\"error\""),
            "{name}: reason named in body: {text}"
        );
    }

    // Raw invalid UTF-8 bytes (not lossily converted).
    assert_eq!(
        post(
            &client,
            &url,
            Bytes::from_static(b"{\"message\":\xff\xfe}"),
            Some(&token)
        )
        .await
        .0,
        400
    );
    // Declared length over the limit is refused before the body is read.
    let declared = http::Request::post(&url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-length", (8u64 << 30).to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _) = send(&client, declared).await;
    assert!(status == 413 || status == 0, "declared 8 GiB: {status}");
    // That connection is closed by the server (Connection: close); the requests below use a
    // fresh client, so none is sent on a connection being torn down.
    let client = http_client();
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let request = http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from(msg(OK_FIELDS))))
            .unwrap();
        assert_eq!(send(&client, request).await.0, 405, "{method}");
    }
    // A bad body without a token is 401: verification comes first, nothing is parsed for strangers.
    assert_eq!(post(&client, &url, "garbage", None).await.0, 401);

    // Still serving, and nothing malformed reached Kafka.
    let good = envelope(b"still alive", &[], "after", "2024-01-01T00:00:00Z", None).to_string();
    assert_eq!(post(&client, &url, good, Some(&token)).await.0, 204);
    let records = broker.read_all("malformed").await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].record.value.as_deref(),
        Some(&b"still alive"[..])
    );
    assert_eq!(
        get(&client, &format!("http://{}/healthz", bridge.addr))
            .await
            .0,
        200
    );
}

/// An unwrapped push whose `x-goog-pubsub-*` metadata header appears twice is refused 400
/// `duplicate_metadata_header` (first-wins would let an added header forge the message id,
/// publish time, subscription or ordering key); with a Kafka dead-letter topic it goes there,
/// as every other 400 does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_metadata_header_of_an_unwrapped_push_is_a_400() {
    let broker = Broker::start().await;
    broker.create_topic("unwrapped", 1).await;
    broker.create_topic("dead-letters", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let bridge = Bridge::start(&bridge_env(&broker, "unwrapped", Some(&jwks))).await;
    let mut dlq_env = bridge_env(&broker, "unwrapped", Some(&jwks));
    dlq_env.insert("KAFKA_DLQ_TOPIC".into(), "dead-letters".into());
    let dlq_bridge = Bridge::start(&dlq_env).await;
    let client = http_client();
    let token = mint(&key(1), &google_claims());
    let metadata = [
        ("x-goog-pubsub-message-id", "100", "999"),
        (
            "x-goog-pubsub-publish-time",
            "2024-01-01T00:00:00Z",
            "2030-01-01T00:00:00Z",
        ),
        (
            "x-goog-pubsub-subscription-name",
            "projects/p/subscriptions/s",
            "projects/p/subscriptions/forged",
        ),
        ("x-goog-pubsub-ordering-key", "k", "forged"),
    ];
    let push = |url: &str, repeated: Option<usize>| {
        let mut request = http::Request::post(url)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/octet-stream");
        for (i, (name, value, forged)) in metadata.iter().enumerate() {
            request = request.header(*name, *value);
            if repeated == Some(i) {
                // `header` appends: the name is sent twice.
                request = request.header(*name, *forged);
            }
        }
        request
            .body(Full::new(Bytes::from_static(b"data")))
            .unwrap()
    };
    for (repeated, (name, _, _)) in metadata.iter().enumerate() {
        let (status, text) = send(&client, push(&bridge.url(), Some(repeated))).await;
        assert_eq!(status, 400, "{name}: {text}");
        let error: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["error"], "duplicate_metadata_header", "{text}");
        assert!(text.contains(name), "names the header: {text}");
    }
    // Each once: delivered.
    assert_eq!(send(&client, push(&bridge.url(), None)).await.0, 204);
    assert_eq!(broker.message_ids("unwrapped").await, ["100"]);
    // With a dead-letter topic: 204, the dead letter names the reason.
    assert_eq!(send(&client, push(&dlq_bridge.url(), Some(0))).await.0, 204);
    let dead = broker.read_all("dead-letters").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].header("pubsub.error").as_deref(),
        Some("duplicate_metadata_header")
    );
    assert_eq!(dead[0].record.value.as_deref(), Some(&b"data"[..]));
    assert_eq!(broker.message_ids("unwrapped").await, ["100"]);
}
