//! Backends that misbehave, played by local fake servers: the doctor must answer from the
//! next backend or fail with a clear error, never panic, never wait past its timeout, and
//! never put more requests in flight than its limit.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use support::electrum::{self as fake_electrum, ElectrumAnswers, ElectrumFault};
use support::{Fault, Scenario};
use txdoctor::analysis::AnalysisOptions;
use txdoctor::bitcoin::{OutPoint, Txid};
use txdoctor::chain::cache::{CacheOptions, CachedSource};
use txdoctor::chain::electrum::{ElectrumOptions, ElectrumSource};
use txdoctor::chain::esplora::{EsploraOptions, EsploraSource};
use txdoctor::chain::failover::FailoverSource;
use txdoctor::chain::{
    BackendState, ChainError, ChainSource, ChainTx, FeeEstimates, MempoolSnapshot, OutputSpend,
    TxStatus,
};
use txdoctor::diagnose::{DiagnoseError, Doctor};
use txdoctor::history::History;

const SCENARIO: &str = "s04_low_fee_ancestors";

fn focus() -> Txid {
    Scenario::load(SCENARIO).focus().parse().expect("txid")
}

fn esplora(url: &str, timeout: Duration, max_retries: u32) -> Arc<dyn ChainSource> {
    let options = EsploraOptions {
        timeout,
        max_retries,
        backoff: Duration::from_millis(20),
        ..EsploraOptions::new(url)
    };
    Arc::new(EsploraSource::new(options).expect("client builds"))
}

fn electrum_options(url: &str, timeout: Duration) -> ElectrumOptions {
    ElectrumOptions {
        timeout,
        ..ElectrumOptions::new(url)
    }
}

fn electrum(url: &str, timeout: Duration) -> Arc<dyn ChainSource> {
    Arc::new(ElectrumSource::new(electrum_options(url, timeout)).expect("client builds"))
}

fn doctor(source: Arc<dyn ChainSource>) -> Doctor {
    let cached = Arc::new(CachedSource::new(source, CacheOptions::default()));
    Doctor::new(
        cached,
        Arc::new(History::in_memory()),
        AnalysisOptions::default(),
    )
}

fn failover(backends: Vec<Arc<dyn ChainSource>>) -> Arc<dyn ChainSource> {
    Arc::new(FailoverSource::new(backends, Duration::from_secs(30)))
}

async fn electrum_with(fault: ElectrumFault, method: &str) -> fake_electrum::ElectrumReplay {
    let faults = vec![(method.to_owned(), fault)];
    fake_electrum::start_with_faults(ElectrumAnswers::load(SCENARIO), faults).await
}

/// Diagnoses the focus with a deadline well past any configured timeout, so that a hang
/// fails the test instead of stalling it.
async fn diagnose(doctor: &Doctor) -> Result<Value, DiagnoseError> {
    let diagnosis = tokio::time::timeout(Duration::from_secs(20), doctor.diagnose(focus(), None))
        .await
        .expect("the diagnosis returned within 20 s")?;
    Ok(serde_json::to_value(diagnosis).expect("serializes"))
}

async fn reference_diagnosis() -> Value {
    reference_diagnosis_with(Scenario::load(SCENARIO).routes).await
}

/// The Esplora diagnosis with the estimates the recorded server gave over Electrum, which
/// differ from its `/fee-estimates` (0.1 against 1.0 sat/vB for every target).
async fn reference_with_electrum_estimates() -> Value {
    let mut routes = Scenario::load(SCENARIO).routes;
    let estimates = r#"{"1":0.1,"2":0.1,"6":0.1,"144":0.1}"#.to_owned();
    routes.insert("/fee-estimates", 200, estimates);
    reference_diagnosis_with(routes).await
}

async fn reference_diagnosis_with(routes: support::Routes) -> Value {
    let replay = support::start(routes).await;
    let doctor = doctor(esplora(&replay.url, Duration::from_secs(5), 0));
    diagnose(&doctor).await.expect("diagnosis")
}

/// Asserts that two diagnoses agree on everything but the backend that supplied them.
fn assert_same_diagnosis(left: &Value, right: &Value) {
    let strip = |value: &Value| {
        let mut value = value.clone();
        value["backend"] = Value::Null;
        value
    };
    assert_eq!(strip(left), strip(right));
}

#[tokio::test]
async fn electrum_timeout_is_bounded() {
    let server = electrum_with(
        ElectrumFault::Delay(Duration::from_secs(5)),
        "transaction.get",
    )
    .await;
    let started = Instant::now();
    let result = diagnose(&doctor(electrum(&server.url, Duration::from_millis(500)))).await;
    let error = result.expect_err("the server is too slow").to_string();
    assert!(error.contains("timed out after"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn electrum_faults_give_clear_errors() {
    let cases = [
        (ElectrumFault::Reset, "is unavailable"),
        (ElectrumFault::Malformed, "blockchain.transaction.get"),
        (ElectrumFault::Truncated, "blockchain.transaction.get"),
        (ElectrumFault::ServerError, "internal error"),
        (ElectrumFault::WrongTransaction, "requested transaction"),
    ];
    for (fault, expected) in cases {
        let server = electrum_with(fault.clone(), "transaction.get").await;
        let result = diagnose(&doctor(electrum(&server.url, Duration::from_secs(2)))).await;
        let error = result
            .expect_err("the fault fails the diagnosis")
            .to_string();
        assert!(error.contains(expected), "{fault:?}: {error}");
    }
}

#[tokio::test]
async fn electrum_reconnects_after_reset() {
    // Every tip request resets the connection, and the call after it reconnects.
    let server = electrum_with(ElectrumFault::Reset, "headers.subscribe").await;
    let source = electrum(&server.url, Duration::from_secs(2));
    assert!(source.tip_height().await.is_err());
    let estimates = source
        .fee_estimates()
        .await
        .expect("a new connection answers");
    assert!(!estimates.is_empty());
    assert!(server.methods().get("server.version").copied().unwrap_or(0) >= 2);
}

#[tokio::test]
async fn electrum_in_flight_is_capped() {
    let server = electrum_with(ElectrumFault::Delay(Duration::from_millis(30)), "").await;
    let source = Arc::new(
        ElectrumSource::new(ElectrumOptions {
            max_in_flight: 2,
            ..electrum_options(&server.url, Duration::from_secs(10))
        })
        .expect("client builds"),
    );
    let doctors: Vec<Doctor> = (0..4).map(|_| doctor(source.clone())).collect();
    let results = futures::future::join_all(doctors.iter().map(diagnose)).await;
    for result in results {
        result.expect("diagnosis");
    }
    assert!(
        server.max_in_flight() <= 2,
        "{} in flight",
        server.max_in_flight()
    );
    assert!(server.max_in_flight() >= 1);
}

#[tokio::test]
async fn esplora_honours_retry_after() {
    let scenario = Scenario::load(SCENARIO);
    let fault = Fault::RetryAfter {
        status: 429,
        seconds: 1,
        times: 1,
    };
    let replay =
        support::start_with_faults(scenario.routes, vec![("/mempool".to_owned(), fault)]).await;
    let source = esplora(&replay.url, Duration::from_secs(5), 2);
    let started = Instant::now();
    source.mempool().await.expect("the second attempt succeeds");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(replay.hits("/mempool"), 2);
}

#[tokio::test]
async fn esplora_retries_with_backoff() {
    for status in [429, 500, 503] {
        let scenario = Scenario::load(SCENARIO);
        let faults = vec![("/mempool".to_owned(), Fault::Status(status))];
        let replay = support::start_with_faults(scenario.routes, faults).await;
        let source = esplora(&replay.url, Duration::from_secs(5), 3);
        let started = Instant::now();
        let error = source
            .mempool()
            .await
            .expect_err("every attempt fails")
            .to_string();
        assert!(error.contains(&format!("HTTP {status}")), "{error}");
        assert_eq!(
            replay.hits("/mempool"),
            4,
            "HTTP {status}: one try and three retries"
        );
        // Back-off of 20, 40 and 80 ms, each with up to 50% jitter.
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(140),
            "HTTP {status}: {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_secs(3),
            "HTTP {status}: {elapsed:?}"
        );
    }
}

#[tokio::test]
async fn esplora_retry_after_too_long_fails_at_once() {
    let scenario = Scenario::load(SCENARIO);
    let fault = Fault::RetryAfter {
        status: 503,
        seconds: 3600,
        times: 10,
    };
    let replay =
        support::start_with_faults(scenario.routes, vec![("/mempool".to_owned(), fault)]).await;
    let started = Instant::now();
    let error = esplora(&replay.url, Duration::from_secs(5), 2)
        .mempool()
        .await
        .expect_err("fails");
    assert!(error.to_string().contains("HTTP 503"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(replay.hits("/mempool"), 1);
}

#[tokio::test]
async fn esplora_faults_give_clear_errors() {
    let txid = focus();
    let cases = [
        (Fault::Delay(Duration::from_secs(5)), "timed out after"),
        (Fault::Garbage, "malformed"),
        (Fault::Truncated, "malformed"),
        (Fault::Status(500), "HTTP 500"),
    ];
    for (fault, expected) in cases {
        let scenario = Scenario::load(SCENARIO);
        let faults = vec![(format!("/tx/{txid}"), fault)];
        let replay = support::start_with_faults(scenario.routes, faults).await;
        let started = Instant::now();
        let result = diagnose(&doctor(esplora(&replay.url, Duration::from_millis(500), 0))).await;
        let error = result
            .expect_err("the fault fails the diagnosis")
            .to_string();
        assert!(error.contains(expected), "{expected}: {error}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{expected}: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn esplora_wrong_transaction_is_inconsistent() {
    let scenario = Scenario::load(SCENARIO);
    let txid = focus();
    let mut routes = scenario.routes.clone();
    let other = Scenario::load("s01_signal_low_fee");
    let other_hex = other
        .routes
        .get(&format!("/tx/{}/hex", other.focus()))
        .expect("recorded hex")
        .1
        .clone();
    routes.insert(&format!("/tx/{txid}/hex"), 200, other_hex);
    let replay = support::start(routes).await;
    let error = diagnose(&doctor(esplora(&replay.url, Duration::from_secs(2), 0)))
        .await
        .expect_err("the txid does not match");
    assert!(matches!(
        error,
        DiagnoseError::Chain(ChainError::Inconsistent { .. })
    ));
    assert!(error.to_string().contains(&txid.to_string()), "{error}");
}

#[tokio::test]
async fn esplora_connection_reset_is_unavailable() {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        // Accepting and dropping each connection resets it before any answer.
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let error = diagnose(&doctor(esplora(&url, Duration::from_secs(2), 1)))
        .await
        .expect_err("no answer");
    assert!(
        matches!(error, DiagnoseError::Chain(ChainError::Unavailable { .. })),
        "{error}"
    );
}

#[tokio::test]
async fn esplora_in_flight_is_capped() {
    let scenario = Scenario::load(SCENARIO);
    let faults = vec![("/".to_owned(), Fault::Delay(Duration::from_millis(30)))];
    let replay = support::start_with_faults(scenario.routes, faults).await;
    let source = Arc::new(
        EsploraSource::new(EsploraOptions {
            max_in_flight: 2,
            ..EsploraOptions::new(&replay.url)
        })
        .expect("client builds"),
    );
    let doctors: Vec<Doctor> = (0..4).map(|_| doctor(source.clone())).collect();
    for result in futures::future::join_all(doctors.iter().map(diagnose)).await {
        result.expect("diagnosis");
    }
    assert!(
        replay.max_in_flight() <= 2,
        "{} in flight",
        replay.max_in_flight()
    );
}

#[tokio::test]
async fn failover_skips_broken_electrum() {
    let reference = reference_diagnosis().await;
    for fault in [
        ElectrumFault::Reset,
        ElectrumFault::WrongTransaction,
        ElectrumFault::Malformed,
    ] {
        let broken = electrum_with(fault.clone(), "transaction.get").await;
        let replay = support::start(Scenario::load(SCENARIO).routes).await;
        let source = failover(vec![
            electrum(&broken.url, Duration::from_secs(2)),
            esplora(&replay.url, Duration::from_secs(2), 0),
        ]);
        let diagnosis = diagnose(&doctor(source))
            .await
            .expect("answered by Esplora");
        assert_same_diagnosis(&diagnosis, &reference);
        // Once failed, the Electrum server is skipped for the rest of the diagnosis.
        let asked = broken.methods().get("blockchain.transaction.get").copied();
        assert_eq!(asked, Some(1), "{fault:?}");
    }
}

#[tokio::test]
async fn failover_skips_slow_esplora() {
    let reference = reference_with_electrum_estimates().await;
    let faults = vec![("/".to_owned(), Fault::Delay(Duration::from_secs(5)))];
    let slow = support::start_with_faults(Scenario::load(SCENARIO).routes, faults).await;
    let server = fake_electrum::start(ElectrumAnswers::load(SCENARIO)).await;
    let source = failover(vec![
        esplora(&slow.url, Duration::from_millis(300), 0),
        electrum(&server.url, Duration::from_secs(2)),
    ]);
    let started = Instant::now();
    let diagnosis = diagnose(&doctor(source))
        .await
        .expect("answered by Electrum");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Electrum cannot tell a confirmed relative's block, which this diagnosis omits.
    assert_same_diagnosis(&diagnosis, &reference);
}

#[tokio::test]
async fn every_backend_down_is_unavailable() {
    let first = electrum_with(ElectrumFault::ServerError, "").await;
    let replay = support::start_with_faults(
        Scenario::load(SCENARIO).routes,
        vec![("/".to_owned(), Fault::Status(503))],
    )
    .await;
    let source = failover(vec![
        electrum(&first.url, Duration::from_secs(2)),
        esplora(&replay.url, Duration::from_secs(2), 0),
    ]);
    let error = diagnose(&doctor(source)).await.expect_err("nobody answers");
    let message = error.to_string();
    assert!(matches!(
        error,
        DiagnoseError::Chain(ChainError::Unavailable { .. })
    ));
    assert!(
        message.contains("(all 2 of them) is unavailable"),
        "{message}"
    );
    assert!(message.contains("internal error"), "{message}");
    assert!(message.contains("HTTP 503"), "{message}");
}

#[tokio::test]
async fn health_reports_each_backend() {
    let mut answers = ElectrumAnswers::load(SCENARIO);
    let tip = serde_json::json!({"height": 327, "hex": "00"});
    answers.insert("blockchain.headers.subscribe", &[], Ok(tip));
    let behind = fake_electrum::start(answers).await;
    let replay = support::start(Scenario::load(SCENARIO).routes).await;
    let down = electrum_with(ElectrumFault::Reset, "").await;
    let source = failover(vec![
        esplora(&replay.url, Duration::from_secs(2), 0),
        electrum(&behind.url, Duration::from_secs(2)),
        electrum(&down.url, Duration::from_secs(2)),
    ]);
    let readiness = txdoctor::ops::readiness(source.as_ref()).await;
    assert!(readiness.ready);
    let states: Vec<BackendState> = readiness.backends.iter().map(|b| b.state).collect();
    assert_eq!(
        states,
        [BackendState::Up, BackendState::Up, BackendState::Down]
    );
    assert_eq!(readiness.backends[0].tip_height, Some(329));
    assert_eq!(readiness.backends[1].tip_height, Some(327));
    assert!(readiness.backends[0].latency_ms.is_some());
    assert!(readiness.backends[2].last_error.is_some());
    assert_eq!(readiness.warnings.len(), 1);
    assert!(
        readiness.warnings[0].contains("329"),
        "{:?}",
        readiness.warnings
    );
    assert!(
        readiness.warnings[0].contains("327"),
        "{:?}",
        readiness.warnings
    );
}

/// A source that can be switched off, to play every backend going down.
struct Switch {
    inner: Arc<dyn ChainSource>,
    down: AtomicBool,
}

impl Switch {
    fn check(&self) -> Result<(), ChainError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ChainError::Unavailable {
                backend: "switch".to_owned(),
                reason: "switched off".to_owned(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl ChainSource for Switch {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn transaction(&self, txid: Txid) -> Result<Option<Arc<ChainTx>>, ChainError> {
        self.check()?;
        self.inner.transaction(txid).await
    }

    async fn status(&self, txid: Txid) -> Result<Option<TxStatus>, ChainError> {
        self.check()?;
        self.inner.status(txid).await
    }

    async fn outspends(&self, txid: Txid) -> Result<Option<Arc<Vec<OutputSpend>>>, ChainError> {
        self.check()?;
        self.inner.outspends(txid).await
    }

    async fn output_spend(&self, outpoint: OutPoint) -> Result<Option<OutputSpend>, ChainError> {
        self.check()?;
        self.inner.output_spend(outpoint).await
    }

    async fn mempool(&self) -> Result<Arc<MempoolSnapshot>, ChainError> {
        self.check()?;
        self.inner.mempool().await
    }

    async fn fee_estimates(&self) -> Result<Arc<FeeEstimates>, ChainError> {
        self.check()?;
        self.inner.fee_estimates().await
    }

    async fn tip_height(&self) -> Result<u32, ChainError> {
        self.check()?;
        self.inner.tip_height().await
    }
}

#[tokio::test]
async fn stale_facts_served_when_all_down() {
    let replay = support::start(Scenario::load(SCENARIO).routes).await;
    let switch = Arc::new(Switch {
        inner: esplora(&replay.url, Duration::from_secs(2), 0),
        down: AtomicBool::new(false),
    });
    // Nothing stays fresh, so the second diagnosis must go to the backend or the stale store.
    let options = CacheOptions {
        mempool_ttl: Duration::ZERO,
        confirmed_ttl: Duration::ZERO,
        ..CacheOptions::default()
    };
    let cached = Arc::new(CachedSource::new(switch.clone(), options));
    let doctor = Doctor::new(
        cached,
        Arc::new(History::in_memory()),
        AnalysisOptions::default(),
    );
    let fresh = diagnose(&doctor).await.expect("diagnosis");
    assert!(!fresh["data_gaps"].to_string().contains("stale"));

    switch.down.store(true, Ordering::SeqCst);
    let stale = diagnose(&doctor)
        .await
        .expect("served from the stale store");
    let gaps: Vec<String> = stale["data_gaps"]
        .as_array()
        .expect("gaps")
        .iter()
        .map(|gap| gap.as_str().expect("text").to_owned())
        .collect();
    assert!(
        gaps.iter().any(|gap| gap.starts_with("stale: transaction")),
        "{gaps:?}"
    );
    assert!(
        gaps.iter()
            .all(|gap| !gap.starts_with("stale") || gap.contains(" s old")),
        "{gaps:?}"
    );
    assert!(
        gaps.iter().any(|gap| gap.contains("switched off")),
        "{gaps:?}"
    );
    assert_eq!(stale["verdict"], fresh["verdict"]);
}

#[tokio::test]
async fn stale_store_can_be_disabled() {
    let replay = support::start(Scenario::load(SCENARIO).routes).await;
    let switch = Arc::new(Switch {
        inner: esplora(&replay.url, Duration::from_secs(2), 0),
        down: AtomicBool::new(false),
    });
    let options = CacheOptions {
        mempool_ttl: Duration::ZERO,
        confirmed_ttl: Duration::ZERO,
        stale_ttl: Duration::ZERO,
        ..CacheOptions::default()
    };
    let cached = Arc::new(CachedSource::new(switch.clone(), options));
    let doctor = Doctor::new(
        cached,
        Arc::new(History::in_memory()),
        AnalysisOptions::default(),
    );
    diagnose(&doctor).await.expect("diagnosis");
    switch.down.store(true, Ordering::SeqCst);
    let error = diagnose(&doctor).await.expect_err("nothing stale to serve");
    assert!(error.to_string().contains("switched off"), "{error}");
}

async fn serve(doctor: Doctor) -> String {
    support::serve_api(doctor).await
}

#[tokio::test]
async fn ready_and_metrics_routes() {
    let replay = support::start(Scenario::load(SCENARIO).routes).await;
    let down = electrum_with(ElectrumFault::Reset, "").await;
    let source = failover(vec![
        electrum(&down.url, Duration::from_secs(2)),
        esplora(&replay.url, Duration::from_secs(2), 0),
    ]);
    let url = serve(doctor(source)).await;
    let client = reqwest::Client::new();

    let ready = client
        .get(format!("{url}/ready"))
        .send()
        .await
        .expect("GET /ready");
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.expect("JSON");
    assert_eq!(body["ready"], true);
    assert_eq!(body["backends"][0]["state"], "down");
    assert_eq!(body["backends"][1]["state"], "up");
    assert_eq!(body["backends"][1]["tip_height"], 329);

    let diagnosis = client
        .get(format!("{url}/api/v1/tx/{}", focus()))
        .send()
        .await
        .expect("GET diagnosis");
    assert_eq!(diagnosis.status(), 200);

    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("text");
    for name in [
        "txdoctor_http_requests_total",
        "txdoctor_http_request_duration_seconds",
        "txdoctor_backend_requests_total",
        "txdoctor_backend_errors_total",
        "txdoctor_backend_request_duration_seconds",
        "txdoctor_cache_misses_total",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(text.contains("route=\"/api/v1/tx/{txid}\""), "{text}");
}

#[tokio::test]
async fn ready_is_503_when_all_down() {
    let down = electrum_with(ElectrumFault::Reset, "").await;
    let url = serve(doctor(failover(vec![electrum(
        &down.url,
        Duration::from_secs(2),
    )])))
    .await;
    let ready = reqwest::get(format!("{url}/ready"))
        .await
        .expect("GET /ready");
    assert_eq!(ready.status(), 503);
}

#[tokio::test]
async fn cli_health_lists_backends() {
    let replay = support::start(Scenario::load(SCENARIO).routes).await;
    let server = fake_electrum::start(ElectrumAnswers::load(SCENARIO)).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_txdoctor"))
        .args([
            "health",
            "--json",
            "--backend",
            &replay.url,
            "--electrum",
            &server.url,
        ])
        .env_remove("TXDOCTOR_CONFIG")
        .output()
        .await
        .expect("txdoctor runs");
    assert_eq!(output.status.code(), Some(0));
    let body: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        body["backends"][0]["backend"],
        format!("esplora {}", replay.url)
    );
    assert_eq!(
        body["backends"][1]["backend"],
        format!("electrum {}", server.url)
    );
    assert_eq!(body["backends"][1]["tip_height"], 329);
    assert_eq!(body["warnings"], serde_json::json!([]));
}

#[tokio::test]
async fn health_probe_gives_up_on_a_hanging_backend() {
    // The hanging backend's own timeout and retries would take 3 × 10 s; the probe stops
    // after 5 s and reports it down beside the healthy one.
    let hanging = support::start_with_faults(
        Scenario::load(SCENARIO).routes,
        vec![(
            "/blocks/tip/height".to_owned(),
            Fault::Delay(Duration::from_secs(30)),
        )],
    )
    .await;
    let healthy = support::start(Scenario::load(SCENARIO).routes).await;
    let source = failover(vec![
        esplora(&hanging.url, Duration::from_secs(10), 2),
        esplora(&healthy.url, Duration::from_secs(10), 2),
    ]);
    let started = std::time::Instant::now();
    let readiness = txdoctor::ops::readiness(source.as_ref()).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert!(readiness.ready, "the healthy backend is up");
    let text = serde_json::to_string(&readiness).expect("JSON");
    assert!(text.contains("health probe timed out"), "{text}");
}
