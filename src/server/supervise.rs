//! Connection supervision: a connection served by hyper is dropped when an HTTP/1 request head
//! stalls past its deadline, asked to close when it idles past the idle limit or when the server
//! stops, and dropped when it has not closed within a grace period with no request in progress.

use std::future::Future;
use std::pin::{Pin, pin};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::activity::{Activity, Seen};
use crate::service::Signal;

/// A connection asked to close (idle, or the server stopping) that has not closed this long
/// after, with no request in progress, is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A connection hyper serves, whichever its protocol: it ends, or is asked to close.
pub(crate) trait Served: Future<Output = hyper::Result<()>> {
    /// Stops taking new requests; those in progress finish, then the future completes.
    fn close(self: Pin<&mut Self>);
}

impl<I, S, B> Served for http1::Connection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Served for http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// How long a connection may take over a request head, and stay without a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    pub(crate) head: Duration,
    pub(crate) idle: Duration,
}

/// What the supervisor does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Drop the connection: a head stalled, or it did not close in time.
    Drop,
    /// Ask it to close: it idled past its limit.
    Close,
    /// Look again at this moment.
    CheckAt(Instant),
}

impl Deadlines {
    /// What to do with a connection seen as `seen` at `now`, `closing` once asked to close.
    ///
    /// The connection is looked at when its one timer fires, not on each of its wake-ups. So
    /// while it serves, or idles with no head begun, the next look is never later than either
    /// deadline could fall: a head that begins, or an idle spell that starts, in between is
    /// then found with its whole deadline still ahead, and is timed from its own start.
    fn next(self, seen: Seen, closing: bool, now: Instant) -> Next {
        if closing {
            return if seen.busy {
                Next::CheckAt(now + CLOSE_GRACE)
            } else {
                Next::Drop
            };
        }
        if seen.busy {
            return Next::CheckAt(now + self.head.min(self.idle));
        }
        if let Some(head_since) = seen.head_since {
            let head_by = head_since + self.head;
            return if now >= head_by {
                Next::Drop
            } else {
                Next::CheckAt(head_by)
            };
        }
        let idle_by = seen.idle_since + self.idle;
        if now >= idle_by {
            Next::Close
        } else {
            Next::CheckAt(idle_by.min(now + self.head))
        }
    }
}

/// Polls `connection` to its end under its deadlines and the server's stop: its own result
/// when it ended, `None` when it was dropped (a stalled head, or the close grace over).
pub(crate) async fn supervise(
    mut connection: Pin<&mut impl Served>,
    activity: &Activity,
    deadlines: Deadlines,
    stopping: &Signal,
) -> Option<hyper::Result<()>> {
    let mut stop = pin!(stopping.notified()); // created before the flag is read (see `Signal`)
    let mut closing = false;
    let mut check = pin!(tokio::time::sleep(Duration::ZERO));
    if stopping.is_raised() {
        connection.as_mut().close();
        closing = true;
        check.as_mut().reset(Instant::now() + CLOSE_GRACE);
    }
    loop {
        tokio::select! {
            biased;
            ended = connection.as_mut() => return Some(ended),
            // Server shutdown: requests in progress finish (`run` bounds how long).
            () = stop.as_mut(), if !closing => {
                connection.as_mut().close();
                closing = true;
                check.as_mut().reset(Instant::now() + CLOSE_GRACE);
            }
            () = check.as_mut() => {
                let now = Instant::now();
                match deadlines.next(activity.seen(), closing, now) {
                    Next::Drop => return None,
                    Next::Close => {
                        connection.as_mut().close();
                        closing = true;
                        check.as_mut().reset(now + CLOSE_GRACE);
                    }
                    Next::CheckAt(at) => check.as_mut().reset(at),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The supervision over in-memory streams with tokio's clock paused: every deadline is met
    //! to the millisecond, with hyper's real HTTP/1 connection (a stand-in service answers).

    use std::convert::Infallible;
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::Empty;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::task::JoinHandle;

    use super::*;
    use crate::server::activity::HeadWatch;
    use crate::server::builders::Builders;

    const HEAD: Duration = Duration::from_millis(300);
    const IDLE: Duration = Duration::from_millis(1500);
    /// How long a request to `/slow` takes to answer: past both deadlines.
    const SLOW: Duration = Duration::from_secs(5);
    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: b\r\n\r\n";
    const GET_SLOW: &[u8] = b"GET /slow HTTP/1.1\r\nHost: b\r\n\r\n";

    /// One supervised HTTP/1 connection: the client's end, the server's stop, and how the
    /// supervision ended (`Some`: the connection ended; `None`: it was dropped).
    struct Connection {
        client: DuplexStream,
        stopping: Arc<Signal>,
        ended: JoinHandle<Option<hyper::Result<()>>>,
    }

    impl Connection {
        fn open() -> Self {
            let (client, server) = tokio::io::duplex(64 << 10);
            let activity = Arc::new(Activity::new(true));
            let stopping = Arc::new(Signal::default());
            let requests = {
                let activity = Arc::clone(&activity);
                service_fn(move |request: Request<hyper::body::Incoming>| {
                    let busy = Activity::begin(&activity, Some(0));
                    async move {
                        if request.uri().path() == "/slow" {
                            tokio::time::sleep(SLOW).await;
                        }
                        drop(busy);
                        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
                    }
                })
            };
            let deadlines = Deadlines {
                head: HEAD,
                idle: IDLE,
            };
            let ended = tokio::spawn({
                let stopping = Arc::clone(&stopping);
                async move {
                    let io = TokioIo::new(HeadWatch::new(server, Arc::clone(&activity)));
                    let builders = Builders::new(1);
                    let connection = pin!(builders.http1.serve_connection(io, requests));
                    supervise(connection, &activity, deadlines, &stopping).await
                }
            });
            Self {
                client,
                stopping,
                ended,
            }
        }

        /// An HTTP/2 connection (h2c) served and supervised: the client's end of it.
        fn open_http2(
            stopping: Arc<Signal>,
        ) -> (DuplexStream, JoinHandle<Option<hyper::Result<()>>>) {
            let (client, server) = tokio::io::duplex(64 << 10);
            let activity = Arc::new(Activity::new(false));
            let requests = {
                let activity = Arc::clone(&activity);
                service_fn(move |_: Request<hyper::body::Incoming>| {
                    let busy = Activity::begin(&activity, None);
                    async move {
                        drop(busy);
                        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
                    }
                })
            };
            let deadlines = Deadlines {
                head: HEAD,
                idle: IDLE,
            };
            let ended = tokio::spawn(async move {
                let builders = Builders::new(1);
                let connection = pin!(
                    builders
                        .http2
                        .serve_connection(TokioIo::new(server), requests)
                );
                supervise(connection, &activity, deadlines, &stopping).await
            });
            (client, ended)
        }

        async fn send(&mut self, bytes: &[u8]) {
            self.client.write_all(bytes).await.unwrap();
        }

        /// Reads one response head; panics if the connection closes first.
        async fn response(&mut self) -> String {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = self.client.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed before a response");
                seen.extend_from_slice(&buf[..n]);
            }
            String::from_utf8(seen).unwrap()
        }

        /// Waits for the server to close the connection; what it wrote before, and how the
        /// supervision ended.
        async fn closed(mut self) -> (String, Option<hyper::Result<()>>) {
            let mut rest = Vec::new();
            let _ = self.client.read_to_end(&mut rest).await;
            let ended = self.ended.await.unwrap();
            (String::from_utf8(rest).unwrap(), ended)
        }
    }

    fn dropped(ended: &Option<hyper::Result<()>>) -> bool {
        ended.is_none()
    }

    fn closed_cleanly(ended: &Option<hyper::Result<()>>) -> bool {
        matches!(ended, Some(Ok(())))
    }

    #[tokio::test(start_paused = true)]
    async fn a_keep_alive_connection_idles_to_the_idle_timeout_however_short_the_head_deadline() {
        let mut connection = Connection::open();
        connection.send(GET).await;
        assert!(connection.response().await.starts_with("HTTP/1.1 200 "));
        let idle_from = Instant::now();
        let (rest, ended) = connection.closed().await;
        assert_eq!(idle_from.elapsed(), IDLE);
        assert_eq!(rest, "");
        assert!(
            closed_cleanly(&ended),
            "asked to close, it closed: {ended:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_head_that_stalls_is_dropped_at_the_head_deadline() {
        let mut connection = Connection::open();
        connection.send(b"POST / HTTP/1.1\r\nHost: x\r\n").await;
        let started = Instant::now();
        let (rest, ended) = connection.closed().await;
        assert_eq!(started.elapsed(), HEAD);
        assert_eq!(rest, "", "nothing is answered to half a head");
        assert!(dropped(&ended));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_trickling_in_is_cut_at_the_deadline_from_its_first_byte() {
        let Connection { client, ended, .. } = Connection::open();
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let started = Instant::now();
        tokio::spawn(async move {
            for byte in b"GET / HTTP/1.1\r\nHost: b\r\n" {
                if to_server.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let mut rest = Vec::new();
        let _ = from_server.read_to_end(&mut rest).await;
        assert_eq!(started.elapsed(), HEAD, "progress does not extend it");
        assert!(rest.is_empty());
        assert!(dropped(&ended.await.unwrap()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_head_that_stalls_is_dropped_at_the_head_deadline_from_its_first_byte() {
        let mut connection = Connection::open();
        connection.send(GET).await;
        assert!(connection.response().await.starts_with("HTTP/1.1 200 "));
        // Idle past two head deadlines, then half a head.
        tokio::time::sleep(HEAD * 2 + Duration::from_millis(50)).await;
        connection.send(b"GET / HTTP/1.1\r\nHo").await;
        let stalled_from = Instant::now();
        let (rest, ended) = connection.closed().await;
        assert_eq!(stalled_from.elapsed(), HEAD);
        assert_eq!(rest, "");
        assert!(dropped(&ended));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_begun_in_the_same_read_as_the_request_before_it_is_timed_from_that_request() {
        let mut connection = Connection::open();
        let mut pipelined = GET.to_vec();
        pipelined.extend_from_slice(b"GET / HT");
        connection.send(&pipelined).await;
        let started = Instant::now();
        assert!(connection.response().await.starts_with("HTTP/1.1 200 "));
        let (rest, ended) = connection.closed().await;
        assert_eq!(started.elapsed(), HEAD);
        assert_eq!(rest, "");
        assert!(dropped(&ended));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_outlasts_both_deadlines_and_idling_starts_at_its_end() {
        let mut connection = Connection::open();
        connection.send(GET_SLOW).await;
        let started = Instant::now();
        assert!(connection.response().await.starts_with("HTTP/1.1 200 "));
        assert_eq!(started.elapsed(), SLOW);
        let idle_from = Instant::now();
        let (_, ended) = connection.closed().await;
        assert_eq!(idle_from.elapsed(), IDLE);
        assert!(closed_cleanly(&ended));
    }

    #[tokio::test(start_paused = true)]
    async fn the_servers_stop_closes_an_idle_connection_at_once() {
        let mut connection = Connection::open();
        connection.send(GET).await;
        assert!(connection.response().await.starts_with("HTTP/1.1 200 "));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopped = Instant::now();
        connection.stopping.raise();
        let (rest, ended) = connection.closed().await;
        assert_eq!(stopped.elapsed(), Duration::ZERO);
        assert_eq!(rest, "");
        assert!(closed_cleanly(&ended));
    }

    #[tokio::test(start_paused = true)]
    async fn the_servers_stop_lets_a_request_in_progress_finish_then_closes() {
        let mut connection = Connection::open();
        connection.send(GET_SLOW).await;
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        connection.stopping.raise();
        let (rest, ended) = connection.closed().await;
        assert_eq!(started.elapsed(), SLOW, "closed as its answer went out");
        assert!(rest.starts_with("HTTP/1.1 200 "), "{rest}");
        assert!(
            rest.to_ascii_lowercase().contains("connection: close"),
            "{rest}"
        );
        assert!(closed_cleanly(&ended));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_opened_after_the_stop_is_closed_at_once() {
        let connection = Connection::open();
        connection.stopping.raise();
        let started = Instant::now();
        let (_, ended) = connection.closed().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert!(closed_cleanly(&ended));
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_is_asked_to_close_at_the_idle_timeout() {
        let (client, ended) = Connection::open_http2(Arc::new(Signal::default()));
        let (mut sender, client_connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
                .await
                .unwrap();
        let client_connection = tokio::spawn(client_connection);
        let request = Request::get("http://bridge/healthz")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        drop(response);
        let idle_from = Instant::now();
        let _ = client_connection.await;
        assert!(
            idle_from.elapsed() >= IDLE && idle_from.elapsed() < IDLE + Duration::from_millis(50),
            "{:?}",
            idle_from.elapsed()
        );
        let ended = ended.await.unwrap();
        // Ended by its own close (the client hangs up on the GOAWAY), not dropped after a grace.
        assert!(ended.is_some());
    }

    fn seen(busy: bool, idle_since: Instant, head_since: Option<Instant>) -> Seen {
        Seen {
            busy,
            idle_since,
            head_since,
        }
    }

    const DEADLINES: Deadlines = Deadlines {
        head: HEAD,
        idle: IDLE,
    };

    #[tokio::test(start_paused = true)]
    async fn a_connection_asked_to_close_is_dropped_after_the_grace_unless_a_request_is_in_progress()
     {
        let now = Instant::now();
        let idle = seen(false, now, None);
        assert_eq!(DEADLINES.next(idle, true, now), Next::Drop);
        let busy = seen(true, now, None);
        assert_eq!(
            DEADLINES.next(busy, true, now),
            Next::CheckAt(now + CLOSE_GRACE)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn between_looks_no_deadline_can_pass_unseen() {
        let start = Instant::now();
        let now = start + Duration::from_millis(100);
        // Serving: the next look comes before either deadline of whatever follows.
        assert_eq!(
            DEADLINES.next(seen(true, start, None), false, now),
            Next::CheckAt(now + HEAD)
        );
        let short_idle = Deadlines {
            head: HEAD,
            idle: Duration::from_millis(200),
        };
        assert_eq!(
            short_idle.next(seen(true, start, None), false, now),
            Next::CheckAt(now + Duration::from_millis(200))
        );
        // Idle with no head: at the idle deadline, or sooner, in time for a head's.
        assert_eq!(
            DEADLINES.next(seen(false, start, None), false, now),
            Next::CheckAt(now + HEAD)
        );
        let late = start + IDLE - Duration::from_millis(1);
        assert_eq!(
            DEADLINES.next(seen(false, start, None), false, late),
            Next::CheckAt(start + IDLE)
        );
        assert_eq!(
            DEADLINES.next(seen(false, start, None), false, start + IDLE),
            Next::Close
        );
        // A head: at its deadline from its first byte, whatever the idle one.
        let head_from = start + IDLE - Duration::from_millis(10);
        let waiting = seen(false, start, Some(head_from));
        assert_eq!(
            DEADLINES.next(waiting, false, head_from + HEAD - Duration::from_millis(1)),
            Next::CheckAt(head_from + HEAD)
        );
        assert_eq!(DEADLINES.next(waiting, false, head_from + HEAD), Next::Drop);
    }
}
