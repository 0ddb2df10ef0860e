//! Every recorded scenario diagnosed over Electrum, from an in-process server replaying
//! `electrum.json`, must equal its diagnosis over Esplora field by field, except for the
//! facts the Electrum protocol does not carry, which must be reported as unknown.

mod support;

use std::sync::Arc;

use serde_json::Value;
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

/// Fields of a diagnosis that may differ between the backends, and why. Over Electrum
/// each must be null (unknown), except `backend`, which names the server.
const ELECTRUM_UNKNOWN: &[(&str, &str)] = &[
    (
        "/status/block_hash",
        "a script history gives a confirmed transaction's height, not its block",
    ),
    (
        "/status/block_time",
        "a script history gives a confirmed transaction's height, not its block",
    ),
];

fn doctor(source: Arc<dyn ChainSource>) -> Doctor {
    let cached: Arc<dyn ChainSource> = Arc::new(CachedSource::new(source, CacheOptions::default()));
    Doctor::new(
        cached,
        Arc::new(History::in_memory()),
        AnalysisOptions::default(),
    )
}

fn esplora_doctor(url: &str) -> Doctor {
    let source = EsploraSource::new(EsploraOptions {
        max_retries: 0,
        ..EsploraOptions::new(url)
    })
    .expect("client builds");
    doctor(Arc::new(source))
}

fn electrum_doctor(url: &str) -> Doctor {
    let source = ElectrumSource::new(ElectrumOptions::new(url)).expect("client builds");
    doctor(Arc::new(source))
}

/// Collects the JSON pointers at which `left` and `right` differ.
fn differences(left: &Value, right: &Value, path: &str, found: &mut Vec<String>) {
    match (left, right) {
        (Value::Object(left), Value::Object(right)) => {
            let mut keys: Vec<&String> = left.keys().chain(right.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let null = Value::Null;
                let (l, r) = (
                    left.get(key).unwrap_or(&null),
                    right.get(key).unwrap_or(&null),
                );
                differences(l, r, &format!("{path}/{key}"), found);
            }
        }
        (Value::Array(left), Value::Array(right)) if left.len() == right.len() => {
            for (index, (l, r)) in left.iter().zip(right).enumerate() {
                differences(l, r, &format!("{path}/{index}"), found);
            }
        }
        _ if left != right => found.push(path.to_owned()),
        _ => {}
    }
}

/// The recorded server's fee estimator returned different rates through its two interfaces
/// (`/fee-estimates` 1.0 sat/vB, `blockchain.estimatefee` 0.1 sat/vB for every target), so
/// the Esplora replay is given the Electrum estimates: same facts in, same diagnosis out.
fn electrum_estimates_as_esplora(answers: &ElectrumAnswers) -> String {
    let mut estimates = serde_json::Map::new();
    for target in [1u64, 2, 6, 144] {
        let answer = answers.get("blockchain.estimatefee", &[Value::from(target)]);
        let btc_per_kvb = answer
            .and_then(|answer| answer.as_ref().ok())
            .and_then(Value::as_f64)
            .expect("recorded estimate");
        estimates.insert(target.to_string(), Value::from(btc_per_kvb * 100_000.0));
    }
    Value::Object(estimates).to_string()
}

async fn diagnoses(name: &str) -> (Value, Value, String) {
    let scenario = Scenario::load(name);
    let answers = ElectrumAnswers::load(name);
    let mut routes = scenario.routes.clone();
    routes.insert(
        "/fee-estimates",
        200,
        electrum_estimates_as_esplora(&answers),
    );
    let esplora = support::start(routes).await;
    let electrum = fake_electrum::start(answers).await;
    let txid: Txid = scenario.focus().parse().expect("txid");
    let over_esplora = esplora_doctor(&esplora.url)
        .diagnose(txid, None)
        .await
        .expect("diagnosis over Esplora");
    let over_electrum = electrum_doctor(&electrum.url)
        .diagnose(txid, None)
        .await
        .unwrap_or_else(|error| panic!("{name}: diagnosis over Electrum failed: {error}"));
    (
        serde_json::to_value(over_esplora).expect("serializes"),
        serde_json::to_value(over_electrum).expect("serializes"),
        electrum.url,
    )
}

#[tokio::test]
async fn electrum_equals_esplora_for_every_scenario() {
    let mut unexpected = Vec::new();
    for name in scenario_names() {
        let (esplora, electrum, url) = diagnoses(&name).await;
        let mut found = Vec::new();
        differences(&esplora, &electrum, "", &mut found);
        for path in found {
            if path == "/backend" {
                assert_eq!(
                    electrum["backend"],
                    format!("electrum {url}"),
                    "{name}: backend"
                );
                continue;
            }
            let esplora_value = esplora.pointer(&path).unwrap_or(&Value::Null);
            let electrum_value = electrum.pointer(&path).unwrap_or(&Value::Null);
            if ELECTRUM_UNKNOWN.iter().any(|(allowed, _)| *allowed == path) {
                assert!(
                    electrum_value.is_null(),
                    "{name}: {path} must be unknown over Electrum"
                );
                continue;
            }
            unexpected.push(format!(
                "{name}: {path} is {esplora_value} over Esplora but {electrum_value} over Electrum"
            ));
        }
    }
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
}

#[tokio::test]
async fn confirmed_block_is_unknown_over_electrum() {
    let (esplora, electrum, _) = diagnoses("s08_confirmed").await;
    assert_eq!(
        electrum["status"]["block_height"],
        esplora["status"]["block_height"]
    );
    assert!(esplora["status"]["block_hash"].is_string());
    assert!(electrum["status"]["block_hash"].is_null());
    assert!(electrum["status"]["block_time"].is_null());
}

/// A stand-in for the replaced s07 focus: a transaction that spends the same output, given
/// as raw bytes the way a wallet would give them.
fn conflicting_with_s07() -> txdoctor::bitcoin::Transaction {
    use txdoctor::bitcoin;
    let parent: Txid = "0d0e4d5b7b40fc134ce0b0b249319458b37e2c7538d05e2ea9644a0afda7791f"
        .parse()
        .expect("txid");
    bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn {
            previous_output: bitcoin::OutPoint {
                txid: parent,
                vout: 0,
            },
            sequence: bitcoin::Sequence::ENABLE_RBF_NO_LOCKTIME,
            ..Default::default()
        }],
        output: vec![bitcoin::TxOut {
            value: bitcoin::Amount::from_sat(29_000_000),
            script_pubkey: bitcoin::ScriptBuf::new_op_return([0u8; 4]),
        }],
    }
}

#[tokio::test]
async fn raw_hex_names_the_replacement_over_electrum() {
    // Only the history of the contested output's script is requested, so the recorded
    // responses suffice: the other output's spender was never recorded.
    let scenario = Scenario::load("s07_replaced");
    let original = conflicting_with_s07();
    let txid = original.compute_txid();
    let mut answers = ElectrumAnswers::load("s07_replaced");
    let missing = Err("missing transaction".to_owned());
    answers.insert(
        "blockchain.transaction.get",
        &[Value::String(txid.to_string())],
        missing,
    );
    let electrum = fake_electrum::start(answers).await;
    let diagnosis = electrum_doctor(&electrum.url)
        .diagnose(txid, Some(original))
        .await
        .expect("diagnosis");
    let diagnosis = serde_json::to_value(&diagnosis).expect("serializes");
    assert_eq!(diagnosis["verdict"]["cause"], "replaced");
    assert_eq!(
        diagnosis["status"]["conflicts"][0]["spender"],
        scenario.scenario["replaced_by"]
    );
    assert_eq!(
        diagnosis["status"]["conflicts"][0]["spender_confirmed"],
        false
    );
}

#[tokio::test]
async fn histogram_and_estimates_over_electrum() {
    let electrum = fake_electrum::start(ElectrumAnswers::load("s01_signal_low_fee")).await;
    let source = ElectrumSource::new(ElectrumOptions::new(&electrum.url)).expect("client builds");
    let mempool = source.mempool().await.expect("histogram");
    assert_eq!(mempool.vsize, 2_647_505);
    assert_eq!(mempool.count, None);
    assert_eq!(mempool.total_fee_sat, None);
    let estimates = source.fee_estimates().await.expect("estimates");
    // 1e-06 BTC/kvB is 0.1 sat/vB.
    assert_eq!(
        estimates.get(&1).map(ToString::to_string),
        Some("0.1".to_owned())
    );
    assert_eq!(source.tip_height().await.expect("tip"), 329);
}

#[tokio::test]
async fn relay_fee_follows_protocol_version() {
    let mut answers = ElectrumAnswers::load("s01_signal_low_fee");
    let electrum = fake_electrum::start(answers.clone()).await;
    let source = ElectrumSource::new(ElectrumOptions::new(&electrum.url)).expect("client builds");
    let fees = source
        .relay_fees()
        .await
        .expect("relay fee")
        .expect("reported");
    assert_eq!(fees.min_relay_fee_sat_per_vb.to_string(), "0.1");
    assert_eq!(fees.mempool_min_fee_sat_per_vb, None);
    assert_eq!(electrum.methods().get("blockchain.relayfee"), Some(&1));

    // A 1.6 server has no blockchain.relayfee; mempool.get_info carries all three floors.
    answers.set_protocol_version("1.6");
    let info = serde_json::json!({
        "mempoolminfee": 0.00001,
        "minrelaytxfee": 0.000001,
        "incrementalrelayfee": 0.000001
    });
    answers.insert("mempool.get_info", &[], Ok(info));
    answers.insert("blockchain.relayfee", &[], Err("unknown method".to_owned()));
    let electrum = fake_electrum::start(answers).await;
    let source = ElectrumSource::new(ElectrumOptions::new(&electrum.url)).expect("client builds");
    let fees = source
        .relay_fees()
        .await
        .expect("relay fee")
        .expect("reported");
    assert_eq!(fees.min_relay_fee_sat_per_vb.to_string(), "0.1");
    assert_eq!(
        fees.mempool_min_fee_sat_per_vb.map(|fee| fee.to_string()),
        Some("1".to_owned())
    );
    assert_eq!(electrum.methods().get("blockchain.relayfee"), None);
}
