//! A TCP proxy in front of the broker that can slow it down, hold its answers back, go silent
//! or inject answers, and counts what the bridge sent through it: Kafka's side of a fault or a
//! batching test, at the byte level.
//!
//! It forwards whole Kafka frames (a 4-byte length, then that many bytes), so what it adds or
//! leaves out is always a frame boundary the client can parse.

use std::sync::atomic::{AtomicBool, AtomicU64};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};

use super::*;

const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;

/// One client connection through the proxy.
struct Connection {
    /// Both directions drop every byte (the sockets stay open): a hung broker, a paused VM,
    /// a NAT flow dropped without a reset.
    silent: Arc<AtomicBool>,
    /// Frames written to the client between the broker's answers.
    inject: mpsc::UnboundedSender<Vec<u8>>,
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
}

/// A proxy on `port` in front of the broker on `upstream`, for a broker's `advertised_port`.
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
                state.accepted.lock().unwrap().push(Instant::now());
                let silent = Arc::new(AtomicBool::new(state.silence_new.load(Ordering::SeqCst)));
                let (inject, injected) = mpsc::unbounded_channel();
                state.connections.lock().unwrap().push(Connection {
                    silent: Arc::clone(&silent),
                    inject: inject.clone(),
                });
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
                let (sr, sw) = server.into_split();
                let sasl_front = state.sasl_front.lock().unwrap().clone();
                tokio::spawn(requests(
                    cr,
                    sw,
                    Arc::clone(&delay_ms),
                    Arc::clone(&silent),
                    Arc::clone(&sent_bytes),
                    sasl_front,
                    inject,
                ));
                tokio::spawn(answers(
                    sr,
                    cw,
                    Arc::clone(&delay_ms),
                    silent,
                    answers_flow.subscribe(),
                    injected,
                ));
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
            if !c.silent.load(Ordering::SeqCst) && c.inject.send(frame.to_vec()).is_ok() {
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
}

/// An answer frame with `correlation_id` and `body`, its length in front.
pub fn answer_frame(correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + body.len());
    frame.extend(((4 + body.len()) as i32).to_be_bytes());
    frame.extend(correlation_id.to_be_bytes());
    frame.extend(body);
    frame
}

/// Reads one frame (its length included), or `None` at the end of the stream.
async fn read_frame(from: &mut OwnedReadHalf) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len).await.ok()?;
    let size = usize::try_from(i32::from_be_bytes(len)).ok()?;
    let mut frame = vec![0u8; 4 + size];
    frame[..4].copy_from_slice(&len);
    from.read_exact(&mut frame[4..]).await.ok()?;
    Some(frame)
}

async fn swallow(mut from: OwnedReadHalf, _to: OwnedWriteHalf) {
    let mut buf = vec![0u8; 64 * 1024];
    while matches!(from.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// Client to broker, frame by frame.
async fn requests(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay_ms: Arc<AtomicU64>,
    silent: Arc<AtomicBool>,
    counted: Arc<AtomicU64>,
    sasl_front: Option<String>,
    inject: mpsc::UnboundedSender<Vec<u8>>,
) {
    while let Some(frame) = read_frame(&mut from).await {
        counted.fetch_add(frame.len() as u64, Ordering::SeqCst);
        if silent.load(Ordering::SeqCst) {
            continue;
        }
        if let Some(mechanism) = &sasl_front
            && let Some(answer) = sasl_answer(&frame, mechanism)
        {
            let _ = inject.send(answer);
            continue;
        }
        let delay = delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&frame).await.is_err() {
            return;
        }
    }
    // The client's end: the socket stays open while the connection is silent.
    if !silent.load(Ordering::SeqCst) {
        let _ = to.shutdown().await;
    }
}

/// Broker to client, frame by frame, with injected frames in between.
async fn answers(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay_ms: Arc<AtomicU64>,
    silent: Arc<AtomicBool>,
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
        let (frame, from_broker) = tokio::select! {
            frame = frames.recv() => match frame {
                Some(frame) => (frame, true),
                None => break,
            },
            Some(frame) = injected.recv() => (frame, false),
        };
        if silent.load(Ordering::SeqCst) {
            continue;
        }
        if from_broker {
            let delay = delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if flowing.wait_for(|flowing| *flowing).await.is_err() {
                return;
            }
        }
        if to.write_all(&frame).await.is_err() {
            return;
        }
    }
    // The broker closed: so does the client's side, unless the connection is silent.
    if silent.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
}

/// The proxy's own answer to a SaslHandshake or SaslAuthenticate request `frame`: success with
/// `mechanism`. `None` for any other request. Written from the Kafka protocol guide.
fn sasl_answer(frame: &[u8], mechanism: &str) -> Option<Vec<u8>> {
    let api_key = i16::from_be_bytes(frame.get(4..6)?.try_into().ok()?);
    let version = i16::from_be_bytes(frame.get(6..8)?.try_into().ok()?);
    let correlation_id = i32::from_be_bytes(frame.get(8..12)?.try_into().ok()?);
    let mut body = Vec::new();
    match (api_key, version) {
        (SASL_HANDSHAKE, 0..=1) => {
            body.extend(0i16.to_be_bytes());
            body.extend(1i32.to_be_bytes());
            body.extend((mechanism.len() as i16).to_be_bytes());
            body.extend(mechanism.as_bytes());
        }
        (SASL_AUTHENTICATE, 0..=1) => {
            body.extend(0i16.to_be_bytes()); // error_code
            body.extend((-1i16).to_be_bytes()); // error_message: null
            body.extend(0i32.to_be_bytes()); // auth_bytes: empty
            if version >= 1 {
                body.extend(0i64.to_be_bytes()); // session_lifetime_ms
            }
        }
        (SASL_AUTHENTICATE, 2) => {
            // Flexible: response header v1 (tagged fields), compact strings and bytes.
            body.push(0); // header tagged fields
            body.extend(0i16.to_be_bytes());
            body.push(0); // error_message: null
            body.push(1); // auth_bytes: empty
            body.extend(0i64.to_be_bytes());
            body.push(0); // tagged fields
        }
        _ => return None,
    }
    Some(answer_frame(correlation_id, &body))
}
