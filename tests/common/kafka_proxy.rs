//! A Kafka-protocol-aware TCP proxy in front of the broker: it reads the 4-byte-length-framed
//! requests and answers of every connection, remembers each request's api key and version by its
//! correlation id, logs what passed when, and can rewrite or hold back the broker's real answers
//! (a quota throttle written into Produce answers, Metadata answers delayed). Kafka's side of a
//! protocol test, at the frame level.
//!
//! Frames: <https://kafka.apache.org/protocol.html#protocol_common> (a request header is api key
//! i16, api version i16, correlation id i32, ...; an answer's header starts with the correlation
//! id).

use std::collections::{HashMap, VecDeque};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::*;

/// Kafka api keys the tests look for.
pub const PRODUCE: i16 = 0;
pub const METADATA: i16 = 3;

/// One frame that passed the proxy.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Which client connection (in accept order, from 0).
    pub connection: usize,
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    /// When the proxy passed it on.
    pub at: Instant,
    /// The whole frame after its length (header and body), as it was passed on.
    pub frame: Vec<u8>,
}

#[derive(Default)]
struct Rules {
    /// Throttle times written into the next Produce answers, one per answer.
    produce_throttles_ms: VecDeque<i32>,
    /// Answers of this api key are held this long before they are passed on.
    answer_delays: HashMap<i16, Duration>,
}

#[derive(Default)]
struct Log {
    requests: Vec<Seen>,
    answers: Vec<Seen>,
    /// What the proxy could not make sense of (checked by [`KafkaProxy::faults`]).
    faults: Vec<String>,
}

/// A proxy on `port` in front of the broker on `upstream` (advertise `port` to the clients).
pub struct KafkaProxy {
    pub port: u16,
    rules: Arc<Mutex<Rules>>,
    log: Arc<Mutex<Log>>,
}

impl KafkaProxy {
    pub async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Self {
            port,
            rules: Arc::default(),
            log: Arc::default(),
        };
        let (rules, log) = (Arc::clone(&proxy.rules), Arc::clone(&proxy.log));
        tokio::spawn(async move {
            let mut connection = 0;
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let pending: Arc<Mutex<HashMap<i32, (i16, i16)>>> = Arc::default();
                tokio::spawn(pass_requests(
                    connection,
                    client_read,
                    server_write,
                    Arc::clone(&pending),
                    Arc::clone(&log),
                ));
                tokio::spawn(pass_answers(
                    connection,
                    server_read,
                    client_write,
                    pending,
                    Arc::clone(&rules),
                    Arc::clone(&log),
                ));
                connection += 1;
            }
        });
        proxy
    }

    /// The next Produce answer from the broker carries `throttle_ms` as its throttle time.
    pub fn throttle_next_produce(&self, throttle_ms: i32) {
        self.rules
            .lock()
            .unwrap()
            .produce_throttles_ms
            .push_back(throttle_ms);
    }

    /// Holds every answer of `api_key` back for `delay` (zero: no longer).
    pub fn delay_answers(&self, api_key: i16, delay: Duration) {
        self.rules
            .lock()
            .unwrap()
            .answer_delays
            .insert(api_key, delay);
    }

    /// Every request of `api_key` passed to the broker so far, in order.
    pub fn requests(&self, api_key: i16) -> Vec<Seen> {
        let log = self.log.lock().unwrap();
        log.requests
            .iter()
            .filter(|r| r.api_key == api_key)
            .cloned()
            .collect()
    }

    /// What the proxy could not parse or rewrite; a test expects none.
    pub fn faults(&self) -> Vec<String> {
        self.log.lock().unwrap().faults.clone()
    }

    /// Every answer to a request of `api_key` passed to the client so far, in order.
    pub fn answers(&self, api_key: i16) -> Vec<Seen> {
        let log = self.log.lock().unwrap();
        log.answers
            .iter()
            .filter(|a| a.api_key == api_key)
            .cloned()
            .collect()
    }
}

/// Reads one length-prefixed frame; `None` at the end of the stream.
async fn read_frame(from: &mut OwnedReadHalf) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len).await.ok()?;
    let len = usize::try_from(i32::from_be_bytes(len)).ok()?;
    let mut frame = vec![0u8; len];
    from.read_exact(&mut frame).await.ok()?;
    Some(frame)
}

async fn write_frame(to: &mut OwnedWriteHalf, frame: &[u8]) -> bool {
    let mut out = Vec::with_capacity(frame.len() + 4);
    out.extend_from_slice(&(frame.len() as i32).to_be_bytes());
    out.extend_from_slice(frame);
    to.write_all(&out).await.is_ok()
}

async fn pass_requests(
    connection: usize,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    pending: Arc<Mutex<HashMap<i32, (i16, i16)>>>,
    log: Arc<Mutex<Log>>,
) {
    while let Some(frame) = read_frame(&mut from).await {
        if frame.len() < 8 {
            log.lock().unwrap().faults.push(format!(
                "a request of {} bytes, shorter than its header",
                frame.len()
            ));
            return;
        }
        let api_key = i16::from_be_bytes([frame[0], frame[1]]);
        let api_version = i16::from_be_bytes([frame[2], frame[3]]);
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        pending
            .lock()
            .unwrap()
            .insert(correlation_id, (api_key, api_version));
        log.lock().unwrap().requests.push(Seen {
            connection,
            api_key,
            api_version,
            correlation_id,
            at: Instant::now(),
            frame: frame.clone(),
        });
        if !write_frame(&mut to, &frame).await {
            return;
        }
    }
}

async fn pass_answers(
    connection: usize,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    pending: Arc<Mutex<HashMap<i32, (i16, i16)>>>,
    rules: Arc<Mutex<Rules>>,
    log: Arc<Mutex<Log>>,
) {
    while let Some(mut frame) = read_frame(&mut from).await {
        if frame.len() < 4 {
            log.lock().unwrap().faults.push(format!(
                "an answer of {} bytes, shorter than its header",
                frame.len()
            ));
            return;
        }
        let correlation_id = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let request = pending.lock().unwrap().remove(&correlation_id);
        let Some((api_key, api_version)) = request else {
            log.lock().unwrap().faults.push(format!(
                "an answer to no request (correlation id {correlation_id})"
            ));
            return;
        };
        let (throttle_ms, delay) = {
            let mut rules = rules.lock().unwrap();
            let throttle = if api_key == PRODUCE {
                rules.produce_throttles_ms.pop_front()
            } else {
                None
            };
            (throttle, rules.answer_delays.get(&api_key).copied())
        };
        if let Some(throttle_ms) = throttle_ms
            && let Err(fault) = set_produce_throttle(&mut frame, api_version, throttle_ms)
        {
            log.lock().unwrap().faults.push(fault);
        }
        if let Some(delay) = delay.filter(|d| !d.is_zero()) {
            tokio::time::sleep(delay).await;
        }
        log.lock().unwrap().answers.push(Seen {
            connection,
            api_key,
            api_version,
            correlation_id,
            at: Instant::now(),
            frame: frame.clone(),
        });
        if !write_frame(&mut to, &frame).await {
            return;
        }
    }
}

/// Writes `throttle_ms` into a Produce answer (header v0: the correlation id, then the body).
///
/// In Produce answers v1 to v8 `ThrottleTimeMs` is the body's last field (Kafka's
/// clients/src/main/resources/common/message/ProduceResponse.json: "versions": "1+", after
/// `Responses`). From v9 the answers are flexible: tagged fields follow it (and the header has
/// its own), so its place depends on what precedes it; the clients under test do not send v9.
pub fn set_produce_throttle(
    frame: &mut [u8],
    api_version: i16,
    throttle_ms: i32,
) -> Result<(), String> {
    if !(1..=8).contains(&api_version) || frame.len() < 8 {
        return Err(format!(
            "Produce v{api_version} answer of {} bytes: only v1-v8 answers end with their throttle time",
            frame.len()
        ));
    }
    let at = frame.len() - 4;
    frame[at..].copy_from_slice(&throttle_ms.to_be_bytes());
    Ok(())
}

/// The throttle time of a Produce answer (v1 to v8), as the client receives it.
pub fn produce_throttle(frame: &[u8]) -> i32 {
    let at = frame.len() - 4;
    i32::from_be_bytes(frame[at..].try_into().unwrap())
}
