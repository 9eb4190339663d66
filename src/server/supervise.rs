//! Connection supervision: a connection served by hyper is closed when an HTTP/1 request head
//! stalls past its deadline, when it idles past the idle limit, or when the server stops.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::activity::Activity;
use crate::service::Signal;

/// An idle connection asked to close gets this long to do so before it is dropped.
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
#[derive(Clone, Copy)]
pub(crate) struct Deadlines {
    pub(crate) head: Duration,
    pub(crate) idle: Duration,
}

/// Polls `connection` to its end under its deadlines and the server's stop: its own result
/// when it ended, `None` when it was dropped (a stalled head, or the close grace over).
///
/// One timer serves the head deadline, the idle limit and, once closing, the grace before a
/// drop. It is armed for a head only when a poll ends with part of one read and not the rest
/// (the common request arrives whole and never touches it), and it and the stop signal are
/// polled once when armed, which registers this task for their wake-up; every other wake-up
/// (each request wakes the connection several times) reads only flags.
pub(crate) async fn supervise(
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
