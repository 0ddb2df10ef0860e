//! Every recorded regtest scenario, replayed from an in-process Esplora server, diagnosed
#![allow(clippy::cast_possible_truncation)] // Recorded numbers are small; a wrong cast fails the check.
//! through the library, the CLI binary and the HTTP API, and checked against Bitcoin Core's
//! own numbers recorded with it.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;
use support::{Scenario, fixture_path, scenario_names};
use txdoctor::analysis::AnalysisOptions;
use txdoctor::bitcoin::{Txid, consensus};
use txdoctor::chain::esplora::{EsploraOptions, EsploraSource};
use txdoctor::diagnose::Doctor;
use txdoctor::history::History;

/// The cause code and BIP125 signal source each scenario must produce.
const EXPECTED: &[(&str, &str, Option<&str>)] = &[
    ("s01_signal_low_fee", "fee_rate_too_low", Some("explicit")),
    ("s02_no_signal", "fee_rate_too_low", Some("none")),
    (
        "s03_inherited_signal",
        "fee_rate_too_low",
        Some("inherited"),
    ),
    (
        "s04_low_fee_ancestors",
        "held_back_by_ancestors",
        Some("explicit"),
    ),
    ("s05_cpfp_boosted", "boosted_by_child", Some("explicit")),
    ("s06_truc", "fee_rate_too_low", Some("explicit")),
    ("s07_replaced", "not_found", None),
    ("s08_confirmed", "confirmed", None),
    ("s09_taproot_inputs", "fee_rate_too_low", Some("explicit")),
    ("s10_legacy_input", "fee_rate_too_low", Some("explicit")),
    ("s11_no_change", "fee_rate_too_low", Some("explicit")),
    ("s12_receiver_child", "fee_rate_too_low", Some("explicit")),
];

fn doctor_for(url: &str) -> Doctor {
    support::esplora_doctor(url, AnalysisOptions::default(), None)
}

async fn library_diagnosis(url: &str, txid: &str) -> Value {
    let txid: Txid = txid.parse().expect("txid");
    let diagnosis = doctor_for(url)
        .diagnose(txid, None)
        .await
        .expect("diagnosis");
    serde_json::to_value(&diagnosis).expect("serializes")
}

fn expected_for(name: &str) -> (&'static str, Option<&'static str>) {
    let (_, cause, signal) = EXPECTED
        .iter()
        .find(|(scenario, _, _)| *scenario == name)
        .expect("scenario has an expectation");
    (cause, *signal)
}

fn as_u64(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not an integer: {value}"))
}

fn rate(value: &Value) -> f64 {
    value
        .as_str()
        .expect("rates are strings")
        .parse()
        .expect("rate parses")
}

/// The transitive closure of `field` ("depends" or "spentby") from `start` in Core's entries.
fn core_relatives(
    core: &serde_json::Map<String, Value>,
    start: &str,
    field: &str,
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut frontier = vec![start.to_owned()];
    while let Some(txid) = frontier.pop() {
        let Some(next) = core[&txid]["mempool"][field].as_array() else {
            continue;
        };
        for relative in next {
            let relative = relative.as_str().expect("txid").to_owned();
            if found.insert(relative.clone()) {
                frontier.push(relative);
            }
        }
    }
    found
}

fn txids(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .expect("list")
        .iter()
        .map(|tx| tx["txid"].as_str().expect("txid").to_owned())
        .collect()
}

/// Checks one diagnosis against Core's recorded numbers.
fn check_against_core(scenario: &Scenario, diagnosis: &Value) {
    let name = &scenario.name;
    let focus = scenario.focus();
    let core = scenario.core();
    let (cause, signal) = expected_for(name);
    assert_eq!(diagnosis["txid"], focus.as_str(), "{name}: txid");
    assert_eq!(diagnosis["verdict"]["cause"], cause, "{name}: cause");
    let Some(entry) = core.get(&focus) else {
        assert_eq!(diagnosis["status"]["state"], "not_found", "{name}: status");
        return;
    };
    assert_eq!(
        as_u64(&diagnosis["transaction"]["weight"]),
        as_u64(&entry["weight"]),
        "{name}: weight"
    );
    assert_eq!(
        as_u64(&diagnosis["transaction"]["vsize"]),
        as_u64(&entry["vsize"]),
        "{name}: vsize"
    );
    if entry["mempool"].is_null() {
        assert_eq!(diagnosis["status"]["state"], "confirmed", "{name}: status");
        assert_eq!(
            as_u64(&diagnosis["status"]["confirmations"]),
            as_u64(&entry["confirmations"]),
            "{name}: confirmations"
        );
        return;
    }
    let mempool = &entry["mempool"];
    assert_eq!(diagnosis["status"]["state"], "mempool", "{name}: status");
    assert_eq!(
        as_u64(&diagnosis["transaction"]["fee_sat"]),
        as_u64(&mempool["fee_sat"]),
        "{name}: fee"
    );
    assert_eq!(
        as_u64(&diagnosis["transaction"]["sigop_adjusted_vsize"]),
        as_u64(&mempool["vsize"]),
        "{name}: sigop-adjusted vsize"
    );
    let package = &diagnosis["package"];
    let effective = rate(&package["effective_fee_rate_sat_per_vb"]);
    let core_rate = mempool["chunk_feerate_sat_per_vb"]
        .as_f64()
        .expect("core rate");
    assert!(
        (effective - core_rate).abs() < 1e-8,
        "{name}: effective rate {effective} != Core's chunk rate {core_rate}"
    );
    assert_eq!(
        as_u64(&package["chunk"]["fee_sat"]),
        as_u64(&mempool["chunk_fee_sat"]),
        "{name}: chunk fee"
    );
    assert_eq!(
        as_u64(&package["chunk"]["weight"]),
        as_u64(&mempool["chunkweight"]),
        "{name}: chunk weight"
    );
    assert_eq!(
        txids(&package["ancestors"]),
        core_relatives(core, &focus, "depends"),
        "{name}: ancestors"
    );
    assert_eq!(
        txids(&package["descendants"]),
        core_relatives(core, &focus, "spentby"),
        "{name}: descendants"
    );
    assert_eq!(
        package["ancestors"].as_array().map(Vec::len),
        Some(as_u64(&mempool["ancestorcount"]) as usize - 1),
        "{name}: ancestor count"
    );
    assert_eq!(
        package["descendants"].as_array().map(Vec::len),
        Some(as_u64(&mempool["descendantcount"]) as usize - 1),
        "{name}: descendant count"
    );
    assert_eq!(package["complete"], true, "{name}: complete");
    for relative in package["ancestors"]
        .as_array()
        .into_iter()
        .chain(package["descendants"].as_array())
        .flatten()
    {
        let core_relative = &core[relative["txid"].as_str().expect("txid")]["mempool"];
        assert_eq!(
            as_u64(&relative["fee_sat"]),
            as_u64(&core_relative["fee_sat"]),
            "{name}: relative fee"
        );
        assert_eq!(
            as_u64(&relative["vsize"]),
            as_u64(&core_relative["vsize"]),
            "{name}: relative vsize"
        );
    }
    let replaceability = &diagnosis["replaceability"];
    assert_eq!(
        replaceability["bip125_replaceable"], mempool["bip125_replaceable"],
        "{name}: bip125"
    );
    assert_eq!(
        replaceability["signal"].as_str(),
        signal,
        "{name}: signal source"
    );
    assert_eq!(replaceability["full_rbf"], true, "{name}: full RBF");
    assert_eq!(
        replaceability["truc"],
        as_u64(&entry["version"]) == 3,
        "{name}: TRUC"
    );
}

#[tokio::test]
async fn library_matches_core_for_every_scenario() {
    let names = scenario_names();
    assert_eq!(
        names.len(),
        EXPECTED.len(),
        "every scenario has an expectation"
    );
    for name in names {
        let scenario = Scenario::load(&name);
        let replay = support::start(scenario.routes.clone()).await;
        let diagnosis = library_diagnosis(&replay.url, &scenario.focus()).await;
        check_against_core(&scenario, &diagnosis);
    }
}

#[tokio::test]
async fn inherited_signal_names_the_ancestor() {
    let scenario = Scenario::load("s03_inherited_signal");
    let replay = support::start(scenario.routes.clone()).await;
    let diagnosis = library_diagnosis(&replay.url, &scenario.focus()).await;
    let parent = "27bc8c984f78a90fc625b30bb798ed8cc93fd10939ccace5ddae707e47c65c1b";
    assert_eq!(diagnosis["replaceability"]["inherited_from"], parent);
}

#[tokio::test]
async fn confirmed_scenario_reports_height() {
    let scenario = Scenario::load("s08_confirmed");
    let replay = support::start(scenario.routes.clone()).await;
    let diagnosis = library_diagnosis(&replay.url, &scenario.focus()).await;
    assert_eq!(diagnosis["status"]["block_height"], 327);
    assert_eq!(diagnosis["triage"]["priority"], "low");
}

#[tokio::test]
async fn low_fee_sits_three_blocks_deep() {
    // About 2.6 million vB of traffic pays 3 to 60 sat/vB, so a 1 sat/vB payment waits
    // behind nearly all of it: in the third projected block.
    let scenario = Scenario::load("s01_signal_low_fee");
    let replay = support::start(scenario.routes.clone()).await;
    let diagnosis = library_diagnosis(&replay.url, &scenario.focus()).await;
    let position = &diagnosis["position"];
    assert_eq!(as_u64(&position["vsize_ahead_min"]), 2_643_354);
    assert_eq!(as_u64(&position["projected_block_min"]), 3);
    assert_eq!(as_u64(&diagnosis["estimate"]["blocks_min"]), 3);
    assert!(
        diagnosis["estimate"]["summary"]
            .as_str()
            .expect("summary")
            .contains("not in the next 2 blocks")
    );
    assert_eq!(diagnosis["targets"]["next_block_sat_per_vb"], "15.1");
    assert_eq!(diagnosis["targets"]["six_blocks_sat_per_vb"], "1.0");
}

#[tokio::test]
async fn options_carry_core_minimums() {
    // The RBF and cancel minimums equal the fees at which Core's testmempoolaccept first
    // accepted the replacement.
    for name in scenario_names() {
        let scenario = Scenario::load(&name);
        let core = scenario.core();
        let replay = support::start(scenario.routes.clone()).await;
        let diagnosis = library_diagnosis(&replay.url, &scenario.focus()).await;
        let Some(options) = diagnosis["verdict"]["options"].as_array() else {
            continue;
        };
        let option = |kind: &str| {
            options
                .iter()
                .find(|option| option["kind"] == kind)
                .cloned()
        };
        for (record, kind) in [("replacement_min_fee", "rbf"), ("cancel_min_fee", "cancel")] {
            let Some(recorded) = core.get(record) else {
                continue;
            };
            if as_u64(&recorded["replacement_vsize"]) != as_u64(&diagnosis["transaction"]["vsize"])
                && kind == "rbf"
            {
                continue;
            }
            let priced = option(kind).unwrap_or_else(|| panic!("{name}: no {kind} option"));
            let cancel_vsize_matches = kind != "cancel"
                || as_u64(&priced["next_block"]["vsize"]) == as_u64(&recorded["replacement_vsize"]);
            assert!(cancel_vsize_matches, "{name}: cancel vsize");
            assert_eq!(
                as_u64(&priced["minimum_fee_sat"]),
                as_u64(&recorded["min_fee_sat"]),
                "{name}: {kind} minimum"
            );
        }
        if core.contains_key("cpfp_child_for_target") {
            let priced = option("cpfp").unwrap_or_else(|| panic!("{name}: no cpfp option"));
            assert!(
                priced["possible"].as_bool().expect("possible"),
                "{name}: cpfp possible"
            );
        }
    }
}

#[tokio::test]
async fn mainnet_legacy_sample_sizes() {
    // A real mainnet P2PKH payment as a public explorer served it: 896 WU, 4 sigops.
    let (routes, txid) = mainnet_routes("p2pkh_unconfirmed_rbf.json");
    let replay = support::start(routes).await;
    let diagnosis = library_diagnosis(&replay.url, &txid).await;
    assert_eq!(as_u64(&diagnosis["transaction"]["weight"]), 896);
    assert_eq!(as_u64(&diagnosis["transaction"]["vsize"]), 224);
    // One P2PKH output is one legacy sigop, which costs 4; the explorer reports the same.
    assert_eq!(as_u64(&diagnosis["transaction"]["sigop_cost"]), 4);
    assert_eq!(as_u64(&diagnosis["transaction"]["fee_sat"]), 960);
    assert_eq!(diagnosis["replaceability"]["signal"], "explicit");
    assert!((rate(&diagnosis["transaction"]["fee_rate_sat_per_vb"]) - 960.0 / 224.0).abs() < 1e-8);
}

#[tokio::test]
async fn mainnet_missing_parent_is_a_gap() {
    // The explorer listed one large unconfirmed parent; the replay does not have it, so
    // the package must be marked incomplete rather than guessed.
    let (routes, txid) = mainnet_routes("p2wpkh_with_unconfirmed_parent.json");
    let replay = support::start(routes).await;
    let diagnosis = library_diagnosis(&replay.url, &txid).await;
    assert_eq!(as_u64(&diagnosis["transaction"]["fee_sat"]), 8794);
    assert_eq!(as_u64(&diagnosis["transaction"]["weight"]), 437);
    assert_eq!(as_u64(&diagnosis["transaction"]["vsize"]), 110);
    assert_eq!(diagnosis["package"]["complete"], false);
    let gaps = diagnosis["data_gaps"].to_string();
    assert!(
        gaps.contains("1e3bd5c634781a6ba8bb3d3385b14739bf38cad5332d5fbc5c0ab775e54b9aef"),
        "{gaps}"
    );
}

/// Serves a mainnet explorer sample: its JSON, its raw bytes rebuilt from that JSON, and
/// an empty mempool.
fn mainnet_routes(file: &str) -> (support::Routes, String) {
    let text = std::fs::read_to_string(fixture_path(&format!("mainnet/{file}"))).expect("sample");
    let json: Value = serde_json::from_str(&text).expect("sample is JSON");
    let tx = rebuild_transaction(&json);
    let txid = tx.compute_txid().to_string();
    assert_eq!(
        txid,
        json["txid"].as_str().expect("txid"),
        "the rebuilt transaction hashes to the sample's txid"
    );
    let mut routes = support::Routes::default();
    routes.insert(&format!("/tx/{txid}"), 200, text.clone());
    routes.insert(
        &format!("/tx/{txid}/hex"),
        200,
        consensus::encode::serialize_hex(&tx),
    );
    routes.insert(
        &format!("/tx/{txid}/outspends"),
        200,
        "[{\"spent\":false}]".to_owned(),
    );
    routes.insert(
        "/mempool",
        200,
        r#"{"count":0,"vsize":0,"total_fee":0,"fee_histogram":[]}"#.to_owned(),
    );
    routes.insert("/fee-estimates", 200, r#"{"1":2.0,"6":1.0}"#.to_owned());
    routes.insert("/blocks/tip/height", 200, "800000".to_owned());
    (routes, txid)
}

fn rebuild_transaction(json: &Value) -> txdoctor::bitcoin::Transaction {
    use txdoctor::bitcoin::{self, hex::FromHex};
    let bytes = |text: &Value| Vec::<u8>::from_hex(text.as_str().expect("hex")).expect("valid hex");
    let input = json["vin"]
        .as_array()
        .expect("vin")
        .iter()
        .map(|vin| bitcoin::TxIn {
            previous_output: bitcoin::OutPoint {
                txid: vin["txid"].as_str().expect("txid").parse().expect("txid"),
                vout: as_u64(&vin["vout"]) as u32,
            },
            script_sig: bitcoin::ScriptBuf::from_bytes(bytes(&vin["scriptsig"])),
            sequence: bitcoin::Sequence(as_u64(&vin["sequence"]) as u32),
            witness: bitcoin::Witness::from_slice(
                &vin["witness"]
                    .as_array()
                    .map(|items| items.iter().map(bytes).collect::<Vec<_>>())
                    .unwrap_or_default(),
            ),
        })
        .collect();
    let output = json["vout"]
        .as_array()
        .expect("vout")
        .iter()
        .map(|vout| bitcoin::TxOut {
            value: bitcoin::Amount::from_sat(as_u64(&vout["value"])),
            script_pubkey: bitcoin::ScriptBuf::from_bytes(bytes(&vout["scriptpubkey"])),
        })
        .collect();
    bitcoin::Transaction {
        version: bitcoin::transaction::Version(json["version"].as_i64().expect("version") as i32),
        lock_time: bitcoin::absolute::LockTime::from_consensus(as_u64(&json["locktime"]) as u32),
        input,
        output,
    }
}

/// A transaction spending the same coin as the s07 replacement: a stand-in for the
/// replaced original, whose raw bytes were not recorded.
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

const S07_REPLACEMENT: &str = "b2eebaa32d9d8db9b3b0fbd6255f669a75888e5ca65c9ee832c959d2346db651";

#[tokio::test]
async fn raw_hex_names_the_replacement() {
    let scenario = Scenario::load("s07_replaced");
    let replay = support::start(scenario.routes.clone()).await;
    let original = conflicting_with_s07();
    let diagnosis = doctor_for(&replay.url)
        .diagnose(original.compute_txid(), Some(original))
        .await
        .expect("diagnosis");
    let diagnosis = serde_json::to_value(&diagnosis).expect("serializes");
    assert_eq!(diagnosis["verdict"]["cause"], "replaced");
    assert_eq!(
        diagnosis["status"]["conflicts"][0]["spender"],
        S07_REPLACEMENT
    );
    assert_eq!(
        diagnosis["status"]["conflicts"][0]["spender_confirmed"],
        false
    );
    assert_eq!(diagnosis["triage"]["category"], "replaced");
}

#[tokio::test]
async fn history_names_the_replacement() {
    let scenario = Scenario::load("s07_replaced");
    let replay = support::start(scenario.routes.clone()).await;
    let original = conflicting_with_s07();
    let history = Arc::new(History::in_memory());
    history.remember(&original).await;
    let esplora = EsploraSource::new(EsploraOptions::new(&replay.url)).expect("client builds");
    let doctor = Doctor::new(Arc::new(esplora), history, AnalysisOptions::default());
    let diagnosis = doctor
        .diagnose(original.compute_txid(), None)
        .await
        .expect("diagnosis");
    assert_eq!(
        diagnosis.cause(),
        txdoctor::analysis::verdict::Cause::Replaced
    );
}

async fn run_cli(args: &[&str], history: &std::path::Path) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_txdoctor"))
        .args(args)
        .env("TXDOCTOR_HISTORY_DIR", history)
        .env_remove("TXDOCTOR_CONFIG")
        .output()
        .await
        .expect("the binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn cli_json_equals_library_for_every_scenario() {
    let history = tempfile::tempdir().expect("temporary directory");
    for name in scenario_names() {
        let scenario = Scenario::load(&name);
        let replay = support::start(scenario.routes.clone()).await;
        let focus = scenario.focus();
        let (code, stdout, stderr) = run_cli(
            &[
                "diagnose",
                "--esplora",
                &replay.url,
                "--max-retries",
                "0",
                "--json",
                &focus,
            ],
            history.path(),
        )
        .await;
        assert_eq!(code, Some(0), "{name}: {stderr}");
        let from_cli: Value = serde_json::from_str(&stdout).expect("CLI prints JSON");
        check_against_core(&scenario, &from_cli);
        assert_eq!(
            from_cli,
            library_diagnosis(&replay.url, &focus).await,
            "{name}: CLI and library differ"
        );
    }
}

#[tokio::test]
async fn cli_human_report_for_low_fee() {
    let history = tempfile::tempdir().expect("temporary directory");
    let scenario = Scenario::load("s04_low_fee_ancestors");
    let replay = support::start(scenario.routes.clone()).await;
    let (code, stdout, _) = run_cli(
        &["diagnose", "--esplora", &replay.url, &scenario.focus()],
        history.path(),
    )
    .await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains("held_back_by_ancestors"), "{stdout}");
    assert!(
        stdout.contains("564 sat (0.00000564 BTC), 141 vB, 4.00 sat/vB"),
        "{stdout}"
    );
    assert!(stdout.contains("2.01 sat/vB"), "{stdout}");
}

#[tokio::test]
async fn cli_reads_txids_from_stdin() {
    use tokio::io::AsyncWriteExt;
    let history = tempfile::tempdir().expect("temporary directory");
    let scenario = Scenario::load("s05_cpfp_boosted");
    let replay = support::start(scenario.routes.clone()).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_txdoctor"))
        .args(["diagnose", "--esplora", &replay.url, "--json", "-"])
        .env("TXDOCTOR_HISTORY_DIR", history.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let input = format!(
        "{}\n\nnot-a-txid\n# a comment\n{}\n",
        scenario.focus(),
        scenario.focus()
    );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .await
        .expect("write stdin");
    let output = child.wait_with_output().await.expect("exits");
    assert_eq!(output.status.code(), Some(2), "one line was not a txid");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON document a line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["verdict"]["cause"], "boosted_by_child");
    assert_eq!(lines[1]["error"]["code"], "bad_input");
    assert_eq!(lines[2]["verdict"]["cause"], "boosted_by_child");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("[1/3]") && stderr.contains("[3/3]"),
        "{stderr}"
    );
}

#[tokio::test]
async fn cli_remembers_and_recalls_from_history_dir() {
    let history = tempfile::tempdir().expect("temporary directory");
    let scenario = Scenario::load("s01_signal_low_fee");
    let replay = support::start(scenario.routes.clone()).await;
    let (code, _, _) = run_cli(
        &[
            "diagnose",
            "--esplora",
            &replay.url,
            "--json",
            &scenario.focus(),
        ],
        history.path(),
    )
    .await;
    assert_eq!(code, Some(0));
    assert!(
        history
            .path()
            .join(format!("{}.hex", scenario.focus()))
            .exists(),
        "the diagnosed transaction is remembered"
    );

    let replaced = Scenario::load("s07_replaced");
    let replay = support::start(replaced.routes.clone()).await;
    let original = conflicting_with_s07();
    let txid = original.compute_txid().to_string();
    std::fs::write(
        history.path().join(format!("{txid}.hex")),
        consensus::encode::serialize_hex(&original),
    )
    .expect("write history");
    let (code, stdout, _) = run_cli(
        &["diagnose", "--esplora", &replay.url, "--json", &txid],
        history.path(),
    )
    .await;
    assert_eq!(code, Some(0));
    let diagnosis: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(diagnosis["verdict"]["cause"], "replaced");
    assert_eq!(
        diagnosis["status"]["conflicts"][0]["spender"],
        S07_REPLACEMENT
    );
}

#[tokio::test]
async fn cli_tx_hex_names_the_replacement() {
    let history = tempfile::tempdir().expect("temporary directory");
    let scenario = Scenario::load("s07_replaced");
    let replay = support::start(scenario.routes.clone()).await;
    let original = conflicting_with_s07();
    let hex = consensus::encode::serialize_hex(&original);
    let txid = original.compute_txid().to_string();
    let (code, stdout, _) = run_cli(
        &[
            "diagnose",
            "--esplora",
            &replay.url,
            "--json",
            "--tx-hex",
            &hex,
            &txid,
        ],
        history.path(),
    )
    .await;
    assert_eq!(code, Some(0));
    let diagnosis: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(diagnosis["verdict"]["cause"], "replaced");
}

async fn serve_api(url: &str) -> String {
    support::serve_api(doctor_for(url)).await
}

#[tokio::test]
async fn api_equals_library_for_every_scenario() {
    let client = reqwest::Client::new();
    for name in scenario_names() {
        let scenario = Scenario::load(&name);
        let replay = support::start(scenario.routes.clone()).await;
        let api = serve_api(&replay.url).await;
        let focus = scenario.focus();
        let response = client
            .get(format!("{api}/api/v1/tx/{focus}"))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("JSON body");
        let diagnosis = if name == "s07_replaced" {
            assert_eq!(status, 404, "{name}");
            assert_eq!(body["code"], "tx_not_found");
            body["diagnosis"].clone()
        } else {
            assert_eq!(status, 200, "{name}: {body}");
            body
        };
        check_against_core(&scenario, &diagnosis);
        assert_eq!(
            diagnosis,
            library_diagnosis(&replay.url, &focus).await,
            "{name}: API and library differ"
        );
    }
}

#[tokio::test]
async fn api_tx_hex_query_and_body() {
    let scenario = Scenario::load("s07_replaced");
    let replay = support::start(scenario.routes.clone()).await;
    let api = serve_api(&replay.url).await;
    let original = conflicting_with_s07();
    let hex = consensus::encode::serialize_hex(&original);
    let txid = original.compute_txid();
    let client = reqwest::Client::new();
    let by_query = client
        .get(format!("{api}/api/v1/tx/{txid}?tx_hex={hex}"))
        .send()
        .await
        .expect("request");
    assert_eq!(by_query.status().as_u16(), 404);
    let body: Value = by_query.json().await.expect("JSON");
    assert_eq!(body["diagnosis"]["verdict"]["cause"], "replaced");
    let by_body = client
        .post(format!("{api}/api/v1/tx/{txid}"))
        .json(&serde_json::json!({ "tx_hex": hex }))
        .send()
        .await
        .expect("request");
    let body: Value = by_body.json().await.expect("JSON");
    assert_eq!(
        body["diagnosis"]["status"]["conflicts"][0]["spender"],
        S07_REPLACEMENT
    );
}

#[tokio::test]
async fn api_health() {
    let scenario = Scenario::load("s01_signal_low_fee");
    let replay = support::start(scenario.routes.clone()).await;
    let api = serve_api(&replay.url).await;
    let body: Value = reqwest::get(format!("{api}/health"))
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn concurrent_cold_requests_share_backend_calls() {
    let scenario = Scenario::load("s12_receiver_child");
    let replay = support::start(scenario.routes.clone()).await;
    let doctor = Arc::new(doctor_for(&replay.url));
    let txid: Txid = scenario.focus().parse().expect("txid");
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let doctor = doctor.clone();
            tokio::spawn(async move { doctor.diagnose(txid, None).await })
        })
        .collect();
    for request in requests {
        request.await.expect("joins").expect("diagnosis");
    }
    let hits = replay.all_hits();
    assert!(!hits.is_empty());
    for (path, count) in hits {
        assert_eq!(count, 1, "{path} was fetched {count} times");
    }
}

#[tokio::test]
async fn unspent_inputs_mean_possibly_dropped() {
    // A transaction spending the still-unspent change of the s01 payment: the backend
    // does not know it, and its input is unspent, so it was dropped or never sent.
    use txdoctor::bitcoin;
    let scenario = Scenario::load("s01_signal_low_fee");
    let replay = support::start(scenario.routes.clone()).await;
    let parent: Txid = scenario.focus().parse().expect("txid");
    let dropped = bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn {
            previous_output: bitcoin::OutPoint {
                txid: parent,
                vout: 1,
            },
            ..Default::default()
        }],
        output: vec![bitcoin::TxOut {
            value: bitcoin::Amount::from_sat(39_999_000),
            script_pubkey: bitcoin::ScriptBuf::new_op_return([0u8; 4]),
        }],
    };
    let diagnosis = doctor_for(&replay.url)
        .diagnose(dropped.compute_txid(), Some(dropped))
        .await
        .expect("diagnosis");
    let diagnosis = serde_json::to_value(&diagnosis).expect("serializes");
    assert_eq!(diagnosis["verdict"]["cause"], "possibly_dropped");
    assert_eq!(diagnosis["status"]["inputs_checked"], true);
    // 859 sat over the 66 vB of the unsigned transaction as given.
    assert!(
        diagnosis["verdict"]["headline"]
            .as_str()
            .expect("headline")
            .contains("It pays 13.02 sat/vB"),
        "{}",
        diagnosis["verdict"]["headline"]
    );
    assert_eq!(diagnosis["triage"]["priority"], "high");
}
