//! Measures `txdoctor serve` against the replayed regtest scenarios:
//! warm diagnoses per second with latency percentiles, and backend requests per cold
//! diagnosis, including 200 concurrent cold requests for one txid.
//!
//! Run with `cargo bench --bench serve`. Everything listens on loopback.
#![allow(clippy::cast_possible_truncation)] // Percentile indexes are within the sample count.

#[path = "../tests/support/mod.rs"]
mod support;

fn bump_config() -> txdoctor::bump::BumpConfig {
    txdoctor::bump::BumpConfig {
        network: txdoctor::config::Network::Regtest,
        lookahead: 100,
        max_fee_sat: 1_000_000,
    }
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use txdoctor::analysis::AnalysisOptions;
use txdoctor::chain::ChainSource;
use txdoctor::chain::cache::{CacheOptions, CachedSource};
use txdoctor::chain::esplora::{EsploraOptions, EsploraSource};
use txdoctor::diagnose::Doctor;
use txdoctor::history::History;

const WARM_REQUESTS: usize = 60_000;
const CONNECTIONS: usize = 32;
const COLD_CONCURRENT: usize = 200;

/// Starts the API in this process over a fresh cache and returns its address.
async fn serve(backend_url: &str) -> SocketAddr {
    let options = EsploraOptions {
        max_in_flight: 64,
        ..EsploraOptions::new(backend_url)
    };
    let esplora: Arc<dyn ChainSource> =
        Arc::new(EsploraSource::new(options).expect("client builds"));
    let cache_options = CacheOptions {
        mempool_ttl: Duration::from_secs(600),
        ..CacheOptions::default()
    };
    let source: Arc<dyn ChainSource> = Arc::new(CachedSource::new(esplora, cache_options));
    let doctor = Doctor::new(
        source,
        Arc::new(History::in_memory()),
        AnalysisOptions::default(),
    );
    let app = txdoctor::api::router(txdoctor::api::AppState::new(
        Arc::new(doctor),
        bump_config(),
    ));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serves") });
    address
}

/// A minimal HTTP/1.1 keep-alive client, so that the client costs little of the two cores.
struct Connection {
    reader: BufReader<TcpStream>,
    request: Vec<u8>,
}

impl Connection {
    async fn open(address: SocketAddr, path: &str) -> Self {
        let stream = TcpStream::connect(address).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes();
        Self {
            reader: BufReader::new(stream),
            request,
        }
    }

    /// Sends the request and returns the status code and body length.
    async fn get(&mut self) -> (u16, usize) {
        self.reader
            .get_mut()
            .write_all(&self.request)
            .await
            .expect("write");
        let mut line = String::new();
        self.reader.read_line(&mut line).await.expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("status code");
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line).await.expect("header");
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().expect("length");
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).await.expect("body");
        (status, length)
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

async fn warm(name: &str) {
    let scenario = support::Scenario::load(name);
    let replay = support::start(scenario.routes.clone()).await;
    let address = serve(&replay.url).await;
    let path = format!("/api/v1/tx/{}", scenario.focus());
    let (status, bytes) = Connection::open(address, &path).await.get().await;
    assert_eq!(status, 200, "the first request diagnoses");
    let backend_before = replay.total_hits();
    let per_connection = WARM_REQUESTS / CONNECTIONS;
    let started = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move {
                let mut connection = Connection::open(address, &path).await;
                let mut latencies = Vec::with_capacity(per_connection);
                for _ in 0..per_connection {
                    let sent = Instant::now();
                    let (status, _) = connection.get().await;
                    assert_eq!(status, 200);
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(WARM_REQUESTS);
    for worker in workers {
        latencies.extend(worker.await.expect("worker finishes"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "warm {name}: {} diagnoses in {:.2} s = {:.0}/s over {CONNECTIONS} connections; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {bytes} bytes each; backend requests during the run: {}",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().expect("latencies").as_secs_f64() * 1e3,
        replay.total_hits() - backend_before,
    );
}

async fn cold_concurrent(name: &str) {
    let scenario = support::Scenario::load(name);
    let replay = support::start(scenario.routes.clone()).await;
    let address = serve(&replay.url).await;
    let path = format!("/api/v1/tx/{}", scenario.focus());
    let requests: Vec<_> = (0..COLD_CONCURRENT)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move { Connection::open(address, &path).await.get().await.0 })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.expect("request finishes"), 200);
    }
    let hits = replay.all_hits();
    let most = hits.values().max().copied().unwrap_or(0);
    println!(
        "cold {name}: {COLD_CONCURRENT} concurrent requests for one txid caused {} backend requests over {} resources; most for one resource: {most}",
        replay.total_hits(),
        hits.len(),
    );
}

async fn cold_each() {
    for name in support::scenario_names() {
        let scenario = support::Scenario::load(&name);
        let replay = support::start(scenario.routes.clone()).await;
        let address = serve(&replay.url).await;
        let started = Instant::now();
        let (status, _) = Connection::open(address, &format!("/api/v1/tx/{}", scenario.focus()))
            .await
            .get()
            .await;
        println!(
            "cold {name}: HTTP {status} in {:.2} ms with {} backend requests",
            started.elapsed().as_secs_f64() * 1e3,
            replay.total_hits()
        );
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; any other argument filters nothing here.
    warm("s01_signal_low_fee").await;
    warm("s04_low_fee_ancestors").await;
    cold_concurrent("s01_signal_low_fee").await;
    cold_concurrent("s12_receiver_child").await;
    cold_each().await;
}
