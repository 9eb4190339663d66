//! Real parts for the integration tests: a tansu broker on a free loopback port, a JWKS
//! server with real RSA keys, token minting, the bridge in-process, and an HTTP client.
#![allow(dead_code)]
// Tests read their own environment (TANSU_BIN) and collect the bridge's answers whole.
#![allow(clippy::disallowed_methods)]

pub mod metadata;
pub mod sasl_responder;
pub mod scripted;
pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pubsub_kafka_bridge::{App, Config, Service};
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client as KafkaClient, ClientBuilder};
use rskafka::record::Record;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The tansu binary: `TANSU_BIN`, else `tansu` on PATH. The test command installs it.
pub fn tansu_bin() -> PathBuf {
    if let Ok(path) = std::env::var("TANSU_BIN") {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").map(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("tansu"))
            .find(|p| p.is_file())
    });
    found.flatten().expect(
        "tansu is not installed: run the test command from README.md (infra/test.sh), which installs it",
    )
}

/// A tansu broker process on a loopback port; killed on drop.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    workdir: PathBuf,
    storage: String,
    /// Where clients are told to connect (a TLS proxy's port), when not `port`.
    pub advertised_port: Option<u16>,
    /// Extra broker arguments (`--authentication`).
    pub args: Vec<String>,
    /// TLS for the tests' own client (when the advertised address is a TLS proxy).
    pub client_tls: Option<Arc<rustls::ClientConfig>>,
    /// SASL for the tests' own client.
    pub client_sasl: Option<rskafka::client::SaslConfig>,
}

impl Broker {
    /// A broker with in-memory storage.
    pub async fn start() -> Self {
        let workdir = std::env::temp_dir().join(format!("pkb-tansu-{}", free_port()));
        Self::start_with(workdir, "memory://tansu/".into()).await
    }

    /// A broker with sqlite storage in a fresh directory: data survives a restart.
    pub async fn start_sqlite() -> Self {
        let workdir = std::env::temp_dir().join(format!(
            "pkb-tansu-sqlite-{}-{}",
            std::process::id(),
            free_port()
        ));
        Self::start_with(workdir, "sqlite://tansu.db".into()).await
    }

    async fn start_with(workdir: PathBuf, storage: String) -> Self {
        std::fs::create_dir_all(&workdir).unwrap();
        let mut broker = Self {
            port: free_port(),
            child: None,
            workdir,
            storage,
            advertised_port: None,
            args: Vec::new(),
            client_tls: None,
            client_sasl: None,
        };
        broker.spawn().await;
        broker
    }

    /// A sqlite broker that is not started yet (set `args`/`advertised_port`, then `start_now`).
    pub fn sqlite_unstarted() -> Self {
        let workdir = std::env::temp_dir().join(format!(
            "pkb-tansu-sqlite-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&workdir).unwrap();
        Self {
            port: free_port(),
            child: None,
            workdir,
            storage: "sqlite://tansu.db".into(),
            advertised_port: None,
            args: Vec::new(),
            client_tls: None,
            client_sasl: None,
        }
    }

    /// Starts (or restarts) the broker with the current settings.
    pub async fn start_now(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Creates a SCRAM user through the broker's own CLI.
    pub fn create_user(&self, name: &str, password: &str) {
        let status = Command::new(tansu_bin())
            .args([
                "user",
                "create",
                name,
                password,
                "--broker",
                &format!("tcp://127.0.0.1:{}", self.port),
            ])
            .current_dir(&self.workdir)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "tansu user create failed");
    }

    async fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = match self.advertised_port {
            Some(port) => format!("tcp://localhost:{port}"),
            None => url.clone(),
        };
        let log = std::fs::File::create(self.workdir.join("tansu.log")).unwrap();
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(&self.args)
            .args(["--storage-engine", &self.storage])
            .current_dir(&self.workdir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), self.client()).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not come up on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `host:port` for KAFKA_BOOTSTRAP_SERVERS.
    pub fn bootstrap(&self) -> String {
        match self.advertised_port {
            Some(port) => format!("localhost:{port}"),
            None => format!("127.0.0.1:{}", self.port),
        }
    }

    /// A fresh rskafka client (bounded retries so tests never hang).
    pub async fn client(&self) -> Result<KafkaClient, rskafka::client::error::Error> {
        let mut builder =
            ClientBuilder::new(vec![self.bootstrap()]).backoff_config(rskafka::BackoffConfig {
                init_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(200),
                base: 2.,
                deadline: Some(Duration::from_secs(5)),
            });
        if let Some(tls) = &self.client_tls {
            builder = builder.tls_config(Arc::clone(tls));
        }
        if let Some(sasl) = &self.client_sasl {
            builder = builder.sasl_config(sasl.clone());
        }
        builder.build().await
    }

    /// Creates `topic` with `partitions` partitions.
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        let client = self.client().await.unwrap();
        client
            .controller_client()
            .unwrap()
            .create_topic(topic, partitions, 1, 5_000)
            .await
            .unwrap();
    }

    /// Kills the broker (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port and storage.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Every record of `topic`, partition by partition, as a consumer reads them.
    pub async fn read_all(&self, topic: &str) -> Vec<Consumed> {
        let client = self.client().await.unwrap();
        let partitions = client
            .list_topics()
            .await
            .unwrap()
            .into_iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.len() as i32)
            .unwrap_or(0);
        let mut out = Vec::new();
        for partition in 0..partitions {
            let pc = client
                .partition_client(topic, partition, UnknownTopicHandling::Retry)
                .await
                .unwrap();
            out.extend(read_partition(&pc, partition).await);
        }
        out
    }

    /// The broker's stderr so far (for failure messages).
    pub fn log_path(&self) -> PathBuf {
        self.workdir.join("tansu.log")
    }
}

async fn read_partition(pc: &PartitionClient, partition: i32) -> Vec<Consumed> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let (records, high_watermark) = pc.fetch_records(offset, 1..50_000_000, 100).await.unwrap();
        for r in records {
            offset = offset.max(r.offset + 1);
            out.push(Consumed {
                partition,
                offset: r.offset,
                record: r.record,
            });
        }
        if offset >= high_watermark {
            return out;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}

/// A record read back, with where it was.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub record: Record,
}

impl Consumed {
    /// A header as UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        self.record
            .headers
            .get(name)
            .map(|v| String::from_utf8(v.clone()).unwrap())
    }
}

/// A test RSA key: `kid`, private key, public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub kid: &'static str,
    pem: &'static [u8],
    pub public_pem: &'static [u8],
    pub jwk: Value,
}

/// The three fixture keys in `tests/data/keys`.
pub fn key(n: usize) -> TestKey {
    let (kid, pem, public_pem, jwk): (&str, &[u8], &[u8], &str) = match n {
        1 => (
            "key1",
            include_bytes!("../data/keys/key1.pem"),
            include_bytes!("../data/keys/key1.pub.pem"),
            include_str!("../data/keys/key1.jwk.json"),
        ),
        2 => (
            "key2",
            include_bytes!("../data/keys/key2.pem"),
            include_bytes!("../data/keys/key2.pub.pem"),
            include_str!("../data/keys/key2.jwk.json"),
        ),
        _ => (
            "key3",
            include_bytes!("../data/keys/key3.pem"),
            include_bytes!("../data/keys/key3.pub.pem"),
            include_str!("../data/keys/key3.jwk.json"),
        ),
    };
    TestKey {
        kid,
        pem,
        public_pem,
        jwk: serde_json::from_str(jwk).unwrap(),
    }
}

pub const AUDIENCE: &str = "https://bridge.example.test/push";
pub const PUSH_EMAIL: &str = "push@test-project.iam.gserviceaccount.com";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims as Google puts them in a push token.
pub fn google_claims() -> Value {
    json!({
        "aud": AUDIENCE,
        "azp": "1234567890",
        "email": PUSH_EMAIL,
        "email_verified": true,
        "exp": now() + 3600,
        "iat": now(),
        "iss": "https://accounts.google.com",
        "sub": "1234567890",
    })
}

/// An RS256 token signed by `key` with `claims`.
pub fn mint(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(key.pem).unwrap(),
    )
    .unwrap()
}

/// A JWKS endpoint on loopback serving a mutable key set.
pub struct JwksServer {
    pub url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    pub hits: Arc<AtomicUsize>,
    /// Artificial delay before answering (slow endpoint).
    pub delay: Arc<Mutex<Duration>>,
    /// When true, answers 500.
    pub failing: Arc<Mutex<bool>>,
    stop: Option<oneshot::Sender<()>>,
}

impl JwksServer {
    pub async fn start(keys: &[TestKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let set = Arc::new(Mutex::new(
            keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>(),
        ));
        let hits = Arc::new(AtomicUsize::new(0));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let failing = Arc::new(Mutex::new(false));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let (s, h, d, f) = (
            Arc::clone(&set),
            Arc::clone(&hits),
            Arc::clone(&delay),
            Arc::clone(&failing),
        );
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => accepted.unwrap(),
                    _ = &mut stopped => return,
                };
                let (s, h, d, f) = (
                    Arc::clone(&s),
                    Arc::clone(&h),
                    Arc::clone(&d),
                    Arc::clone(&f),
                );
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        let (s, h, d, f) = (
                            Arc::clone(&s),
                            Arc::clone(&h),
                            Arc::clone(&d),
                            Arc::clone(&f),
                        );
                        async move {
                            h.fetch_add(1, Ordering::SeqCst);
                            let delay = *d.lock().unwrap();
                            tokio::time::sleep(delay).await;
                            let failing = *f.lock().unwrap();
                            let body = json!({ "keys": *s.lock().unwrap() }).to_string();
                            Ok::<_, Infallible>(
                                http::Response::builder()
                                    .status(if failing { 500 } else { 200 })
                                    .header("content-type", "application/json")
                                    .header(
                                        "cache-control",
                                        "public, max-age=20616, must-revalidate, no-transform",
                                    )
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url: format!("http://{addr}/oauth2/v3/certs"),
            keys: set,
            hits,
            delay,
            failing,
            stop: Some(stop),
        }
    }

    /// Replaces the served key set (key rotation).
    pub fn serve(&self, keys: &[TestKey]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// Stops listening (endpoint down).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The bridge running in this process on a loopback port.
pub struct Bridge {
    pub addr: SocketAddr,
    pub service: Arc<Service>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// Settings for a bridge against `broker`, verifying tokens from `jwks`.
pub fn bridge_env(
    broker: &Broker,
    topic: &str,
    jwks: Option<&JwksServer>,
) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = [
        ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap()),
        ("KAFKA_TOPIC", topic.to_owned()),
        ("KAFKA_PRODUCE_TIMEOUT_MS", "5000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    match jwks {
        Some(jwks) => {
            env.insert("OIDC_AUDIENCE".into(), AUDIENCE.into());
            env.insert("OIDC_JWKS_URL".into(), jwks.url.clone());
            env.insert("OIDC_ALLOWED_EMAILS".into(), PUSH_EMAIL.into());
        }
        None => {
            env.insert("OIDC_DISABLED".into(), "true".into());
        }
    }
    env
}

impl Bridge {
    pub async fn start(env: &HashMap<String, String>) -> Self {
        let config = Config::from_map(env).expect("valid test config");
        let service = Arc::new(Service::new(App::new(config).unwrap()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(pubsub_kafka_bridge::server::run(
            listener,
            Arc::clone(&service),
            async {
                let _ = stopped.await;
            },
        ));
        let bridge = Self {
            addr,
            service,
            stop: Some(stop),
            server: Some(server),
        };
        bridge.wait_ready().await;
        bridge
    }

    /// Waits until /readyz answers 200 (Kafka reached).
    pub async fn wait_ready(&self) {
        wait_for_status(&http_client(), &format!("http://{}/readyz", self.addr), 200).await;
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stops the server through the same shutdown path as SIGTERM and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// POSTs `body` with an optional bearer token; returns status and body.
pub async fn post(
    client: &HttpClient,
    url: &str,
    body: impl Into<Bytes>,
    token: Option<&str>,
) -> (u16, String) {
    let mut request = http::Request::post(url).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(client, request.body(Full::new(body.into())).unwrap()).await
}

/// Starts the bridge binary as its own process, with exactly `env` plus `PORT` (a free port),
/// its output going to `log` or nowhere, and waits until it listens (`/healthz` 200).
/// Returns the process and its base URL (`http://127.0.0.1:PORT`).
pub async fn spawn_bridge_process(
    env: &HashMap<String, String>,
    log: Option<&Path>,
) -> (Child, String) {
    // Set for integration tests and benches only; examples that include this module never call it.
    let Some(binary) = option_env!("CARGO_BIN_EXE_pubsub-kafka-bridge") else {
        panic!("the bridge binary is only built for integration tests and benches");
    };
    let port = free_port();
    let output = || match log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap(),
        ),
        None => Stdio::null(),
    };
    let child = Command::new(binary)
        .env_clear()
        .envs(env)
        .env("PORT", port.to_string())
        .stdout(output())
        .stderr(output())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_for_status(&http_client(), &format!("{base}/healthz"), 200).await;
    (child, base)
}

/// Polls `url` until it answers `status`, for at most 20 s.
pub async fn wait_for_status(client: &HttpClient, url: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(client, url).await.0 != status {
        assert!(Instant::now() < deadline, "{url} never answered {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn get(client: &HttpClient, url: &str) -> (u16, String) {
    send(
        client,
        http::Request::get(url)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

pub async fn send(client: &HttpClient, request: http::Request<Full<Bytes>>) -> (u16, String) {
    match client.request(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// A push envelope as Pub/Sub sends it.
pub fn envelope(
    data: &[u8],
    attributes: &[(String, String)],
    message_id: &str,
    publish_time: &str,
    ordering_key: Option<&str>,
) -> Value {
    use base64::Engine as _;
    let mut message = json!({
        "data": base64::engine::general_purpose::STANDARD.encode(data),
        "messageId": message_id,
        "message_id": message_id,
        "publishTime": publish_time,
        "publish_time": publish_time,
    });
    if !attributes.is_empty() {
        message["attributes"] = attributes
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
    }
    if let Some(key) = ordering_key {
        message["orderingKey"] = Value::String(key.to_owned());
    }
    json!({ "message": message, "subscription": "projects/test-project/subscriptions/bridge-sub" })
}

/// Kafka's Java default partitioner, computed independently of the bridge's code for checks.
pub fn java_partition(key: &[u8], partitions: u32) -> u32 {
    // Same algorithm as Kafka's Utils.murmur2, written out again so a bug in the bridge's copy shows.
    let m: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ key.len() as u32;
    let len4 = key.len() / 4;
    for i in 0..len4 {
        let b = &key[i * 4..i * 4 + 4];
        let mut k = (b[0] as u32) | (b[1] as u32) << 8 | (b[2] as u32) << 16 | (b[3] as u32) << 24;
        k = k.wrapping_mul(m);
        k ^= k >> 24;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m) ^ k;
    }
    let rest = &key[len4 * 4..];
    match rest.len() {
        3 => {
            h ^= (rest[2] as u32) << 16;
            h ^= (rest[1] as u32) << 8;
            h ^= rest[0] as u32;
            h = h.wrapping_mul(m);
        }
        2 => {
            h ^= (rest[1] as u32) << 8;
            h ^= rest[0] as u32;
            h = h.wrapping_mul(m);
        }
        1 => {
            h ^= rest[0] as u32;
            h = h.wrapping_mul(m);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(m);
    h ^= h >> 15;
    (h & 0x7fff_ffff) % partitions
}

pub fn data_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data"))
}
