//! The tansu broker: a process on a free loopback port, its topics and users, and reading
//! back what it holds with rskafka.

use super::*;

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

/// How a test broker is set up: storage, arguments, the address clients are told.
#[derive(Debug, Default)]
pub struct BrokerBuilder {
    sqlite: bool,
    args: Vec<String>,
    advertised_port: Option<u16>,
}

impl BrokerBuilder {
    /// sqlite storage in a fresh directory: data survives a restart (and a kill -9).
    pub fn sqlite(mut self) -> Self {
        self.sqlite = true;
        self
    }

    /// An extra broker argument (`--authentication`).
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Advertise this port to clients (a TLS proxy in front of the broker).
    pub fn advertised_port(mut self, port: u16) -> Self {
        self.advertised_port = Some(port);
        self
    }

    /// The broker, not started yet (create users first, then [`Broker::start_now`]).
    pub fn build(self) -> Broker {
        let kind = if self.sqlite { "sqlite" } else { "memory" };
        let workdir = std::env::temp_dir().join(format!(
            "pkb-tansu-{kind}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&workdir).unwrap();
        Broker {
            port: free_port(),
            child: None,
            workdir,
            storage: if self.sqlite {
                "sqlite://tansu.db".into()
            } else {
                "memory://tansu/".into()
            },
            advertised_port: self.advertised_port,
            args: self.args,
            client_tls: None,
            client_sasl: None,
        }
    }

    /// The broker, started and accepting connections.
    pub async fn start(self) -> Broker {
        let mut broker = self.build();
        broker.spawn().await;
        broker
    }
}

impl Broker {
    /// How a broker is set up; [`Broker::start`] is `Broker::builder().start()`.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// A broker with in-memory storage.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// A broker with sqlite storage in a fresh directory: data survives a restart.
    pub async fn start_sqlite() -> Self {
        Self::builder().sqlite().start().await
    }

    /// A sqlite broker that is not started yet (set `args`/`advertised_port`, then `start_now`).
    pub fn sqlite_unstarted() -> Self {
        Self::builder().sqlite().build()
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

    /// Freezes the broker (SIGSTOP): its connections stay open and nothing is answered.
    ///
    /// Returns once every thread of the broker is stopped: `kill` only sends the signal, and a
    /// thread that is running when it arrives can still answer a request sent right after.
    pub fn pause(&self) {
        self.signal("-STOP");
        let tasks = format!("/proc/{}/task", self.pid());
        let stopped = || {
            std::fs::read_dir(&tasks).unwrap().all(|task| {
                let stat =
                    std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap_or_default();
                // The state follows the parenthesised command name: T (stopped), or gone.
                matches!(
                    stat.rsplit(") ").next().and_then(|s| s.chars().next()),
                    Some('T') | Some('t') | None
                )
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stopped() {
            assert!(Instant::now() < deadline, "the broker did not stop");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets a frozen broker run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("broker running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }

    /// The broker's process id (0 when it is not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
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

    /// The `pubsub.message_id` header of every record of `topic`, in [`Self::read_all`]'s order.
    pub async fn message_ids(&self, topic: &str) -> Vec<String> {
        self.read_all(topic)
            .await
            .iter()
            .filter_map(|r| r.header("pubsub.message_id"))
            .collect()
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
