//! Push-token verification against a real JWKS endpoint with real RSA keys.

use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use test_support::*;

struct Setup {
    broker: Broker,
    jwks: JwksServer,
    bridge: Bridge,
    client: HttpClient,
}

async fn setup(topic: &str, allowed: Option<&str>) -> Setup {
    let broker = Broker::start().await;
    broker.create_topic(topic, 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let mut env = bridge_env(&broker, topic, Some(&jwks));
    if let Some(allowed) = allowed {
        env.insert("OIDC_ALLOWED_EMAILS".into(), allowed.into());
    }
    let bridge = Bridge::start(&env).await;
    Setup {
        broker,
        jwks,
        bridge,
        client: http_client(),
    }
}

fn body(id: &str) -> String {
    envelope(b"hello", &[], id, "2024-01-01T00:00:00Z", None).to_string()
}

fn with(claims: &[(&str, Value)]) -> Value {
    let mut c = google_claims();
    for (k, v) in claims {
        c[*k] = v.clone();
    }
    c
}

/// Push claims issued now that live `seconds` (`exp - iat`); one clock reading for both.
fn lifetime(seconds: u64) -> Value {
    let issued = now();
    with(&[("iat", json!(issued)), ("exp", json!(issued + seconds))])
}

/// Push claims without `iat` (every Google ID token has one).
fn without_iat() -> Value {
    let mut claims = google_claims();
    claims.as_object_mut().unwrap().remove("iat");
    claims
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// `token` with its claims swapped for an attacker's email, header and signature kept.
fn tampered(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let forged = with(&[("email", json!("attacker@evil.example"))]);
    format!("{}.{}.{}", parts[0], b64(&forged), parts[2])
}

#[tokio::test]
async fn token_cases_answer_as_the_contract_says() {
    let s = setup("tokens", None).await;
    let valid = mint(&key(1), &google_claims());
    let tampered = tampered(&valid);
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "key1", "typ": "JWT"})),
        b64(&google_claims())
    );
    let hs256_with_public_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("key1".into());
        jsonwebtoken::encode(
            &header,
            &google_claims(),
            &EncodingKey::from_secret(key(1).public_pem),
        )
        .unwrap()
    };
    let no_kid = {
        let header = Header::new(Algorithm::RS256);
        jsonwebtoken::encode(
            &header,
            &google_claims(),
            &EncodingKey::from_rsa_pem(include_bytes!("data/keys/key1.pem")).unwrap(),
        )
        .unwrap()
    };
    let cases: Vec<(&str, Option<String>, u16)> = vec![
        ("valid", Some(valid.clone()), 204),
        (
            "issuer without scheme",
            Some(mint(
                &key(1),
                &with(&[("iss", json!("accounts.google.com"))]),
            )),
            204,
        ),
        (
            "expired",
            Some(mint(&key(1), &with(&[("exp", json!(now() - 3600))]))),
            401,
        ),
        (
            "wrong audience",
            Some(mint(
                &key(1),
                &with(&[("aud", json!("https://other.example"))]),
            )),
            401,
        ),
        (
            "wrong issuer",
            Some(mint(
                &key(1),
                &with(&[("iss", json!("https://evil.example"))]),
            )),
            401,
        ),
        (
            "no exp",
            Some(mint(&key(1), &{
                let mut c = google_claims();
                c.as_object_mut().unwrap().remove("exp");
                c
            })),
            401,
        ),
        (
            "lives an hour and the leeway",
            Some(mint(&key(1), &lifetime(3_600 + 30))),
            204,
        ),
        (
            "lives a second longer",
            Some(mint(&key(1), &lifetime(3_600 + 31))),
            401,
        ),
        (
            "lives ten years",
            Some(mint(&key(1), &lifetime(10 * 365 * 86_400))),
            401,
        ),
        ("no iat", Some(mint(&key(1), &without_iat())), 401),
        ("alg none", Some(alg_none), 401),
        (
            "HS256 signed with the public key",
            Some(hs256_with_public_key),
            401,
        ),
        ("unknown kid", Some(mint(&key(2), &google_claims())), 401),
        ("no kid", Some(no_kid), 401),
        ("tampered payload", Some(tampered), 401),
        ("not a JWT", Some("not-a-token".into()), 401),
        ("missing header", None, 401),
    ];
    for (name, token, expected) in cases {
        let (status, text) = post(&s.client, &s.bridge.url(), body(name), token.as_deref()).await;
        assert_eq!(status, expected, "{name}: {text}");
        if let Some(token) = &token {
            assert!(
                !text.contains(token.as_str()),
                "{name}: error body echoes the token"
            );
        }
    }
    let basic = http::Request::post(s.bridge.url())
        .header("authorization", "Basic dXNlcjpwYXNz")
        .body(http_body_util::Full::new(bytes::Bytes::from(body("basic"))))
        .unwrap();
    assert_eq!(send(&s.client, basic).await.0, 401);
    let records = s.broker.read_all("tokens").await;
    let ids: Vec<String> = records
        .iter()
        .filter_map(|r| r.header("pubsub.message_id"))
        .collect();
    assert_eq!(
        ids,
        vec![
            "valid",
            "issuer without scheme",
            "lives an hour and the leeway"
        ],
        "only verified deliveries reach Kafka"
    );
}

#[tokio::test]
async fn email_allow_list_hit_and_miss() {
    let s = setup(
        "emails",
        Some(&format!("other@x.iam.gserviceaccount.com, {PUSH_EMAIL}")),
    )
    .await;
    let hit = mint(&key(1), &google_claims());
    let miss = mint(
        &key(1),
        &with(&[("email", json!("intruder@x.iam.gserviceaccount.com"))]),
    );
    let unverified = mint(&key(1), &with(&[("email_verified", json!(false))]));
    assert_eq!(
        post(&s.client, &s.bridge.url(), body("hit"), Some(&hit))
            .await
            .0,
        204
    );
    assert_eq!(
        post(&s.client, &s.bridge.url(), body("miss"), Some(&miss))
            .await
            .0,
        403
    );
    assert_eq!(
        post(
            &s.client,
            &s.bridge.url(),
            body("unverified"),
            Some(&unverified)
        )
        .await
        .0,
        403
    );
    assert_eq!(s.broker.read_all("emails").await.len(), 1);
}

#[tokio::test]
async fn key_rotated_in_after_startup_is_fetched_once() {
    let s = setup("rotation", None).await;
    let first = mint(&key(1), &google_claims());
    assert_eq!(
        post(&s.client, &s.bridge.url(), body("before"), Some(&first))
            .await
            .0,
        204
    );
    let hits_before = s.jwks.hits.load(Ordering::SeqCst);
    // Rate limit: the kid-miss refresh of the previous setup may have happened < 5 s ago.
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    s.jwks.serve(&[key(1), key(3)]);
    let rotated = mint(&key(3), &google_claims());
    assert_eq!(
        post(&s.client, &s.bridge.url(), body("rotated"), Some(&rotated))
            .await
            .0,
        204
    );
    assert_eq!(
        s.jwks.hits.load(Ordering::SeqCst),
        hits_before + 1,
        "one refresh for the new kid"
    );
    // Unknown kids right after do not hammer the endpoint.
    for n in 0..5 {
        let unknown = mint(&key(2), &with(&[("jti", json!(n))]));
        assert_eq!(
            post(&s.client, &s.bridge.url(), body("unknown"), Some(&unknown))
                .await
                .0,
            401
        );
    }
    assert_eq!(
        s.jwks.hits.load(Ordering::SeqCst),
        hits_before + 1,
        "kid misses are rate limited"
    );
}

#[tokio::test]
async fn cached_keys_keep_working_while_the_jwks_endpoint_is_down() {
    let mut s = setup("jwks-down", None).await;
    let token = mint(&key(1), &google_claims());
    assert_eq!(
        post(&s.client, &s.bridge.url(), body("warm"), Some(&token))
            .await
            .0,
        204
    );
    s.jwks.stop();
    let fresh = mint(&key(1), &with(&[("jti", json!("new token"))]));
    assert_eq!(
        post(&s.client, &s.bridge.url(), body("down"), Some(&fresh))
            .await
            .0,
        204
    );
    assert_eq!(s.broker.read_all("jwks-down").await.len(), 2);
}

#[tokio::test]
async fn a_verified_token_is_checked_once_and_then_served_from_cache() {
    let s = setup("token-cache", None).await;
    let token = mint(&key(1), &google_claims());
    for n in 0..20 {
        assert_eq!(
            post(
                &s.client,
                &s.bridge.url(),
                body(&format!("m{n}")),
                Some(&token)
            )
            .await
            .0,
            204
        );
    }
    // One token verified → one cache entry, however many deliveries used it.
    let hits = s.jwks.hits.load(Ordering::SeqCst);
    assert!(hits <= 2, "JWKS fetched {hits} times");
    let verified = |s: &Setup| {
        let (client, url) = (s.client.clone(), format!("{}metrics", s.bridge.url()));
        async move {
            let (_, text) = get(&client, &url).await;
            text.lines()
                .find_map(|l| l.strip_prefix("pubsub_kafka_bridge_verified_tokens "))
                .map(|v| v.parse::<u64>().unwrap())
        }
    };
    assert_eq!(verified(&s).await, Some(1));
    let other = mint(&key(1), &with(&[("jti", json!("second token"))]));
    let (status, _) = post(&s.client, &s.bridge.url(), body("m20"), Some(&other)).await;
    assert_eq!(status, 204);
    assert_eq!(verified(&s).await, Some(2));
    // A refused token is not cached as verified.
    let (status, _) = post(
        &s.client,
        &s.bridge.url(),
        body("m21"),
        Some(&tampered(&other)),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(verified(&s).await, Some(2));
    assert_eq!(s.broker.read_all("token-cache").await.len(), 21);
}

#[tokio::test]
async fn keys_fetched_at_startup_serve_when_the_jwks_endpoint_is_gone_by_the_first_delivery() {
    let mut s = setup("warm-up", None).await;
    s.bridge.service.app().warm_up().await;
    s.jwks.stop();
    let token = mint(&key(1), &google_claims());
    let (status, text) = post(&s.client, &s.bridge.url(), body("first"), Some(&token)).await;
    assert_eq!(status, 204, "{text}");
    assert_eq!(s.broker.read_all("warm-up").await.len(), 1);
}

#[tokio::test]
async fn keys_come_over_https_from_an_endpoint_signed_by_a_private_ca() {
    let dir = std::env::temp_dir().join(format!(
        "pkb-jwks-tls-{}-{}",
        std::process::id(),
        free_port()
    ));
    let ca = test_support::tls::TestCa::new(&dir, "jwks-ca");
    let jwks = JwksServer::start(&[key(1)]).await;
    let jwks_port: u16 = jwks
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let tls_port = free_port();
    test_support::tls::tls_proxy(tls_port, jwks_port, ca.issue("jwks", &["localhost"]), None).await;
    let broker = Broker::start().await;
    broker.create_topic("jwks-https", 1).await;
    let mut env = bridge_env(&broker, "jwks-https", Some(&jwks));
    env.insert(
        "OIDC_JWKS_URL".into(),
        format!("https://localhost:{tls_port}/oauth2/v3/certs"),
    );
    env.insert("OIDC_JWKS_CA_LOCATION".into(), ca.path("jwks-ca.pem"));
    let bridge = Bridge::start(&env).await;
    let token = mint(&key(1), &google_claims());
    let (status, text) = post(
        &http_client(),
        &bridge.url(),
        body("https-keys"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 204, "{text}");
    assert!(
        jwks.hits.load(Ordering::SeqCst) >= 1,
        "keys fetched through TLS"
    );

    // The bundled public roots do not trust the private CA: no keys, so no delivery.
    env.remove("OIDC_JWKS_CA_LOCATION");
    let untrusting = Bridge::start(&env).await;
    let (status, _) = post(
        &http_client(),
        &untrusting.url(),
        body("untrusted-keys"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 503, "keys unavailable");
    assert_eq!(broker.read_all("jwks-https").await.len(), 1);
}

/// The token as Cloud Run forwards it after verifying it itself: the signature part replaced by
/// `SIGNATURE_REMOVED_BY_GOOGLE` (../shared/PUBSUB-PUSH.md, "Behind Cloud Run IAM").
fn signature_removed(token: &str) -> String {
    let (signed, _) = token.rsplit_once('.').unwrap();
    format!("{signed}.SIGNATURE_REMOVED_BY_GOOGLE")
}

fn unsigned(claims: &Value) -> String {
    signature_removed(&mint(&key(1), claims))
}

#[tokio::test]
async fn behind_cloud_run_iam_the_claims_of_a_signature_removed_token_decide() {
    let broker = Broker::start().await;
    broker.create_topic("cloud-run-iam", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let mut env = bridge_env(&broker, "cloud-run-iam", Some(&jwks));
    env.insert("OIDC_TRUST_CLOUD_RUN_IAM".into(), "true".into());
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let valid = mint(&key(1), &google_claims());
    let tampered = tampered(&valid);
    let alg_none = format!(
        "{}.{}.SIGNATURE_REMOVED_BY_GOOGLE",
        b64(&json!({"alg": "none", "kid": "key1", "typ": "JWT"})),
        b64(&google_claims())
    );
    let cases: Vec<(&str, String, u16)> = vec![
        ("removed: valid", signature_removed(&valid), 204),
        (
            "removed: expired within the leeway",
            unsigned(&with(&[("exp", json!(now() - 10))])),
            204,
        ),
        (
            "removed: unknown kid needs no key",
            signature_removed(&mint(&key(2), &google_claims())),
            204,
        ),
        (
            "removed: wrong audience",
            unsigned(&with(&[("aud", json!("https://other.example"))])),
            401,
        ),
        (
            "removed: wrong issuer",
            unsigned(&with(&[("iss", json!("https://evil.example"))])),
            401,
        ),
        (
            "removed: expired",
            unsigned(&with(&[("exp", json!(now() - 3600))])),
            401,
        ),
        (
            "removed: issued in the future",
            unsigned(&with(&[("iat", json!(now() + 600))])),
            401,
        ),
        ("removed: alg none", alg_none, 401),
        (
            "removed: lives ten years",
            unsigned(&lifetime(10 * 365 * 86_400)),
            401,
        ),
        ("removed: no iat", unsigned(&without_iat()), 401),
        (
            "removed: email not allowed",
            unsigned(&with(&[(
                "email",
                json!("other@x.iam.gserviceaccount.com"),
            )])),
            403,
        ),
        (
            "removed: email not verified",
            unsigned(&with(&[("email_verified", json!(false))])),
            403,
        ),
        ("signed: valid", valid.clone(), 204),
        ("signed: tampered payload", tampered, 401),
        (
            "signed: unknown key",
            mint(&key(2), &with(&[("jti", json!("k2"))])),
            401,
        ),
        (
            "signed: not allowed",
            mint(
                &key(1),
                &with(&[("email", json!("other@x.iam.gserviceaccount.com"))]),
            ),
            403,
        ),
    ];
    let mut accepted = Vec::new();
    for (name, token, expected) in &cases {
        let (status, text) = post(&client, &bridge.url(), body(name), Some(token)).await;
        assert_eq!(status, *expected, "{name}: {text}");
        if *expected == 204 {
            accepted.push(name.to_string());
        }
    }
    let records = broker.read_all("cloud-run-iam").await;
    let ids: Vec<String> = records
        .iter()
        .filter_map(|r| r.header("pubsub.message_id"))
        .collect();
    assert_eq!(ids, accepted, "exactly the accepted deliveries reach Kafka");
}

#[tokio::test]
async fn without_trusting_cloud_run_iam_a_signature_removed_token_is_a_forgery() {
    let s = setup("no-cloud-run-iam", None).await;
    let token = signature_removed(&mint(&key(1), &google_claims()));
    let (status, text) = post(&s.client, &s.bridge.url(), body("forged"), Some(&token)).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("signature_removed"), "{text}");
    assert!(!text.contains(&token));
    // X-Serverless-Authorization means something only behind Cloud Run IAM: it is not read.
    let signed = mint(&key(1), &google_claims());
    let x = X_SERVERLESS_AUTHORIZATION;
    let (status, text) = post_with_headers(
        &s.client,
        &s.bridge.url(),
        "x-only",
        &[(x, bearer(&signed))],
    )
    .await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("missing_authorization"), "{text}");
    let beside = [(x, bearer(&token)), ("authorization", bearer(&signed))];
    let (status, text) = post_with_headers(&s.client, &s.bridge.url(), "signed", &beside).await;
    assert_eq!(status, 204, "{text}");
    let ids: Vec<String> = s
        .broker
        .read_all("no-cloud-run-iam")
        .await
        .iter()
        .filter_map(|r| r.header("pubsub.message_id"))
        .collect();
    assert_eq!(
        ids,
        vec!["signed"],
        "only the signed Authorization was accepted"
    );
}

/// Header lines of a request, in order, repeats kept.
type Head<'a> = Vec<(&'a str, String)>;

/// POSTs a push whose head carries exactly `headers` (in order, repeats kept), as Cloud Run's
/// front end forwards them to the container.
async fn post_with_headers(
    client: &HttpClient,
    url: &str,
    id: &str,
    headers: &[(&str, String)],
) -> (u16, String) {
    let mut request = http::Request::post(url).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(body(id))))
        .unwrap();
    send(client, request).await
}

/// The header Cloud Run accepts an ID token in besides `Authorization`.
const X_SERVERLESS_AUTHORIZATION: &str = "x-serverless-authorization";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A caller Cloud Run admits (`run.invoker`, or a project Owner, Editor or Run Admin) who is not
/// the push account: a genuine Google token for the service's audience, of another email.
fn invoker_claims() -> Value {
    with(&[(
        "email",
        json!("invoker@other-project.iam.gserviceaccount.com"),
    )])
}

/// Cloud Run checks `X-Serverless-Authorization` before `Authorization` when both are present,
/// removes the signature of the token it verified and forwards `Authorization` untouched
/// (cloud.google.com/run/docs/authenticating/service-to-service#acquire-token). Each case is the
/// head Cloud Run would forward for what the caller sent.
#[tokio::test]
async fn behind_cloud_run_iam_only_the_header_cloud_run_verified_may_skip_the_signature() {
    let broker = Broker::start().await;
    broker.create_topic("cloud-run-headers", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let mut env = bridge_env(&broker, "cloud-run-headers", Some(&jwks));
    env.insert("OIDC_TRUST_CLOUD_RUN_IAM".into(), "true".into());
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let push_removed = signature_removed(&mint(&key(1), &google_claims()));
    let push_signed = mint(&key(1), &with(&[("jti", json!("signed"))]));
    let invoker_removed = signature_removed(&mint(&key(1), &invoker_claims()));
    // Hand-written claims of the push account: the signature part Cloud Run would have put there,
    // no key ever involved.
    let forged_push = format!(
        "{}.{}.SIGNATURE_REMOVED_BY_GOOGLE",
        b64(&json!({"alg": "RS256", "kid": "key1", "typ": "JWT"})),
        b64(&google_claims())
    );
    let x = X_SERVERLESS_AUTHORIZATION;
    let cases: Vec<(&str, Head<'_>, u16, &str)> = vec![
        (
            "attack: own token verified by Cloud Run, forged push claims in Authorization",
            vec![
                (x, bearer(&invoker_removed)),
                ("authorization", bearer(&forged_push)),
            ],
            401,
            "unverified_signature_removed",
        ),
        (
            "attack: the push account's own stripped token replayed in Authorization",
            vec![
                (x, bearer(&invoker_removed)),
                ("authorization", bearer(&push_removed)),
            ],
            401,
            "unverified_signature_removed",
        ),
        (
            "attack: a valid signed push token beside the invoker's: the verified header decides",
            vec![
                (x, bearer(&invoker_removed)),
                ("authorization", bearer(&push_signed)),
            ],
            403,
            "email_not_allowed",
        ),
        (
            "attack: Authorization twice, forged first",
            vec![
                ("authorization", bearer(&forged_push)),
                ("authorization", bearer(&invoker_removed)),
            ],
            401,
            "repeated_authorization",
        ),
        (
            "attack: X-Serverless-Authorization twice, forged first",
            vec![(x, bearer(&forged_push)), (x, bearer(&invoker_removed))],
            401,
            "repeated_authorization",
        ),
        (
            "only Authorization, stripped (a Pub/Sub push)",
            vec![("authorization", bearer(&push_removed))],
            204,
            "",
        ),
        (
            "only X-Serverless-Authorization, stripped",
            vec![(x, bearer(&push_removed))],
            204,
            "",
        ),
        (
            "X-Serverless-Authorization stripped, the application's own Authorization beside it",
            vec![
                (x, bearer(&push_removed)),
                ("authorization", "Basic dXNlcjpwYXNz".into()),
            ],
            204,
            "",
        ),
        (
            "X-Serverless-Authorization stripped, an opaque bearer token beside it",
            vec![
                (x, bearer(&push_removed)),
                ("authorization", bearer("app-session-token")),
            ],
            204,
            "",
        ),
        (
            "X-Serverless-Authorization of another account: the allow-list applies to it",
            vec![(x, bearer(&invoker_removed))],
            403,
            "email_not_allowed",
        ),
        (
            "X-Serverless-Authorization of another account, the application's Authorization beside",
            vec![
                (x, bearer(&invoker_removed)),
                ("authorization", "Basic dXNlcjpwYXNz".into()),
            ],
            403,
            "email_not_allowed",
        ),
        (
            "X-Serverless-Authorization signed: verified in full",
            vec![(x, bearer(&push_signed))],
            204,
            "",
        ),
        (
            "X-Serverless-Authorization signed but tampered: verified in full",
            vec![(x, bearer(&tampered(&push_signed)))],
            401,
            "invalid_token",
        ),
        (
            "X-Serverless-Authorization stripped but expired",
            vec![(x, bearer(&unsigned(&with(&[("exp", json!(now() - 3600))]))))],
            401,
            "invalid_token",
        ),
        (
            "X-Serverless-Authorization not Bearer, a signed push token beside it",
            vec![
                (x, "Basic dXNlcjpwYXNz".into()),
                ("authorization", bearer(&push_signed)),
            ],
            401,
            "not_bearer",
        ),
    ];
    let mut accepted = Vec::new();
    for (n, (name, headers, expected, code)) in cases.iter().enumerate() {
        let id = format!("case-{n}");
        let (status, text) = post_with_headers(&client, &bridge.url(), &id, headers).await;
        assert_eq!(status, *expected, "{name}: {text}");
        assert!(text.contains(code), "{name}: {text}");
        for (_, value) in headers {
            let token = value.trim_start_matches("Bearer ");
            assert!(!text.contains(token), "{name}: error body echoes a token");
        }
        if *expected == 204 {
            accepted.push(id);
        }
    }
    let records = broker.read_all("cloud-run-headers").await;
    let ids: Vec<String> = records
        .iter()
        .filter_map(|r| r.header("pubsub.message_id"))
        .collect();
    assert_eq!(ids, accepted, "exactly the accepted deliveries reach Kafka");
}

/// Google's ID tokens live one hour; a signed token that claims ten years (or hides its `iat`)
/// was not minted as a push token and would outlive every real one.
#[tokio::test]
async fn a_token_that_outlives_google_s_hour_is_refused_with_its_reason() {
    let s = setup("token-lifetime", None).await;
    for (name, claims, reason) in [
        (
            "ten years",
            lifetime(10 * 365 * 86_400),
            "lifetime exceeds one hour",
        ),
        ("no iat", without_iat(), "no iat"),
    ] {
        let token = mint(&key(1), &claims);
        let (status, text) = post(&s.client, &s.bridge.url(), body(name), Some(&token)).await;
        assert_eq!(status, 401, "{name}: {text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["error"], "invalid_token", "{name}: {text}");
        assert!(
            answer["message"].as_str().unwrap().contains(reason),
            "{name}: {text}"
        );
    }
    let hour = mint(&key(1), &lifetime(3_600));
    assert_eq!(
        post(&s.client, &s.bridge.url(), body("an hour"), Some(&hour))
            .await
            .0,
        204
    );
    let ids: Vec<String> = s
        .broker
        .read_all("token-lifetime")
        .await
        .iter()
        .filter_map(|r| r.header("pubsub.message_id"))
        .collect();
    assert_eq!(ids, vec!["an hour"]);
}

/// On an unwrapped push every header that is not transport becomes a record header; the
/// credential Cloud Run verified is transport, like `Authorization`, and never reaches Kafka.
#[tokio::test]
async fn an_unwrapped_push_never_writes_x_serverless_authorization_into_kafka() {
    let broker = Broker::start().await;
    broker.create_topic("cloud-run-unwrapped", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let mut env = bridge_env(&broker, "cloud-run-unwrapped", Some(&jwks));
    env.insert("OIDC_TRUST_CLOUD_RUN_IAM".into(), "true".into());
    let bridge = Bridge::start(&env).await;
    let push = signature_removed(&mint(&key(1), &google_claims()));
    let request = http::Request::post(bridge.url())
        .header("content-type", "application/octet-stream")
        .header("x-goog-pubsub-message-id", "unwrapped-1")
        .header("x-goog-pubsub-publish-time", "2024-01-01T00:00:00Z")
        .header(
            "x-goog-pubsub-subscription-name",
            "projects/test-project/subscriptions/bridge-sub",
        )
        .header("colour", "blue")
        .header(X_SERVERLESS_AUTHORIZATION, bearer(&push))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"raw")))
        .unwrap();
    let (status, text) = send(&http_client(), request).await;
    assert_eq!(status, 204, "{text}");
    let records = broker.read_all("cloud-run-unwrapped").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].header("colour").as_deref(), Some("blue"));
    assert_eq!(records[0].header(X_SERVERLESS_AUTHORIZATION), None);
    assert_eq!(records[0].header("authorization"), None);
}
