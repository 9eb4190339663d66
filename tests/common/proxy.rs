//! A TCP proxy in front of the broker that can slow it down or hold its answers back, and counts
//! what the bridge sent through it: Kafka's side of a fault or a batching test, at the byte level.

use std::sync::atomic::AtomicU64;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

use super::*;

/// A proxy on `port` in front of the broker on `upstream`, for a broker's `advertised_port`.
pub struct BrokerProxy {
    pub port: u16,
    /// Every chunk, both ways, is held this many milliseconds (a slow broker).
    pub delay_ms: Arc<AtomicU64>,
    /// Bytes the clients sent towards the broker.
    pub sent_bytes: Arc<AtomicU64>,
    answers_flow: watch::Sender<bool>,
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
        };
        let (delay_ms, sent_bytes) = (Arc::clone(&proxy.delay_ms), Arc::clone(&proxy.sent_bytes));
        let answers_flow = proxy.answers_flow.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(
                    cr,
                    sw,
                    Arc::clone(&delay_ms),
                    None,
                    Some(Arc::clone(&sent_bytes)),
                ));
                tokio::spawn(pump(
                    sr,
                    cw,
                    Arc::clone(&delay_ms),
                    Some(answers_flow.subscribe()),
                    None,
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
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay_ms: Arc<AtomicU64>,
    // Chunks wait while this says `false` (the broker's answers held back).
    mut flowing: Option<watch::Receiver<bool>>,
    counted: Option<Arc<AtomicU64>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(counted) = &counted {
            counted.fetch_add(n as u64, Ordering::SeqCst);
        }
        let delay = delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if let Some(flowing) = flowing.as_mut()
            && flowing.wait_for(|flowing| *flowing).await.is_err()
        {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
