//! The HTTP server: hyper 1 (HTTP/1.1 and h2c) in front of [`Service`], every connection and
//! request bounded in time and size before authentication costs anything, graceful shutdown.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::DeliveryError;
use crate::kafka::Produce;
use crate::limits::{
    BodyMeter, BodyVerdict, HeadTooLarge, HttpLimits, InflightPermit, MAX_HEAD_BYTES,
    MAX_HEAD_FIELDS,
};
use crate::service::{Head, Service, Signal};

mod heads;

/// What the HTTP parsers themselves take of a request head, above the head limits
/// ([`MAX_HEAD_BYTES`], [`MAX_HEAD_FIELDS`]) that the service checks: a head within these is
/// parsed and then refused by the service with its JSON answer, log line and count; beyond
/// them (whitespace padding, or a head that never ends) hyper answers 431 itself, which is
/// logged and counted when its connection ends. hyper checks the size of a head over all the
/// reads it took, never per read, so the verdict does not depend on how the head was cut.
/// Holding a head takes up to this much memory per connection until its deadline, so the
/// slack over the service's limit is small: a head written canonically is no larger on the wire.
pub const TRANSPORT_HEAD_BYTES: usize = MAX_HEAD_BYTES + (8 << 10);
/// Header fields hyper parses into (it answers 431 beyond).
const TRANSPORT_HEAD_FIELDS: usize = MAX_HEAD_FIELDS + 96;
/// The same bound for HTTP/2, whose header list size counts 32 bytes more per field
/// (RFC 9113 §6.5.2); h2 answers a stream over it 431 itself.
const TRANSPORT_H2_HEADER_LIST: u32 = (TRANSPORT_HEAD_BYTES + 32 * TRANSPORT_HEAD_FIELDS) as u32;
/// An oversized body is read and discarded up to this wire cost so the 413 reaches the client
/// (closing a connection with unread data makes the kernel reset it, losing the answer).
const DRAIN_MAX_BYTES: u64 = 64 << 20;
/// ... and for at most this long.
const DRAIN_TIME: Duration = Duration::from_secs(5);
/// After the grace period, how long 503 answers get to reach their clients before exit.
const ABANDON_FLUSH: Duration = Duration::from_secs(1);
/// HTTP/2 flow-control windows: what one stream, and one connection, may have sent that the
/// bridge has not yet read. Bodies are read as they come, so these bound buffering, not size.
const H2_STREAM_WINDOW: u32 = 256 << 10;
const H2_CONNECTION_WINDOW: u32 = 1 << 20;
/// An idle connection asked to close gets this long to do so before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// The client preface that starts an HTTP/2 (h2c prior knowledge) connection.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves `service` on `listener` until `shutdown` completes, then drains.
///
/// Draining stops accepting, lets in-flight deliveries finish for `SHUTDOWN_TIMEOUT_MS`, then
/// answers any still waiting with 503 and returns. Nothing is answered 2xx without an ack.
pub async fn run<P: Produce>(
    listener: TcpListener,
    service: Arc<Service<P>>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = service.config().limits;
    let builders = Arc::new(Builders::new(service.config()));
    // One permit per open connection: at the maximum, new clients wait in the listen backlog.
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let stopping = Arc::new(Signal::default());
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            stream,
            Arc::clone(&service),
            Arc::clone(&builders),
            permit,
            Arc::clone(&stopping),
        ));
    }
    drop(listener);
    let open = limits.max_connections - connections.available_permits();
    tracing::info!(
        connections = open,
        "shutting down: draining in-flight deliveries"
    );
    stopping.raise();
    let grace = service.config().shutdown_timeout;
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(grace, connections.acquire_many(all))
        .await
        .is_ok();
    if !drained {
        tracing::warn!(
            ?grace,
            "grace period over: answering waiting deliveries 503"
        );
        service.abandon_in_flight();
        tokio::time::sleep(ABANDON_FLUSH).await;
    }
    tracing::info!("stopped");
}

/// hyper's two protocols, configured once; a connection gets the one its first bytes show.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(config: &crate::Config) -> Self {
        let mut http1 = http1::Builder::new();
        // The head deadline is the connection's own (see `supervise`): hyper's would put
        // a boxed timer in the wheel and take it out again for every request, and would also
        // close keep-alive connections idle past it, cutting `HTTP_IDLE_TIMEOUT_MS` short.
        http1
            .header_read_timeout(None)
            .max_headers(TRANSPORT_HEAD_FIELDS)
            .max_header_size(TRANSPORT_HEAD_BYTES)
            .max_buf_size(TRANSPORT_HEAD_BYTES);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(TRANSPORT_H2_HEADER_LIST)
            .max_concurrent_streams(config.limits.h2_max_streams)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .keep_alive_interval(Duration::from_secs(30));
        Self { http1, http2 }
    }
}

/// A connection hyper serves, whichever its protocol: it ends, or is asked to close.
trait Served: Future<Output = hyper::Result<()>> {
    /// Stops taking new requests; those in progress finish, then the future completes.
    fn close(self: Pin<&mut Self>);
}

impl<S> Served for http1::Connection<TokioIo<HeadWatch>, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = Full<Bytes>>,
{
    fn close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<S> Served for http2::Connection<TokioIo<TcpStream>, S, TokioExecutor>
where
    S: hyper::service::HttpService<Incoming, ResBody = Full<Bytes>>,
    S::Future: Send + 'static,
{
    fn close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Drives one connection: waits (bounded) for its first bytes, serves it with the protocol
/// they show, and closes it when an HTTP/1 request head stalls past `HTTP_HEADER_READ_TIMEOUT_MS`,
/// when it idles past `HTTP_IDLE_TIMEOUT_MS`, or when the server stops.
async fn serve_connection<P: Produce>(
    stream: TcpStream,
    service: Arc<Service<P>>,
    builders: Arc<Builders>,
    _permit: OwnedSemaphorePermit,
    stopping: Arc<Signal>,
) {
    let config = service.config();
    let first_bytes_by = Instant::now() + config.header_read_timeout;
    // A connection that has not started a request when the server stops is closed at once
    // instead of holding the shutdown for its head deadline; one whose bytes are there is
    // served (and then closed) as the others are.
    let stop = stopping.notified(); // created before the flag is read (see `Signal`)
    let started = if stopping.is_raised() {
        None
    } else {
        tokio::select! {
            biased;
            protocol = await_request_start(&stream, first_bytes_by) => protocol,
            () = stop => None,
        }
    };
    let Some(protocol) = started else {
        return; // dropped: closed
    };
    let deadlines = Deadlines {
        head: config.header_read_timeout,
        idle: config.limits.idle_timeout,
    };
    let activity = Arc::new(Activity::new(protocol == Protocol::Http1));
    let requests = {
        let activity = Arc::clone(&activity);
        let service = Arc::clone(&service);
        service_fn(move |request: Request<Incoming>| {
            let busy = Activity::begin(&activity, request.body().size_hint().exact());
            // Taken apart here: the parts the request future holds are then its only copy.
            let (head, body) = request.into_parts();
            serve(Arc::clone(&service), head, body, busy)
        })
    };
    // A refusal is recorded while the connection (its socket) is still held: whoever sees it
    // closed can already see the refusal counted.
    match protocol {
        Protocol::Http1 => {
            let io = TokioIo::new(HeadWatch {
                stream,
                activity: Arc::clone(&activity),
            });
            let connection = pin!(builders.http1.serve_connection(io, requests));
            let ended = supervise(connection, &activity, deadlines, &stopping).await;
            record_head_refusal(&service, ended);
        }
        Protocol::Http2 => {
            let connection = pin!(
                builders
                    .http2
                    .serve_connection(TokioIo::new(stream), requests)
            );
            let ended = supervise(connection, &activity, deadlines, &stopping).await;
            record_head_refusal(&service, ended);
        }
    }
}

/// Logs and counts what the HTTP parser refused of a connection that ended with `ended`.
fn record_head_refusal<P: Produce>(service: &Service<P>, ended: Option<hyper::Result<()>>) {
    if let Some(Err(error)) = ended
        && let Some(refusal) = head_refusal(&error)
    {
        service.refused_by_transport(&refusal);
    }
}

/// The refusal hyper answered itself when it could not take a request head (it writes 400,
/// 414 or 431 and ends the connection); `None` for anything else that ends a connection.
fn head_refusal(error: &hyper::Error) -> Option<DeliveryError> {
    if !error.is_parse() {
        return None;
    }
    Some(if error.is_parse_too_large() {
        // hyper puts an overlong request target (414) in the same class as a large head.
        if error.to_string().contains("URI") {
            DeliveryError::UriTooLong
        } else {
            HeadTooLarge::Transport.into()
        }
    } else {
        DeliveryError::MalformedHead(crate::error::bounded_echo(&error.to_string()))
    })
}

/// How long a connection may take over a request head, and stay without a request.
#[derive(Clone, Copy)]
struct Deadlines {
    head: Duration,
    idle: Duration,
}

/// Polls `connection` to its end under its deadlines and the server's stop: its own result
/// when it ended, `None` when it was dropped (a stalled head, or the close grace over).
///
/// One timer serves the head deadline, the idle limit and, once closing, the grace before a
/// drop. It is armed for a head only when a poll ends with part of one read and not the rest
/// (the common request arrives whole and never touches it), and it and the stop signal are
/// polled once when armed, which registers this task for their wake-up; every other wake-up
/// (each request wakes the connection several times) reads only flags.
async fn supervise(
    mut connection: Pin<&mut impl Served>,
    activity: &Activity,
    deadlines: Deadlines,
    stopping: &Signal,
) -> Option<hyper::Result<()>> {
    let mut stop = pin!(stopping.notified());
    let mut timer = pin!(tokio::time::sleep_until(
        activity.idle_deadline(deadlines.idle)
    ));
    let mut stop_registered = false;
    let mut timer_registered = false;
    // The request count when the timer was armed for a head: a head has `deadlines.head` from
    // its first bytes, and a later head gets its own.
    let mut head_armed_at: Option<u64> = None;
    // Set once the connection was asked to close; the timer then bounds the wait for it.
    let mut closing = false;
    poll_fn(|cx| {
        loop {
            if let Poll::Ready(ended) = connection.as_mut().poll(cx) {
                return Poll::Ready(Some(ended));
            }
            if !stop_registered {
                // Never ready before `raise`, whose flag is read after this.
                let _ = stop.as_mut().poll(cx);
                stop_registered = true;
            }
            if !closing && stopping.is_raised() {
                // Server shutdown: in-flight requests finish; `run` bounds how long.
                connection.as_mut().close();
                closing = true;
                timer
                    .as_mut()
                    .reset(Instant::now() + Duration::from_secs(86_400));
                timer_registered = false;
                continue;
            }
            if !closing && head_armed_at.is_none() && activity.awaits_head() {
                timer.as_mut().reset(Instant::now() + deadlines.head);
                head_armed_at = Some(activity.requests());
                timer_registered = false;
            }
            if !timer_registered {
                // Polled without coop budget, a timer only asks to be polled again.
                let budget = tokio::task::coop::has_budget_remaining();
                if timer.as_mut().poll(cx).is_pending() {
                    timer_registered = budget;
                    return Poll::Pending;
                }
            } else if !timer.is_elapsed() {
                return Poll::Pending;
            }
            timer_registered = false;
            if closing {
                if !activity.is_busy() {
                    return Poll::Ready(None);
                }
                timer.as_mut().reset(Instant::now() + CLOSE_GRACE);
                continue;
            }
            if let Some(armed_at) = head_armed_at.take()
                && activity.awaits_head()
            {
                if armed_at == activity.requests() {
                    // The head is still not complete: drop the connection (slow loris).
                    return Poll::Ready(None);
                }
                // A later head: it gets the whole deadline from now.
                timer.as_mut().reset(Instant::now() + deadlines.head);
                head_armed_at = Some(activity.requests());
                continue;
            }
            let idle_by = activity.idle_deadline(deadlines.idle);
            if idle_by <= Instant::now() {
                connection.as_mut().close();
                closing = true;
                timer.as_mut().reset(Instant::now() + CLOSE_GRACE);
            } else {
                timer.as_mut().reset(idle_by);
            }
        }
    })
    .await
}

/// The protocol a connection speaks, told from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    /// h2c with prior knowledge: the connection opened with the HTTP/2 preface.
    Http2,
}

/// Waits until the connection has sent enough to tell HTTP/1 from HTTP/2, or `deadline`
/// passes (`None`: close it). Bytes are peeked, not consumed, so hyper reads them again.
async fn await_request_start(stream: &TcpStream, deadline: Instant) -> Option<Protocol> {
    let mut buffer = [0u8; H2_PREFACE.len()];
    loop {
        let seen = match tokio::time::timeout_at(deadline, stream.peek(&mut buffer)).await {
            Ok(Ok(seen)) => seen,
            _ => return None,
        };
        if seen == 0 {
            return None;
        }
        if !is_partial_h2_preface(&buffer[..seen]) {
            return Some(protocol_of(&buffer[..seen]));
        }
        // Part of the HTTP/2 preface (or an HTTP/1 request cut after its first letter):
        // peek returns at once while those bytes sit there, so poll for the rest.
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The protocol of a connection whose first bytes are `seen` (not a partial preface).
fn protocol_of(seen: &[u8]) -> Protocol {
    if seen == H2_PREFACE {
        Protocol::Http2
    } else {
        Protocol::Http1
    }
}

/// Whether `seen` is a strict prefix of the HTTP/2 preface (more bytes are needed to decide).
fn is_partial_h2_preface(seen: &[u8]) -> bool {
    seen.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(seen)
}

/// Requests in progress on one connection, since when it has had none, and (HTTP/1) whether
/// part of a request head has arrived whose request has not begun.
struct Activity {
    busy: AtomicUsize,
    /// Requests begun on the connection.
    begun: AtomicU64,
    /// Where the HTTP/1 reads stand among heads and bodies; `None` for HTTP/2, whose
    /// heads are frames hyper times by its own keep-alive. Everything here is touched from the
    /// connection's one task, so the lock is never contended.
    heads: Option<Mutex<heads::Heads>>,
    idle_since: Mutex<Instant>,
}

/// Marks one request in progress until dropped.
struct Busy(Arc<Activity>);

impl Activity {
    fn new(http1: bool) -> Self {
        Self {
            busy: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
            heads: http1.then(|| Mutex::new(heads::Heads::new())),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    /// A request begins, its body framed by `body_length` (`None`: no length, chunked).
    fn begin(this: &Arc<Self>, body_length: Option<u64>) -> Busy {
        this.busy.fetch_add(1, Ordering::AcqRel);
        this.begun.fetch_add(1, Ordering::Relaxed);
        if let Some(heads) = &this.heads {
            lock(heads).begin(body_length);
        }
        Busy(Arc::clone(this))
    }

    fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire) > 0
    }

    fn requests(&self) -> u64 {
        self.begun.load(Ordering::Relaxed)
    }

    /// `bytes` arrived (HTTP/1): some may start the next request's head.
    fn bytes_read(&self, bytes: &[u8]) {
        if let Some(heads) = &self.heads {
            lock(heads).read(bytes);
        }
    }

    /// Whether no request is in progress and part of a head may have arrived.
    fn awaits_head(&self) -> bool {
        !self.is_busy() && self.heads.as_ref().is_some_and(|h| lock(h).awaits_head())
    }

    /// When the connection will have idled for `timeout` (a moment from now while busy).
    fn idle_deadline(&self, timeout: Duration) -> Instant {
        if self.is_busy() {
            return Instant::now() + timeout;
        }
        *self.idle_since.lock().unwrap_or_else(|e| e.into_inner()) + timeout
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An HTTP/1 connection's socket, showing its [`Activity`] every byte read: where a request
/// head starts, it then has `HTTP_HEADER_READ_TIMEOUT_MS`.
struct HeadWatch {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for HeadWatch {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for HeadWatch {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// One request: answered from its head when possible (token, method, budget) without reading
/// the body; otherwise the body is read within the limits and the delivery runs. When the
/// client goes away hyper drops this future, which cancels the delivery and frees its memory
/// (Pub/Sub redelivers what it never got an answer for).
async fn serve<P: Produce>(
    service: Arc<Service<P>>,
    head: http::request::Parts,
    body: Incoming,
    _busy: Busy,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let http1 = head.version < http::Version::HTTP_2;
    let mut permit = match service.admit(&head).await {
        Head::Delivery(permit) => permit,
        Head::Answered(response) => {
            let unread = !body.is_end_stream();
            return Ok(finish(response, unread && http1));
        }
    };
    let limits = service.config().limits;
    let max_body = service.config().max_body_bytes;
    // The length hyper framed the body by (Content-Length, validated), without a second
    // header lookup and parse; `None` for a chunked body.
    let declared = body.size_hint().exact();
    let body = match declared {
        // Far too large to be worth reading: refuse at once.
        Some(length) if length > DRAIN_MAX_BYTES.max(max_body as u64) => Err(BodyFailure {
            error: DeliveryError::BodyTooLarge { limit: max_body },
            unread: true,
        }),
        Some(length) if length > max_body as u64 => {
            drain(body, &limits).await;
            Err(BodyFailure {
                error: DeliveryError::BodyTooLarge { limit: max_body },
                unread: false,
            })
        }
        // The declared length is taken from the budget before any of it is read.
        Some(length) => match permit.reserve(length as usize) {
            Ok(()) => read_body(body, max_body, Some(length as usize), &limits, &mut permit).await,
            Err(overloaded) => Err(BodyFailure {
                error: overloaded.into(),
                unread: length > 0,
            }),
        },
        None => read_body(body, max_body, None, &limits, &mut permit).await,
    };
    match body {
        Ok(body) => Ok(finish(service.deliver(&head, body, permit).await, false)),
        Err(failure) => {
            drop(permit);
            let response = service.refuse(failure.error, &head.headers);
            Ok(finish(response, failure.unread && http1))
        }
    }
}

/// The response as hyper sends it; `close` says `Connection: close` because unread body bytes
/// make the HTTP/1 connection unusable (HTTP/2 resets just the stream on its own).
fn finish(response: Response<Bytes>, close: bool) -> Response<Full<Bytes>> {
    let mut response = response.map(Full::new);
    if close {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// A body that could not be taken in, and whether bytes of it are left unread.
struct BodyFailure {
    error: DeliveryError,
    unread: bool,
}

/// Reads a request body of at most `limit` data bytes into memory held by `permit`.
///
/// Bounded every way a client can stretch it: the pause between frames
/// (`HTTP_BODY_IDLE_TIMEOUT_MS`), the whole body (`HTTP_BODY_TIMEOUT_MS`), data bytes and wire
/// cost ([`BodyMeter`]: tiny chunks or frames count their framing), and the in-flight budget.
/// Small frames are copied into one buffer: keeping them as slices would pin every read buffer.
/// That buffer is sized once from `declared` (Content-Length, already within `limit` and
/// reserved in the budget) instead of growing and copying as frames arrive.
async fn read_body(
    mut body: Incoming,
    limit: usize,
    declared: Option<usize>,
    limits: &HttpLimits,
    permit: &mut InflightPermit,
) -> Result<Bytes, BodyFailure> {
    // Set at the first frame that is not already there: until then no time has passed waiting.
    let mut whole_by: Option<Instant> = None;
    let mut meter = BodyMeter::new(limit);
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    loop {
        // A frame hyper already holds (a small body arrives with its head) is taken without
        // arming a timer or reading the clock: three clock reads and a timer entry per delivery.
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                let whole_by =
                    *whole_by.get_or_insert_with(|| Instant::now() + limits.body_timeout);
                let pause_by = (Instant::now() + limits.body_idle_timeout).min(whole_by);
                match tokio::time::timeout_at(pause_by, body.frame()).await {
                    Ok(frame) => frame,
                    Err(_) => {
                        let waited = if pause_by == whole_by {
                            limits.body_timeout
                        } else {
                            limits.body_idle_timeout
                        };
                        return Err(BodyFailure {
                            error: DeliveryError::BodyTimeout(waited),
                            unread: true,
                        });
                    }
                }
            }
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| BodyFailure {
            error: DeliveryError::BodyUnreadable(crate::error::bounded_echo(&e.to_string())),
            unread: true,
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match meter.add_frame(data.len()) {
            BodyVerdict::Within => {}
            // An honest oversized body: drained (bounded) so its 413 reaches the client.
            BodyVerdict::OverData => {
                let wire_left = DRAIN_MAX_BYTES.saturating_sub(meter.wire());
                let drained = drain_within(body, limits, wire_left).await;
                return Err(BodyFailure {
                    error: DeliveryError::BodyTooLarge { limit },
                    unread: !drained,
                });
            }
            // Tiny frames: not another one is read.
            BodyVerdict::OverWire => {
                return Err(BodyFailure {
                    error: DeliveryError::BodyTooLarge { limit },
                    unread: true,
                });
            }
        }
        // Beyond what Content-Length already reserved, the budget grows with the data.
        let held = first.as_ref().map_or(0, Bytes::len) + joined.len() + data.len();
        if held > permit.reserved() {
            permit
                .reserve(held - permit.reserved())
                .map_err(|overloaded| BodyFailure {
                    error: overloaded.into(),
                    unread: true,
                })?;
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            None => joined.extend_from_slice(&data),
            Some(earlier) => {
                joined.reserve(declared.unwrap_or(0).max(earlier.len() + data.len()));
                joined.extend_from_slice(&earlier);
                joined.extend_from_slice(&data);
            }
        }
    }
    // One frame (the common case) is handed on as is, without a copy.
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

/// Reads and discards an oversized body so its 413 reaches the client, within
/// [`DRAIN_MAX_BYTES`] of wire cost, [`DRAIN_TIME`] and the body timeouts.
async fn drain(body: Incoming, limits: &HttpLimits) {
    let _ = drain_within(body, limits, DRAIN_MAX_BYTES).await;
}

/// `true` when the body was read to its end.
async fn drain_within(mut body: Incoming, limits: &HttpLimits, max_wire: u64) -> bool {
    let until = Instant::now() + DRAIN_TIME.min(limits.body_timeout);
    let mut wire = 0u64;
    loop {
        let pause_by = (Instant::now() + limits.body_idle_timeout).min(until);
        match tokio::time::timeout_at(pause_by, body.frame()).await {
            Ok(None) => return true,
            Ok(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, Bytes::len) as u64;
                wire += len + crate::limits::FRAME_OVERHEAD;
                if wire > max_wire {
                    return false;
                }
            }
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}

/// Resolves on SIGTERM (Cloud Run's stop signal) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_strict_prefixes_of_the_h2_preface_wait_for_more() {
        assert!(is_partial_h2_preface(b"P"));
        assert!(is_partial_h2_preface(b"PRI * HTTP/2.0\r\n"));
        assert!(!is_partial_h2_preface(H2_PREFACE));
        assert!(!is_partial_h2_preface(b"PO"));
        assert!(!is_partial_h2_preface(b"GET / HTTP/1.1"));
    }

    #[test]
    fn only_the_whole_preface_means_http2() {
        assert_eq!(protocol_of(H2_PREFACE), Protocol::Http2);
        assert_eq!(protocol_of(b"POST / HTTP/1.1\r\n"), Protocol::Http1);
        assert_eq!(
            protocol_of(b"PRI * HTTP/2.0\r\n\r\nSX\r\n\r\n"),
            Protocol::Http1
        );
    }

    #[test]
    fn a_head_is_awaited_from_bytes_between_requests_until_a_request_begins() {
        let activity = Arc::new(Activity::new(true));
        assert!(!activity.awaits_head());
        activity.bytes_read(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n");
        assert!(activity.awaits_head());
        let busy = Activity::begin(&activity, Some(4));
        assert_eq!(activity.requests(), 1);
        assert!(!activity.awaits_head());
        // Body bytes, read while the request is in progress, start no head.
        activity.bytes_read(b"body");
        drop(busy);
        assert!(!activity.awaits_head());
        activity.bytes_read(b"P");
        assert!(activity.awaits_head());
    }

    #[test]
    fn http2_connections_never_await_a_head() {
        let activity = Arc::new(Activity::new(false));
        activity.bytes_read(b"P");
        drop(Activity::begin(&activity, None));
        assert!(!activity.awaits_head());
    }
}
