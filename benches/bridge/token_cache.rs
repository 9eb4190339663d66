//! What token verification costs per delivery: a new token (an RSA signature check) against a
//! reused one (the verifier's cache).

use std::time::Instant;

use test_support::{AUDIENCE, JwksServer, PUSH_EMAIL, google_claims, key, mint, now};

/// Verification cost per delivery: one token reused (cached) vs a new token each time (RSA verify).
pub(crate) async fn token_cache(jwks: &JwksServer) -> (f64, f64) {
    let verifier =
        pubsub_kafka_bridge::auth::Verifier::new(pubsub_kafka_bridge::auth::settings::OidcConfig {
            audience: AUDIENCE.into(),
            allowed_emails: Some(vec![PUSH_EMAIL.into()]),
            trust_cloud_run_iam: false,
            jwks_url: jwks.url.parse().unwrap(),
            issuers: vec!["https://accounts.google.com".into()],
            leeway_seconds: 30,
            jwks_ca_location: None,
        })
        .unwrap();
    verifier.warm_up().await.unwrap();
    let distinct: Vec<String> = (0..300)
        .map(|n| {
            let mut claims = google_claims();
            claims["jti"] = n.into();
            format!("Bearer {}", mint(&key(1), &claims))
        })
        .collect();
    let started = Instant::now();
    for token in &distinct {
        verifier
            .verify(Some(token.as_bytes()), now())
            .await
            .unwrap();
    }
    let uncached = started.elapsed().as_secs_f64() * 1e6 / distinct.len() as f64;
    let reused = &distinct[0];
    let n = 20_000;
    let started = Instant::now();
    for _ in 0..n {
        verifier
            .verify(Some(reused.as_bytes()), now())
            .await
            .unwrap();
    }
    let cached = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    (uncached, cached)
}
