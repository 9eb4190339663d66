//! The bridge under test: in this process on a loopback port, or as its own process.

use super::*;

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

/// Starts the bridge binary as its own process, with exactly `env` plus `PORT` (a free port),
/// its output going to `log` or nowhere, and waits until it listens (`/healthz` 200).
/// Returns the process and its base URL (`http://127.0.0.1:PORT`).
pub async fn spawn_bridge_process(
    env: &HashMap<String, String>,
    log: Option<&Path>,
) -> (Child, String) {
    // Cargo builds the binary for integration tests and benches and names it in this variable,
    // at their compile time and while `cargo test` or `cargo bench` runs them. This crate is
    // compiled as their dependency, so it reads the variable when they run.
    let Some(binary) = std::env::var_os("CARGO_BIN_EXE_pubsub-kafka-bridge") else {
        panic!("the bridge binary is only built for integration tests and benches run by Cargo");
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
