//! Fee-bump plans on every recorded scenario: the minimums must equal the fees at which
//! Bitcoin Core first accepted the same replacement or child, and every PSBT must sign with
//! the scenario's regtest keys into a transaction that keeps its promises.
#![allow(clippy::cast_possible_truncation)] // Recorded numbers are small; a wrong cast fails the check.

mod support;

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;

use bdk_wallet::miniscript::psbt::PsbtExt;
use rust_decimal::Decimal;
use serde_json::Value;
use support::{Scenario, scenario_names};
use txdoctor::analysis::AnalysisOptions;
use txdoctor::bitcoin::bip32::Xpriv;
use txdoctor::bitcoin::secp256k1::Secp256k1;
use txdoctor::bitcoin::{Address, Network, Psbt, Transaction, TxOut, Txid};
use txdoctor::bump::plan::{BumpKind, PlannedBump, Strategy};
use txdoctor::bump::{BumpError, BumpPlan, BumpRequest, Bumper, Target};
use txdoctor::policy::{PolicyVersion, RelayPolicy};

fn bumper_for(url: &str, version: PolicyVersion) -> Bumper {
    let options = AnalysisOptions {
        policy: RelayPolicy::default(),
        policy_version: version,
    };
    let doctor = Arc::new(support::esplora_doctor(url, options, None));
    Bumper::new(doctor, support::bump_config())
}

fn descriptors(scenario: &Scenario, owner: &str, kind: &str) -> Vec<String> {
    scenario.scenario["wallets"][owner][kind]
        .as_array()
        .expect("descriptors")
        .iter()
        .map(|descriptor| descriptor.as_str().expect("text").to_owned())
        .collect()
}

fn request(scenario: &Scenario, owner: &str, target: Target, strategy: Strategy) -> BumpRequest {
    BumpRequest {
        txid: scenario.focus().parse().expect("txid"),
        descriptors: descriptors(scenario, owner, "public"),
        change_descriptors: Vec::new(),
        target,
        strategy,
        allow_payment_decrease: false,
        force: false,
    }
}

async fn plan(scenario: &Scenario, request: &BumpRequest) -> BumpPlan {
    let replay = support::start(scenario.routes.clone()).await;
    bumper_for(&replay.url, PolicyVersion::V31)
        .plan(request)
        .await
        .expect("plan")
}

fn option(plan: &BumpPlan, kind: BumpKind) -> &PlannedBump {
    plan.options
        .iter()
        .find(|option| option.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} option"))
}

fn as_u64(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not an integer: {value}"))
}

/// Signs every input the scenario's owner can sign and finalizes the PSBT.
fn sign(psbt_base64: &str, scenario: &Scenario, owner: &str) -> Transaction {
    let mut psbt = Psbt::from_str(psbt_base64).expect("PSBT parses");
    let secp = Secp256k1::new();
    let masters: BTreeSet<String> = descriptors(scenario, owner, "private_regtest_only")
        .iter()
        .map(|private| {
            private
                .split("tprv")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .map(|key| format!("tprv{key}"))
                .expect("a tprv")
        })
        .collect();
    for master in masters {
        let xpriv = Xpriv::from_str(&master).expect("test key");
        // Inputs of other owners fail to sign here; the test checks the result below.
        let _ = psbt.sign(&xpriv, &secp);
    }
    psbt.finalize_mut(&Secp256k1::verification_only())
        .expect("finalizes");
    psbt.extract_tx().expect("extracts")
}

fn prevouts_of(original: &Value, scenario: &Scenario, tx: &Transaction) -> Vec<TxOut> {
    // Values come from the recorded Esplora JSON of the transactions spent.
    tx.input
        .iter()
        .map(|input| {
            let outpoint = input.previous_output;
            let json = scenario
                .routes
                .get(&format!("/tx/{}", outpoint.txid))
                .map(|(_, body)| body.clone())
                .unwrap_or_else(|| original.to_string());
            let json: Value = serde_json::from_str(&json).expect("JSON");
            let output = &json["vout"][outpoint.vout as usize];
            TxOut {
                value: txdoctor::bitcoin::Amount::from_sat(as_u64(&output["value"])),
                script_pubkey: txdoctor::bitcoin::ScriptBuf::from_hex(
                    output["scriptpubkey"].as_str().expect("hex"),
                )
                .expect("script"),
            }
        })
        .collect()
}

/// Checks a signed bump against its plan and the original.
fn check_signed(scenario: &Scenario, planned: &PlannedBump, signed: &Transaction, owner: &str) {
    let name = &scenario.name;
    let focus = scenario.focus();
    let original_json: Value = serde_json::from_str(
        &scenario
            .routes
            .get(&format!("/tx/{focus}"))
            .expect("recorded")
            .1,
    )
    .expect("JSON");
    let prevouts = prevouts_of(&original_json, scenario, signed);
    let input_total: u64 = prevouts.iter().map(|prevout| prevout.value.to_sat()).sum();
    let output_total: u64 = signed
        .output
        .iter()
        .map(|output| output.value.to_sat())
        .sum();
    assert_eq!(
        input_total - output_total,
        planned.fee_sat.expect("fee"),
        "{name} {:?}: signed fee",
        planned.kind
    );
    let signed_vsize = signed.weight().to_wu().div_ceil(4);
    assert!(
        signed_vsize <= planned.vsize.expect("vsize"),
        "{name} {:?}: signed {signed_vsize} vB exceeds the estimate",
        planned.kind
    );
    for input in &signed.input {
        assert_eq!(
            input.sequence.to_consensus_u32(),
            0xffff_fffd,
            "{name}: signals RBF"
        );
    }
    let original_outputs: Vec<(String, u64)> = original_json["vout"]
        .as_array()
        .expect("vout")
        .iter()
        .map(|output| {
            (
                output["scriptpubkey"].as_str().expect("hex").to_owned(),
                as_u64(&output["value"]),
            )
        })
        .collect();
    let owned: BTreeSet<String> = planned
        .outputs
        .iter()
        .filter(|output| output.owner)
        .map(|output| output.address.clone())
        .collect();
    for output in &signed.output {
        let address = Address::from_script(&output.script_pubkey, Network::Regtest)
            .expect("address")
            .to_string();
        if owned.contains(&address) {
            continue;
        }
        let before = original_outputs
            .iter()
            .find(|(script, _)| *script == output.script_pubkey.to_hex_string())
            .map(|(_, value)| *value);
        let before =
            before.unwrap_or_else(|| panic!("{name}: a new output to someone else, {address}"));
        assert!(
            output.value.to_sat() <= before,
            "{name}: output to {address} was raised"
        );
        if planned.kind == BumpKind::RbfKeepPayment {
            assert_eq!(
                output.value.to_sat(),
                before,
                "{name}: payment to {address} changed"
            );
        }
    }
    let original_inputs: Vec<String> = original_json["vin"]
        .as_array()
        .expect("vin")
        .iter()
        .map(|vin| format!("{}:{}", vin["txid"].as_str().expect("txid"), vin["vout"]))
        .collect();
    let signed_inputs: Vec<String> = signed
        .input
        .iter()
        .map(|input| input.previous_output.to_string())
        .collect();
    if planned.kind == BumpKind::Cpfp {
        assert!(
            signed_inputs.iter().all(|input| input.starts_with(&focus)),
            "{name}: the child spends the stuck transaction"
        );
    } else {
        assert_eq!(
            signed_inputs, original_inputs,
            "{name}: a replacement spends the original inputs"
        );
    }
    let _ = owner;
}

#[tokio::test]
async fn rbf_minimum_equals_core_for_every_scenario() {
    let mut checked = 0;
    for name in scenario_names() {
        let scenario = Scenario::load(&name);
        let Some(recorded) = scenario.core().get("replacement_min_fee").cloned() else {
            continue;
        };
        let keeps_payment = !recorded["template"]["keep_outputs"]
            .as_array()
            .expect("keep")
            .is_empty();
        let mut request = request(
            &scenario,
            "alice",
            Target::FeeRate(Decimal::from(20)),
            Strategy::Rbf,
        );
        request.allow_payment_decrease = !keeps_payment;
        let plan = plan(&scenario, &request).await;
        let kind = if keeps_payment {
            BumpKind::RbfKeepPayment
        } else {
            BumpKind::RbfReducePayment
        };
        let planned = option(&plan, kind);
        assert!(planned.possible, "{name}: {:?}", planned.reason);
        // Core signed with 71-byte low-R signatures; the plan assumes 72 bytes, which can
        // add one virtual byte to a legacy input and never changes the minimum here.
        let recorded_vsize = as_u64(&recorded["replacement_vsize"]);
        let vsize = planned.vsize.expect("vsize");
        assert!(
            (recorded_vsize..=recorded_vsize + 1).contains(&vsize),
            "{name}: replacement vsize {vsize} against {recorded_vsize}"
        );
        assert_eq!(
            planned.minimum_fee_sat,
            Some(as_u64(&recorded["min_fee_sat"])),
            "{name}: minimum fee"
        );
        let reduced = recorded["template"]["reduce_output_address"]
            .as_str()
            .expect("address");
        let reduced_output = planned
            .outputs
            .iter()
            .find(|output| output.address == reduced)
            .expect("the reduced output is reported");
        assert!(
            reduced_output.after_sat < reduced_output.before_sat,
            "{name}: {reduced} is the output reduced"
        );
        let signed = sign(planned.psbt.as_deref().expect("psbt"), &scenario, "alice");
        check_signed(&scenario, planned, &signed, "alice");
        checked += 1;
    }
    assert_eq!(
        checked, 8,
        "every scenario with a recorded replacement minimum"
    );
}

#[tokio::test]
async fn cancel_minimum_equals_core() {
    let mut checked = 0;
    for name in scenario_names() {
        let scenario = Scenario::load(&name);
        let Some(recorded) = scenario.core().get("cancel_min_fee").cloned() else {
            continue;
        };
        let plan = plan(
            &scenario,
            &request(
                &scenario,
                "alice",
                Target::FeeRate(Decimal::from(20)),
                Strategy::Cancel,
            ),
        )
        .await;
        let planned = option(&plan, BumpKind::Cancel);
        assert!(planned.possible, "{name}: {:?}", planned.reason);
        assert_eq!(
            planned.vsize,
            Some(as_u64(&recorded["replacement_vsize"])),
            "{name}: cancel vsize"
        );
        assert_eq!(
            planned.minimum_fee_sat,
            Some(as_u64(&recorded["min_fee_sat"])),
            "{name}: cancel minimum"
        );
        let signed = sign(planned.psbt.as_deref().expect("psbt"), &scenario, "alice");
        assert_eq!(
            signed.output.len(),
            1,
            "{name}: one output back to the owner"
        );
        check_signed(&scenario, planned, &signed, "alice");
        checked += 1;
    }
    assert_eq!(checked, 2);
}

#[tokio::test]
async fn cpfp_fee_equals_core() {
    let mut checked = 0;
    for name in scenario_names() {
        let scenario = Scenario::load(&name);
        let Some(recorded) = scenario.core().get("cpfp_child_for_target").cloned() else {
            continue;
        };
        let target = Decimal::from(as_u64(&recorded["target_sat_per_vb"]));
        let spend = recorded["spend"].as_str().expect("spend").to_owned();
        // The child spends the recorded output, so its owner plans it.
        let mut found = None;
        let owners: Vec<String> = scenario.scenario["wallets"]
            .as_object()
            .expect("wallets")
            .keys()
            .cloned()
            .collect();
        for owner in owners.iter().map(String::as_str) {
            let plan = plan(
                &scenario,
                &request(&scenario, owner, Target::FeeRate(target), Strategy::Cpfp),
            )
            .await;
            let planned = option(&plan, BumpKind::Cpfp).clone();
            let psbt = planned
                .psbt
                .as_deref()
                .map(|psbt| Psbt::from_str(psbt).expect("PSBT"));
            if psbt
                .is_some_and(|psbt| psbt.unsigned_tx.input[0].previous_output.to_string() == spend)
            {
                found = Some((owner, planned));
            }
        }
        let (owner, planned) =
            found.unwrap_or_else(|| panic!("{name}: no owner's child spends {spend}"));
        let owner = owner.to_owned();
        let owner = owner.as_str();
        let child_vsize = as_u64(&recorded["child_vsize"]);
        assert_eq!(
            planned.vsize,
            Some(child_vsize),
            "{name}: child of the recorded shape"
        );
        assert_eq!(
            planned.fee_sat,
            Some(as_u64(&recorded["min_child_fee_sat"])),
            "{name}: child fee"
        );
        let paid: BTreeSet<String> = planned.pays_for.iter().map(Txid::to_string).collect();
        let recorded_paid: BTreeSet<String> = recorded["ancestors_paid_for"]
            .as_array()
            .expect("list")
            .iter()
            .map(|txid| txid.as_str().expect("txid").to_owned())
            .collect();
        assert_eq!(paid, recorded_paid, "{name}: ancestors paid for");
        let signed = sign(planned.psbt.as_deref().expect("psbt"), &scenario, owner);
        check_signed(&scenario, &planned, &signed, owner);
        checked += 1;
    }
    assert_eq!(checked, 3);
}

#[tokio::test]
async fn receiver_child_is_evicted_and_paid_for() {
    let scenario = Scenario::load("s12_receiver_child");
    let plan = plan(
        &scenario,
        &request(
            &scenario,
            "alice",
            Target::FeeRate(Decimal::from(5)),
            Strategy::Auto,
        ),
    )
    .await;
    let rbf = option(&plan, BumpKind::RbfKeepPayment);
    let child = "ba108403f4c7b5d46ccb4d9cb41e8866dd26f7a21ad9ea47b965605523403c25"
        .parse::<Txid>()
        .expect("txid");
    assert!(
        rbf.replaces.contains(&child),
        "the receiver's child is evicted"
    );
    assert_eq!(rbf.minimum_fee_sat, Some(368));
    assert_eq!(rbf.fee_sat, Some(705), "5 sat/vB on 141 vB");
}

#[tokio::test]
async fn psbt_carries_signer_metadata() {
    for name in [
        "s01_signal_low_fee",
        "s09_taproot_inputs",
        "s10_legacy_input",
    ] {
        let scenario = Scenario::load(name);
        let plan = plan(
            &scenario,
            &request(
                &scenario,
                "alice",
                Target::FeeRate(Decimal::from(20)),
                Strategy::Rbf,
            ),
        )
        .await;
        let planned = option(&plan, BumpKind::RbfKeepPayment);
        let psbt = Psbt::from_str(planned.psbt.as_deref().expect("psbt")).expect("PSBT");
        for (index, input) in psbt.inputs.iter().enumerate() {
            let spent = input
                .witness_utxo
                .as_ref()
                .expect("witness_utxo on every input");
            if spent.script_pubkey.is_p2tr() {
                assert!(
                    !input.tap_key_origins.is_empty(),
                    "{name} input {index}: tap key origins"
                );
                assert!(
                    input.tap_internal_key.is_some(),
                    "{name} input {index}: internal key"
                );
            } else {
                let previous = input
                    .non_witness_utxo
                    .as_ref()
                    .expect("previous transaction");
                assert_eq!(
                    previous.compute_txid(),
                    psbt.unsigned_tx.input[index].previous_output.txid,
                    "{name}: matching previous transaction"
                );
                assert!(
                    !input.bip32_derivation.is_empty(),
                    "{name} input {index}: BIP32 derivation"
                );
            }
        }
        let change = psbt
            .outputs
            .iter()
            .zip(&psbt.unsigned_tx.output)
            .find(|(_, output)| {
                planned.outputs.iter().any(|o| {
                    o.owner
                        && o.address
                            == Address::from_script(&output.script_pubkey, Network::Regtest)
                                .expect("address")
                                .to_string()
                })
            });
        let (change_output, _) = change.expect("a change output");
        assert!(
            !change_output.bip32_derivation.is_empty() || !change_output.tap_key_origins.is_empty(),
            "{name}: change derivation"
        );
        assert_eq!(psbt.unsigned_tx.version.0, 2, "{name}: version kept");
    }
}

#[tokio::test]
async fn truc_child_keeps_version_three() {
    let scenario = Scenario::load("s06_truc");
    let plan = plan(
        &scenario,
        &request(
            &scenario,
            "alice",
            Target::FeeRate(Decimal::from(10)),
            Strategy::Auto,
        ),
    )
    .await;
    for planned in plan.options.iter().filter(|option| option.possible) {
        let psbt = Psbt::from_str(planned.psbt.as_deref().expect("psbt")).expect("PSBT");
        assert_eq!(
            psbt.unsigned_tx.version.0, 3,
            "{:?} stays TRUC",
            planned.kind
        );
    }
}

async fn plan_error(scenario: &Scenario, request: &BumpRequest) -> BumpError {
    let replay = support::start(scenario.routes.clone()).await;
    bumper_for(&replay.url, PolicyVersion::Both)
        .plan(request)
        .await
        .expect_err("rejected")
}

#[tokio::test]
async fn private_descriptor_is_rejected_unechoed() {
    let scenario = Scenario::load("s01_signal_low_fee");
    let mut request = request(
        &scenario,
        "alice",
        Target::FeeRate(Decimal::from(20)),
        Strategy::Auto,
    );
    request.descriptors = descriptors(&scenario, "alice", "private_regtest_only");
    let error = plan_error(&scenario, &request).await;
    assert!(matches!(error, BumpError::Descriptor(_)), "{error}");
    assert!(error.is_bad_input());
    let key = request.descriptors[0]
        .split("tprv")
        .nth(1)
        .expect("a private key")
        .split('/')
        .next()
        .expect("key");
    assert!(
        !error.to_string().contains(key),
        "the key is not repeated: {error}"
    );
}

#[tokio::test]
async fn mainnet_descriptor_on_regtest_is_rejected() {
    let scenario = Scenario::load("s01_signal_low_fee");
    let mut request = request(
        &scenario,
        "alice",
        Target::FeeRate(Decimal::from(20)),
        Strategy::Auto,
    );
    request.descriptors = vec!["wpkh([d34db33f/84h/0h/0h]xpub6DJ2dNUysrn5Vt36jH2KLBT2i1auw1tTSSomg8PhqNiUtx8QX2SvC9nrHu81fT41fvDUnhMjEzQgXnQjKEu3oaqMSzhSrHMxyyoEAmUHQbY/0/*)".to_owned()];
    let error = plan_error(&scenario, &request).await;
    assert!(
        error
            .to_string()
            .contains("mainnet (xpub) keys but the network is Regtest"),
        "{error}"
    );
}

#[tokio::test]
async fn descriptor_owning_nothing_is_rejected() {
    let scenario = Scenario::load("s01_signal_low_fee");
    let mut request = request(
        &scenario,
        "alice",
        Target::FeeRate(Decimal::from(20)),
        Strategy::Auto,
    );
    // Alice's key on a branch she never used.
    request.descriptors = vec![
        descriptors(&scenario, "alice", "public")[6]
            .split('#')
            .next()
            .expect("body")
            .replace("/0/*", "/7/*"),
    ];
    let error = plan_error(&scenario, &request).await;
    assert!(matches!(error, BumpError::NothingOwned(_)), "{error}");
}

#[tokio::test]
async fn confirmed_and_replaced_are_rejected() {
    let confirmed = Scenario::load("s08_confirmed");
    let error = plan_error(
        &confirmed,
        &request(
            &confirmed,
            "alice",
            Target::FeeRate(Decimal::from(20)),
            Strategy::Auto,
        ),
    )
    .await;
    assert!(
        matches!(error, BumpError::Confirmed { height: 327, .. }),
        "{error}"
    );
    let replaced = Scenario::load("s07_replaced");
    let error = plan_error(
        &replaced,
        &request(
            &replaced,
            "alice",
            Target::FeeRate(Decimal::from(20)),
            Strategy::Auto,
        ),
    )
    .await;
    assert!(matches!(error, BumpError::NotFound(_)), "{error}");
}

#[tokio::test]
async fn target_below_current_rate_is_rejected() {
    let boosted = Scenario::load("s05_cpfp_boosted");
    let error = plan_error(
        &boosted,
        &request(
            &boosted,
            "alice",
            Target::FeeRate(Decimal::from(10)),
            Strategy::Auto,
        ),
    )
    .await;
    assert!(matches!(error, BumpError::TargetNotAbove { .. }), "{error}");
    assert!(error.to_string().contains("27.01"), "{error}");
}

#[tokio::test]
async fn fee_ceiling_needs_force() {
    let scenario = Scenario::load("s01_signal_low_fee");
    let plan = plan(
        &scenario,
        &request(
            &scenario,
            "alice",
            Target::FeeRate(Decimal::from(10_000)),
            Strategy::Rbf,
        ),
    )
    .await;
    let rbf = option(&plan, BumpKind::RbfKeepPayment);
    assert!(!rbf.possible);
    assert!(
        rbf.reason
            .as_deref()
            .expect("reason")
            .contains("exceeds the ceiling of 1000000 sat")
    );
    let mut forced = request(
        &scenario,
        "alice",
        Target::FeeRate(Decimal::from(10_000)),
        Strategy::Rbf,
    );
    forced.force = true;
    let plan = self::plan(&scenario, &forced).await;
    assert!(option(&plan, BumpKind::RbfKeepPayment).possible);
}

#[tokio::test]
async fn blocks_target_uses_histogram() {
    let scenario = Scenario::load("s01_signal_low_fee");
    let plan = plan(
        &scenario,
        &request(&scenario, "alice", Target::Blocks(1), Strategy::Auto),
    )
    .await;
    assert_eq!(
        plan.target_sat_per_vb,
        Decimal::from_str("15.1").expect("decimal")
    );
    assert_eq!(plan.recommended, Some(BumpKind::RbfKeepPayment));
}

async fn serve_api(url: &str) -> String {
    support::serve_api(support::esplora_doctor(
        url,
        AnalysisOptions::default(),
        None,
    ))
    .await
}

#[tokio::test]
async fn api_bump_and_psbt_check() {
    let scenario = Scenario::load("s01_signal_low_fee");
    let replay = support::start(scenario.routes.clone()).await;
    let api = serve_api(&replay.url).await;
    let client = reqwest::Client::new();
    let focus = scenario.focus();
    let body = serde_json::json!({ "descriptors": descriptors(&scenario, "alice", "public"), "feerate": 20, "strategy": "rbf" });
    let response = client
        .post(format!("{api}/api/v1/tx/{focus}/bump"))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    let plan: Value = response.json().await.expect("JSON");
    assert_eq!(plan["recommended"], "rbf_keep_payment");
    assert_eq!(plan["options"][0]["minimum_fee_sat"], 156);
    let psbt = plan["options"][0]["psbt"]
        .as_str()
        .expect("psbt")
        .to_owned();

    let response = client
        .post(format!("{api}/api/v1/psbt/check"))
        .json(&serde_json::json!({ "psbt": psbt }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    let report: Value = response.json().await.expect("JSON");
    assert_eq!(report["ready_for_signer"], true, "{report}");
    assert_eq!(report["replaces"][0], focus.as_str());
    assert_eq!(report["minimum_fee_sat"], 156);
    assert_eq!(report["meets_minimum"], true);
    assert_eq!(report["fee_sat"], plan["options"][0]["fee_sat"]);

    let mut stripped = Psbt::from_str(&psbt).expect("PSBT");
    stripped.inputs[0].bip32_derivation.clear();
    stripped.inputs[0].non_witness_utxo = None;
    let response = client
        .post(format!("{api}/api/v1/psbt/check"))
        .json(&serde_json::json!({ "psbt": stripped.to_string() }))
        .send()
        .await
        .expect("request");
    let report: Value = response.json().await.expect("JSON");
    assert_eq!(report["ready_for_signer"], false);
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("non_witness_utxo") && problems.contains("BIP32"),
        "{problems}"
    );

    let response = client
        .post(format!("{api}/api/v1/psbt/check"))
        .json(&serde_json::json!({ "psbt": "cHNidP8garbage" }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 400);
    let error: Value = response.json().await.expect("JSON");
    assert_eq!(error["code"], "invalid_psbt");
}

#[tokio::test]
async fn api_bump_rejects_private_descriptor() {
    let scenario = Scenario::load("s01_signal_low_fee");
    let replay = support::start(scenario.routes.clone()).await;
    let api = serve_api(&replay.url).await;
    let private = descriptors(&scenario, "alice", "private_regtest_only");
    let body = serde_json::json!({ "descriptors": private, "feerate": 20 });
    let response = reqwest::Client::new()
        .post(format!("{api}/api/v1/tx/{}/bump", scenario.focus()))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 400);
    let text = response.text().await.expect("body");
    assert!(text.contains("private_key_rejected"), "{text}");
    assert!(!text.contains("tprv8Zgx"), "the key is not repeated");
}

#[tokio::test]
async fn cli_bump_writes_psbt_and_checks_it() {
    let scenario = Scenario::load("s09_taproot_inputs");
    let replay = support::start(scenario.routes.clone()).await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let out = directory.path().join("bump.psbt");
    let mut args: Vec<String> = [
        "--network",
        "regtest",
        "--esplora",
        &replay.url,
        "bump",
        &scenario.focus(),
        "--feerate",
        "15",
        "--json",
        "--out",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    args.push(out.display().to_string());
    for descriptor in descriptors(&scenario, "alice", "public") {
        args.push("--descriptor".to_owned());
        args.push(descriptor);
    }
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_txdoctor"))
        .args(&args)
        .output()
        .await
        .expect("runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let plan: Value = serde_json::from_slice(&output.stdout).expect("JSON plan");
    assert_eq!(plan["recommended"], "rbf_keep_payment");
    assert!(out.exists(), "the PSBT file is written");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_txdoctor"))
        .args([
            "--network",
            "regtest",
            "--esplora",
            &replay.url,
            "psbt",
            "check",
            "--json",
            &out.display().to_string(),
        ])
        .output()
        .await
        .expect("runs");
    assert_eq!(output.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["ready_for_signer"], true, "{report}");
    assert_eq!(report["minimum_fee_sat"], 234);
}

#[tokio::test]
async fn cli_bump_private_key_exit_code() {
    let scenario = Scenario::load("s01_signal_low_fee");
    let replay = support::start(scenario.routes.clone()).await;
    let private = descriptors(&scenario, "alice", "private_regtest_only")[0].clone();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_txdoctor"))
        .args([
            "--network",
            "regtest",
            "--esplora",
            &replay.url,
            "bump",
            &scenario.focus(),
            "--feerate",
            "20",
            "--descriptor",
            &private,
        ])
        .output()
        .await
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(all.contains("contains a private key"), "{all}");
    assert!(!all.contains("tprv8Zgx"), "the key is not repeated");
}

/// A confirmed coin paying `sats` to Alice's receive address at `index`: made up for
/// the test, because the recording contains no other coin of hers.
fn alice_coin(scenario: &Scenario, index: u32, sats: u64) -> txdoctor::bump::coins::Coin {
    use txdoctor::bitcoin::{Amount, OutPoint, TxIn, absolute, transaction};
    let wpkh = descriptors(scenario, "alice", "public")
        .into_iter()
        .find(|d| d.starts_with("wpkh(") && d.contains("/0/*"))
        .expect("wpkh");
    let wallet = bdk_wallet::Wallet::create_single(wpkh)
        .network(Network::Regtest)
        .create_wallet_no_persist()
        .expect("wallet");
    let script = wallet
        .peek_address(bdk_wallet::KeychainKind::External, index)
        .address
        .script_pubkey();
    let funding: Txid = "e4a952394eac95991b4521cd27b7864ae07efdbcf9289fd9297d05cb3ee9f6a9"
        .parse()
        .expect("txid");
    let previous = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: funding,
                vout: 1,
            },
            ..TxIn::default()
        }],
        output: vec![TxOut {
            value: Amount::from_sat(sats),
            script_pubkey: script.clone(),
        }],
    };
    txdoctor::bump::coins::Coin {
        outpoint: OutPoint {
            txid: previous.compute_txid(),
            vout: 0,
        },
        txout: previous.output[0].clone(),
        previous,
    }
}

#[tokio::test]
async fn no_change_replacement_adds_a_coin() {
    let scenario = Scenario::load("s11_no_change");
    let replay = support::start(scenario.routes.clone()).await;
    let coin = alice_coin(&scenario, 3, 100_000);
    let bumper = bumper_for(&replay.url, PolicyVersion::V31).with_known_coins(vec![coin.clone()]);
    let plan = bumper
        .plan(&request(
            &scenario,
            "alice",
            Target::FeeRate(Decimal::from(10)),
            Strategy::Rbf,
        ))
        .await
        .expect("plan");
    let rbf = option(&plan, BumpKind::RbfKeepPayment);
    assert!(rbf.possible, "{:?}", rbf.reason);
    let psbt = Psbt::from_str(rbf.psbt.as_deref().expect("psbt")).expect("PSBT");
    assert_eq!(
        psbt.unsigned_tx.input.len(),
        2,
        "the original input and the added coin"
    );
    assert_eq!(psbt.unsigned_tx.input[1].previous_output, coin.outpoint);
    assert_eq!(
        psbt.inputs[1]
            .non_witness_utxo
            .as_ref()
            .map(Transaction::compute_txid),
        Some(coin.outpoint.txid)
    );
    assert!(
        !psbt.inputs[1].bip32_derivation.is_empty(),
        "the coin's key origin"
    );
    let new_change = rbf
        .outputs
        .iter()
        .find(|output| output.before_sat.is_none())
        .expect("a new change output");
    assert!(new_change.owner);
    let payment = rbf
        .outputs
        .iter()
        .find(|output| !output.owner)
        .expect("the payment");
    assert_eq!(payment.after_sat, payment.before_sat, "the payment is kept");
    // Two P2WPKH inputs and two outputs: 209 vB at 10 sat/vB.
    assert_eq!(rbf.vsize, Some(209));
    assert_eq!(rbf.fee_sat, Some(2090));
    let mut signed_psbt = psbt.clone();
    let secp = Secp256k1::new();
    let master = descriptors(&scenario, "alice", "private_regtest_only")[0]
        .split("tprv")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .map(|key| format!("tprv{key}"))
        .expect("tprv");
    let _ = signed_psbt.sign(&Xpriv::from_str(&master).expect("key"), &secp);
    signed_psbt
        .finalize_mut(&Secp256k1::verification_only())
        .expect("both inputs finalize");
    let signed = signed_psbt.extract_tx().expect("extracts");
    assert!(signed.weight().to_wu().div_ceil(4) <= 209);
}

#[tokio::test]
async fn failed_coin_scan_is_reported() {
    // The recording has no address histories, so the scan fails and the plan reports it.
    let scenario = Scenario::load("s11_no_change");
    let replay = support::start(scenario.routes.clone()).await;
    let esplora = bdk_esplora::esplora_client::Builder::new(&replay.url)
        .max_retries(0)
        .build_async()
        .expect("client");
    let bumper = bumper_for(&replay.url, PolicyVersion::V31).with_coin_lookup(esplora);
    let plan = bumper
        .plan(&request(
            &scenario,
            "alice",
            Target::FeeRate(Decimal::from(10)),
            Strategy::Rbf,
        ))
        .await
        .expect("plan");
    let rbf = option(&plan, BumpKind::RbfKeepPayment);
    assert!(!rbf.possible);
    assert!(
        plan.data_gaps
            .iter()
            .any(|gap| gap.contains("failed to scan wallet 1 for coins")),
        "{:?}",
        plan.data_gaps
    );
}

#[tokio::test]
async fn multipath_descriptor_is_receive_and_change() {
    let scenario = Scenario::load("s01_signal_low_fee");
    let receive = descriptors(&scenario, "alice", "public")
        .into_iter()
        .find(|d| d.starts_with("wpkh(") && d.contains("/0/*"))
        .expect("wpkh");
    let multipath = receive
        .split('#')
        .next()
        .expect("body")
        .replace("/0/*", "/<0;1>/*");
    let mut request = request(
        &scenario,
        "alice",
        Target::FeeRate(Decimal::from(20)),
        Strategy::Auto,
    );
    request.descriptors = vec![multipath];
    let plan = plan(&scenario, &request).await;
    let rbf = option(&plan, BumpKind::RbfKeepPayment);
    assert!(rbf.possible, "{:?}", rbf.reason);
    assert_eq!(rbf.minimum_fee_sat, Some(156));
}

#[tokio::test]
async fn truc_child_evicts_its_sibling() {
    // A TRUC parent takes one child: Alice's new child replaces Bob's and pays for it.
    let scenario = Scenario::load("s06_truc");
    let plan = plan(
        &scenario,
        &request(
            &scenario,
            "alice",
            Target::FeeRate(Decimal::from(10)),
            Strategy::Cpfp,
        ),
    )
    .await;
    let cpfp = option(&plan, BumpKind::Cpfp);
    assert!(cpfp.possible, "{:?}", cpfp.reason);
    let sibling: Txid = "50a32466d307074ae6fac5e653579ab716324675d059db1164f598b7cee6997c"
        .parse()
        .expect("txid");
    assert_eq!(cpfp.replaces, vec![sibling]);
    // Rules 3 and 4 against Bob's 330 sat child: 330 + ceil(0.1 × 110).
    assert_eq!(cpfp.minimum_fee_sat, Some(341));
    // 10 sat/vB over the parent's 141 vB and the child's 110 vB, less the parent's 282 sat.
    assert_eq!(cpfp.fee_sat, Some(2228));
}

async fn check_report(scenario: &Scenario, psbt: &Psbt) -> txdoctor::bump::check::PsbtReport {
    let replay = support::start(scenario.routes.clone()).await;
    let doctor = support::esplora_doctor(&replay.url, AnalysisOptions::default(), None);
    txdoctor::bump::check::check(&doctor, psbt, 1_000_000)
        .await
        .expect("report")
}

async fn rbf_psbt(scenario: &Scenario) -> Psbt {
    let plan = plan(
        scenario,
        &request(
            scenario,
            "alice",
            Target::FeeRate(Decimal::from(20)),
            Strategy::Rbf,
        ),
    )
    .await;
    Psbt::from_str(
        option(&plan, BumpKind::RbfKeepPayment)
            .psbt
            .as_deref()
            .expect("psbt"),
    )
    .expect("PSBT")
}

#[tokio::test]
async fn check_catches_understated_input() {
    // witness_utxo claims 10,000,000 sat less than the coin holds, and the change is
    // lowered to match: the real fee would be 10,000,000 sat higher than it looks.
    let scenario = Scenario::load("s01_signal_low_fee");
    let mut psbt = rbf_psbt(&scenario).await;
    let honest = check_report(&scenario, &psbt).await;
    assert!(honest.ready_for_signer, "{:?}", honest.problems);
    let understated = psbt.inputs[0]
        .witness_utxo
        .as_ref()
        .expect("witness_utxo")
        .value
        - txdoctor::bitcoin::Amount::from_sat(10_000_000);
    psbt.inputs[0]
        .witness_utxo
        .as_mut()
        .expect("witness_utxo")
        .value = understated;
    let change = psbt
        .unsigned_tx
        .output
        .iter()
        .position(|output| output.value.to_sat() != 10_000_000)
        .expect("change");
    psbt.unsigned_tx.output[change].value -= txdoctor::bitcoin::Amount::from_sat(10_000_000);
    let report = check_report(&scenario, &psbt).await;
    assert!(!report.ready_for_signer);
    assert_eq!(
        report.fee_sat,
        Some(honest.fee_sat.expect("fee") + 10_000_000),
        "the fee comes from the chain"
    );
    let problems = report.problems.join("\n");
    assert!(
        problems.contains(
            "witness_utxo states 40000000 sat but its previous transaction pays 50000000 sat"
        ),
        "{problems}"
    );
    assert!(problems.contains("exceeds the ceiling"), "{problems}");
}

#[tokio::test]
async fn check_catches_duplicate_input() {
    let scenario = Scenario::load("s01_signal_low_fee");
    let mut psbt = rbf_psbt(&scenario).await;
    psbt.unsigned_tx
        .input
        .push(psbt.unsigned_tx.input[0].clone());
    psbt.inputs.push(psbt.inputs[0].clone());
    let report = check_report(&scenario, &psbt).await;
    assert!(!report.ready_for_signer);
    assert!(
        report
            .problems
            .iter()
            .any(|problem| problem.contains("a second time")),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn check_catches_raised_payment() {
    let scenario = Scenario::load("s01_signal_low_fee");
    let mut psbt = rbf_psbt(&scenario).await;
    let payment = psbt
        .unsigned_tx
        .output
        .iter()
        .position(|output| output.value.to_sat() == 10_000_000)
        .expect("payment");
    let change = 1 - payment;
    psbt.unsigned_tx.output[payment].value = txdoctor::bitcoin::Amount::from_sat(10_001_000);
    psbt.unsigned_tx.output[change].value -= txdoctor::bitcoin::Amount::from_sat(1000);
    let report = check_report(&scenario, &psbt).await;
    assert!(!report.ready_for_signer);
    assert!(
        report
            .problems
            .iter()
            .any(|problem| problem.contains("should not raise a payment")),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn check_sees_truc_sibling_eviction() {
    let scenario = Scenario::load("s06_truc");
    let plan = plan(
        &scenario,
        &request(
            &scenario,
            "alice",
            Target::FeeRate(Decimal::from(10)),
            Strategy::Cpfp,
        ),
    )
    .await;
    let psbt =
        Psbt::from_str(option(&plan, BumpKind::Cpfp).psbt.as_deref().expect("psbt")).expect("PSBT");
    let report = check_report(&scenario, &psbt).await;
    let sibling: Txid = "50a32466d307074ae6fac5e653579ab716324675d059db1164f598b7cee6997c"
        .parse()
        .expect("txid");
    assert_eq!(report.replaces, vec![sibling]);
    assert_eq!(report.minimum_fee_sat, Some(341));
    assert_eq!(report.meets_minimum, Some(true));
}

#[tokio::test]
async fn truc_child_possible_under_both_policies() {
    let scenario = Scenario::load("s06_truc");
    let replay = support::start(scenario.routes.clone()).await;
    let bumper = bumper_for(&replay.url, PolicyVersion::Both);
    let plan = bumper
        .plan(&request(
            &scenario,
            "alice",
            Target::FeeRate(Decimal::from(10)),
            Strategy::Cpfp,
        ))
        .await
        .expect("plan");
    let cpfp = option(&plan, BumpKind::Cpfp);
    assert!(cpfp.possible, "{:?}", cpfp.reason);
}
