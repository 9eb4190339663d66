//! `pubsub-kafka-bridge replay`: runs the dead letters of `KAFKA_DLQ_TOPIC` through the pipeline
//! with the current settings, writes what now succeeds and leaves what still fails where it is.
//!
//! Every partition is read from its first record (or `--from`) to its end as it was when the
//! run started. Each record is recognised (`letter`): a dead letter's original request goes
//! through `App::redeliver` (the same pipeline and producer as the server, the token not
//! checked again); a record that is not a dead letter of the bridge is reported and skipped.
//! What is counted and printed is `tally`'s.
//!
//! Nothing is written twice. Within a run, a message (subscription and message id) is written
//! once, however many dead letters it has. Across runs, with no state outside Kafka: after
//! writing a dead letter's record, a run appends a small marker record to the dead-letter topic
//! naming the dead letter's `PARTITION:OFFSET` and its message (`pubsub.replay_of`), and every
//! run first reads the whole topic to collect the markers, skipping what they name. The markers
//! live beside the dead letters (same retention, same access), whatever host runs the replay.
//!
//! A failure that a retry can pass (Kafka unavailable, a missing topic, the registry down: the
//! 503 class) stops the run where it is, so one outage does not count every dead letter as
//! failing; the position printed resumes it.

mod args;
mod letter;
mod tally;

use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use http::StatusCode;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::record::RecordAndOffset;

pub use args::{Position, ReplayArgs};

use crate::app::App;
use crate::config::Config;
use crate::error::DeliveryError;
use crate::kafka::{Ack, KafkaError, KafkaProducer, Produce};
use crate::limits::InflightPermit;
use crate::record::KafkaRecord;
use letter::{DeadLetter, Letter};
use tally::{Progress, Tally};

/// Dead letters replayed at once: enough for the producer to batch records to one partition,
/// few enough that a run holds little more than one fetch of the topic.
const REPLAYS_IN_FLIGHT: usize = 32;

/// Longest wait for the first connection to the cluster.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A message as replay tells them apart: `(subscription, message id)`.
type Message = (String, String);

/// The producer a replay writes through: the server's, or, in a dry run, one that does
/// everything up to sending the record and then stops ([`KafkaProducer::rehearse`]).
#[derive(Debug)]
struct ReplayProducer {
    producer: KafkaProducer,
    dry_run: bool,
}

impl Produce for ReplayProducer {
    async fn produce(
        &self,
        topic: &str,
        record: KafkaRecord,
        hold: Option<InflightPermit>,
    ) -> Result<Ack, KafkaError> {
        if self.dry_run {
            self.producer.rehearse(topic, record).await
        } else {
            self.producer.produce_holding(topic, record, hold).await
        }
    }

    fn reached_within(&self, window: Duration) -> bool {
        self.producer.reached_within(window)
    }

    fn produced(&self) -> (u64, u64) {
        self.producer.stats().snapshot()
    }
}

/// Runs the replay with `config` and prints its report; exit 0 when it read to the end.
pub async fn run(config: Config, args: ReplayArgs) -> ExitCode {
    // Log lines go to stderr: stdout holds the report.
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
    let Some(dlq) = config.kafka.dlq_topic.clone() else {
        eprintln!(
            "pubsub-kafka-bridge replay: KAFKA_DLQ_TOPIC is not set: no dead letters to read"
        );
        return ExitCode::from(2);
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    let signal = tokio::spawn(async move {
        crate::server::shutdown_signal().await;
        flag.store(true, Ordering::SeqCst);
    });
    let result = replay(config, dlq, args.clone(), &interrupted).await;
    signal.abort();
    match result {
        Ok(report) => {
            if args.dry_run {
                println!(
                    "dry run: nothing was written; \"replayed\" counts what a run would write"
                );
            }
            println!("{}", report.tally.read_line());
            for line in report.tally.code_lines() {
                println!("{line}");
            }
            match &report.stopped {
                None => println!(
                    "position: {} (read to the end of the topic as it was when the run started)",
                    report.position
                ),
                Some(reason) => println!(
                    "position: {} (stopped: {reason}; resume with --from {})",
                    report.position, report.position
                ),
            }
            println!("{}", report.tally.final_line());
            if report.stopped.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(reason) => {
            eprintln!("pubsub-kafka-bridge replay: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// How a run ended.
#[derive(Debug)]
struct Report {
    tally: Tally,
    /// Where the next run resumes: every record before it was handled.
    position: Position,
    /// Why the run stopped before the end, if it did.
    stopped: Option<String>,
}

/// One partition of the dead-letter topic and the offsets to read.
struct Partition {
    client: PartitionClient,
    /// The first record still kept.
    earliest: i64,
    /// The end when the run started: records from here on are not read.
    end: i64,
}

async fn replay(
    mut config: Config,
    dlq: String,
    args: ReplayArgs,
    interrupted: &AtomicBool,
) -> Result<Report, String> {
    let fetch_bytes = fetch_bytes(config.max_body_bytes);
    let client =
        match tokio::time::timeout(CONNECT_TIMEOUT, crate::kafka::connect(&config.kafka)).await {
            Ok(Ok(client)) => client,
            Ok(Err(reason)) => return Err(format!("cannot connect to Kafka: {reason}")),
            Err(_) => return Err(format!("no connection to Kafka within {CONNECT_TIMEOUT:?}")),
        };
    let clients = client
        .partition_clients(&dlq, UnknownTopicHandling::Error)
        .await
        .map_err(|e| format!("dead-letter topic {dlq:?}: {e}"))?;
    let mut partitions = Vec::with_capacity(clients.len());
    for client in clients {
        let what = format!("{dlq}/{}", client.partition());
        let earliest = client
            .get_offset(OffsetAt::Earliest)
            .await
            .map_err(|e| format!("{what}: first offset: {e}"))?;
        // The high watermark of a fetch, not ListOffsets: some brokers answer that late.
        let (_, end) = client
            .fetch_records(earliest, 0..1, 0)
            .await
            .map_err(|e| format!("{what}: end offset: {e}"))?;
        partitions.push(Partition {
            client,
            earliest,
            end,
        });
    }
    let replayed = collect_markers(&partitions, fetch_bytes).await?;

    if args.dry_run {
        // A dry run writes nothing anywhere, a schema registration included; the value is
        // then framed without a registry's schema id, a few bytes longer, never shorter.
        config.schema_registry = None;
    }
    let push_payload = config.push_payload;
    let producer = ReplayProducer {
        producer: KafkaProducer::start(config.kafka.clone()),
        dry_run: args.dry_run,
    };
    let app = App::with_producer(config, producer).map_err(|e| e.to_string())?;
    let from = args.from.unwrap_or_default();
    let start: BTreeMap<i32, i64> = partitions
        .iter()
        .map(|p| {
            let partition = p.client.partition();
            let from = from.0.get(&partition).copied().unwrap_or(p.earliest);
            (partition, from.clamp(p.earliest, p.end.max(p.earliest)))
        })
        .collect();
    let to_read = partitions
        .iter()
        .map(|p| (p.end - start[&p.client.partition()]).max(0) as u64)
        .sum();
    let mut run = Run {
        app: &app,
        dlq: &dlq,
        dry_run: args.dry_run,
        push_payload,
        tally: Tally::default(),
        position: start,
        replayed,
        in_flight: HashSet::new(),
        stopped: None,
        progress: Progress::new(Instant::now()),
        to_read,
    };
    for partition in &partitions {
        run.read_partition(partition, fetch_bytes, interrupted)
            .await;
        if run.stopped.is_some() {
            break;
        }
    }
    Ok(Report {
        tally: run.tally,
        position: Position(run.position),
        stopped: run.stopped,
    })
}

/// Bytes asked for per fetch: a dead letter holds a whole request (up to `MAX_BODY_BYTES`)
/// and its headers. A broker returns a first record larger than this anyway (KIP-74).
fn fetch_bytes(max_body_bytes: usize) -> i32 {
    i32::try_from(max_body_bytes.saturating_mul(2))
        .unwrap_or(i32::MAX)
        .max(1 << 20)
}

/// The records of `partition` from `offset` on, below its end; an error when there is none.
async fn fetch(
    partition: &Partition,
    offset: i64,
    fetch_bytes: i32,
) -> Result<Vec<RecordAndOffset>, String> {
    let what = format!(
        "{}/{}",
        partition.client.topic(),
        partition.client.partition()
    );
    let (mut records, _) = partition
        .client
        .fetch_records(offset, 1..fetch_bytes, 100)
        .await
        .map_err(|e| format!("{what}: fetch at {offset}: {e}"))?;
    records.retain(|r| r.offset >= offset && r.offset < partition.end);
    if records.is_empty() {
        return Err(format!(
            "{what}: no record at offset {offset}, below the end {}",
            partition.end
        ));
    }
    Ok(records)
}

/// Every dead letter earlier runs replayed, from their markers: by position and by message.
#[derive(Debug, Default)]
struct Replayed {
    positions: HashSet<(i32, i64)>,
    messages: HashSet<Message>,
}

/// Reads the whole topic up to its end for the markers of earlier runs. The whole topic, not
/// from `--from`: a marker lies after its dead letter, in any partition.
async fn collect_markers(partitions: &[Partition], fetch_bytes: i32) -> Result<Replayed, String> {
    let mut replayed = Replayed::default();
    for partition in partitions {
        let mut offset = partition.earliest;
        while offset < partition.end {
            for record in fetch(partition, offset, fetch_bytes).await? {
                offset = record.offset + 1;
                let value = record.record.value.as_deref();
                if let Letter::Marker { of, message } =
                    letter::recognise(&record.record.headers, value)
                {
                    replayed.positions.insert(of);
                    replayed.messages.extend(message);
                }
            }
        }
    }
    Ok(replayed)
}

/// What became of one record.
#[derive(Debug)]
enum Verdict {
    /// Written (in a dry run: would be), and its marker written.
    Replayed { code: String },
    /// Fails still for good: left where it is.
    StillFailing { code: String, error: DeliveryError },
    /// Failed in a way a retry can pass: the run stops here.
    Unavailable(DeliveryError),
    /// Written, but its marker was not: the run stops after it.
    Unmarked { code: String, error: KafkaError },
    /// Replayed already, by this run or an earlier one: skipped.
    AlreadyReplayed,
    /// Not a dead letter of the bridge: skipped.
    Foreign(String),
    /// A replay marker: skipped.
    Marker,
}

/// One record's verdict, with where it is and the message it carries.
#[derive(Debug)]
struct Done {
    partition: i32,
    offset: i64,
    message: Option<Message>,
    verdict: Verdict,
}

/// A run under way.
struct Run<'a> {
    app: &'a App<ReplayProducer>,
    dlq: &'a str,
    dry_run: bool,
    push_payload: crate::envelope::PushPayload,
    tally: Tally,
    /// The next offset to read by partition: everything before it is settled.
    position: BTreeMap<i32, i64>,
    replayed: Replayed,
    /// Messages whose replay is under way.
    in_flight: HashSet<Message>,
    stopped: Option<String>,
    progress: Progress,
    to_read: u64,
}

type Pending<'a> = FuturesOrdered<BoxFuture<'a, Done>>;

impl<'a> Run<'a> {
    /// Replays the records of `partition` from the run's position to its end, a few at once,
    /// settling each in order.
    async fn read_partition(
        &mut self,
        partition: &Partition,
        fetch_bytes: i32,
        interrupted: &AtomicBool,
    ) {
        let number = partition.client.partition();
        let mut offset = self.position[&number];
        let mut pending: Pending<'a> = FuturesOrdered::new();
        while offset < partition.end && self.stopped.is_none() {
            if interrupted.load(Ordering::SeqCst) {
                self.stop("interrupted".to_owned());
                break;
            }
            let records = match fetch(partition, offset, fetch_bytes).await {
                Ok(records) => records,
                Err(reason) => {
                    self.stop(reason);
                    break;
                }
            };
            for record in records {
                if interrupted.load(Ordering::SeqCst) {
                    self.stop("interrupted".to_owned());
                }
                if self.stopped.is_some() {
                    break;
                }
                offset = record.offset + 1;
                self.dispatch(number, record, &mut pending).await;
                while pending.len() >= REPLAYS_IN_FLIGHT {
                    self.settle_next(&mut pending).await;
                }
            }
        }
        while !pending.is_empty() {
            self.settle_next(&mut pending).await;
        }
        if self.stopped.is_none() {
            // Read to the end: any offsets past the last record (compaction) are done too.
            self.position.insert(number, partition.end);
        }
    }

    /// Starts the work for one record; its verdict is settled in order.
    async fn dispatch(
        &mut self,
        partition: i32,
        record: RecordAndOffset,
        pending: &mut Pending<'a>,
    ) {
        let offset = record.offset;
        let ready = |verdict| -> BoxFuture<'a, Done> {
            Box::pin(std::future::ready(Done {
                partition,
                offset,
                message: None,
                verdict,
            }))
        };
        let dead = match letter::recognise(&record.record.headers, record.record.value.as_deref()) {
            Letter::Dead(dead) => dead,
            Letter::Marker { .. } => return pending.push_back(ready(Verdict::Marker)),
            Letter::Foreign(reason) => return pending.push_back(ready(Verdict::Foreign(reason))),
        };
        if self.replayed.positions.contains(&(partition, offset)) {
            return pending.push_back(ready(Verdict::AlreadyReplayed));
        }
        let message = crate::envelope::parse_push(
            &dead.headers,
            &dead.body,
            self.push_payload,
            chrono::Utc::now,
        )
        .ok()
        .filter(|m| !m.message_id.is_empty())
        .map(|m| (m.subscription, m.message_id));
        if let Some(message) = &message {
            // Another dead letter of the message is under way: what it ends with decides.
            if self.in_flight.contains(message) {
                while !pending.is_empty() {
                    self.settle_next(pending).await;
                }
            }
            if self.replayed.messages.contains(message) {
                return pending.push_back(ready(Verdict::AlreadyReplayed));
            }
            self.in_flight.insert(message.clone());
        }
        pending.push_back(Box::pin(replay_one(
            self.app,
            self.dlq,
            self.dry_run,
            (partition, offset),
            dead,
            message,
        )));
    }

    async fn settle_next(&mut self, pending: &mut Pending<'a>) {
        if let Some(done) = pending.next().await {
            self.settle(done);
        }
    }

    /// Counts and reports one record's verdict and moves the position past it, unless the run
    /// stopped before it.
    fn settle(&mut self, done: Done) {
        let Done {
            partition,
            offset,
            message,
            verdict,
        } = done;
        let at = format!("{}/{partition}:{offset}", self.dlq);
        if let Some(message) = &message {
            self.in_flight.remove(message);
        }
        self.tally.read += 1;
        let mut settled = true;
        match verdict {
            Verdict::Replayed { code } => {
                self.tally.replayed(&code);
                self.replayed.messages.extend(message);
            }
            Verdict::StillFailing { code, error } => {
                self.tally.still_failing(&code);
                eprintln!(
                    "{at}: still failing ({code} when dead-lettered): {}: {error}",
                    error.code()
                );
            }
            Verdict::Unavailable(error) => {
                settled = false;
                self.stop(format!("{at}: {}: {error}", error.code()));
            }
            Verdict::Unmarked { code, error } => {
                self.tally.replayed(&code);
                self.replayed.messages.extend(message);
                // Written: the position moves past it, so a resumed run does not write it again.
                self.advance(partition, offset);
                settled = false;
                self.stop(format!(
                    "{at} was replayed, but its replay marker was not written ({error}): a later run from before it writes it again"
                ));
            }
            Verdict::AlreadyReplayed => self.tally.already_replayed += 1,
            Verdict::Foreign(reason) => {
                self.tally.foreign += 1;
                eprintln!("{at}: not a dead letter of the bridge, skipped: {reason}");
            }
            Verdict::Marker => self.tally.markers += 1,
        }
        if settled {
            self.advance(partition, offset);
        }
        if self.progress.due(Instant::now()) {
            let position = Position(self.position.clone()).to_string();
            eprintln!("{}", self.tally.progress_line(self.to_read, &position));
        }
    }

    /// Everything up to `offset` of `partition` is settled, unless the run stopped.
    fn advance(&mut self, partition: i32, offset: i64) {
        if self.stopped.is_none() {
            self.position.insert(partition, offset + 1);
        }
    }

    /// Stops the run at its position (the first reason counts).
    fn stop(&mut self, reason: String) {
        if self.stopped.is_none() {
            self.stopped = Some(reason);
        }
    }
}

/// Runs one dead letter's request through the pipeline; writes its marker after its record.
async fn replay_one(
    app: &App<ReplayProducer>,
    dlq: &str,
    dry_run: bool,
    (partition, offset): (i32, i64),
    dead: DeadLetter,
    message: Option<Message>,
) -> Done {
    let DeadLetter {
        code,
        headers,
        body,
    } = dead;
    let verdict = match app.redeliver(&headers, body).await {
        Ok(_) if dry_run => Verdict::Replayed { code },
        Ok(_) => {
            let marker = KafkaRecord {
                key: None,
                message_id: None,
                value: Vec::new(),
                headers: letter::marker_headers((partition, offset), message.as_ref()),
                timestamp: crate::timestamp::RecordTimestamp::now(),
            };
            match app.producer().produce(dlq, marker, None).await {
                Ok(_) => Verdict::Replayed { code },
                Err(error) => Verdict::Unmarked { code, error },
            }
        }
        Err(error) if error.status() == StatusCode::SERVICE_UNAVAILABLE => {
            Verdict::Unavailable(error)
        }
        Err(error) => Verdict::StillFailing { code, error },
    };
    Done {
        partition,
        offset,
        message,
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_holds_the_largest_dead_letter_within_kafkas_bounds() {
        assert_eq!(fetch_bytes(16 << 20), 32 << 20);
        assert_eq!(fetch_bytes(1024), 1 << 20);
        assert_eq!(fetch_bytes(1 << 30), i32::MAX);
    }
}
