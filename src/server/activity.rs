//! What one connection is doing, as its supervision needs to know: requests in progress, since
//! when it has had none, and (HTTP/1) whether part of a request head is waiting for the rest.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::heads;

/// Requests in progress on one connection, since when it has had none, and (HTTP/1) whether
/// part of a request head has arrived whose request has not begun.
pub(crate) struct Activity {
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
pub(crate) struct Busy(Arc<Activity>);

impl Activity {
    pub(crate) fn new(http1: bool) -> Self {
        Self {
            busy: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
            heads: http1.then(|| Mutex::new(heads::Heads::new())),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    /// A request begins, its body framed by `body_length` (`None`: no length, chunked).
    pub(crate) fn begin(this: &Arc<Self>, body_length: Option<u64>) -> Busy {
        this.busy.fetch_add(1, Ordering::AcqRel);
        this.begun.fetch_add(1, Ordering::Relaxed);
        if let Some(heads) = &this.heads {
            lock(heads).begin(body_length);
        }
        Busy(Arc::clone(this))
    }

    pub(crate) fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire) > 0
    }

    pub(crate) fn requests(&self) -> u64 {
        self.begun.load(Ordering::Relaxed)
    }

    /// `bytes` arrived (HTTP/1): some may start the next request's head.
    pub(crate) fn bytes_read(&self, bytes: &[u8]) {
        if let Some(heads) = &self.heads {
            lock(heads).read(bytes);
        }
    }

    /// Whether no request is in progress and part of a head may have arrived.
    pub(crate) fn awaits_head(&self) -> bool {
        !self.is_busy() && self.heads.as_ref().is_some_and(|h| lock(h).awaits_head())
    }

    /// When the connection will have idled for `timeout` (a moment from now while busy).
    pub(crate) fn idle_deadline(&self, timeout: Duration) -> Instant {
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
    use super::*;

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
