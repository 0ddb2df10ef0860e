//! The Electrum backend over TLS, against the replay server behind a self-signed
//! certificate: with certificate checks off it must diagnose exactly as over plain TCP, and
//! every TLS failure must end in a clear `backend_unavailable` error within the timeout.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::electrum::{self as fake_electrum, ElectrumAnswers};
use support::{Scenario, scenario_names};
use txdoctor::analysis::AnalysisOptions;
use txdoctor::bitcoin::Txid;
use txdoctor::chain::ChainError;
use txdoctor::chain::cache::{CacheOptions, CachedSource};
use txdoctor::chain::electrum::{ElectrumOptions, ElectrumSource};
use txdoctor::diagnose::{DiagnoseError, Doctor};
use txdoctor::history::History;

const SCENARIO: &str = "s01_signal_low_fee";

/// Time limit of one call in the failure tests. Each of them must fail before twice this.
const TIMEOUT: Duration = Duration::from_secs(1);

fn doctor(url: &str, validate_domain: bool) -> Doctor {
    let options = ElectrumOptions {
        timeout: TIMEOUT,
        validate_domain,
        ..ElectrumOptions::new(url)
    };
    let source = Arc::new(ElectrumSource::new(options).expect("client builds"));
    Doctor::new(
        Arc::new(CachedSource::new(source, CacheOptions::default())),
        Arc::new(History::in_memory()),
        AnalysisOptions::default(),
    )
}

fn focus(name: &str) -> Txid {
    Scenario::load(name).focus().parse().expect("txid")
}

/// Diagnoses the focus of [`SCENARIO`] over `url` and returns why the backend was
/// unavailable, with how long the diagnosis took.
async fn failed_diagnosis(url: &str, validate_domain: bool) -> (String, Duration) {
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        doctor(url, validate_domain).diagnose(focus(SCENARIO), None),
    )
    .await
    .expect("the diagnosis returned within 20 s");
    let elapsed = started.elapsed();
    match result {
        Err(DiagnoseError::Chain(ChainError::Unavailable { reason, .. })) => (reason, elapsed),
        Err(other) => panic!("expected an unavailable backend, got {other}"),
        Ok(_) => panic!("the diagnosis over {url} succeeded"),
    }
}

/// Runs the binary with a config file whose only backend is `url`.
async fn cli_diagnose(url: &str, validate_domain: bool, txid: Txid) -> (Option<i32>, String) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("txdoctor.toml");
    let config = format!(
        "network = \"regtest\"\nbackends = [\"{url}\"]\nelectrum_validate_domain = \
         {validate_domain}\ntimeout_secs = 2\n[policy]\nversion = \"v31\"\n"
    );
    std::fs::write(&path, config).expect("write config");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_txdoctor"))
        .args(["--config", path.to_str().expect("utf-8 path")])
        .args(["diagnose", "--json", &txid.to_string()])
        .env_remove("TXDOCTOR_CONFIG")
        .env_remove("TXDOCTOR_HISTORY_DIR")
        .output()
        .await
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code(), stdout)
}

/// Starts a server that accepts connections and never writes, like a plain-TCP server that
/// waits for a newline the TLS handshake does not send.
async fn silent_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    address.to_string()
}

#[tokio::test]
async fn tls_equals_tcp_for_every_scenario() {
    for name in scenario_names() {
        let tcp = fake_electrum::start(ElectrumAnswers::load(&name)).await;
        let tls = fake_electrum::start_tls(ElectrumAnswers::load(&name)).await;
        assert!(tls.url.starts_with("ssl://127.0.0.1:"), "{}", tls.url);
        let over_tcp = doctor(&tcp.url, false)
            .diagnose(focus(&name), None)
            .await
            .unwrap_or_else(|error| panic!("{name}: diagnosis over TCP failed: {error}"));
        let over_tls = doctor(&tls.url, false)
            .diagnose(focus(&name), None)
            .await
            .unwrap_or_else(|error| panic!("{name}: diagnosis over TLS failed: {error}"));
        let mut over_tcp = serde_json::to_value(over_tcp).expect("serializes");
        let mut over_tls = serde_json::to_value(over_tls).expect("serializes");
        assert_eq!(over_tcp["backend"], format!("electrum {}", tcp.url));
        assert_eq!(over_tls["backend"], format!("electrum {}", tls.url));
        over_tcp["backend"] = Value::Null;
        over_tls["backend"] = Value::Null;
        assert_eq!(over_tls, over_tcp, "{name}");
        assert!(tls.requests() > 1, "{name}: the TLS server answered");
    }
}

#[tokio::test]
async fn config_accepts_self_signed_certificate() {
    let tls = fake_electrum::start_tls(ElectrumAnswers::load(SCENARIO)).await;
    let (code, stdout) = cli_diagnose(&tls.url, false, focus(SCENARIO)).await;
    assert_eq!(code, Some(0), "{stdout}");
    let diagnosis: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(diagnosis["backend"], format!("electrum {}", tls.url));
    assert_eq!(diagnosis["txid"], focus(SCENARIO).to_string());
}

#[tokio::test]
async fn self_signed_certificate_is_rejected() {
    let tls = fake_electrum::start_tls(ElectrumAnswers::load(SCENARIO)).await;
    let (reason, elapsed) = failed_diagnosis(&tls.url, true).await;
    assert!(elapsed < TIMEOUT, "rejected after {elapsed:?}");
    assert!(reason.contains("certificate is not trusted"), "{reason}");
    assert!(
        reason.contains("electrum_validate_domain = false"),
        "{reason}"
    );
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    assert_eq!(tls.requests(), 0, "no request went to an untrusted server");
}

#[tokio::test]
async fn cli_reports_untrusted_certificate() {
    let tls = fake_electrum::start_tls(ElectrumAnswers::load(SCENARIO)).await;
    let (code, stdout) = cli_diagnose(&tls.url, true, focus(SCENARIO)).await;
    assert_eq!(code, Some(3), "{stdout}");
    let line: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(line["error"]["code"], "backend_unavailable");
    let message = line["error"]["message"].as_str().expect("message");
    assert!(message.contains("certificate is not trusted"), "{message}");
    assert!(message.contains("electrum_validate_domain"), "{message}");
}

#[tokio::test]
async fn ssl_url_to_closing_tcp_server_fails() {
    // The replay server reads the TLS handshake as a line that is not UTF-8, and closes.
    let tcp = fake_electrum::start(ElectrumAnswers::load(SCENARIO)).await;
    let url = tcp.url.replace("tcp://", "ssl://");
    let (reason, elapsed) = failed_diagnosis(&url, false).await;
    assert!(elapsed < TIMEOUT, "failed after {elapsed:?}");
    assert!(reason.contains("closed the connection"), "{reason}");
    assert!(reason.contains("tcp://"), "{reason}");
}

#[tokio::test]
async fn ssl_url_to_silent_tcp_server_times_out() {
    let url = format!("ssl://{}", silent_server().await);
    let (reason, elapsed) = failed_diagnosis(&url, false).await;
    assert!(elapsed >= TIMEOUT, "failed after {elapsed:?}");
    assert!(elapsed < 2 * TIMEOUT, "failed after {elapsed:?}");
    assert!(reason.contains("timed out"), "{reason}");
}
