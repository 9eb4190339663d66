//! Google Managed Kafka's OAUTHBEARER: the token the bridge presents, checked part by part at
//! the Kafka protocol level (a SASL responder records the SaslAuthenticate bytes), with the
//! access token and email served by a local metadata server.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use pubsub_kafka_bridge::kafka::oauth::GoogleTokenProvider;
use serde_json::{Value, json};
use test_support::metadata::{MetadataServer, SERVICE_ACCOUNT_EMAIL};
use test_support::sasl_responder::SaslResponder;
use test_support::*;

/// The three parts of a GMK token: header, claims (JSON) and the access token (text).
fn gmk_parts(token: &str) -> (Value, Value, String) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    assert!(!token.contains('='), "base64url without padding");
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).expect("base64url");
    (
        serde_json::from_slice(&decode(parts[0])).unwrap(),
        serde_json::from_slice(&decode(parts[1])).unwrap(),
        String::from_utf8(decode(parts[2])).unwrap(),
    )
}

fn assert_gmk_token(token: &str, access_token: &str, email: &str, lifetime: u64) {
    let (header, claims, third) = gmk_parts(token);
    assert_eq!(header, json!({"typ": "JWT", "alg": "GOOG_OAUTH2_TOKEN"}));
    assert_eq!(claims["iss"], "Google");
    assert_eq!(claims["scope"], "kafka");
    assert_eq!(claims["sub"], email);
    let iat = claims["iat"].as_u64().expect("iat is seconds");
    let exp = claims["exp"].as_u64().expect("exp is seconds");
    assert!(iat.abs_diff(now()) <= 5, "iat {iat} is now");
    assert_eq!(exp, iat + lifetime, "exp is the access token's expiry");
    assert_eq!(claims.as_object().unwrap().len(), 5, "{claims}");
    assert_eq!(third, access_token);
}

#[tokio::test]
async fn token_carries_the_metadata_servers_email_and_access_token_and_is_cached() {
    let metadata = MetadataServer::start(3600).await;
    let provider = GoogleTokenProvider::new(&metadata.host(), None);
    let first = provider.token().await.unwrap();
    assert_gmk_token(&first, "ya29.test-token-1", SERVICE_ACCOUNT_EMAIL, 3600);
    assert_eq!(provider.token().await.unwrap(), first, "cached");
    assert_eq!(metadata.requests.load(Ordering::SeqCst), 1);
    assert_eq!(metadata.email_requests.load(Ordering::SeqCst), 1);
    assert_eq!(
        metadata.refused.load(Ordering::SeqCst),
        0,
        "Metadata-Flavor: Google sent on every request"
    );

    // A token living 2 s is refreshed after half its life; the email is read once.
    *metadata.expires_in.lock().unwrap() = 2;
    let short = GoogleTokenProvider::new(&metadata.host(), None);
    let a = short.token().await.unwrap();
    assert_eq!(short.token().await.unwrap(), a);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let b = short.token().await.unwrap();
    assert_ne!(a, b, "refreshed before expiry");
    assert_gmk_token(&b, "ya29.test-token-3", SERVICE_ACCOUNT_EMAIL, 2);
    assert_eq!(
        metadata.email_requests.load(Ordering::SeqCst),
        2,
        "one per provider"
    );
}

#[tokio::test]
async fn principal_override_replaces_the_metadata_email() {
    let metadata = MetadataServer::start(3600).await;
    let provider = GoogleTokenProvider::new(
        &metadata.host(),
        Some("other@p.iam.gserviceaccount.com".into()),
    );
    let token = provider.token().await.unwrap();
    assert_gmk_token(
        &token,
        "ya29.test-token-1",
        "other@p.iam.gserviceaccount.com",
        3600,
    );
    assert_eq!(metadata.email_requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unreachable_metadata_server_is_a_clean_error() {
    let dead = GoogleTokenProvider::new(&format!("127.0.0.1:{}", free_port()), None);
    let error = dead.token().await.unwrap_err().to_string();
    assert!(error.contains("metadata server"), "{error}");
}

/// RFC 7628 client first message: `n,,` GS2 header, then `\x01`-separated `key=value` pairs.
fn bearer_of(auth_bytes: &[u8]) -> String {
    let text = std::str::from_utf8(auth_bytes).unwrap();
    let (gs2, rest) = text.split_once('\x01').expect("GS2 header then kvpairs");
    assert!(gs2.starts_with("n,"), "{text:?}");
    assert!(rest.ends_with("\x01\x01"), "{text:?}");
    let auth = rest
        .split('\x01')
        .find_map(|kv| kv.strip_prefix("auth="))
        .expect("auth=");
    auth.strip_prefix("Bearer ")
        .expect("Bearer scheme")
        .to_owned()
}

#[tokio::test]
async fn bridge_presents_gmks_token_in_the_sasl_handshake() {
    let metadata = MetadataServer::start(3600).await;
    let broker = SaslResponder::start(&["OAUTHBEARER"]).await;
    let mut env = std::collections::HashMap::new();
    for (k, v) in [
        ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap()),
        ("KAFKA_TOPIC", "events".to_owned()),
        ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT".to_owned()),
        ("KAFKA_SASL_MECHANISM", "OAUTHBEARER".to_owned()),
        ("GCE_METADATA_HOST", metadata.host()),
        ("KAFKA_PRODUCE_TIMEOUT_MS", "1000".to_owned()),
        ("OIDC_DISABLED", "true".to_owned()),
    ] {
        env.insert(k.to_owned(), v);
    }
    let app = pubsub_kafka_bridge::Service::new(
        pubsub_kafka_bridge::App::new(pubsub_kafka_bridge::Config::from_map(&env).unwrap())
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while broker.auth_payloads().is_empty() {
        assert!(Instant::now() < deadline, "no SaslAuthenticate received");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exchange = broker
        .exchanges
        .lock()
        .unwrap()
        .iter()
        .find(|e| e.auth_bytes.is_some())
        .cloned()
        .unwrap();
    assert_eq!(exchange.mechanism.as_deref(), Some("OAUTHBEARER"));
    let token = bearer_of(exchange.auth_bytes.as_ref().unwrap());
    assert_gmk_token(&token, "ya29.test-token-1", SERVICE_ACCOUNT_EMAIL, 3600);

    // Refused by the broker: deliveries answer 503 and readiness stays off; nothing crashes.
    let response = app
        .handle(
            http::Request::post("/")
                .body(Bytes::from(
                    envelope(b"x", &[], "m1", "2024-01-01T00:00:00Z", None).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), 503);
    let ready = app
        .handle(http::Request::get("/readyz").body(Bytes::new()).unwrap())
        .await;
    assert_eq!(ready.status(), 503);
}
