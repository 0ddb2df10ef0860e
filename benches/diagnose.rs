//! Cold diagnoses per second and backend requests per diagnosis, for each backend, over
//! the recorded regtest scenarios replayed by in-process servers on loopback.
//!
//! Each diagnosis gets a new source and an empty cache, so every fact is fetched: this
//! measures the first look at a transaction, not a warm service. Run with
//! `cargo bench --bench diagnose`; `TXDOCTOR_BENCH_ROUNDS` sets how many times every
//! scenario is diagnosed (default 10).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::electrum::{self as fake_electrum, ElectrumAnswers};
use support::{Scenario, scenario_names};
use txdoctor::analysis::AnalysisOptions;
use txdoctor::bitcoin::Txid;
use txdoctor::chain::ChainSource;
use txdoctor::chain::cache::{CacheOptions, CachedSource};
use txdoctor::chain::electrum::{ElectrumOptions, ElectrumSource};
use txdoctor::chain::esplora::{EsploraOptions, EsploraSource};
use txdoctor::diagnose::Doctor;
use txdoctor::history::History;

/// One scenario's servers and focus.
struct Target {
    focus: Txid,
    esplora: support::Replay,
    electrum: fake_electrum::ElectrumReplay,
}

/// Totals of one backend over every round.
struct Tally {
    diagnoses: u64,
    elapsed: Duration,
    requests: u64,
}

impl Tally {
    fn report(&self, backend: &str, note: &str) {
        let per_second = self.diagnoses as f64 / self.elapsed.as_secs_f64();
        let per_diagnosis = self.requests as f64 / self.diagnoses as f64;
        println!(
            "{backend:<9} {:>5} cold diagnoses in {:>7.3} s: {per_second:>8.1} per second, \
             {per_diagnosis:>5.2} backend requests per diagnosis{note}",
            self.diagnoses,
            self.elapsed.as_secs_f64()
        );
    }
}

fn doctor(source: Arc<dyn ChainSource>) -> Doctor {
    let cached = Arc::new(CachedSource::new(source, CacheOptions::default()));
    Doctor::new(
        cached,
        Arc::new(History::in_memory()),
        AnalysisOptions::default(),
    )
}

async fn run(targets: &[Target], rounds: u64, electrum: bool) -> Tally {
    let mut tally = Tally {
        diagnoses: 0,
        elapsed: Duration::ZERO,
        requests: 0,
    };
    for _ in 0..rounds {
        for target in targets {
            let source: Arc<dyn ChainSource> = if electrum {
                let options = ElectrumOptions::new(&target.electrum.url);
                Arc::new(ElectrumSource::new(options).expect("client builds"))
            } else {
                let options = EsploraOptions::new(&target.esplora.url);
                Arc::new(EsploraSource::new(options).expect("client builds"))
            };
            let doctor = doctor(source);
            let started = Instant::now();
            doctor
                .diagnose(target.focus, None)
                .await
                .expect("diagnosis");
            tally.elapsed += started.elapsed();
            tally.diagnoses += 1;
        }
    }
    tally.requests = targets
        .iter()
        .map(|target| {
            if electrum {
                target.electrum.requests() as u64
            } else {
                target.esplora.total_hits()
            }
        })
        .sum();
    tally
}

fn main() {
    let rounds: u64 = std::env::var("TXDOCTOR_BENCH_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let mut targets = Vec::new();
        for name in scenario_names() {
            let scenario = Scenario::load(&name);
            targets.push(Target {
                focus: scenario.focus().parse().expect("txid"),
                esplora: support::start(scenario.routes.clone()).await,
                electrum: fake_electrum::start(ElectrumAnswers::load(&name)).await,
            });
        }
        println!(
            "{} scenarios x {rounds} rounds, one diagnosis at a time, a new source and cache each",
            targets.len()
        );
        run(&targets, rounds, false)
            .await
            .report("esplora", " (HTTP requests)");
        let electrum = run(&targets, rounds, true).await;
        electrum.report(
            "electrum",
            " (JSON-RPC requests, one server.version per connection included)",
        );
    });
}
