//! hyper and Lambda run one service: the same request matrix through the HTTP server on
//! loopback and through the `lambda_http` adapter gives the same status, headers, body and
//! records (Kafka replaced by the scripted producer, each side with its own).
#![cfg(feature = "lambda")]
#![allow(
    clippy::disallowed_methods,
    reason = "the test collects the answers it compares"
)]

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use pubsub_kafka_bridge::{App, Config, Service};
use test_support::scripted::{ScriptedProducer, Step};
use test_support::*;

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
    script: Vec<Step>,
    status: u16,
}

fn service(jwks: &JwksServer) -> (Arc<Service<ScriptedProducer>>, ScriptedProducer) {
    let env: HashMap<String, String> = [
        ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9".to_owned()),
        ("KAFKA_TOPIC", "events".to_owned()),
        ("OIDC_AUDIENCE", AUDIENCE.to_owned()),
        ("OIDC_ALLOWED_EMAILS", PUSH_EMAIL.to_owned()),
        ("OIDC_JWKS_URL", jwks.url.clone()),
        ("MAX_BODY_BYTES", "4096".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let producer = ScriptedProducer::new();
    let app = App::with_producer(Config::from_map(&env).unwrap(), producer.clone()).unwrap();
    (Arc::new(Service::new(app)), producer)
}

fn cases() -> Vec<Case> {
    let token = mint(&key(1), &google_claims());
    let bearer = vec![
        ("authorization", format!("Bearer {token}")),
        ("content-type", "application/json".to_owned()),
    ];
    let mut other = google_claims();
    other["email"] = "other@p.iam.gserviceaccount.com".into();
    let push = |id: &str| {
        envelope(
            b"matrix",
            &[("a".into(), "1".into())],
            id,
            "2026-01-02T03:04:05.678Z",
            Some("k"),
        )
        .to_string()
    };
    let case = |name,
                method,
                path,
                headers: &Vec<(&'static str, String)>,
                body: String,
                script,
                status| Case {
        name,
        method,
        path,
        headers: headers.clone(),
        body,
        script,
        status,
    };
    let mut unwrapped = bearer.clone();
    unwrapped.extend([
        ("x-goog-pubsub-message-id", "u-1".to_owned()),
        (
            "x-goog-pubsub-publish-time",
            "2026-01-02T03:04:05.678Z".to_owned(),
        ),
        (
            "x-goog-pubsub-subscription-name",
            "projects/p/subscriptions/s".to_owned(),
        ),
    ]);
    vec![
        case("delivered", "POST", "/", &bearer, push("m-1"), vec![], 204),
        case(
            "unwrapped",
            "POST",
            "/push",
            &unwrapped,
            "raw body".into(),
            vec![],
            204,
        ),
        case("no token", "POST", "/", &vec![], push("m-2"), vec![], 401),
        case(
            "email not allowed",
            "POST",
            "/",
            &vec![("authorization", format!("Bearer {}", mint(&key(1), &other)))],
            push("m-3"),
            vec![],
            403,
        ),
        case(
            "not json",
            "POST",
            "/",
            &bearer,
            "{not json".into(),
            vec![],
            400,
        ),
        case(
            "too large",
            "POST",
            "/",
            &bearer,
            push(&"x".repeat(5000)),
            vec![],
            413,
        ),
        case(
            "kafka retriable",
            "POST",
            "/",
            &bearer,
            push("m-4"),
            vec![Step::Retriable],
            503,
        ),
        case(
            "kafka refuses",
            "POST",
            "/",
            &bearer,
            push("m-5"),
            vec![Step::TooLarge],
            422,
        ),
        case(
            "panic",
            "POST",
            "/",
            &bearer,
            push("m-6"),
            vec![Step::Panic],
            500,
        ),
        case(
            "wrong method",
            "GET",
            "/",
            &vec![],
            String::new(),
            vec![],
            405,
        ),
        case(
            "health",
            "GET",
            "/healthz",
            &vec![],
            String::new(),
            vec![],
            200,
        ),
        case(
            "readiness",
            "GET",
            "/readyz",
            &vec![],
            String::new(),
            vec![],
            200,
        ),
    ]
}

/// What both runtimes must agree on.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    allow: Option<String>,
    retry_after: Option<String>,
    body: Vec<u8>,
}

fn answer<B>(response: &http::Response<B>, body: Vec<u8>) -> Answer {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    Answer {
        status: response.status().as_u16(),
        content_type: header("content-type"),
        allow: header("allow"),
        retry_after: header("retry-after"),
        body,
    }
}

#[tokio::test]
async fn hyper_and_lambda_answer_every_request_alike() {
    let jwks = JwksServer::start(&[key(1)]).await;
    let (over_http, http_producer) = service(&jwks);
    let (on_lambda, lambda_producer) = service(&jwks);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(pubsub_kafka_bridge::server::run(
        listener,
        Arc::clone(&over_http),
        async {
            let _ = stopped.await;
        },
    ));
    let client = http_client();
    for case in cases() {
        http_producer.then(case.script.clone());
        lambda_producer.then(case.script.clone());

        let mut request = http::Request::builder()
            .method(case.method)
            .uri(format!("http://{addr}{}", case.path));
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(case.body.clone())))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes();
        let via_http = answer(&http::Response::from_parts(parts, ()), body.to_vec());

        let mut event = lambda_http::http::Request::builder()
            .method(case.method)
            .uri(format!(
                "https://abc.lambda-url.eu-west-1.on.aws{}",
                case.path
            ));
        for (name, value) in &case.headers {
            event = event.header(*name, value);
        }
        let body = if case.body.is_empty() {
            lambda_http::Body::Empty
        } else {
            lambda_http::Body::Text(case.body.clone())
        };
        let response =
            pubsub_kafka_bridge::lambda::handle(&on_lambda, event.body(body).unwrap()).await;
        let bytes = response.body().to_vec();
        let via_lambda = answer(&response, bytes);

        assert_eq!(via_http.status, case.status, "{}: {via_http:?}", case.name);
        assert_eq!(via_http, via_lambda, "{}", case.name);
    }
    let records = |p: &ScriptedProducer| {
        p.produced()
            .into_iter()
            .map(|(topic, record)| {
                (
                    topic,
                    record.key,
                    record.value,
                    record.headers,
                    record.timestamp,
                )
            })
            .collect::<Vec<_>>()
    };
    let produced = records(&http_producer);
    assert_eq!(
        produced.len(),
        2,
        "the two deliveries that Kafka acknowledged"
    );
    assert_eq!(produced, records(&lambda_producer));
    assert_eq!(over_http.metrics().count(500), 1);
    assert_eq!(on_lambda.metrics().count(500), 1);
    let _ = stop.send(());
    server.await.unwrap();
}
