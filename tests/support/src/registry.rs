//! A Confluent Schema Registry stand-in: the one fake part of the typed-record tests. No
//! registry server can be installed here (Confluent's is a JVM service outside any package
//! index this project uses), so this implements the REST calls that meet it, as Confluent
//! documents them (docs.confluent.io, "Schema Registry API Reference"):
//!
//! - `POST /subjects/{subject}/versions` `{"schemaType"?, "schema"}` → `{"id"}`, what the
//!   bridge sends: an identical schema gets the same id under every subject, a new one the
//!   next id, as the real registry does;
//! - `GET /schemas/ids/{id}` → `{"schema", "schemaType"?}` (`schemaType` absent for Avro),
//!   what confluent-kafka's deserializers ask;
//! - `GET /subjects`, what `pubsub-kafka-bridge check` asks.
//!
//! It keeps every registration, so tests can count them per subject. Compatibility rules are
//! not checked (the tests register compatible revisions).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// One registration the registry answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub subject: String,
    /// `AVRO` when the request named none, as Confluent reads it.
    pub schema_type: String,
    pub schema: String,
    pub id: u32,
}

#[derive(Default)]
struct State {
    /// Distinct schemas, by id - 1.
    schemas: Vec<(String, String)>,
    registrations: Vec<Registration>,
    /// Requests of any kind, as `METHOD path`.
    requests: Vec<String>,
}

/// The registry stand-in on a loopback port.
pub struct TestRegistry {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl TestRegistry {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let state = Arc::clone(&state);
                    async move {
                        let (status, body) = answer(request, &state).await;
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/vnd.schemaregistry.v1+json")
                                .body(Full::new(Bytes::from(body.to_string())))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self {
            url: format!("http://{addr}"),
            state,
        }
    }

    /// Every registration so far, in order.
    pub fn registrations(&self) -> Vec<Registration> {
        self.state.lock().unwrap().registrations.clone()
    }

    /// Every request so far (`METHOD path`).
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

async fn answer(
    request: http::Request<hyper::body::Incoming>,
    state: &Mutex<State>,
) -> (u16, Value) {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    state
        .lock()
        .unwrap()
        .requests
        .push(format!("{method} {}", request.uri()));
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let not_found = |code: u32, what: &str| (404, json!({"error_code": code, "message": what}));
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["subjects", subject, "versions"]) => {
            let Ok(request) = serde_json::from_slice::<Value>(&body) else {
                return (
                    422,
                    json!({"error_code": 42201, "message": "Invalid schema"}),
                );
            };
            let Some(schema) = request["schema"].as_str() else {
                return (
                    422,
                    json!({"error_code": 42201, "message": "Invalid schema"}),
                );
            };
            let schema_type = request["schemaType"].as_str().unwrap_or("AVRO").to_owned();
            let mut state = state.lock().unwrap();
            let key = (schema_type.clone(), schema.to_owned());
            let id = match state.schemas.iter().position(|known| *known == key) {
                Some(index) => index + 1,
                None => {
                    state.schemas.push(key);
                    state.schemas.len()
                }
            } as u32;
            state.registrations.push(Registration {
                subject: (*subject).to_owned(),
                schema_type,
                schema: schema.to_owned(),
                id,
            });
            (200, json!({ "id": id }))
        }
        ("GET", ["schemas", "ids", id]) => {
            let state = state.lock().unwrap();
            let found = id
                .parse::<usize>()
                .ok()
                .and_then(|id| id.checked_sub(1))
                .and_then(|index| state.schemas.get(index));
            match found {
                Some((schema_type, schema)) if schema_type == "AVRO" => {
                    (200, json!({ "schema": schema }))
                }
                Some((schema_type, schema)) => {
                    (200, json!({ "schema": schema, "schemaType": schema_type }))
                }
                None => not_found(40403, "Schema not found"),
            }
        }
        ("GET", ["subjects"]) => {
            let state = state.lock().unwrap();
            let mut subjects: Vec<&str> = state
                .registrations
                .iter()
                .map(|r| r.subject.as_str())
                .collect();
            subjects.sort_unstable();
            subjects.dedup();
            (200, json!(subjects))
        }
        _ => not_found(404, "not a call this registry stand-in implements"),
    }
}
