//! TLS, mTLS and SASL against a real tansu broker; OAUTHBEARER against a local metadata server.
//!
//! tansu 0.6.0 cannot serve TLS from its command line (`--cert` and `--key` are declared as
//! mutually exclusive), so TLS is terminated by a rustls proxy in front of the real broker, with
//! certificates from a CA each test creates; the broker advertises the proxy's address.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use rskafka::client::{Credentials, SaslConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use test_support::metadata::MetadataServer;
use test_support::tls::{TestCa, tls_proxy};
use test_support::*;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pkb-{name}-{}-{}", std::process::id(), free_port()))
}

fn body(id: &str) -> String {
    envelope(b"secured", &[], id, "2024-01-01T00:00:00Z", None).to_string()
}

/// A bridge configured by `env` delivers one push, and `topic` then holds exactly that record.
async fn delivers_one_record(
    broker: &Broker,
    env: &HashMap<String, String>,
    topic: &str,
    id: &str,
) {
    let bridge = Bridge::start(env).await;
    let (status, text) = post(&http_client(), &bridge.url(), body(id), None).await;
    assert_eq!(status, 204, "{text}");
    let records = broker.read_all(topic).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].header("pubsub.message_id").as_deref(), Some(id));
}

/// Puts `broker` (not started yet) behind a TLS proxy with a certificate from `ca`: the broker
/// advertises the proxy, and the tests' own client trusts `ca` (and presents a certificate from
/// `client_ca` when the proxy requires one).
async fn behind_tls_proxy(broker: &mut Broker, ca: &TestCa, client_ca: Option<&TestCa>) {
    let proxy_port = free_port();
    broker.advertised_port = Some(proxy_port);
    tls_proxy(
        proxy_port,
        broker.port,
        ca.issue("broker", &["localhost"]),
        client_ca,
    )
    .await;
    broker.client_tls = Some(match client_ca {
        Some(ca) => {
            let (cert, key) = ca.issue("reader", &["reader"]);
            Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(ca.roots())
                    .with_client_auth_cert(
                        vec![CertificateDer::from_pem_file(cert).unwrap()],
                        PrivateKeyDer::from_pem_file(key).unwrap(),
                    )
                    .unwrap(),
            )
        }
        None => ca.client_config(),
    });
}

/// A started broker behind a TLS proxy (see [`behind_tls_proxy`]).
async fn tls_broker(ca: &TestCa, client_ca: Option<&TestCa>) -> Broker {
    let mut broker = Broker::sqlite_unstarted();
    behind_tls_proxy(&mut broker, ca, client_ca).await;
    broker.start_now().await;
    broker
}

#[tokio::test]
async fn produces_over_tls_to_a_broker_signed_by_a_test_ca() {
    let ca = TestCa::new(&tmp("tls"), "ca");
    let broker = tls_broker(&ca, None).await;
    broker.create_topic("tls", 2).await;
    let mut env = bridge_env(&broker, "tls", None);
    env.insert("KAFKA_SECURITY_PROTOCOL".into(), "SSL".into());
    env.insert("KAFKA_SSL_CA_LOCATION".into(), ca.path("ca.pem"));
    delivers_one_record(&broker, &env, "tls", "over-tls").await;
}

#[tokio::test]
async fn untrusted_broker_certificate_fails_cleanly_with_503() {
    let ca = TestCa::new(&tmp("tls-bad"), "ca");
    let other = TestCa::new(&tmp("tls-other"), "other-ca");
    let broker = tls_broker(&ca, None).await;
    broker.create_topic("untrusted", 1).await;
    let mut env = bridge_env(&broker, "untrusted", None);
    env.insert("KAFKA_SECURITY_PROTOCOL".into(), "SSL".into());
    env.insert("KAFKA_SSL_CA_LOCATION".into(), other.path("other-ca.pem"));
    env.insert("KAFKA_PRODUCE_TIMEOUT_MS".into(), "1500".into());
    let config = pubsub_kafka_bridge::Config::from_map(&env).unwrap();
    let app = Arc::new(pubsub_kafka_bridge::Service::new(
        pubsub_kafka_bridge::App::new(config).unwrap(),
    ));
    let started = Instant::now();
    let response = app
        .handle(
            http::Request::post("/")
                .body(Bytes::from(body("untrusted")))
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        started.elapsed()
    );
    let readiness = app
        .handle(http::Request::get("/readyz").body(Bytes::new()).unwrap())
        .await;
    assert_eq!(readiness.status(), 503);
    assert!(broker.read_all("untrusted").await.is_empty());
}

#[tokio::test]
async fn mutual_tls_presents_the_configured_client_certificate() {
    let ca = TestCa::new(&tmp("mtls"), "ca");
    let broker = tls_broker(&ca, Some(&ca)).await;
    broker.create_topic("mtls", 1).await;
    let (cert, key) = ca.issue("bridge-client", &["bridge"]);
    let mut env = bridge_env(&broker, "mtls", None);
    env.insert("KAFKA_SECURITY_PROTOCOL".into(), "SSL".into());
    env.insert("KAFKA_SSL_CA_LOCATION".into(), ca.path("ca.pem"));
    env.insert("KAFKA_SSL_CERTIFICATE_LOCATION".into(), cert);
    env.insert("KAFKA_SSL_KEY_LOCATION".into(), key);
    delivers_one_record(&broker, &env, "mtls", "mtls").await;

    // Without the client certificate the proxy refuses the handshake.
    let mut no_cert = bridge_env(&broker, "mtls", None);
    no_cert.insert("KAFKA_SECURITY_PROTOCOL".into(), "SSL".into());
    no_cert.insert("KAFKA_SSL_CA_LOCATION".into(), ca.path("ca.pem"));
    no_cert.insert("KAFKA_PRODUCE_TIMEOUT_MS".into(), "1500".into());
    let app = pubsub_kafka_bridge::Service::new(
        pubsub_kafka_bridge::App::new(pubsub_kafka_bridge::Config::from_map(&no_cert).unwrap())
            .unwrap(),
    );
    let response = app
        .handle(
            http::Request::post("/")
                .body(Bytes::from(body("no-cert")))
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), 503);
}

const USER: &str = "bridge";
const PASSWORD: &str = "Corr3ct-Horse-Battery";

/// A broker requiring SASL (SCRAM users created before authentication is switched on).
async fn scram_broker(tls: Option<&TestCa>) -> Broker {
    let mut broker = Broker::sqlite_unstarted();
    broker.start_now().await;
    broker.create_user(USER, PASSWORD);
    broker.kill();
    if let Some(ca) = tls {
        behind_tls_proxy(&mut broker, ca, None).await;
    }
    broker.args = vec!["--authentication".into()];
    broker.client_sasl = Some(SaslConfig::ScramSha512(Credentials::new(
        USER.into(),
        PASSWORD.into(),
    )));
    broker.start_now().await;
    broker
}

fn sasl_env(
    broker: &Broker,
    topic: &str,
    protocol: &str,
    mechanism: &str,
    password: &str,
) -> HashMap<String, String> {
    let mut env = bridge_env(broker, topic, None);
    env.insert("KAFKA_SECURITY_PROTOCOL".into(), protocol.into());
    env.insert("KAFKA_SASL_MECHANISM".into(), mechanism.into());
    env.insert("KAFKA_SASL_USERNAME".into(), USER.into());
    env.insert("KAFKA_SASL_PASSWORD".into(), password.into());
    env.insert("KAFKA_PRODUCE_TIMEOUT_MS".into(), "2000".into());
    env
}

#[tokio::test]
async fn scram_sha_512_authenticates() {
    let broker = scram_broker(None).await;
    broker.create_topic("scram", 1).await;
    let env = sasl_env(
        &broker,
        "scram",
        "SASL_PLAINTEXT",
        "SCRAM-SHA-512",
        PASSWORD,
    );
    delivers_one_record(&broker, &env, "scram", "scram").await;
}

#[tokio::test]
async fn sasl_ssl_with_scram_sha_512() {
    let ca = TestCa::new(&tmp("sasl-ssl"), "ca");
    let broker = scram_broker(Some(&ca)).await;
    broker.create_topic("sasl-ssl", 1).await;
    let mut env = sasl_env(&broker, "sasl-ssl", "SASL_SSL", "SCRAM-SHA-512", PASSWORD);
    env.insert("KAFKA_SSL_CA_LOCATION".into(), ca.path("ca.pem"));
    delivers_one_record(&broker, &env, "sasl-ssl", "sasl-ssl").await;
}

/// The real binary with a wrong password: no crash loop, 503s, not ready, and the password
/// appears in no log line even at debug level.
#[tokio::test]
async fn wrong_password_is_a_clean_503_and_never_logged() {
    let broker = scram_broker(None).await;
    broker.create_topic("wrong-password", 1).await;
    let wrong = "Wr0ng-Pa55word-Value";
    let log_path = tmp("wrong-password-log");
    let mut env = sasl_env(
        &broker,
        "wrong-password",
        "SASL_PLAINTEXT",
        "SCRAM-SHA-512",
        wrong,
    );
    env.insert("RUST_LOG".into(), "debug".into());
    let (mut child, base) = spawn_bridge_process(&env, Some(&log_path)).await;
    let client = http_client();
    let (status, text) = post(&client, &format!("{base}/"), body("wrong"), None).await;
    assert_eq!(status, 503, "{text}");
    assert_eq!(get(&client, &format!("{base}/readyz")).await.0, 503);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the process must keep running (no crash loop)"
    );
    let _ = child.kill();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(!logs.contains(wrong), "password leaked into logs");
    assert!(!text.contains(wrong));
    assert!(
        logs.to_lowercase().contains("sasl"),
        "the log names the SASL failure:\n{logs}"
    );
    assert!(broker.read_all("wrong-password").await.is_empty());
}

/// tansu 0.6.0 authenticates SCRAM-SHA-512 only; PLAIN and SCRAM-SHA-256 are refused by the
/// broker. The bridge speaks both (rskafka's SASL), and must fail cleanly against this broker.
#[tokio::test]
async fn plain_and_scram_sha_256_fail_cleanly_where_the_broker_refuses_them() {
    let broker = scram_broker(None).await;
    broker.create_topic("mechanisms", 1).await;
    for mechanism in ["PLAIN", "SCRAM-SHA-256"] {
        let env = sasl_env(&broker, "mechanisms", "SASL_PLAINTEXT", mechanism, PASSWORD);
        let app = pubsub_kafka_bridge::Service::new(
            pubsub_kafka_bridge::App::new(pubsub_kafka_bridge::Config::from_map(&env).unwrap())
                .unwrap(),
        );
        let response = app
            .handle(
                http::Request::post("/")
                    .body(Bytes::from(body(mechanism)))
                    .unwrap(),
            )
            .await;
        assert_eq!(response.status(), 503, "{mechanism}");
    }
    assert!(broker.read_all("mechanisms").await.is_empty());
}

/// tansu 0.6.0 has no OAUTHBEARER: the bridge fetches the token for its connection (the
/// metadata server is asked) and, refused by the broker, answers 503 without crashing.
#[tokio::test]
async fn oauthbearer_connection_asks_the_metadata_server_and_fails_cleanly_on_tansu() {
    let metadata = MetadataServer::start(3600).await;
    let broker = scram_broker(None).await;
    broker.create_topic("oauth", 1).await;
    let mut env = bridge_env(&broker, "oauth", None);
    env.insert("KAFKA_SECURITY_PROTOCOL".into(), "SASL_PLAINTEXT".into());
    env.insert("KAFKA_SASL_MECHANISM".into(), "OAUTHBEARER".into());
    env.insert("GCE_METADATA_HOST".into(), metadata.host());
    env.insert("KAFKA_PRODUCE_TIMEOUT_MS".into(), "2000".into());
    let app = pubsub_kafka_bridge::Service::new(
        pubsub_kafka_bridge::App::new(pubsub_kafka_bridge::Config::from_map(&env).unwrap())
            .unwrap(),
    );
    let response = app
        .handle(
            http::Request::post("/")
                .body(Bytes::from(body("oauth")))
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), 503);
    assert!(
        metadata.requests.load(Ordering::SeqCst) >= 1,
        "token fetched for the SASL handshake"
    );
    assert_eq!(metadata.refused.load(Ordering::SeqCst), 0);
}

/// Request paths and Authorization values seen by [`SecretManager`].
type SeenRequests = Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

/// A local stand-in for Secret Manager's `versions/*:access`: refuses the first `denials`
/// requests with 403 (an accessor grant still propagating), then answers `password`.
struct SecretManager {
    addr: std::net::SocketAddr,
    requests: Arc<std::sync::atomic::AtomicUsize>,
    paths: SeenRequests,
}

impl SecretManager {
    async fn start(password: &'static str, denials: usize) -> Self {
        use http_body_util::Full;
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Self {
            addr: listener.local_addr().unwrap(),
            requests: Arc::default(),
            paths: Arc::default(),
        };
        let (requests, paths) = (Arc::clone(&server.requests), Arc::clone(&server.paths));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (requests, paths) = (Arc::clone(&requests), Arc::clone(&paths));
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let n = requests.fetch_add(1, Ordering::SeqCst);
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    paths
                        .lock()
                        .unwrap()
                        .push((req.uri().path().to_owned(), auth));
                    let response = if n < denials {
                        http::Response::builder()
                            .status(403)
                            .body(Full::new(Bytes::from_static(b"{\"error\":{\"code\":403}}")))
                    } else {
                        let data = base64::engine::general_purpose::STANDARD.encode(password);
                        http::Response::builder().body(Full::new(Bytes::from(
                            serde_json::json!({"name": "x", "payload": {"data": data}}).to_string(),
                        )))
                    };
                    async move { Ok::<_, std::convert::Infallible>(response.unwrap()) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        server
    }
}

/// SCRAM-SHA-512 with the password in `secret`, read through `secrets` with `metadata`'s token.
fn secret_env(
    broker: &Broker,
    topic: &str,
    secret: &str,
    secrets: &SecretManager,
    metadata: &MetadataServer,
) -> HashMap<String, String> {
    let mut env = bridge_env(broker, topic, None);
    env.insert("KAFKA_SECURITY_PROTOCOL".into(), "SASL_PLAINTEXT".into());
    env.insert("KAFKA_SASL_MECHANISM".into(), "SCRAM-SHA-512".into());
    env.insert("KAFKA_SASL_USERNAME".into(), USER.into());
    env.insert("KAFKA_SASL_PASSWORD_SECRET".into(), secret.into());
    env.insert(
        "SECRET_MANAGER_ENDPOINT".into(),
        format!("http://{}", secrets.addr),
    );
    env.insert("GCE_METADATA_HOST".into(), metadata.host());
    env
}

/// The password comes from Secret Manager at connect time, with the metadata server's token;
/// while the accessor grant is still propagating (403), the bridge retries and stays unready,
/// then connects with the password and delivers.
#[tokio::test]
async fn sasl_password_is_read_from_secret_manager_and_retried_until_granted() {
    let metadata = MetadataServer::start(3600).await;
    let secrets = SecretManager::start(PASSWORD, 2).await;
    let broker = scram_broker(None).await;
    broker.create_topic("from-secret", 1).await;
    let env = secret_env(
        &broker,
        "from-secret",
        "projects/test-project/secrets/kafka-password",
        &secrets,
        &metadata,
    );
    delivers_one_record(&broker, &env, "from-secret", "via-secret").await;
    let paths = secrets.paths.lock().unwrap().clone();
    assert!(
        paths.len() >= 3,
        "two denials, then the password: {paths:?}"
    );
    for (path, auth) in &paths {
        assert_eq!(
            path,
            "/v1/projects/test-project/secrets/kafka-password/versions/latest:access"
        );
        assert!(
            auth.as_deref()
                .is_some_and(|a| a.starts_with("Bearer ya29.test-token-")),
            "{auth:?}"
        );
    }
    assert_eq!(metadata.refused.load(Ordering::SeqCst), 0);
}

/// A wrong password in the secret: never ready, deliveries 503, no crash.
#[tokio::test]
async fn wrong_password_in_the_secret_fails_cleanly() {
    let metadata = MetadataServer::start(3600).await;
    let secrets = SecretManager::start("not-the-password", 0).await;
    let broker = scram_broker(None).await;
    broker.create_topic("bad-secret", 1).await;
    let mut env = secret_env(
        &broker,
        "bad-secret",
        "projects/test-project/secrets/kafka-password/versions/7",
        &secrets,
        &metadata,
    );
    env.insert("KAFKA_PRODUCE_TIMEOUT_MS".into(), "1500".into());
    let app = pubsub_kafka_bridge::Service::new(
        pubsub_kafka_bridge::App::new(pubsub_kafka_bridge::Config::from_map(&env).unwrap())
            .unwrap(),
    );
    let response = app
        .handle(
            http::Request::post("/")
                .body(Bytes::from(body("bad")))
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), 503);
    assert!(secrets.requests.load(Ordering::SeqCst) >= 1);
    assert!(broker.read_all("bad-secret").await.is_empty());
}
