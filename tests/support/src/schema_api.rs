//! A local Pub/Sub Schema API: `GET /v1/projects/P/schemas/S@REV?view=FULL`, answered from the
//! revisions a test gives it, and every other revision passed to an upstream (the emulator).
//!
//! A fake, for two jobs the emulator cannot do: it serves Protocol Buffer schemas (the
//! emulator refuses to create them, 501), with real `.proto` definitions, in the resource
//! shape of Google's API (`name`, `type`, `definition`, `revisionId`); and, in front of the
//! emulator, it counts the requests the bridge makes and can turn slow, failing or down, so
//! the tests see one fetch per revision and the bridge's answer to an unavailable API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::{HttpClient, http_client};

/// How the API answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiMode {
    /// Answers (from its revisions, else the upstream's answer).
    Serve,
    /// Answers after this long.
    Slow(Duration),
    /// Answers every request with this status.
    Status(u16),
    /// Closes every connection without an answer.
    Down,
}

struct State {
    /// `projects/P/schemas/S@REV` → (`AVRO` | `PROTOCOL_BUFFER`, definition).
    revisions: HashMap<String, (String, String)>,
    mode: ApiMode,
    /// Path and query of every request, in order.
    requests: Vec<String>,
    /// `Authorization` headers seen.
    authorizations: Vec<Option<String>>,
}

/// The local Schema API on a loopback port.
pub struct LocalSchemaApi {
    /// `http://127.0.0.1:PORT`: what `PUBSUB_API_URL` names.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl LocalSchemaApi {
    /// An API with no revisions of its own, passing unknown ones to `upstream`
    /// (`http://host:port`, the emulator) when given, else answering 404.
    pub async fn start(upstream: Option<String>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            revisions: HashMap::new(),
            mode: ApiMode::Serve,
            requests: Vec::new(),
            authorizations: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            let client = http_client();
            while let Ok((stream, _)) = listener.accept().await {
                if shared.lock().unwrap().mode == ApiMode::Down {
                    shared
                        .lock()
                        .unwrap()
                        .requests
                        .push("(connection closed)".into());
                    drop(stream);
                    continue;
                }
                let (state, client, upstream) =
                    (Arc::clone(&shared), client.clone(), upstream.clone());
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (state, client, upstream) =
                        (Arc::clone(&state), client.clone(), upstream.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            answer(request, &state, &client, upstream.as_deref()).await,
                        )
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self { url, state }
    }

    /// Serves revision `revision` of `name` (`projects/P/schemas/S`): `kind` is the API's
    /// `type` (`AVRO` or `PROTOCOL_BUFFER`).
    pub fn add(&self, name: &str, revision: &str, kind: &str, definition: &str) {
        self.state.lock().unwrap().revisions.insert(
            format!("{name}@{revision}"),
            (kind.to_owned(), definition.to_owned()),
        );
    }

    pub fn set_mode(&self, mode: ApiMode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// Path and query of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests for revision `name@revision`.
    pub fn requests_for(&self, name: &str, revision: &str) -> usize {
        let path = format!("/v1/{name}@{revision}?view=FULL");
        self.requests().iter().filter(|r| **r == path).count()
    }

    /// The `Authorization` header of each request (`None` when absent).
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.state.lock().unwrap().authorizations.clone()
    }
}

async fn answer(
    request: http::Request<hyper::body::Incoming>,
    state: &Mutex<State>,
    client: &HttpClient,
    upstream: Option<&str>,
) -> http::Response<Full<Bytes>> {
    let target = request
        .uri()
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    let (mode, known) = {
        let mut state = state.lock().unwrap();
        state.requests.push(target.clone());
        let authorization = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        state.authorizations.push(authorization);
        let resource = target
            .strip_prefix("/v1/")
            .and_then(|rest| rest.strip_suffix("?view=FULL"))
            .unwrap_or_default();
        (
            state.mode,
            state
                .revisions
                .get(resource)
                .cloned()
                .map(|r| (resource.to_owned(), r)),
        )
    };
    let reply = |status: u16, body: String| {
        http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    match mode {
        ApiMode::Status(status) => {
            return reply(status, json!({"error": {"code": status}}).to_string());
        }
        ApiMode::Slow(delay) => tokio::time::sleep(delay).await,
        ApiMode::Serve | ApiMode::Down => {}
    }
    if let Some((resource, (kind, definition))) = known {
        let (name, revision) = resource.split_once('@').unwrap();
        let body = json!({
            "name": name,
            "type": kind,
            "definition": definition,
            "revisionId": revision,
            "revisionCreateTime": "2026-01-01T00:00:00Z",
        });
        return reply(200, body.to_string());
    }
    let Some(upstream) = upstream else {
        let body =
            json!({"error": {"code": 404, "message": "Resource not found", "status": "NOT_FOUND"}});
        return reply(404, body.to_string());
    };
    let forwarded = http::Request::get(format!("{upstream}{target}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    match client.request(forwarded).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            reply(status, String::from_utf8_lossy(&body).into_owned())
        }
        Err(e) => reply(502, json!({"error": e.to_string()}).to_string()),
    }
}
