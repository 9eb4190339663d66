//! A Kafka-frame-aware TCP proxy in front of the broker: Kafka's side of every protocol-level
//! test. It passes whole frames, logs each request and answer (api key and version matched by
//! correlation id) and the bytes sent, and can slow, hold back, silence or inject answers, front
//! SASL, write a throttle time into Produce answers and delay the answers of an api key.
//!
//! Frames: <https://kafka.apache.org/protocol.html#protocol_common> (a request header is api key
//! i16, api version i16, correlation id i32, ...; an answer's header starts with the correlation
//! id).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};

use super::*;

/// Kafka api keys the tests look for.
pub const PRODUCE: i16 = 0;
pub const METADATA: i16 = 3;
const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;
pub const INIT_PRODUCER_ID: i16 = 22;

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

/// One client connection through the proxy.
struct Connection {
    /// Both directions drop every byte (the sockets stay open): a hung broker, a paused VM,
    /// a NAT flow dropped without a reset.
    silent: Arc<AtomicBool>,
    /// Frames (after their length) written to the client between the broker's answers.
    inject: mpsc::UnboundedSender<Vec<u8>>,
}

#[derive(Default)]
struct Rules {
    /// Throttle times written into the next Produce answers, one per answer.
    produce_throttles_ms: VecDeque<i32>,
    /// Answers of this api key are held this long before they are passed on.
    answer_delays: HashMap<i16, Duration>,
    /// The next this many Produce answers are dropped and their connection closed: the broker
    /// wrote the records, the client never learns it.
    produce_answers_to_cut: usize,
}

#[derive(Default)]
struct Log {
    requests: Vec<Seen>,
    answers: Vec<Seen>,
    /// Answers dropped with their connection (`BrokerProxy::cut_next_produce_answers`).
    cut: Vec<Seen>,
    /// What the proxy could not make sense of (checked by [`BrokerProxy::faults`]).
    faults: Vec<String>,
}

#[derive(Default)]
struct ProxyState {
    connections: Mutex<Vec<Connection>>,
    /// When each connection was accepted.
    accepted: Mutex<Vec<Instant>>,
    /// New connections are silent from their first byte.
    silence_new: AtomicBool,
    /// SaslHandshake and SaslAuthenticate are answered by the proxy (success, this mechanism),
    /// everything else goes to the broker: a SASL front for a broker without that mechanism.
    sasl_front: Mutex<Option<String>>,
    /// InitProducerId is answered by the proxy with this error code: a broker that refuses the
    /// idempotent producer.
    init_producer_id_refusal: Mutex<Option<i16>>,
    rules: Mutex<Rules>,
    log: Mutex<Log>,
}

impl ProxyState {
    fn fault(&self, fault: String) {
        self.log.lock().unwrap().faults.push(fault);
    }
}

/// What both directions of one connection share.
struct Link {
    connection: usize,
    state: Arc<ProxyState>,
    /// Every frame, both ways, is held this many milliseconds.
    delay_ms: Arc<AtomicU64>,
    silent: Arc<AtomicBool>,
    /// Api key and version of each request passed to the broker, by correlation id, until its
    /// answer.
    pending: Mutex<HashMap<i32, (i16, i16)>>,
}

impl Link {
    fn silent(&self) -> bool {
        self.silent.load(Ordering::SeqCst)
    }

    async fn delay(&self) {
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }

    fn seen(&self, api_key: i16, api_version: i16, correlation_id: i32, frame: &[u8]) -> Seen {
        Seen {
            connection: self.connection,
            api_key,
            api_version,
            correlation_id,
            at: Instant::now(),
            frame: frame.to_vec(),
        }
    }
}

/// A proxy on `port` in front of the broker on `upstream` (advertise `port` to the clients).
pub struct BrokerProxy {
    pub port: u16,
    /// Every frame, both ways, is held this many milliseconds (a slow broker).
    pub delay_ms: Arc<AtomicU64>,
    /// Bytes the clients sent towards the broker.
    pub sent_bytes: Arc<AtomicU64>,
    answers_flow: watch::Sender<bool>,
    state: Arc<ProxyState>,
}

impl BrokerProxy {
    pub async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Self {
            port,
            delay_ms: Arc::default(),
            sent_bytes: Arc::default(),
            answers_flow: watch::Sender::new(true),
            state: Arc::default(),
        };
        let (delay_ms, sent_bytes) = (Arc::clone(&proxy.delay_ms), Arc::clone(&proxy.sent_bytes));
        let answers_flow = proxy.answers_flow.clone();
        let state = Arc::clone(&proxy.state);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let connection = {
                    let mut accepted = state.accepted.lock().unwrap();
                    accepted.push(Instant::now());
                    accepted.len() - 1
                };
                let silent = Arc::new(AtomicBool::new(state.silence_new.load(Ordering::SeqCst)));
                let (inject, injected) = mpsc::unbounded_channel();
                state.connections.lock().unwrap().push(Connection {
                    silent: Arc::clone(&silent),
                    inject: inject.clone(),
                });
                let _ = client.set_nodelay(true);
                let (cr, cw) = client.into_split();
                if silent.load(Ordering::SeqCst) {
                    // Never reaches the broker: read and drop, answer nothing.
                    tokio::spawn(swallow(cr, cw));
                    continue;
                }
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let _ = server.set_nodelay(true);
                let (sr, sw) = server.into_split();
                let sasl_front = state.sasl_front.lock().unwrap().clone();
                let link = Arc::new(Link {
                    connection,
                    state: Arc::clone(&state),
                    delay_ms: Arc::clone(&delay_ms),
                    silent,
                    pending: Mutex::default(),
                });
                tokio::spawn(requests(
                    Arc::clone(&link),
                    cr,
                    sw,
                    Arc::clone(&sent_bytes),
                    sasl_front,
                    inject,
                ));
                tokio::spawn(answers(link, sr, cw, answers_flow.subscribe(), injected));
            }
        });
        proxy
    }

    /// Holds the broker's answers back (requests still reach it) until [`Self::release_answers`].
    pub fn hold_answers(&self) {
        self.answers_flow.send_replace(false);
    }

    pub fn release_answers(&self) {
        self.answers_flow.send_replace(true);
    }

    pub fn sent(&self) -> u64 {
        self.sent_bytes.load(Ordering::SeqCst)
    }

    /// Every connection open now goes silent both ways, its sockets left open; connections
    /// made from now on pass (unless [`Self::silence_new_connections`]).
    pub fn black_hole_open_connections(&self) {
        for c in self.state.connections.lock().unwrap().iter() {
            c.silent.store(true, Ordering::SeqCst);
        }
    }

    /// Whether connections made from now on are silent from their first byte.
    pub fn silence_new_connections(&self, silent: bool) {
        self.state.silence_new.store(silent, Ordering::SeqCst);
    }

    /// When each connection so far was accepted.
    pub fn accepted(&self) -> Vec<Instant> {
        self.state.accepted.lock().unwrap().clone()
    }

    /// Writes `frame` (a whole answer, its length in front) to every connection that is not
    /// silent, between two of the broker's answers.
    pub fn inject(&self, frame: &[u8]) -> usize {
        let mut sent = 0;
        for c in self.state.connections.lock().unwrap().iter() {
            if !c.silent.load(Ordering::SeqCst) && c.inject.send(frame[4..].to_vec()).is_ok() {
                sent += 1;
            }
        }
        sent
    }

    /// From now on new connections authenticate with the proxy: it offers `mechanism` and
    /// accepts whatever the client sends, recording nothing.
    pub fn front_sasl(&self, mechanism: &str) {
        *self.state.sasl_front.lock().unwrap() = Some(mechanism.to_owned());
    }

    /// From now on InitProducerId is answered by the proxy with `error_code` (e.g. 31,
    /// CLUSTER_AUTHORIZATION_FAILED: the principal lacks `IDEMPOTENT_WRITE`).
    pub fn refuse_init_producer_id(&self, error_code: i16) {
        *self.state.init_producer_id_refusal.lock().unwrap() = Some(error_code);
    }

    /// The next Produce answer from the broker carries `throttle_ms` as its throttle time.
    pub fn throttle_next_produce(&self, throttle_ms: i32) {
        self.state
            .rules
            .lock()
            .unwrap()
            .produce_throttles_ms
            .push_back(throttle_ms);
    }

    /// Holds every answer of `api_key` back for `delay` (zero: no longer).
    pub fn delay_answers(&self, api_key: i16, delay: Duration) {
        self.state
            .rules
            .lock()
            .unwrap()
            .answer_delays
            .insert(api_key, delay);
    }

    /// The next `count` Produce answers never reach the client: each is dropped and its
    /// connection closed, after the broker handled the request.
    pub fn cut_next_produce_answers(&self, count: usize) {
        self.state.rules.lock().unwrap().produce_answers_to_cut += count;
    }

    /// The answers dropped by [`Self::cut_next_produce_answers`] so far, in order.
    pub fn cut_answers(&self) -> Vec<Seen> {
        self.state.log.lock().unwrap().cut.clone()
    }

    /// Every request of `api_key` passed to the broker so far, in order.
    pub fn requests(&self, api_key: i16) -> Vec<Seen> {
        of_api_key(&self.state.log.lock().unwrap().requests, api_key)
    }

    /// Every answer to a request of `api_key` passed to the client so far, in order.
    pub fn answers(&self, api_key: i16) -> Vec<Seen> {
        of_api_key(&self.state.log.lock().unwrap().answers, api_key)
    }

    /// What the proxy could not parse or rewrite; a test expects none.
    pub fn faults(&self) -> Vec<String> {
        self.state.log.lock().unwrap().faults.clone()
    }
}

fn of_api_key(seen: &[Seen], api_key: i16) -> Vec<Seen> {
    seen.iter()
        .filter(|s| s.api_key == api_key)
        .cloned()
        .collect()
}

/// An answer frame with `correlation_id` and `body`, its length in front.
pub fn answer_frame(correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + body.len());
    frame.extend(((4 + body.len()) as i32).to_be_bytes());
    frame.extend(correlation_id.to_be_bytes());
    frame.extend(body);
    frame
}

/// Reads one frame and returns what follows its length; `None` at the end of the stream.
async fn read_frame(from: &mut OwnedReadHalf) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len).await.ok()?;
    let len = usize::try_from(i32::from_be_bytes(len)).ok()?;
    let mut frame = vec![0u8; len];
    from.read_exact(&mut frame).await.ok()?;
    Some(frame)
}

/// Writes `frame` (what follows the length) with its length in front.
async fn write_frame(to: &mut OwnedWriteHalf, frame: &[u8]) -> bool {
    let mut out = Vec::with_capacity(frame.len() + 4);
    out.extend_from_slice(&(frame.len() as i32).to_be_bytes());
    out.extend_from_slice(frame);
    to.write_all(&out).await.is_ok()
}

async fn swallow(mut from: OwnedReadHalf, _to: OwnedWriteHalf) {
    let mut buf = vec![0u8; 64 * 1024];
    while matches!(from.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// Client to broker, frame by frame.
async fn requests(
    link: Arc<Link>,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    counted: Arc<AtomicU64>,
    sasl_front: Option<String>,
    inject: mpsc::UnboundedSender<Vec<u8>>,
) {
    while let Some(frame) = read_frame(&mut from).await {
        counted.fetch_add(4 + frame.len() as u64, Ordering::SeqCst);
        if link.silent() {
            continue;
        }
        if frame.len() < 8 {
            link.state.fault(format!(
                "a request of {} bytes, shorter than its header",
                frame.len()
            ));
            return;
        }
        let api_key = i16::from_be_bytes([frame[0], frame[1]]);
        let api_version = i16::from_be_bytes([frame[2], frame[3]]);
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        if let Some(mechanism) = &sasl_front
            && let Some(answer) = sasl_answer(api_key, api_version, correlation_id, mechanism)
        {
            let _ = inject.send(answer);
            continue;
        }
        let refusal = *link.state.init_producer_id_refusal.lock().unwrap();
        if let Some(error_code) = refusal.filter(|_| api_key == INIT_PRODUCER_ID) {
            let _ = inject.send(init_producer_id_refusal(
                api_version,
                correlation_id,
                error_code,
            ));
            continue;
        }
        link.delay().await;
        link.pending
            .lock()
            .unwrap()
            .insert(correlation_id, (api_key, api_version));
        let seen = link.seen(api_key, api_version, correlation_id, &frame);
        link.state.log.lock().unwrap().requests.push(seen);
        if !write_frame(&mut to, &frame).await {
            return;
        }
    }
    // The client's end: the socket stays open while the connection is silent.
    if !link.silent() {
        let _ = to.shutdown().await;
    }
}

/// Broker to client, frame by frame, with injected frames in between.
async fn answers(
    link: Arc<Link>,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    // Answers wait while this says `false` (the broker's answers held back).
    mut flowing: watch::Receiver<bool>,
    mut injected: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let (frames_tx, mut frames) = mpsc::channel::<Vec<u8>>(64);
    tokio::spawn(async move {
        while let Some(frame) = read_frame(&mut from).await {
            if frames_tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    loop {
        let (mut frame, from_broker) = tokio::select! {
            frame = frames.recv() => match frame {
                Some(frame) => (frame, true),
                None => break,
            },
            Some(frame) = injected.recv() => (frame, false),
        };
        if link.silent() {
            continue;
        }
        if from_broker {
            link.delay().await;
            if flowing.wait_for(|flowing| *flowing).await.is_err() {
                return;
            }
            if !pass_answer(&link, &mut frame).await {
                return;
            }
        }
        if !write_frame(&mut to, &frame).await {
            return;
        }
    }
    // The broker closed: so does the client's side, unless the connection is silent.
    if link.silent() {
        std::future::pending::<()>().await;
    }
}

/// Applies the rules to one of the broker's answers (a throttle time, a delay) and logs it;
/// `false` if it answers no request.
async fn pass_answer(link: &Link, frame: &mut [u8]) -> bool {
    if frame.len() < 4 {
        link.state.fault(format!(
            "an answer of {} bytes, shorter than its header",
            frame.len()
        ));
        return false;
    }
    let correlation_id = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
    let request = link.pending.lock().unwrap().remove(&correlation_id);
    let Some((api_key, api_version)) = request else {
        link.state.fault(format!(
            "an answer to no request (correlation id {correlation_id})"
        ));
        return false;
    };
    let (throttle_ms, delay) = {
        let mut rules = link.state.rules.lock().unwrap();
        if api_key == PRODUCE && rules.produce_answers_to_cut > 0 {
            rules.produce_answers_to_cut -= 1;
            let seen = link.seen(api_key, api_version, correlation_id, frame);
            link.state.log.lock().unwrap().cut.push(seen);
            return false;
        }
        let throttle = if api_key == PRODUCE {
            rules.produce_throttles_ms.pop_front()
        } else {
            None
        };
        (throttle, rules.answer_delays.get(&api_key).copied())
    };
    if let Some(throttle_ms) = throttle_ms
        && let Err(fault) = set_produce_throttle(frame, api_version, throttle_ms)
    {
        link.state.fault(fault);
    }
    if let Some(delay) = delay.filter(|d| !d.is_zero()) {
        tokio::time::sleep(delay).await;
    }
    let seen = link.seen(api_key, api_version, correlation_id, frame);
    link.state.log.lock().unwrap().answers.push(seen);
    true
}

/// The proxy's own answer (after its length) to a SaslHandshake or SaslAuthenticate request:
/// success with `mechanism`. `None` for any other request. Written from the Kafka protocol guide.
fn sasl_answer(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    mechanism: &str,
) -> Option<Vec<u8>> {
    let mut answer = correlation_id.to_be_bytes().to_vec();
    match (api_key, version) {
        (SASL_HANDSHAKE, 0..=1) => {
            answer.extend(0i16.to_be_bytes());
            answer.extend(1i32.to_be_bytes());
            answer.extend((mechanism.len() as i16).to_be_bytes());
            answer.extend(mechanism.as_bytes());
        }
        (SASL_AUTHENTICATE, 0..=1) => {
            answer.extend(0i16.to_be_bytes()); // error_code
            answer.extend((-1i16).to_be_bytes()); // error_message: null
            answer.extend(0i32.to_be_bytes()); // auth_bytes: empty
            if version >= 1 {
                answer.extend(0i64.to_be_bytes()); // session_lifetime_ms
            }
        }
        (SASL_AUTHENTICATE, 2) => {
            // Flexible: response header v1 (tagged fields), compact strings and bytes.
            answer.push(0); // header tagged fields
            answer.extend(0i16.to_be_bytes());
            answer.push(0); // error_message: null
            answer.push(1); // auth_bytes: empty
            answer.extend(0i64.to_be_bytes());
            answer.push(0); // tagged fields
        }
        _ => return None,
    }
    Some(answer)
}

/// An InitProducerId answer (after its length) refusing with `error_code`. Layout from Kafka's
/// clients/src/main/resources/common/message/InitProducerIdResponse.json (flexible from v2:
/// response header v1 and the body end with tagged fields).
fn init_producer_id_refusal(version: i16, correlation_id: i32, error_code: i16) -> Vec<u8> {
    let mut answer = correlation_id.to_be_bytes().to_vec();
    if version >= 2 {
        answer.push(0); // header tagged fields
    }
    answer.extend(0i32.to_be_bytes()); // throttle_time_ms
    answer.extend(error_code.to_be_bytes());
    answer.extend((-1i64).to_be_bytes()); // producer_id
    answer.extend((-1i16).to_be_bytes()); // producer_epoch
    if version >= 2 {
        answer.push(0); // tagged fields
    }
    answer
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

/// The header of one record batch (format v2) in a Produce request, as the client wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub partition: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records: i32,
}

/// The record batches of a Produce request frame (v3 to v8: request header v1, not flexible).
///
/// Layouts from the Kafka protocol guide (<https://kafka.apache.org/protocol#The_Messages_Produce>)
/// and its record batch (<https://kafka.apache.org/documentation/#recordbatch>): baseOffset i64,
/// batchLength i32, partitionLeaderEpoch i32, magic i8, crc u32, attributes i16,
/// lastOffsetDelta i32, baseTimestamp i64, maxTimestamp i64, producerId i64, producerEpoch i16,
/// baseSequence i32, then the record count i32.
pub fn produce_batches(frame: &[u8]) -> Vec<BatchHeader> {
    let mut r = Reader(frame, 8); // api key, version, correlation id
    let client_id = r.i16();
    r.skip(client_id.max(0) as usize);
    let transactional_id = r.i16();
    r.skip(transactional_id.max(0) as usize);
    r.skip(2 + 4); // acks, timeout
    let mut batches = Vec::new();
    for _ in 0..r.i32() {
        let name = r.i16();
        r.skip(name as usize);
        for _ in 0..r.i32() {
            let partition = r.i32();
            let end = r.i32() as usize + r.1;
            while r.1 < end {
                let start = r.1;
                r.skip(8);
                let length = r.i32() as usize;
                r.skip(4 + 1 + 4 + 2 + 4 + 8 + 8);
                let producer_id = r.i64();
                let producer_epoch = r.i16();
                let base_sequence = r.i32();
                let records = r.i32();
                batches.push(BatchHeader {
                    partition,
                    producer_id,
                    producer_epoch,
                    base_sequence,
                    records,
                });
                r.1 = start + 12 + length;
            }
        }
    }
    batches
}

/// The error code and base offset of each partition in a Produce answer frame (v3 to v8; the
/// correlation id, then the body).
pub fn produce_answer_partitions(frame: &[u8], api_version: i16) -> Vec<(i16, i64)> {
    let mut r = Reader(frame, 4);
    let mut out = Vec::new();
    for _ in 0..r.i32() {
        let name = r.i16();
        r.skip(name as usize);
        for _ in 0..r.i32() {
            r.skip(4); // partition index
            let error = r.i16();
            let base_offset = r.i64();
            r.skip(8); // log append time
            if api_version >= 5 {
                r.skip(8); // log start offset
            }
            if api_version >= 8 {
                for _ in 0..r.i32() {
                    r.skip(4);
                    let message = r.i16();
                    r.skip(message.max(0) as usize);
                }
                let message = r.i16();
                r.skip(message.max(0) as usize);
            }
            out.push((error, base_offset));
        }
    }
    out
}

/// Big-endian reads at a position.
struct Reader<'a>(&'a [u8], usize);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let bytes = self.0[self.1..self.1 + N].try_into().unwrap();
        self.1 += N;
        bytes
    }
    fn skip(&mut self, n: usize) {
        self.1 += n;
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take())
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take())
    }
    fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take())
    }
}
