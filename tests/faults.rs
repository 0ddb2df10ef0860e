//! Bad input and misbehaving backends: each gets a precise error, the right exit code or
//! HTTP status, and never a panic or a wrong diagnosis.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Fault, Scenario};
use txdoctor::analysis::AnalysisOptions;
use txdoctor::chain::ChainSource;
use txdoctor::chain::esplora::{EsploraOptions, EsploraSource};

const FOCUS: &str = "d4edb45b56543fcdfeee348f6b759cb11a73fda8e6efbdeed79a6b859b5866a7";
const UNKNOWN: &str = "00000000000000000000000000000000000000000000000000000000000000aa";

async fn serve_api(url: &str, timeout: Duration) -> String {
    let doctor = support::esplora_doctor(url, AnalysisOptions::default(), Some(timeout));
    support::serve_api(doctor).await
}

async fn get(url: String) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

async fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_txdoctor"))
        .args(args)
        .env_remove("TXDOCTOR_CONFIG")
        .env_remove("TXDOCTOR_HISTORY_DIR")
        .output()
        .await
        .expect("the binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The s01 routes with the focus transaction's JSON replaced by `body`.
fn with_focus_json(edit: impl FnOnce(&mut Value)) -> support::Routes {
    let mut routes = Scenario::load("s01_signal_low_fee").routes;
    let path = format!("/tx/{FOCUS}");
    let mut json: Value =
        serde_json::from_str(&routes.get(&path).expect("recorded").1).expect("JSON");
    edit(&mut json);
    routes.insert(&path, 200, json.to_string());
    routes
}

#[tokio::test]
async fn malformed_txid_is_bad_input() {
    let replay = support::start(Scenario::load("s01_signal_low_fee").routes).await;
    let api = serve_api(&replay.url, Duration::from_secs(5)).await;
    let (status, body) = get(format!("{api}/api/v1/tx/not-a-txid")).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "invalid_txid");
    assert_eq!(
        body["message"],
        "invalid txid \"not-a-txid\": expected 64 hexadecimal characters, got 10"
    );
    let (code, stdout, stderr) = cli(&["diagnose", "--esplora", &replay.url, "xyz"]).await;
    assert_eq!(code, Some(2));
    assert!(stdout.trim().is_empty());
    assert!(stderr.contains("invalid txid \"xyz\""), "{stderr}");
    assert_eq!(
        replay.total_hits(),
        0,
        "bad input never reaches the backend"
    );
}

#[tokio::test]
async fn private_key_is_rejected_unechoed() {
    let replay = support::start(Scenario::load("s01_signal_low_fee").routes).await;
    let wif = "cVt4o7BGAig1UXywgGSmARhxMdzP5qvQsxKkSsc1XEkw3tDTQFpy";
    let (code, stdout, stderr) = cli(&["diagnose", "--esplora", &replay.url, "--json", wif]).await;
    assert_eq!(code, Some(2));
    assert!(
        !stdout.contains(wif) && !stderr.contains(wif),
        "the key is not repeated"
    );
    assert!(stdout.contains("looks like a private key"), "{stdout}");
    let api = serve_api(&replay.url, Duration::from_secs(5)).await;
    let (status, body) = get(format!("{api}/api/v1/tx/{wif}")).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "private_key_rejected");
    assert!(!body.to_string().contains(wif));
}

#[tokio::test]
async fn unknown_txid_is_not_found() {
    let replay = support::start(Scenario::load("s01_signal_low_fee").routes).await;
    let api = serve_api(&replay.url, Duration::from_secs(5)).await;
    let (status, body) = get(format!("{api}/api/v1/tx/{UNKNOWN}")).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "tx_not_found");
    assert_eq!(body["diagnosis"]["verdict"]["cause"], "not_found");
    assert_eq!(body["diagnosis"]["status"]["inputs_checked"], false);
    let (code, stdout, _) = cli(&["diagnose", "--esplora", &replay.url, "--json", UNKNOWN]).await;
    assert_eq!(
        code,
        Some(0),
        "a transaction found missing is still diagnosed"
    );
    let diagnosis: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(diagnosis["status"]["state"], "not_found");
}

#[tokio::test]
async fn timeout_is_backend_unavailable() {
    let faults = vec![(String::new(), Fault::Delay(Duration::from_secs(5)))];
    let replay =
        support::start_with_faults(Scenario::load("s01_signal_low_fee").routes, faults).await;
    let api = serve_api(&replay.url, Duration::from_millis(300)).await;
    let started = Instant::now();
    let (status, body) = get(format!("{api}/api/v1/tx/{FOCUS}")).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the timeout bounds the request"
    );
    assert_eq!(status, 503);
    assert_eq!(body["code"], "backend_unavailable");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("timed out"),
        "{body}"
    );
    let (code, _, stderr) = cli(&[
        "diagnose",
        "--esplora",
        &replay.url,
        "--timeout-secs",
        "1",
        "--max-retries",
        "0",
        FOCUS,
    ])
    .await;
    assert_eq!(code, Some(3));
    assert!(stderr.contains("timed out"), "{stderr}");
}

#[tokio::test]
async fn server_error_is_backend_unavailable() {
    let faults = vec![(String::new(), Fault::Status(500))];
    let replay =
        support::start_with_faults(Scenario::load("s01_signal_low_fee").routes, faults).await;
    let api = serve_api(&replay.url, Duration::from_secs(5)).await;
    let (status, body) = get(format!("{api}/api/v1/tx/{FOCUS}")).await;
    assert_eq!(status, 503);
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("HTTP 500"),
        "{body}"
    );
    let (code, _, _) = cli(&[
        "diagnose",
        "--esplora",
        &replay.url,
        "--max-retries",
        "0",
        FOCUS,
    ])
    .await;
    assert_eq!(code, Some(3));
}

#[tokio::test]
async fn refused_connection_is_backend_unavailable() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("address"));
    drop(closed);
    let api = serve_api(&url, Duration::from_secs(2)).await;
    let (status, body) = get(format!("{api}/api/v1/tx/{FOCUS}")).await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "backend_unavailable");
}

#[tokio::test]
async fn garbage_is_backend_inconsistent() {
    let faults = vec![(format!("/tx/{FOCUS}"), Fault::Garbage)];
    let replay =
        support::start_with_faults(Scenario::load("s01_signal_low_fee").routes, faults).await;
    let api = serve_api(&replay.url, Duration::from_secs(5)).await;
    let (status, body) = get(format!("{api}/api/v1/tx/{FOCUS}")).await;
    assert_eq!(status, 502);
    assert_eq!(body["code"], "backend_inconsistent");
    let (code, _, stderr) = cli(&["diagnose", "--esplora", &replay.url, FOCUS]).await;
    assert_eq!(code, Some(3));
    assert!(stderr.contains("inconsistent"), "{stderr}");
}

#[tokio::test]
async fn other_transaction_is_backend_inconsistent() {
    // The backend answers the focus txid with its parent's bytes.
    let mut routes = Scenario::load("s01_signal_low_fee").routes;
    let parent = "05e88187255370f33a8d6ba0b303d6dbccbbb6c86091477a118cb30bc4de6627";
    let parent_hex = routes
        .get(&format!("/tx/{parent}/hex"))
        .expect("recorded")
        .1
        .clone();
    routes.insert(&format!("/tx/{FOCUS}/hex"), 200, parent_hex);
    let replay = support::start(routes).await;
    let api = serve_api(&replay.url, Duration::from_secs(5)).await;
    let (status, body) = get(format!("{api}/api/v1/tx/{FOCUS}")).await;
    assert_eq!(status, 502);
    let message = body["message"].as_str().expect("message");
    assert!(
        message.contains(&format!("requested transaction {FOCUS} but got {parent}")),
        "{message}"
    );
}

#[tokio::test]
async fn wrong_fee_is_backend_inconsistent() {
    let routes = with_focus_json(|json| json["fee"] = Value::from(1));
    let replay = support::start(routes).await;
    let api = serve_api(&replay.url, Duration::from_secs(5)).await;
    let (status, body) = get(format!("{api}/api/v1/tx/{FOCUS}")).await;
    assert_eq!(status, 502);
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("reported fee 1 sat but inputs minus outputs is 141 sat"),
        "{body}"
    );
}

#[tokio::test]
async fn wrong_prevout_value_is_backend_inconsistent() {
    // A prevout value that does not cover the outputs cannot be a real transaction.
    let routes = with_focus_json(|json| json["vin"][0]["prevout"]["value"] = Value::from(1000));
    let replay = support::start(routes).await;
    let api = serve_api(&replay.url, Duration::from_secs(5)).await;
    let (status, body) = get(format!("{api}/api/v1/tx/{FOCUS}")).await;
    assert_eq!(status, 502);
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("spends 1000 sat"),
        "{body}"
    );
}

#[tokio::test]
async fn failing_histogram_is_a_gap() {
    let faults = vec![("/mempool".to_owned(), Fault::Status(500))];
    let replay =
        support::start_with_faults(Scenario::load("s01_signal_low_fee").routes, faults).await;
    let api = serve_api(&replay.url, Duration::from_secs(5)).await;
    let (status, body) = get(format!("{api}/api/v1/tx/{FOCUS}")).await;
    assert_eq!(status, 200, "the transaction is still diagnosed");
    assert!(body["position"].is_null());
    let gaps = body["data_gaps"].to_string();
    assert!(gaps.contains("mempool histogram"), "{gaps}");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let faults = vec![(
        "/blocks/tip/height".to_owned(),
        Fault::RetryAfter {
            status: 429,
            seconds: 1,
            times: 1,
        },
    )];
    let replay = support::start_with_faults(Scenario::load("s08_confirmed").routes, faults).await;
    let options = EsploraOptions {
        max_retries: 2,
        ..EsploraOptions::new(&replay.url)
    };
    let esplora = EsploraSource::new(options).expect("client builds");
    let started = Instant::now();
    let height = esplora.tip_height().await.expect("second attempt succeeds");
    assert_eq!(height, 329);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited for Retry-After"
    );
    assert_eq!(replay.hits("/blocks/tip/height"), 2);
}

#[tokio::test]
async fn bad_config_file_is_bad_input() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("txdoctor.toml");
    std::fs::write(&path, "esplora = 3\n").expect("write config");
    let (code, _, stderr) = cli(&[
        "--config",
        path.to_str().expect("utf-8 path"),
        "diagnose",
        FOCUS,
    ])
    .await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("invalid config file"), "{stderr}");
}

#[tokio::test]
async fn backend_from_environment() {
    let replay = support::start(Scenario::load("s01_signal_low_fee").routes).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_txdoctor"))
        .args(["diagnose", "--json", FOCUS])
        .env("TXDOCTOR_ESPLORA_URL", &replay.url)
        .env("TXDOCTOR_NETWORK", "regtest")
        .env_remove("TXDOCTOR_CONFIG")
        .output()
        .await
        .expect("the binary runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let diagnosis: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(diagnosis["backend"], format!("esplora {}", replay.url));
}

#[tokio::test]
async fn config_file_sets_backend() {
    let replay = support::start(Scenario::load("s01_signal_low_fee").routes).await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("txdoctor.toml");
    std::fs::write(
        &path,
        format!(
            "network = \"regtest\"\nesplora_url = \"{}\"\n[policy]\nversion = \"v31\"\n",
            replay.url
        ),
    )
    .expect("write config");
    let (code, stdout, stderr) = cli(&[
        "--config",
        path.to_str().expect("utf-8 path"),
        "diagnose",
        "--json",
        FOCUS,
    ])
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let diagnosis: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(diagnosis["txid"], FOCUS);
}

#[tokio::test]
async fn consistent_lie_about_input_value_is_caught() {
    // The spent coin's value and the fee are raised together, so the transaction's own
    // JSON adds up; its parent's raw bytes show the real value.
    let routes = with_focus_json(|json| {
        let value = json["vin"][0]["prevout"]["value"].as_u64().expect("value");
        json["vin"][0]["prevout"]["value"] = Value::from(value + 100_000);
        let fee = json["fee"].as_u64().expect("fee");
        json["fee"] = Value::from(fee + 100_000);
    });
    let replay = support::start(routes).await;
    let api = serve_api(&replay.url, Duration::from_secs(5)).await;
    let (status, body) = get(format!("{api}/api/v1/tx/{FOCUS}")).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("that output of the parent differs"),
        "{body}"
    );
}

#[tokio::test]
async fn short_outspends_list_is_caught() {
    let mut routes = Scenario::load("s01_signal_low_fee").routes;
    routes.insert(&format!("/tx/{FOCUS}/outspends"), 200, "[]".to_owned());
    let replay = support::start(routes).await;
    let api = serve_api(&replay.url, Duration::from_secs(5)).await;
    let (status, body) = get(format!("{api}/api/v1/tx/{FOCUS}")).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("lists 0 outputs, but the transaction has 2"),
        "{body}"
    );
}

#[tokio::test]
async fn missing_histogram_is_not_a_boost() {
    // Without the histogram the targets come from the estimates alone (1 sat/vB), which
    // the 1.005 sat/vB chunk meets; with no child, that must not read as a boost.
    let faults = vec![("/mempool".to_owned(), Fault::Status(500))];
    let replay =
        support::start_with_faults(Scenario::load("s01_signal_low_fee").routes, faults).await;
    let api = serve_api(&replay.url, Duration::from_secs(5)).await;
    let (_, body) = get(format!("{api}/api/v1/tx/{FOCUS}")).await;
    assert_eq!(body["verdict"]["cause"], "next_block");
}

#[tokio::test]
async fn wrong_base_path_is_not_a_missing_transaction() {
    // A 404 that is not Esplora's "Transaction not found" means the URL is wrong.
    let mut routes = Scenario::load("s01_signal_low_fee").routes;
    routes.insert(
        &format!("/tx/{FOCUS}"),
        404,
        "endpoint does not exist".to_owned(),
    );
    routes.insert(
        &format!("/tx/{FOCUS}/hex"),
        404,
        "endpoint does not exist".to_owned(),
    );
    let replay = support::start(routes).await;
    let api = serve_api(&replay.url, Duration::from_secs(5)).await;
    let (status, body) = get(format!("{api}/api/v1/tx/{FOCUS}")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("check the base URL"),
        "{body}"
    );
}
