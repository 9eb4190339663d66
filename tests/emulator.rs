//! Google's Pub/Sub emulator pushing Pub/Sub's largest messages (100 attributes at the key and
//! value limits) unwrapped, with metadata, to the bridge with verification on, and every one
//! landing in a real tansu with all its attributes.
//!
//! The emulator is Google's own implementation of the Pub/Sub API (installed with the Google
//! Cloud CLI on every machine of this project, see README "Development"); it is started here.
//! It sends no token, so a relay between it and the bridge plays Cloud Run's front end: it adds
//! a token signed by the test's JWKS key (what Pub/Sub's push authentication does) and the
//! headers the front end adds, and forwards everything else as it came.

// The relay collects the bodies of its own test's messages whole.
#![allow(clippy::disallowed_methods)]

use std::convert::Infallible;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use test_support::*;

const PROJECT: &str = "emulated-project";
const TOPIC: &str = "wide-messages";
const SUBSCRIPTION: &str = "wide-messages-push";
const KAFKA_TOPIC: &str = "emulated";

/// The Pub/Sub emulator, in a process group of its own (the `gcloud` wrapper starts Java).
struct Emulator {
    child: Child,
    base: String,
    data_dir: std::path::PathBuf,
}

impl Emulator {
    async fn start() -> Self {
        let port = free_port();
        let data_dir =
            std::env::temp_dir().join(format!("pkb-emulator-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&data_dir).unwrap();
        let log = std::fs::File::create(data_dir.join("emulator.log")).unwrap();
        let child = Command::new("gcloud")
            .args(["beta", "emulators", "pubsub", "start"])
            .arg(format!("--host-port=127.0.0.1:{port}"))
            .arg(format!("--project={PROJECT}"))
            .arg(format!("--data-dir={}", data_dir.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("gcloud (with the Pub/Sub emulator) is installed on this machine");
        let emulator = Self {
            child,
            base: format!("http://127.0.0.1:{port}/v1/projects/{PROJECT}"),
            data_dir,
        };
        // Java on 2 shared cores: 10-20 s, generously bounded.
        let deadline = Instant::now() + Duration::from_secs(120);
        let client = http_client();
        while get(&client, &format!("{}/topics", emulator.base)).await.0 != 200 {
            assert!(
                Instant::now() < deadline,
                "the emulator did not start: {}",
                std::fs::read_to_string(emulator.data_dir.join("emulator.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        emulator
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}/{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let (status, text) = send(&http_client(), request).await;
        assert_eq!(status, 200, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // The whole group: the wrapper and the Java process it started. `--` before the negative
        // group id: without it procps' kill reads `-PGID` as "-1", every process.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &group])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Plays Cloud Run's front end between the emulator and the bridge: adds the push token and
/// the front end's headers, forwards the rest untouched, answers what the bridge answered.
/// Returns its URL and the statuses it relayed.
async fn start_relay(bridge: String, token: String) -> (String, Arc<Mutex<Vec<u16>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/push", listener.local_addr().unwrap());
    let answered = Arc::new(Mutex::new(Vec::new()));
    let relayed = Arc::clone(&answered);
    tokio::spawn(async move {
        let client = http_client();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (client, bridge, token, answered) = (
                client.clone(),
                bridge.clone(),
                token.clone(),
                Arc::clone(&answered),
            );
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<Incoming>| {
                    let (client, bridge, token, answered) = (
                        client.clone(),
                        bridge.clone(),
                        token.clone(),
                        Arc::clone(&answered),
                    );
                    async move {
                        let (mut parts, body) = request.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        parts.uri = format!("{bridge}{}", parts.uri.path()).parse().unwrap();
                        let headers = &mut parts.headers;
                        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
                        for (name, value) in [
                            ("x-forwarded-for", "203.0.113.7"),
                            ("x-forwarded-proto", "https"),
                            ("forwarded", "for=\"203.0.113.7\";proto=https"),
                            (
                                "x-cloud-trace-context",
                                "105445aa7843bc8bf206b12000100000/1;o=1",
                            ),
                            (
                                "traceparent",
                                "00-105445aa7843bc8bf206b12000100000-00f067aa0ba902b7-01",
                            ),
                        ] {
                            headers.insert(name, value.parse().unwrap());
                        }
                        let forwarded = http::Request::from_parts(parts, Full::new(body));
                        let response = client.request(forwarded).await.unwrap();
                        answered.lock().unwrap().push(response.status().as_u16());
                        let (parts, body) = response.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        Ok::<_, Infallible>(http::Response::from_parts(parts, Full::new(body)))
                    }
                });
                // The emulator sends each attribute as a header: well over hyper's default 100.
                let _ = hyper::server::conn::http1::Builder::new()
                    .max_headers(1000)
                    .max_buf_size(1 << 20)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, relayed)
}

/// Attribute `i` at Pub/Sub's limits: a 256-byte key (lower case: header names lose their
/// case on the way) and a 1,024-byte printable value.
fn attribute(message: usize, i: usize) -> (String, String) {
    let key = format!("{i:03}-{}", "k".repeat(252));
    let value = (0..1024)
        .map(|j| char::from(b'!' + ((message * 31 + i * 7 + j) % 94) as u8))
        .collect();
    (key, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_pushes_100_attribute_messages_unwrapped_and_each_lands_whole() {
    let emulator = Emulator::start().await;
    let broker = Broker::start().await;
    broker.create_topic(KAFKA_TOPIC, 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let bridge = Bridge::start(&bridge_env(&broker, KAFKA_TOPIC, Some(&jwks))).await;
    let (relay, relayed) = start_relay(
        format!("http://{}", bridge.addr),
        mint(&key(1), &google_claims()),
    )
    .await;

    emulator
        .call("PUT", &format!("topics/{TOPIC}"), json!({}))
        .await;
    emulator
        .call(
            "PUT",
            &format!("subscriptions/{SUBSCRIPTION}"),
            json!({
                "topic": format!("projects/{PROJECT}/topics/{TOPIC}"),
                "pushConfig": {"pushEndpoint": relay, "noWrapper": {"writeMetadata": true}},
                "retryPolicy": {"minimumBackoff": "1s", "maximumBackoff": "2s"},
            }),
        )
        .await;
    use base64::Engine as _;
    let messages: Vec<(String, Vec<(String, String)>)> = (0..5)
        .map(|m| {
            (
                format!("message {m}: UTF-8 data (the emulator rewrites other bytes)"),
                (0..100).map(|i| attribute(m, i)).collect(),
            )
        })
        .collect();
    let published = emulator
        .call(
            "POST",
            &format!("topics/{TOPIC}:publish"),
            json!({"messages": messages.iter().map(|(data, attributes)| json!({
                "data": base64::engine::general_purpose::STANDARD.encode(data),
                "attributes": attributes.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect::<serde_json::Map<_, _>>(),
            })).collect::<Vec<_>>()}),
        )
        .await;
    let ids: Vec<String> = published["messageIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), messages.len());

    let deadline = Instant::now() + Duration::from_secs(60);
    let records = loop {
        let records = broker.read_all(KAFKA_TOPIC).await;
        if records.len() >= messages.len() {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} records after 60 s; relayed answers {:?}",
            records.len(),
            messages.len(),
            relayed.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(records.len(), messages.len(), "each message once");
    for record in &records {
        let id = record.header("pubsub.message_id").unwrap();
        let index = ids.iter().position(|i| *i == id).expect("a published id");
        let (data, attributes) = &messages[index];
        assert_eq!(record.record.value.as_deref(), Some(data.as_bytes()));
        assert_eq!(
            record.header("pubsub.subscription").as_deref(),
            Some(format!("projects/{PROJECT}/subscriptions/{SUBSCRIPTION}").as_str())
        );
        assert!(record.header("pubsub.publish_time").is_some());
        for (key, value) in attributes {
            assert_eq!(record.header(key).as_ref(), Some(value), "{id}: {key}");
        }
        // The attributes and the 3 metadata headers the emulator writes; nothing of the transport.
        assert_eq!(
            record.record.headers.len(),
            103,
            "{id}: {:?}",
            record
                .record
                .headers
                .keys()
                .filter(|k| k.len() < 200)
                .collect::<Vec<_>>()
        );
    }
    assert!(
        relayed.lock().unwrap().iter().all(|status| *status == 204),
        "{:?}",
        relayed.lock().unwrap()
    );
    assert_eq!(bridge.service.metrics().count(204), messages.len() as u64);
}
