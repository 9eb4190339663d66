//! Produce deadlines on timers that are reused from one delivery to the next.
//!
//! A new tokio timer takes the timer driver's lock to enter the wheel when it is first polled
//! and again to leave it when dropped: with the clock read and the entry's setup, about 670
//! instructions of every delivery (callgrind, whole server). A timer still in the wheel whose
//! deadline moves later is updated with one compare-and-swap instead, and the driver files it
//! again only when its old deadline comes round. So a delivery leases a parked timer, moves its
//! deadline to now + `KAFKA_PRODUCE_TIMEOUT_MS`, and the lease parks it again when dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// At most this many timers wait between deliveries (one per delivery in flight at the peak).
const MAX_PARKED: usize = 4096;

/// Timers waiting for the next delivery.
#[derive(Default)]
pub(crate) struct DeadlineTimers {
    parked: Mutex<Vec<Pin<Box<Sleep>>>>,
}

impl std::fmt::Debug for DeadlineTimers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineTimers")
            .field("parked", &self.lock().len())
            .finish()
    }
}

impl DeadlineTimers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Pin<Box<Sleep>>>> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A timer that completes at `deadline`, parked again when the lease is dropped.
    pub(crate) fn lease(&self, deadline: Instant) -> Lease<'_> {
        let parked = self.lock().pop();
        let timer = match parked {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        Lease {
            timers: self,
            timer: Some(timer),
        }
    }

    /// Timers parked now.
    #[cfg(test)]
    fn parked(&self) -> usize {
        self.lock().len()
    }
}

/// One delivery's deadline: a future that completes when it passes.
pub(crate) struct Lease<'a> {
    timers: &'a DeadlineTimers,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Future for Lease<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.timer.as_mut() {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(timer) = self.timer.take() else {
            return;
        };
        let mut parked = self.timers.lock();
        if parked.len() < MAX_PARKED {
            parked.push(timer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_reused_timer_keeps_its_new_deadline_not_its_old_one() {
        let timers = DeadlineTimers::default();
        let start = Instant::now();
        // First lease: a 10 s deadline, given up after 4 s; its timer is parked.
        {
            let lease = timers.lease(start + Duration::from_secs(10));
            assert!(
                tokio::time::timeout(Duration::from_secs(4), lease)
                    .await
                    .is_err()
            );
        }
        assert_eq!(timers.parked(), 1);
        // Reused with a later deadline (14 s from the start): it does not complete at 10 s ...
        let mut lease = timers.lease(Instant::now() + Duration::from_secs(10));
        assert_eq!(timers.parked(), 0);
        assert!(
            tokio::time::timeout_at(start + Duration::from_secs(13), &mut lease)
                .await
                .is_err()
        );
        // ... but at 14 s.
        (&mut lease).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(14));
        drop(lease);
        assert_eq!(timers.parked(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fired_timer_is_reused_with_an_earlier_or_later_deadline() {
        let timers = DeadlineTimers::default();
        let start = Instant::now();
        timers.lease(start + Duration::from_secs(5)).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        let now = Instant::now();
        timers.lease(now + Duration::from_secs(1)).await;
        assert_eq!(Instant::now() - now, Duration::from_secs(1));
        assert_eq!(timers.parked(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_max_parked_timers_are_kept() {
        let timers = DeadlineTimers::default();
        let deadline = Instant::now() + Duration::from_secs(60);
        let leases: Vec<_> = (0..MAX_PARKED + 3)
            .map(|_| timers.lease(deadline))
            .collect();
        drop(leases);
        assert_eq!(timers.parked(), MAX_PARKED);
    }
}
