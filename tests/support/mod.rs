//! Test support: recorded fixtures and an in-process HTTP server that replays them.
#![allow(dead_code)] // Each test binary uses a different part of this module.
#![allow(clippy::cast_possible_truncation)] // Recorded statuses and numbers are small.

pub mod electrum;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use serde_json::Value;

/// Path of a file under `fixtures/`.
pub fn fixture_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(relative)
}

/// Names of the recorded regtest scenarios.
pub fn scenario_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixture_path("regtest"))
        .expect("fixtures/regtest exists")
        .map(|entry| {
            entry
                .expect("readable entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// One recorded scenario: the Esplora server's responses and Bitcoin Core's own numbers.
pub struct Scenario {
    pub name: String,
    pub routes: Routes,
    pub scenario: Value,
}

impl Scenario {
    pub fn load(name: &str) -> Self {
        let read = |file: &str| -> Value {
            let path = fixture_path(&format!("regtest/{name}/{file}"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            serde_json::from_str(&text).expect("fixture is JSON")
        };
        let esplora = read("esplora.json");
        let mut routes = Routes::default();
        for (key, answer) in esplora.as_object().expect("esplora.json is an object") {
            let path = key
                .strip_prefix("GET ")
                .expect("recorded keys are GET requests");
            let status = answer["status"].as_u64().expect("status") as u16;
            let body = match &answer["body"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            routes.insert(path, status, body);
        }
        Self {
            name: name.to_owned(),
            routes,
            scenario: read("scenario.json"),
        }
    }

    pub fn focus(&self) -> String {
        self.scenario["focus_txid"]
            .as_str()
            .expect("focus_txid")
            .to_owned()
    }

    pub fn core(&self) -> &serde_json::Map<String, Value> {
        self.scenario["core"].as_object().expect("core")
    }
}

/// Recorded responses by path.
#[derive(Clone, Default)]
pub struct Routes(HashMap<String, (u16, String)>);

impl Routes {
    pub fn insert(&mut self, path: &str, status: u16, body: String) {
        self.0.insert(path.to_owned(), (status, body));
    }

    pub fn get(&self, path: &str) -> Option<&(u16, String)> {
        self.0.get(path)
    }
}

/// A fault the replay server injects on every path that contains `path_part`.
#[derive(Clone)]
pub enum Fault {
    /// Waits before responding.
    Delay(Duration),
    /// Responds with this status and an empty body.
    Status(u16),
    /// Answers 200 with a body that is not what the endpoint returns.
    Garbage,
    /// Answers with the first half of the recorded body.
    Truncated,
    /// Answers with a status and a `Retry-After` header, `times` times, then normally.
    RetryAfter {
        status: u16,
        seconds: u64,
        times: usize,
    },
}

/// A running replay server.
pub struct Replay {
    pub url: String,
    hits: Arc<Mutex<HashMap<String, u64>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl Replay {
    /// Number of requests received for `path`.
    pub fn hits(&self, path: &str) -> u64 {
        self.hits
            .lock()
            .expect("hits lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Requests received per path.
    pub fn all_hits(&self) -> HashMap<String, u64> {
        self.hits.lock().expect("hits lock").clone()
    }

    /// Total requests received.
    pub fn total_hits(&self) -> u64 {
        self.hits.lock().expect("hits lock").values().sum()
    }

    /// Maximum number of requests in progress at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
}

struct ReplayState {
    routes: Routes,
    faults: Vec<(String, Fault)>,
    retry_counts: Mutex<HashMap<String, usize>>,
    hits: Arc<Mutex<HashMap<String, u64>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

/// Starts a replay server on a loopback port.
pub async fn start(routes: Routes) -> Replay {
    start_with_faults(routes, Vec::new()).await
}

/// Starts a replay server that injects `faults` on matching paths.
pub async fn start_with_faults(routes: Routes, faults: Vec<(String, Fault)>) -> Replay {
    let hits = Arc::new(Mutex::new(HashMap::new()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let state = Arc::new(ReplayState {
        routes,
        faults,
        retry_counts: Mutex::new(HashMap::new()),
        hits: hits.clone(),
        in_flight: in_flight.clone(),
        max_in_flight: max_in_flight.clone(),
    });
    let app = Router::new().fallback(move |request: Request<Body>| {
        let state = state.clone();
        async move { answer(&state, request.uri().path().to_owned()).await }
    });
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        axum::serve(listener, app)
            .await
            .expect("replay server runs");
    });
    Replay {
        url: format!("http://{address}"),
        hits,
        in_flight,
        max_in_flight,
    }
}

async fn answer(state: &ReplayState, path: String) -> Response<Body> {
    *state
        .hits
        .lock()
        .expect("hits lock")
        .entry(path.clone())
        .or_default() += 1;
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let response = respond(state, &path).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn respond(state: &ReplayState, path: &str) -> Response<Body> {
    for (part, fault) in &state.faults {
        if !path.contains(part.as_str()) {
            continue;
        }
        match fault {
            Fault::Delay(delay) => tokio::time::sleep(*delay).await,
            Fault::Status(status) => return plain(*status, String::new()),
            Fault::Garbage => return plain(200, "<html>not json".to_owned()),
            Fault::Truncated => {}
            Fault::RetryAfter {
                status,
                seconds,
                times,
            } => {
                let mut counts = state.retry_counts.lock().expect("retry lock");
                let count = counts.entry(path.to_owned()).or_default();
                if *count < *times {
                    *count += 1;
                    let mut response = plain(*status, "slow down".to_owned());
                    response.headers_mut().insert(
                        "retry-after",
                        seconds.to_string().parse().expect("header value"),
                    );
                    return response;
                }
            }
        }
    }
    let truncated = state
        .faults
        .iter()
        .any(|(part, fault)| path.contains(part.as_str()) && matches!(fault, Fault::Truncated));
    match state.routes.get(path) {
        Some((status, body)) if truncated => plain(*status, body[..body.len() / 2].to_owned()),
        Some((status, body)) => plain(*status, body.clone()),
        None => plain(404, "Transaction not found".to_owned()),
    }
}

fn plain(status: u16, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).expect("valid status");
    response
}

/// Builds a doctor over the Esplora server at `url`: no retries, a fresh cache, memory-only
/// history, and `timeout` per request when given.
pub fn esplora_doctor(
    url: &str,
    options: txdoctor::analysis::AnalysisOptions,
    timeout: Option<Duration>,
) -> txdoctor::diagnose::Doctor {
    use txdoctor::chain::ChainSource;
    use txdoctor::chain::cache::{CacheOptions, CachedSource};
    use txdoctor::chain::esplora::{EsploraOptions, EsploraSource};

    let defaults = EsploraOptions::new(url);
    let esplora_options = EsploraOptions {
        max_retries: 0,
        timeout: timeout.unwrap_or(defaults.timeout),
        ..defaults
    };
    let esplora: Arc<dyn ChainSource> =
        Arc::new(EsploraSource::new(esplora_options).expect("client builds"));
    let source: Arc<dyn ChainSource> =
        Arc::new(CachedSource::new(esplora, CacheOptions::default()));
    let history = Arc::new(txdoctor::history::History::in_memory());
    txdoctor::diagnose::Doctor::new(source, history, options)
}

/// Returns the bump settings of the tests: regtest descriptors and a short lookahead.
pub fn bump_config() -> txdoctor::bump::BumpConfig {
    txdoctor::bump::BumpConfig {
        network: txdoctor::config::Network::Regtest,
        lookahead: 100,
        max_fee_sat: 1_000_000,
    }
}

/// Serves the API over `doctor` on a loopback port and returns its base URL.
pub async fn serve_api(doctor: txdoctor::diagnose::Doctor) -> String {
    let state = txdoctor::api::AppState::new(Arc::new(doctor), bump_config());
    let app = txdoctor::api::router(state);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("server runs") });
    format!("http://{address}")
}
