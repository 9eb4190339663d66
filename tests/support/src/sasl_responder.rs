//! A minimal Kafka broker that only authenticates: it answers ApiVersions, SaslHandshake and
//! SaslAuthenticate at the wire level and records what the client sent, so a test sees the
//! exact SASL bytes a real broker (Google Managed Kafka) would receive. Written from the Kafka
//! protocol guide, independent of the client under test.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const API_VERSIONS: i16 = 18;
const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;
const UNSUPPORTED_VERSION: i16 = 35;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// What one connection sent.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    /// Mechanism asked for in SaslHandshake.
    pub mechanism: Option<String>,
    /// The SaslAuthenticate `auth_bytes`.
    pub auth_bytes: Option<Vec<u8>>,
}

pub struct SaslResponder {
    pub addr: SocketAddr,
    pub exchanges: Arc<Mutex<Vec<Exchange>>>,
}

impl SaslResponder {
    /// Listens on a loopback port; offers `mechanisms`; refuses every authentication (after
    /// recording it), so clients retry and never get further.
    pub async fn start(mechanisms: &[&str]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let exchanges: Arc<Mutex<Vec<Exchange>>> = Arc::default();
        let responder = Self {
            addr: listener.local_addr().unwrap(),
            exchanges: Arc::clone(&exchanges),
        };
        let mechanisms: Vec<String> = mechanisms.iter().map(|m| m.to_string()).collect();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let exchanges = Arc::clone(&exchanges);
                let mechanisms = mechanisms.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, &mechanisms, &exchanges).await;
                });
            }
        });
        responder
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// SaslAuthenticate payloads received so far.
    pub fn auth_payloads(&self) -> Vec<Vec<u8>> {
        self.exchanges
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| e.auth_bytes.clone())
            .collect()
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> std::io::Result<&[u8]> {
        if self.0.len() < n {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn i16(&mut self) -> std::io::Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn i32(&mut self) -> std::io::Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn string(&mut self) -> std::io::Result<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        Ok(Some(
            String::from_utf8_lossy(self.take(len as usize)?).into_owned(),
        ))
    }
    fn bytes(&mut self) -> std::io::Result<Vec<u8>> {
        let len = self.i32()?;
        Ok(self.take(len.max(0) as usize)?.to_vec())
    }
}

async fn serve(
    mut stream: TcpStream,
    mechanisms: &[String],
    exchanges: &Mutex<Vec<Exchange>>,
) -> std::io::Result<()> {
    let index = {
        let mut all = exchanges.lock().unwrap();
        all.push(Exchange::default());
        all.len() - 1
    };
    loop {
        let size = stream.read_i32().await?;
        let mut frame = vec![0; size as usize];
        stream.read_exact(&mut frame).await?;
        let mut r = Reader(&frame);
        // Request header v1 (v2 adds tagged fields, only for flexible versions we never parse).
        let (api_key, version, correlation_id) = (r.i16()?, r.i16()?, r.i32()?);
        let _client_id = r.string()?;
        let mut body = Vec::new();
        match (api_key, version) {
            (API_VERSIONS, 0..=2) => {
                body.extend(0i16.to_be_bytes());
                body.extend(2i32.to_be_bytes());
                for (key, max) in [(SASL_HANDSHAKE, 1i16), (SASL_AUTHENTICATE, 1)] {
                    body.extend(key.to_be_bytes());
                    body.extend(0i16.to_be_bytes());
                    body.extend(max.to_be_bytes());
                }
                if version >= 1 {
                    body.extend(0i32.to_be_bytes()); // throttle_time_ms
                }
            }
            (API_VERSIONS, 3..) => {
                // Flexible: compact array (length + 1 as an unsigned varint) and tagged fields.
                body.extend(0i16.to_be_bytes());
                body.push(3);
                for (key, max) in [(SASL_HANDSHAKE, 1i16), (SASL_AUTHENTICATE, 1)] {
                    body.extend(key.to_be_bytes());
                    body.extend(0i16.to_be_bytes());
                    body.extend(max.to_be_bytes());
                    body.push(0);
                }
                body.extend(0i32.to_be_bytes());
                body.push(0);
            }
            (SASL_HANDSHAKE, 0..=1) => {
                exchanges.lock().unwrap()[index].mechanism = r.string()?;
                body.extend(0i16.to_be_bytes());
                body.extend((mechanisms.len() as i32).to_be_bytes());
                for m in mechanisms {
                    body.extend((m.len() as i16).to_be_bytes());
                    body.extend(m.as_bytes());
                }
            }
            (SASL_AUTHENTICATE, 0..=1) => {
                exchanges.lock().unwrap()[index].auth_bytes = Some(r.bytes()?);
                let message = "recorded by the test responder";
                body.extend(SASL_AUTHENTICATION_FAILED.to_be_bytes());
                body.extend((message.len() as i16).to_be_bytes());
                body.extend(message.as_bytes());
                body.extend(0i32.to_be_bytes()); // auth_bytes: empty
                if version >= 1 {
                    body.extend(0i64.to_be_bytes()); // session_lifetime_ms
                }
            }
            _ => {
                body.extend(UNSUPPORTED_VERSION.to_be_bytes());
            }
        }
        let mut response = Vec::with_capacity(8 + body.len());
        response.extend(((4 + body.len()) as i32).to_be_bytes());
        response.extend(correlation_id.to_be_bytes());
        response.extend(body);
        stream.write_all(&response).await?;
    }
}
