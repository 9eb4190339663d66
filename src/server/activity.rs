//! What one connection is doing, as its supervision needs to know: requests in progress, since
//! when it has had none, and (HTTP/1) since when part of a request head has waited for the rest.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::heads::Heads;

/// One connection's activity. HTTP/2 runs each request in a task of its own, so requests
/// begin and end on other threads than the connection's: hence the lock (never held across
/// an await, and uncontended on HTTP/1, where everything happens on the connection's task).
pub(crate) struct Activity {
    inner: Mutex<Inner>,
}

struct Inner {
    in_progress: usize,
    /// Where the HTTP/1 reads stand among heads and bodies; `None` for HTTP/2, whose heads
    /// are frames that hyper times by its own keep-alive.
    heads: Option<Heads>,
    idle_since: Instant,
    /// When part of a head whose request has not begun was first seen with none in progress.
    head_since: Option<Instant>,
}

/// What a connection is doing at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) busy: bool,
    /// When no request is in progress: since when the connection has had none.
    pub(crate) idle_since: Instant,
    /// When no request is in progress: since when part of a head has waited for the rest.
    pub(crate) head_since: Option<Instant>,
}

/// Marks one request in progress until dropped.
pub(crate) struct Busy(Arc<Activity>);

impl Activity {
    /// A connection just opened (`http1`: whose heads are to be timed).
    pub(crate) fn new(http1: bool) -> Self {
        Self {
            inner: Mutex::new(Inner {
                in_progress: 0,
                heads: http1.then(Heads::new),
                idle_since: Instant::now(),
                head_since: None,
            }),
        }
    }

    /// A request begins, its body framed by `body_length` (`None`: no length, chunked).
    pub(crate) fn begin(this: &Arc<Self>, body_length: Option<u64>) -> Busy {
        let mut inner = this.lock();
        inner.in_progress += 1;
        inner.head_since = None;
        if let Some(heads) = &mut inner.heads {
            heads.begin(body_length);
        }
        drop(inner);
        Busy(Arc::clone(this))
    }

    /// `bytes` arrived (HTTP/1): some may start the next request's head.
    pub(crate) fn bytes_read(&self, bytes: &[u8]) {
        let mut inner = self.lock();
        let Some(heads) = &mut inner.heads else {
            return;
        };
        heads.read(bytes);
        let head_waits = heads.awaits_head();
        if inner.in_progress == 0 && inner.head_since.is_none() && head_waits {
            inner.head_since = Some(Instant::now());
        }
    }

    /// What the connection is doing now.
    pub(crate) fn seen(&self) -> Seen {
        let inner = self.lock();
        let busy = inner.in_progress > 0;
        Seen {
            busy,
            idle_since: inner.idle_since,
            head_since: inner.head_since.filter(|_| !busy),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.in_progress -= 1;
        if inner.in_progress == 0 {
            let now = Instant::now();
            inner.idle_since = now;
            // Bytes read with the request just ended may have begun the next head.
            if inner.heads.as_ref().is_some_and(Heads::awaits_head) {
                inner.head_since = Some(now);
            }
        }
    }
}

/// An HTTP/1 connection's socket, showing its [`Activity`] every byte read: where a request
/// head starts, it then has `HTTP_HEADER_READ_TIMEOUT_MS`.
pub(crate) struct HeadWatch<S> {
    stream: S,
    activity: Arc<Activity>,
}

impl<S> HeadWatch<S> {
    pub(crate) fn new(stream: S, activity: Arc<Activity>) -> Self {
        Self { stream, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadWatch<S> {
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

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadWatch<S> {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_head_is_timed_from_bytes_between_requests_until_its_request_begins() {
        let activity = Arc::new(Activity::new(true));
        let opened = Instant::now();
        assert_eq!(activity.seen().head_since, None);
        tokio::time::advance(Duration::from_secs(1)).await;
        activity.bytes_read(b"POST / HTTP/1.1\r\n");
        let head_from = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        activity.bytes_read(b"Content-Length: 4\r\n\r\n");
        let seen = activity.seen();
        assert_eq!(
            seen.head_since,
            Some(head_from),
            "timed from its first bytes"
        );
        assert_eq!(seen.idle_since, opened);
        assert!(!seen.busy);
        let busy = Activity::begin(&activity, Some(4));
        assert!(activity.seen().busy);
        assert_eq!(activity.seen().head_since, None);
        // Body bytes, read while the request is in progress, start no head.
        activity.bytes_read(b"body");
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(busy);
        let seen = activity.seen();
        assert_eq!((seen.busy, seen.head_since), (false, None));
        assert_eq!(
            seen.idle_since,
            Instant::now(),
            "idle from the request's end"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        activity.bytes_read(b"P");
        assert_eq!(activity.seen().head_since, Some(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_read_with_the_request_before_it_is_timed_from_that_requests_end() {
        let activity = Arc::new(Activity::new(true));
        activity.bytes_read(b"GET / HTTP/1.1\r\n\r\nGET /h");
        let busy = Activity::begin(&activity, Some(0));
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(busy);
        assert_eq!(activity.seen().head_since, Some(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_connection_is_idle_only_when_its_last_request_ends() {
        let activity = Arc::new(Activity::new(false));
        let first = Activity::begin(&activity, None);
        let second = Activity::begin(&activity, None);
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(first);
        assert!(activity.seen().busy);
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(second);
        let seen = activity.seen();
        assert!(!seen.busy);
        assert_eq!(seen.idle_since, Instant::now());
    }

    #[test]
    fn http2_connections_never_await_a_head() {
        let activity = Arc::new(Activity::new(false));
        activity.bytes_read(b"P");
        assert_eq!(activity.seen().head_since, None);
        drop(Activity::begin(&activity, None));
        assert_eq!(activity.seen().head_since, None);
    }
}
