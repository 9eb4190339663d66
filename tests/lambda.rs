//! The Lambda entry point, run as a real process against a local Lambda Runtime API and a real
//! broker, fed Function URL and API Gateway v2 events as AWS sends them.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use test_support::*;

/// A minimal Lambda Runtime API: hands out queued events, records the answers.
#[derive(Clone, Default)]
struct RuntimeApi {
    events: Arc<Mutex<VecDeque<(String, String)>>>,
    responses: Arc<Mutex<HashMap<String, Value>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl RuntimeApi {
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let api = self.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let api = api.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let api = api.clone();
                        async move { Ok::<_, Infallible>(api.serve(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr.to_string()
    }

    #[allow(clippy::disallowed_methods, reason = "a test's own Runtime API")]
    async fn serve(
        &self,
        req: http::Request<hyper::body::Incoming>,
    ) -> http::Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        if path == "/2018-06-01/runtime/invocation/next" {
            loop {
                let next = self.events.lock().unwrap().pop_front();
                if let Some((id, event)) = next {
                    let deadline = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis()
                        + 30_000;
                    return http::Response::builder()
                        .header("lambda-runtime-aws-request-id", id)
                        .header("lambda-runtime-deadline-ms", deadline.to_string())
                        .header(
                            "lambda-runtime-invoked-function-arn",
                            "arn:aws:lambda:us-east-1:123456789012:function:bridge",
                        )
                        .header(
                            "lambda-runtime-trace-id",
                            "Root=1-6743a8e0-3b5c9f1e2d4a6b8c0e2f4a6b;Sampled=1",
                        )
                        .body(Full::new(Bytes::from(event)))
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["2018-06-01", "runtime", "invocation", id, "response"] => {
                self.responses
                    .lock()
                    .unwrap()
                    .insert(id.to_string(), serde_json::from_slice(&body).unwrap());
            }
            _ => self
                .errors
                .lock()
                .unwrap()
                .push(format!("{path}: {}", String::from_utf8_lossy(&body))),
        }
        http::Response::builder()
            .status(202)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }
}

fn event(fixture: &str, token: &str, body: &str) -> String {
    let template = std::fs::read_to_string(data_dir().join("lambda").join(fixture)).unwrap();
    template
        .replace("{{TOKEN}}", token)
        .replace("{{LENGTH}}", &body.len().to_string())
        .replace(
            "{{BODY_BASE64}}",
            &base64::engine::general_purpose::STANDARD.encode(body),
        )
        .replace(
            "{{BODY_JSON_STRING}}",
            &Value::String(body.to_owned()).to_string(),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_url_and_api_gateway_events_run_the_same_handler() {
    let broker = Broker::start().await;
    broker.create_topic("lambda", 2).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let api = RuntimeApi::default();
    let runtime_api = api.start().await;
    let token = mint(&key(1), &google_claims());
    let body = |id: &str, data: &[u8]| {
        envelope(
            data,
            &[("source".into(), "lambda".into())],
            id,
            "2026-11-24T10:00:00.5Z",
            Some("k"),
        )
        .to_string()
    };
    let cases = [
        (
            "url-ok",
            event(
                "function-url.json",
                &token,
                &body("url-ok", b"via function url"),
            ),
            204,
        ),
        (
            "gw-ok",
            event("apigw-v2.json", &token, &body("gw-ok", &[0, 1, 2, 255])),
            204,
        ),
        (
            "url-bad-token",
            event(
                "function-url.json",
                "not-a-token",
                &body("url-bad-token", b"x"),
            ),
            401,
        ),
        (
            "gw-malformed",
            event("apigw-v2.json", &token, "{\"message\": 5}"),
            400,
        ),
    ];
    for (id, event, _) in &cases {
        api.events
            .lock()
            .unwrap()
            .push_back((id.to_string(), event.clone()));
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_pubsub-kafka-bridge-lambda"))
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "bridge")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bridge")
        .env("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap())
        .env("KAFKA_TOPIC", "lambda")
        .env("OIDC_AUDIENCE", AUDIENCE)
        .env("OIDC_JWKS_URL", &jwks.url)
        .env("OIDC_ALLOWED_EMAILS", PUSH_EMAIL)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.responses.lock().unwrap().len() < cases.len() {
        assert!(
            Instant::now() < deadline,
            "runtime answered {} of {}",
            api.responses.lock().unwrap().len(),
            cases.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        api.errors.lock().unwrap().is_empty(),
        "invocation errors: {:?}",
        api.errors.lock().unwrap()
    );
    let responses = api.responses.lock().unwrap().clone();
    for (id, _, status) in &cases {
        assert_eq!(
            responses[*id]["statusCode"], *status,
            "{id}: {}",
            responses[*id]
        );
    }
    let records = broker.read_all("lambda").await;
    let by_id: HashMap<String, &Consumed> = records
        .iter()
        .map(|r| (r.header("pubsub.message_id").unwrap(), r))
        .collect();
    assert_eq!(by_id.len(), 2);
    assert_eq!(
        by_id["url-ok"].record.value.as_deref(),
        Some(&b"via function url"[..])
    );
    assert_eq!(
        by_id["gw-ok"].record.value.as_deref(),
        Some(&[0u8, 1, 2, 255][..])
    );
    for r in by_id.values() {
        assert_eq!(r.record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.header("source").as_deref(), Some("lambda"));
        assert_eq!(r.record.timestamp.timestamp_millis(), 1_795_514_400_500);
        assert_eq!(r.partition as u32, java_partition(b"k", 2));
    }
}
