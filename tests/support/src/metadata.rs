//! A local stand-in for the GCE metadata server: the default service account's access token
//! and email, answered only to requests carrying `Metadata-Flavor: Google`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// The email the metadata server names.
pub const SERVICE_ACCOUNT_EMAIL: &str = "bridge-run@test-project.iam.gserviceaccount.com";
const ACCOUNT: &str = "/computeMetadata/v1/instance/service-accounts/default";

pub struct MetadataServer {
    pub addr: SocketAddr,
    /// Token requests answered.
    pub requests: Arc<AtomicUsize>,
    /// Email requests answered.
    pub email_requests: Arc<AtomicUsize>,
    /// Requests refused (no Metadata-Flavor header, or an unknown path).
    pub refused: Arc<AtomicUsize>,
    /// `expires_in` of the next token answers.
    pub expires_in: Arc<Mutex<u64>>,
}

impl MetadataServer {
    pub async fn start(expires_in: u64) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Self {
            addr: listener.local_addr().unwrap(),
            requests: Arc::default(),
            email_requests: Arc::default(),
            refused: Arc::default(),
            expires_in: Arc::new(Mutex::new(expires_in)),
        };
        let (tokens, emails, refused, expires) = (
            Arc::clone(&server.requests),
            Arc::clone(&server.email_requests),
            Arc::clone(&server.refused),
            Arc::clone(&server.expires_in),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tokens, emails, refused, expires) = (
                    Arc::clone(&tokens),
                    Arc::clone(&emails),
                    Arc::clone(&refused),
                    Arc::clone(&expires),
                );
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let flavored = req
                        .headers()
                        .get("metadata-flavor")
                        .is_some_and(|v| v == "Google");
                    let path = req.uri().path().to_owned();
                    let body = if !flavored {
                        None
                    } else if path == format!("{ACCOUNT}/token") {
                        let n = tokens.fetch_add(1, Ordering::SeqCst) + 1;
                        Some(
                            serde_json::json!({
                                "access_token": format!("ya29.test-token-{n}"),
                                "expires_in": *expires.lock().unwrap(),
                                "token_type": "Bearer",
                            })
                            .to_string(),
                        )
                    } else if path == format!("{ACCOUNT}/email") {
                        emails.fetch_add(1, Ordering::SeqCst);
                        Some(SERVICE_ACCOUNT_EMAIL.to_owned())
                    } else {
                        None
                    };
                    let response = match body {
                        Some(body) => http::Response::new(Full::new(Bytes::from(body))),
                        None => {
                            refused.fetch_add(1, Ordering::SeqCst);
                            http::Response::builder()
                                .status(403)
                                .body(Full::new(Bytes::new()))
                                .unwrap()
                        }
                    };
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        server
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}
