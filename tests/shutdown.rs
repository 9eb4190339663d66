//! SIGTERM with deliveries in flight: every 204 is in Kafka and the process exits cleanly in time.

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use test_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_200_in_flight_loses_nothing_and_exits_within_10s() {
    let broker = Broker::start().await;
    broker.create_topic("shutdown", 3).await;
    let mut env = bridge_env(&broker, "shutdown", None);
    // Long linger: deliveries are certainly waiting for their batch when SIGTERM lands.
    env.insert("KAFKA_LINGER_MS".into(), "300".into());
    let (mut child, base) = spawn_bridge_process(&env, None).await;
    let client = http_client();
    wait_for_status(&client, &format!("{base}/readyz"), 200).await;

    let sends = tokio::spawn({
        let (client, url) = (client.clone(), format!("{base}/"));
        async move {
            futures_util::stream::iter(0..200)
                .map(|i| {
                    let (client, url) = (client.clone(), url.clone());
                    async move {
                        let id = format!("inflight-{i:03}");
                        let body =
                            envelope(b"x", &[], &id, "2024-01-01T00:00:00Z", None).to_string();
                        (id, post(&client, &url, body, None).await.0)
                    }
                })
                .buffer_unordered(200)
                .collect::<Vec<_>>()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let signalled = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let results = sends.await.unwrap();
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "exit status {exit:?}");

    let acked: Vec<&String> = results
        .iter()
        .filter(|(_, s)| *s == 204)
        .map(|(id, _)| id)
        .collect();
    for (id, status) in &results {
        assert!(matches!(status, 204 | 503 | 0), "{id}: unexpected {status}");
    }
    assert!(
        !acked.is_empty(),
        "in-flight deliveries finish during the drain"
    );
    let stored: std::collections::HashSet<String> =
        broker.message_ids("shutdown").await.into_iter().collect();
    for id in &acked {
        assert!(
            stored.contains(*id),
            "{id} answered 204 but is not in Kafka"
        );
    }
    eprintln!(
        "SIGTERM drain: {} of 200 answered 204, all present in Kafka",
        acked.len()
    );
}

/// A connection that has sent nothing when the server stops is closed at once: it does not
/// hold the shutdown for its head deadline (it held it for the whole grace period before).
#[tokio::test]
async fn a_silent_connection_does_not_hold_the_shutdown() {
    use tokio::io::AsyncReadExt;
    let broker = Broker::start().await;
    broker.create_topic("shutdown", 1).await;
    let mut env = bridge_env(&broker, "shutdown", None);
    env.insert("HTTP_HEADER_READ_TIMEOUT_MS".into(), "20000".into());
    env.insert("SHUTDOWN_TIMEOUT_MS".into(), "8000".into());
    let bridge = Bridge::start(&env).await;
    let mut silent = tokio::net::TcpStream::connect(bridge.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = Instant::now();
    bridge.shutdown().await;
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(1), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the silent connection is closed: {read:?}"
    );
}
