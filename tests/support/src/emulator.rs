//! Google's Pub/Sub emulator in the loop: the emulator process shared by the tests that run at
//! the same time, its REST API (topics, push subscriptions, schemas, publish), and the relay
//! that plays Pub/Sub's push authentication and Cloud Run's front end between it and a bridge.
//!
//! The emulator is Google's own implementation of the Pub/Sub API, installed with the Google
//! Cloud CLI on every machine of this project; the tests start it themselves. It sends no token,
//! so the relay adds one signed by the tests' JWKS key, plus the headers Cloud Run's front end
//! adds, and forwards everything else as it came: verification stays on in every test.

// The demo (examples/local_e2e.rs) and the tests each use a part.
#![allow(dead_code)]
// The relay collects the emulator's pushes and the bridge's answers whole: test traffic only.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::*;

/// The project every test's topics and subscriptions live in.
pub const PROJECT: &str = "emulated-project";

/// How long a test waits for an event that takes seconds at most on an idle machine.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The Pub/Sub emulator, in a process group of its own (the `gcloud` wrapper starts Java).
#[derive(Debug)]
pub struct Emulator {
    child: Child,
    /// `http://127.0.0.1:PORT`, what `PUBSUB_EMULATOR_HOST` names.
    pub host: String,
    base: String,
    data_dir: std::path::PathBuf,
}

/// The emulator the running tests share: Java takes 10-20 s to start on 2 cores, so the tests
/// of one binary that overlap in time use one process; the last one to finish stops it.
static SHARED: tokio::sync::Mutex<Weak<Emulator>> = tokio::sync::Mutex::const_new(Weak::new());

impl Emulator {
    /// The emulator of the tests running now, started if there is none.
    pub async fn shared() -> Arc<Self> {
        let mut shared = SHARED.lock().await;
        if let Some(emulator) = shared.upgrade() {
            return emulator;
        }
        let emulator = Arc::new(Self::start().await);
        *shared = Arc::downgrade(&emulator);
        emulator
    }

    /// A new emulator of its own, ready to answer.
    pub async fn start() -> Self {
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
            host: format!("127.0.0.1:{port}"),
            base: format!("http://127.0.0.1:{port}/v1/projects/{PROJECT}"),
            data_dir,
        };
        let started = Instant::now();
        let client = http_client();
        while get(&client, &format!("{}/topics", emulator.base)).await.0 != 200 {
            assert!(
                started.elapsed() < PATIENCE,
                "the emulator did not start: {}",
                emulator.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("Pub/Sub emulator ready after {:?}", started.elapsed());
        emulator
    }

    /// What the emulator wrote to its console (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("emulator.log")).unwrap_or_default()
    }

    /// A REST call under the project; panics unless the answer is 200.
    pub async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, text) = self.try_call(method, path, body).await;
        assert_eq!(status, 200, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// A REST call under the project: status and body.
    pub async fn try_call(&self, method: &str, path: &str, body: Value) -> (u16, String) {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}/{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        send(&http_client(), request).await
    }

    /// Creates topic `id` with `settings` (e.g. `schemaSettings`); returns its full name.
    pub async fn create_topic(&self, id: &str, settings: Value) -> String {
        self.call("PUT", &format!("topics/{id}"), settings).await;
        format!("projects/{PROJECT}/topics/{id}")
    }

    /// Creates push subscription `id` on `topic` pushing to `endpoint`, with `push_config`
    /// merged into its `pushConfig` and `settings` into the subscription. Returns the
    /// subscription's full name.
    ///
    /// No retry policy: without one the emulator pushes a refused message again as soon as its
    /// 1 s negative-ack deadline passes; with one (1-2 s backoff) it stopped pushing refused
    /// messages after their second attempt, for minutes (docs/emulator.md).
    pub async fn create_push_subscription(
        &self,
        id: &str,
        topic: &str,
        endpoint: &str,
        push_config: Value,
        settings: Value,
    ) -> String {
        let mut config = json!({"pushEndpoint": endpoint});
        merge(&mut config, push_config);
        let mut subscription = json!({"topic": topic, "pushConfig": config});
        merge(&mut subscription, settings);
        self.call("PUT", &format!("subscriptions/{id}"), subscription)
            .await;
        format!("projects/{PROJECT}/subscriptions/{id}")
    }

    /// Deletes subscription `id`: the emulator stops pushing its messages.
    pub async fn delete_subscription(&self, id: &str) {
        self.call("DELETE", &format!("subscriptions/{id}"), json!({}))
            .await;
    }

    /// Publishes `messages` (see [`message`]) to `topic` (its full name); returns their ids.
    pub async fn publish(&self, topic: &str, messages: &[Value]) -> Vec<String> {
        let id = topic.rsplit('/').next().unwrap();
        let published = self
            .call(
                "POST",
                &format!("topics/{id}:publish"),
                json!({ "messages": messages }),
            )
            .await;
        let ids: Vec<String> = published["messageIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), messages.len());
        ids
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

/// `from`'s fields into `into`.
fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// A message to publish: `data` (base64 on the wire; absent when empty) and `attributes`.
pub fn message(data: &[u8], attributes: &[(&str, &str)]) -> Value {
    let mut message = json!({});
    if !data.is_empty() {
        message["data"] = base64::engine::general_purpose::STANDARD
            .encode(data)
            .into();
    }
    if !attributes.is_empty() {
        message["attributes"] = attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    message
}

/// One push the relay passed on, and the bridge's answer to it.
#[derive(Debug, Clone)]
pub struct Relayed {
    /// When the push reached the relay.
    pub received: Instant,
    /// When the bridge's answer came back.
    pub answered: Instant,
    /// The relay's path the emulator pushed to (one per subscription).
    pub path: String,
    /// From the wrapped body or the unwrapped `x-goog-pubsub-message-id` header; none for an
    /// unwrapped push without metadata.
    pub message_id: Option<String>,
    /// Whether the body's `subscription` had its slashes escaped (`projects\/...`).
    pub escaped_slashes: bool,
    pub content_type: Option<String>,
    pub status: u16,
}

/// Plays Pub/Sub's push authentication and Cloud Run's front end between the emulator and a
/// bridge: adds the push token and the front end's headers, forwards the rest untouched,
/// answers what the bridge answered, and records each push.
#[derive(Debug)]
pub struct Relay {
    /// `http://127.0.0.1:PORT`: push endpoints are this plus a path of the test's choice.
    pub url: String,
    relayed: Arc<Mutex<Vec<Relayed>>>,
    in_flight: Arc<Mutex<Vec<InFlight>>>,
}

/// A push the bridge has not answered yet.
#[derive(Debug, Clone)]
pub struct InFlight {
    pub received: Instant,
    pub message_id: Option<String>,
}

impl Relay {
    /// A relay to the bridge at `bridge` (`http://host:port`), with a token for the push
    /// service account signed by the tests' key 1.
    pub async fn start(bridge: &str) -> Self {
        let token = mint(&key(1), &google_claims());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let relayed = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(Mutex::new(Vec::new()));
        let record = (Arc::clone(&relayed), Arc::clone(&in_flight));
        let bridge = bridge.trim_end_matches('/').to_owned();
        tokio::spawn(async move {
            let client = http_client();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (client, bridge, token, record) = (
                    client.clone(),
                    bridge.clone(),
                    token.clone(),
                    record.clone(),
                );
                tokio::spawn(async move {
                    let service = service_fn(move |request: http::Request<Incoming>| {
                        let (client, bridge, token, record) = (
                            client.clone(),
                            bridge.clone(),
                            token.clone(),
                            record.clone(),
                        );
                        async move {
                            Ok::<_, Infallible>(
                                relay(request, &client, &bridge, &token, &record.0, &record.1)
                                    .await,
                            )
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
        Self {
            url,
            relayed,
            in_flight,
        }
    }

    /// The pushes the bridge has not answered yet.
    pub fn in_flight(&self) -> Vec<InFlight> {
        self.in_flight.lock().unwrap().clone()
    }

    /// Every push relayed so far, in order.
    pub fn relayed(&self) -> Vec<Relayed> {
        self.relayed.lock().unwrap().clone()
    }

    /// How many pushes of each message id were relayed.
    pub fn deliveries_by_id(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for push in self.relayed() {
            if let Some(id) = push.message_id {
                *counts.entry(id).or_default() += 1;
            }
        }
        counts
    }

    /// Waits until `done` holds for the pushes relayed so far.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Relayed]) -> bool) {
        let started = Instant::now();
        loop {
            let relayed = self.relayed();
            if done(&relayed) {
                return;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{what}: not after {PATIENCE:?}; relayed {:?}; in flight {:?}",
                relayed
                    .iter()
                    .map(|r| (&r.path, &r.message_id, r.status))
                    .collect::<Vec<_>>(),
                self.in_flight()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn relay(
    request: http::Request<Incoming>,
    client: &HttpClient,
    bridge: &str,
    token: &str,
    record: &Mutex<Vec<Relayed>>,
    in_flight: &Mutex<Vec<InFlight>>,
) -> http::Response<Full<Bytes>> {
    let received = Instant::now();
    let (mut parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let path = parts.uri.path().to_owned();
    let content_type = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let unwrapped_id = parts
        .headers
        .get("x-goog-pubsub-message-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (message_id, escaped_slashes) = match unwrapped_id {
        Some(id) => (Some(id), false),
        None if content_type.as_deref() == Some("application/json") => {
            let escaped = contains(&body, br#""subscription":"projects\/"#);
            let id = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["message"]["messageId"].as_str().map(str::to_owned));
            (id, escaped)
        }
        None => (None, false),
    };
    in_flight.lock().unwrap().push(InFlight {
        received,
        message_id: message_id.clone(),
    });
    parts.uri = format!("{bridge}{path}").parse().unwrap();
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
    let (status, response) = match client
        .request(http::Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(response) => {
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }
        // The bridge is gone (a test stopping): what Cloud Run answers then.
        Err(_) => (http::StatusCode::BAD_GATEWAY, Bytes::new()),
    };
    in_flight
        .lock()
        .unwrap()
        .retain(|push| push.received != received || push.message_id != message_id);
    record.lock().unwrap().push(Relayed {
        received,
        answered: Instant::now(),
        path,
        message_id,
        escaped_slashes,
        content_type,
        status: status.as_u16(),
    });
    let mut answer = http::Response::new(Full::new(response));
    *answer.status_mut() = status;
    answer
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Waits until `topic` holds a record of each of `ids` (by `pubsub.message_id`); returns every
/// record of the topic then.
pub async fn wait_for_ids(broker: &Broker, topic: &str, ids: &[String]) -> Vec<Consumed> {
    let started = Instant::now();
    loop {
        let records = broker.read_all(topic).await;
        let missing: Vec<&String> = ids
            .iter()
            .filter(|id| {
                !records
                    .iter()
                    .any(|r| r.header("pubsub.message_id").as_ref() == Some(*id))
            })
            .collect();
        if missing.is_empty() {
            return records;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{topic}: {} of {} messages missing after {PATIENCE:?}: {missing:?}",
            missing.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `topic` holds at least `count` records; returns them.
pub async fn wait_for_count(broker: &Broker, topic: &str, count: usize) -> Vec<Consumed> {
    let started = Instant::now();
    loop {
        let records = broker.read_all(topic).await;
        if records.len() >= count {
            return records;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{topic}: {} of {count} records after {PATIENCE:?}",
            records.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
