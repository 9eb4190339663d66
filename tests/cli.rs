//! The command line as an operator meets it: `--help` and `--version`, every configuration
//! error at once, docs/configuration.md's `-h` block and table against the real settings, and `check` against tansu, a
//! local JWKS endpoint and a local schema registry, passing and failing.

use std::collections::{BTreeSet, HashMap};
use std::process::{Command, Output};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use test_support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_pubsub-kafka-bridge");

fn run(args: &[&str], env: &HashMap<String, String>) -> Output {
    Command::new(BINARY)
        .args(args)
        .env_clear()
        .envs(env)
        .output()
        .unwrap()
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8(output.stdout.clone()).unwrap(),
        String::from_utf8(output.stderr.clone()).unwrap(),
    )
}

fn settings_reference() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap()
}

#[test]
fn help_and_version_answer_without_any_setting() {
    let version = run(&["--version"], &HashMap::new());
    assert!(version.status.success());
    assert_eq!(
        text(&version).0,
        format!("pubsub-kafka-bridge {}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = run(&["--help"], &HashMap::new());
    assert!(help.status.success());
    let (out, _) = text(&help);
    for expected in [
        "Usage: pubsub-kafka-bridge",
        "check",
        "[env: KAFKA_TOPIC=]",
        "Push token (OIDC):",
    ] {
        assert!(out.contains(expected), "--help lacks {expected:?}");
    }
    assert!(!out.contains('\u{1b}'), "no colour codes in piped help");
}

#[test]
fn settings_reference_shows_the_summary_help_as_the_binary_prints_it() {
    let (out, _) = text(&run(&["-h"], &HashMap::new()));
    let reference = settings_reference();
    let block = reference
        .split("<!-- help: pubsub-kafka-bridge -h -->\n```text\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/configuration.md has the -h block");
    assert_eq!(
        block, out,
        "docs/configuration.md's -h block is out of date"
    );
}

#[test]
fn settings_reference_table_names_exactly_the_settings_of_the_command_line() {
    let reference = settings_reference();
    let table = reference
        .split("## Configuration")
        .nth(1)
        .and_then(|rest| rest.split("\n### ").next())
        .unwrap();
    let documented: BTreeSet<String> = table
        .lines()
        .filter(|line| line.starts_with("| `"))
        .flat_map(|line| {
            let first_cell = line.split('|').nth(1).unwrap_or_default();
            first_cell
                .split(',')
                .map(|v| v.trim().trim_matches('`').to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let settings: BTreeSet<String> = pubsub_kafka_bridge::cli::setting_variables()
        .into_iter()
        .collect();
    assert_eq!(documented, settings);
}

#[test]
fn settings_reference_table_states_the_default_of_every_declaration() {
    use clap::CommandFactory;
    let reference = settings_reference();
    let rows: HashMap<&str, &str> = reference
        .lines()
        .filter(|line| line.starts_with("| `"))
        .filter_map(|line| {
            let mut cells = line.split('|').skip(1);
            Some((cells.next()?.trim(), cells.next()?.trim()))
        })
        .collect();
    let command = pubsub_kafka_bridge::cli::Cli::command();
    let mut checked = 0;
    for arg in command.get_arguments() {
        let (Some(var), Some(default)) = (arg.get_env(), arg.get_default_values().first()) else {
            continue;
        };
        let (var, default) = (var.to_str().unwrap(), default.to_str().unwrap());
        let stated = rows
            .iter()
            .find(|(names, _)| {
                names
                    .split(',')
                    .any(|name| name.trim().trim_matches('`') == var)
            })
            .map(|(_, default)| *default)
            .unwrap_or_else(|| panic!("{var} has no row"));
        assert_eq!(stated, format!("`{default}`"), "{var}'s default");
        checked += 1;
    }
    assert!(checked > 20, "only {checked} defaults found");
}

#[test]
fn every_configuration_error_is_reported_at_once_naming_its_variable() {
    let env: HashMap<String, String> = [
        ("KAFKA_BOOTSTRAP_SERVERS", "nohost"),
        ("KAFKA_METADATA_HEADERS", "flase"),
        ("PORT", "eighty"),
        ("OIDC_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let output = run(&[], &env);
    assert_eq!(output.status.code(), Some(2));
    let (_, err) = text(&output);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    for var in [
        "KAFKA_TOPIC",
        "KAFKA_BOOTSTRAP_SERVERS",
        "PORT",
        "KAFKA_METADATA_HEADERS",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("pubsub-kafka-bridge: configuration error: {var}"))),
            "{var} not named: {err}"
        );
    }
}

#[test]
fn a_flag_overrides_its_variable() {
    let env: HashMap<String, String> = [
        ("KAFKA_TOPIC", "t"),
        ("OIDC_DISABLED", "true"),
        ("PORT", "x"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let output = run(&["--port", "y", "--kafka-bootstrap-servers", "h:1"], &env);
    let (_, err) = text(&output);
    assert_eq!(
        err.trim(),
        "pubsub-kafka-bridge: configuration error: PORT=\"y\" is invalid: expected a whole number"
    );
}

/// A registry answering `GET /subjects` (and nothing else) with `status`.
async fn registry(status: u16) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let ok =
                            req.method() == http::Method::GET && req.uri().path() == "/subjects";
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(if ok { status } else { 404 })
                                .body(Full::new(Bytes::from_static(b"[]")))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

async fn check(env: &HashMap<String, String>) -> (Option<i32>, Vec<String>) {
    let env = env.clone();
    let output = tokio::task::spawn_blocking(move || run(&["check"], &env))
        .await
        .unwrap();
    let (out, err) = text(&output);
    assert!(err.is_empty(), "check writes its findings to stdout: {err}");
    (
        output.status.code(),
        out.lines().map(str::to_owned).collect(),
    )
}

#[tokio::test]
async fn check_passes_only_when_kafka_every_topic_the_jwks_and_the_registry_answer() {
    let broker = Broker::start().await;
    broker.create_topic("checked", 3).await;
    broker.create_topic("dead", 1).await;
    let mut jwks = JwksServer::start(&[key(1), key(2)]).await;
    let mut env = bridge_env(&broker, "checked", Some(&jwks));
    env.insert("KAFKA_DLQ_TOPIC".into(), "dead".into());
    env.insert("KAFKA_VALUE_FORMAT".into(), "avro".into());
    env.insert("SCHEMA_REGISTRY_URL".into(), registry(200).await);

    let (code, lines) = check(&env).await;
    assert_eq!(code, Some(0), "{lines:#?}");
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert!(lines[0].starts_with(&format!(
        "✓ kafka {} (PLAINTEXT): connected",
        broker.bootstrap()
    )));
    assert_eq!(lines[1], "✓ topic checked: 3 partitions");
    assert_eq!(lines[2], "✓ topic dead: 1 partition");
    assert_eq!(lines[3], format!("✓ jwks {}: 2 signing keys", jwks.url));
    assert!(
        lines[4].starts_with("✓ schema registry http://127.0.0.1:"),
        "{}",
        lines[4]
    );

    // A topic the cluster lacks, and a registry that refuses.
    let mut failing = env.clone();
    failing.insert("KAFKA_TOPIC".into(), "absent".into());
    failing.insert("SCHEMA_REGISTRY_URL".into(), registry(401).await);
    let (code, lines) = check(&failing).await;
    assert_eq!(code, Some(1));
    assert_eq!(lines[1], "✗ topic absent: not found in cluster metadata");
    assert_eq!(lines[2], "✓ topic dead: 1 partition");
    assert!(
        lines[4].starts_with("✗ schema registry") && lines[4].ends_with("HTTP 401 Unauthorized"),
        "{}",
        lines[4]
    );

    // The JWKS endpoint down, and no broker where the settings point.
    jwks.stop();
    let mut unreachable = env.clone();
    unreachable.insert(
        "KAFKA_BOOTSTRAP_SERVERS".into(),
        format!("127.0.0.1:{}", free_port()),
    );
    unreachable.insert("KAFKA_PRODUCE_TIMEOUT_MS".into(), "1000".into());
    let (code, lines) = check(&unreachable).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        lines.len(),
        3,
        "no topic lines without a connection: {lines:#?}"
    );
    assert!(lines[0].starts_with("✗ kafka 127.0.0.1:"), "{}", lines[0]);
    assert!(
        lines[1].starts_with(&format!("✗ jwks {}: ", jwks.url)),
        "{}",
        lines[1]
    );
}

#[test]
fn an_unusable_kafka_ca_file_stops_startup_naming_its_variable() {
    let ca = std::env::temp_dir().join(format!("not-a-ca-{}.pem", free_port()));
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let env: HashMap<String, String> = [
        ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9093".to_owned()),
        ("KAFKA_TOPIC", "t".to_owned()),
        ("OIDC_DISABLED", "true".to_owned()),
        ("KAFKA_SECURITY_PROTOCOL", "SSL".to_owned()),
        ("KAFKA_SSL_CA_LOCATION", ca.display().to_string()),
        ("PORT", free_port().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let started = std::time::Instant::now();
    let output = run(&[], &env);
    std::fs::remove_file(&ca).unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "stopped, not retried"
    );
    let (out, err) = text(&output);
    assert!(
        format!("{out}{err}").contains("KAFKA_SSL_CA_LOCATION ("),
        "{out}{err}"
    );
}
