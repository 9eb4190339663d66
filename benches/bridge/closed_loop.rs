//! The closed loop every load runs in: callers that each start their next operation when the
//! last one finished, and the rate and latency figures of a run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub(crate) struct Run {
    /// Acknowledged (204) operations per second.
    pub(crate) per_second: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    /// Operations refused (503 overloaded and the like), each retried after a pause.
    pub(crate) refused: usize,
}

fn summarize(elapsed: Duration, mut latencies: Vec<Duration>, refused: usize) -> Run {
    latencies.sort_unstable();
    let at = |q: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1000.0
    };
    Run {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        refused,
    }
}

/// How long a closed loop runs.
#[derive(Clone, Copy)]
pub(crate) enum Until {
    /// This many operations in all.
    Count(usize),
    /// Operations keep starting until this much time has passed.
    Elapsed(Duration),
}

/// Operations from `concurrency` callers, each starting its next one when the last finished
/// (the load shape of Pub/Sub's push window), until `until`. Each caller owns a state made by
/// `caller` (a connection, say), which `op(state, i)` takes and hands back. `op` prepares
/// operation `i` before the clock starts; the future it returns is what is timed, and says
/// whether the operation was acknowledged. A refused one is counted, not timed, and its caller
/// pauses 100 ms before the next (Pub/Sub backs off after a negative ack).
pub(crate) async fn closed_loop<S, F, Fut>(
    concurrency: usize,
    until: Until,
    caller: impl Fn() -> S,
    op: F,
) -> Run
where
    S: Send + 'static,
    F: Fn(S, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (S, bool)> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (op, next, mut state) = (op.clone(), Arc::clone(&next), caller());
            tokio::spawn(async move {
                let (mut latencies, mut refused) = (Vec::new(), 0);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let done = match until {
                        Until::Count(count) => i >= count,
                        Until::Elapsed(limit) => started.elapsed() >= limit,
                    };
                    if done {
                        return (latencies, refused);
                    }
                    let operation = op(state, i);
                    let sent = Instant::now();
                    let acknowledged;
                    (state, acknowledged) = operation.await;
                    if acknowledged {
                        latencies.push(sent.elapsed());
                    } else {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect();
    let (mut latencies, mut refused) = (Vec::new(), 0);
    for w in workers {
        let (mine, theirs) = w.await.unwrap();
        latencies.extend(mine);
        refused += theirs;
    }
    summarize(started.elapsed(), latencies, refused)
}
