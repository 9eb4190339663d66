//! Signing keys and tokens: the RSA fixture keys, Google-shaped claims, RS256 minting, and a
//! JWKS endpoint on loopback that can rotate, slow down, fail or stop.

use super::*;

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
            include_bytes!("../../data/keys/key1.pem"),
            include_bytes!("../../data/keys/key1.pub.pem"),
            include_str!("../../data/keys/key1.jwk.json"),
        ),
        2 => (
            "key2",
            include_bytes!("../../data/keys/key2.pem"),
            include_bytes!("../../data/keys/key2.pub.pem"),
            include_str!("../../data/keys/key2.jwk.json"),
        ),
        _ => (
            "key3",
            include_bytes!("../../data/keys/key3.pem"),
            include_bytes!("../../data/keys/key3.pub.pem"),
            include_str!("../../data/keys/key3.jwk.json"),
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
