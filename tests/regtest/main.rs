//! The regtest suite: stuck-transaction scenarios built on a real Bitcoin Core node with an
//! Esplora electrs in front of it, and txdoctor's diagnoses checked against what the node
//! itself reports.
//!
//! The suite runs the binaries named by `BITCOIND_EXE` and `ELECTRS_EXEC`, or found on
//! `PATH`. Without them every test passes at once, and one line on stderr reports that the
//! suite was skipped. With `TXDOCTOR_REGTEST_REQUIRED=1` a missing binary fails the run.
//! See `regtest/README.md`.

mod bump;
mod node;
mod plans;
mod scenarios;
mod truth;

use txdoctor::analysis::Status;
use txdoctor::bitcoin::{Amount, Sequence, TxOut};

use bump::{Replacement, check_minimum, submit_package, test_accept};
use node::Regtest;
use scenarios::{Builder, Coin, Scenario, TxSpec};
use truth::{check_confirmed_diagnosis, check_mempool_diagnosis, mine_until_confirmed};

/// Diagnoses each scenario and checks it against the node, then mines a block and
/// checks that each is reported confirmed.
async fn check_then_confirm(env: &Regtest, scenarios: &[Scenario]) {
    for scenario in scenarios {
        let diagnosis = env
            .diagnose(scenario.focus, None)
            .await
            .unwrap_or_else(|error| panic!("{}: {error:#}", scenario.name));
        check_mempool_diagnosis(env, scenario, &diagnosis);
    }
    env.mine(1).expect("mines a block");
    for scenario in scenarios {
        let diagnosis = env
            .diagnose(scenario.focus, None)
            .await
            .unwrap_or_else(|error| panic!("{}: {error:#}", scenario.name));
        check_confirmed_diagnosis(env, scenario, &diagnosis);
    }
}

#[tokio::test]
async fn payments_with_and_without_signal() {
    let Some(env) = Regtest::start().await else {
        return;
    };
    let builder = Builder::new(&env);
    let scenarios = [
        builder
            .low_fee_payment("signal", true)
            .expect("signalling payment"),
        builder
            .low_fee_payment("no-signal", false)
            .expect("payment without signal"),
        builder
            .no_change("no-change")
            .expect("payment without change"),
    ];
    assert_eq!(scenarios[2].tx.output.len(), 1, "no-change has one output");
    check_then_confirm(&env, &scenarios).await;
}

#[tokio::test]
async fn unconfirmed_relatives() {
    let Some(env) = Regtest::start().await else {
        return;
    };
    let builder = Builder::new(&env);
    let scenarios = [
        builder
            .inherited_signal("inherited")
            .expect("inherited signal"),
        builder
            .low_fee_ancestors("ancestors")
            .expect("low-fee ancestors"),
        builder
            .receiver_child("boosted", "60")
            .expect("boosted by a child"),
        builder
            .receiver_child("receiver-child", "1.5")
            .expect("low-fee receiver child"),
    ];
    check_then_confirm(&env, &scenarios).await;
}

#[tokio::test]
async fn truc_parent_and_child() {
    let Some(env) = Regtest::start().await else {
        return;
    };
    let scenario = Builder::new(&env)
        .truc("truc")
        .expect("TRUC parent and child");
    assert_eq!(scenario.tx.version.0, 3);
    check_then_confirm(&env, &[scenario]).await;
}

#[tokio::test]
async fn input_script_types() {
    let Some(env) = Regtest::start().await else {
        return;
    };
    let builder = Builder::new(&env);
    let scenarios = [
        builder
            .input_type("taproot", "bech32m", 2)
            .expect("taproot inputs"),
        builder
            .input_type("legacy", "legacy", 1)
            .expect("legacy input"),
        builder
            .input_type("nested", "p2sh-segwit", 1)
            .expect("P2SH-P2WPKH input"),
        builder.multisig("multisig").expect("2-of-3 multisig input"),
    ];
    assert_eq!(scenarios[0].tx.input.len(), 2, "taproot spends two coins");
    check_then_confirm(&env, &scenarios).await;
}

#[tokio::test]
async fn replaced_payment_is_traced() {
    let Some(env) = Regtest::start().await else {
        return;
    };
    let scenario = Builder::new(&env)
        .replaced("replaced")
        .expect("replaced payment");
    let replacement = scenario.replaced_by.expect("a replacement");

    let diagnosis = env
        .diagnose(scenario.focus, Some(scenario.tx.clone()))
        .await
        .expect("diagnosis");
    let Status::NotFound {
        conflicts,
        inputs_checked,
    } = &diagnosis.status
    else {
        panic!("expected not found, got {:?}", diagnosis.status);
    };
    assert!(
        inputs_checked,
        "the raw transaction let the inputs be checked"
    );
    assert_eq!(conflicts.len(), 1, "one input, one conflict");
    assert_eq!(
        conflicts[0].spender, replacement,
        "the spender is the replacement"
    );
    assert!(
        !conflicts[0].spender_confirmed,
        "the replacement is unconfirmed"
    );

    let replacement_scenario = Scenario {
        name: "replacement".to_owned(),
        focus: replacement,
        tx: env.transaction(replacement).expect("replacement"),
        ..scenario.clone()
    };
    let diagnosis = env.diagnose(replacement, None).await.expect("diagnosis");
    check_mempool_diagnosis(&env, &replacement_scenario, &diagnosis);

    env.mine(1).expect("mines a block");
    let diagnosis = env
        .diagnose(scenario.focus, Some(scenario.tx.clone()))
        .await
        .expect("diagnosis");
    let Status::NotFound { conflicts, .. } = &diagnosis.status else {
        panic!("expected not found, got {:?}", diagnosis.status);
    };
    assert!(
        conflicts[0].spender_confirmed,
        "the replacement is confirmed"
    );
    let diagnosis = env.diagnose(replacement, None).await.expect("diagnosis");
    check_confirmed_diagnosis(&env, &scenario, &diagnosis);
}

#[tokio::test]
async fn confirmed_payment() {
    let Some(env) = Regtest::start().await else {
        return;
    };
    let scenario = Builder::new(&env)
        .confirmed("confirmed")
        .expect("confirmed payment");
    let diagnosis = env.diagnose(scenario.focus, None).await.expect("diagnosis");
    check_confirmed_diagnosis(&env, &scenario, &diagnosis);
    let Status::Confirmed { confirmations, .. } = diagnosis.status else {
        panic!("expected confirmed");
    };
    assert_eq!(confirmations, 3);
}

#[tokio::test]
async fn full_mempool_holds_back_low_fee() {
    let Some(env) = Regtest::start().await else {
        return;
    };
    let builder = Builder::new(&env);
    // The payer is funded before the traffic arrives, so that its coin is confirmed.
    let alice = builder.wallet("full-alice").expect("wallet");
    builder
        .fund(&alice, "bech32", &[Amount::ONE_BTC])
        .expect("funding");
    builder.fill_mempool(30).expect("traffic");
    let scenario = builder
        .payment_from(&alice, "full", "1")
        .expect("low-fee payment");

    let diagnosis = env.diagnose(scenario.focus, None).await.expect("diagnosis");
    check_mempool_diagnosis(&env, &scenario, &diagnosis);
    let info = env.rpc("getmempoolinfo", &[]).expect("mempool info");
    let mempool_vsize = info["bytes"].as_u64().expect("bytes");
    let own_vsize = env.mempool_entry(scenario.focus).expect("entry").vsize;
    let position = diagnosis.position.as_ref().expect("a position");
    // electrs rounds each transaction's vsize down (weight / 4) where the node rounds up,
    // so the two totals may differ by up to one vB per transaction.
    let rounding = info["size"].as_u64().expect("size");
    assert!(
        position.mempool_vsize <= mempool_vsize
            && mempool_vsize <= position.mempool_vsize + rounding,
        "electrs' mempool vsize {} against the node's {mempool_vsize}",
        position.mempool_vsize
    );
    // Every traffic transaction pays more, so everything else is ahead.
    let ahead = mempool_vsize - own_vsize;
    // NOTE: electrs computes the payment's rate on its rounded-down vsize, which puts the
    // payment in a histogram bin above its own rate, so the position counts the payment
    // as ahead of itself. The lower bound is checked with that allowance.
    assert!(
        position.vsize_ahead_min <= ahead + own_vsize,
        "{ahead} vB ahead is below {position:?}"
    );
    assert!(
        ahead <= position.vsize_ahead_max + rounding,
        "{ahead} vB ahead is above {position:?}"
    );
    let template = env
        .rpc(
            "getblocktemplate",
            &[serde_json::json!({ "rules": ["segwit"] })],
        )
        .expect("block template");
    let in_template = template["transactions"]
        .as_array()
        .expect("template transactions")
        .iter()
        .any(|tx| tx["txid"] == scenario.focus.to_string());
    if !in_template {
        assert!(
            position.projected_block_min >= 2,
            "the node leaves it out of the next block, but {position:?}"
        );
    }

    // NOTE: the projection reads only the fee histogram. A block that has no room left
    // for a large traffic transaction takes the small payment, so it can confirm before
    // the projected block but never after it.
    let blocks = mine_until_confirmed(&env, scenario.focus).expect("confirms");
    assert!(
        blocks <= position.projected_block_max,
        "confirmed after {blocks} blocks, projected {position:?}"
    );
    let diagnosis = env.diagnose(scenario.focus, None).await.expect("diagnosis");
    check_confirmed_diagnosis(&env, &scenario, &diagnosis);
}

#[tokio::test]
async fn replacement_minimum_is_exact() {
    let Some(env) = Regtest::start().await else {
        return;
    };
    let builder = Builder::new(&env);
    let scenarios = [
        builder
            .low_fee_payment("signal", true)
            .expect("signalling payment"),
        builder
            .low_fee_payment("no-signal", false)
            .expect("payment without signal"),
        builder
            .low_fee_ancestors("ancestors")
            .expect("low-fee ancestors"),
        builder
            .receiver_child("boosted", "60")
            .expect("boosted by a child"),
        builder
            .receiver_child("receiver-child", "1.5")
            .expect("low-fee receiver child"),
        builder
            .input_type("taproot", "bech32m", 2)
            .expect("taproot inputs"),
    ];
    for scenario in &scenarios {
        let owner = &scenario.owner;
        let change = scenario.change.expect("the scenario has change");
        for cancel in [false, true] {
            let replacement = Replacement {
                original: &scenario.tx,
                input_values: Replacement::input_values(&env, &scenario.tx).expect("values"),
                reduce: change,
                cancel,
            };
            let kind = if cancel { "cancel" } else { "rbf" };
            let check = check_minimum(&env, owner, &replacement)
                .unwrap_or_else(|error| panic!("{} {kind}: {error:#}", scenario.name));
            assert!(
                check.at_minimum.allowed,
                "{} {kind}: rejected at the minimum {} sat: {:?}",
                scenario.name, check.minimum_fee_sat, check.at_minimum.reject_reason
            );
            // A transaction signed a vB smaller has a smaller minimum of its own.
            let below_its_minimum = check.minimum_fee_sat - 1 < check.one_below_minimum_sat;
            assert_eq!(
                check.one_below.allowed, !below_its_minimum,
                "{} {kind}: one satoshi below the minimum {} sat: {:?}",
                scenario.name, check.minimum_fee_sat, check.one_below
            );
        }
    }
}

#[tokio::test]
async fn package_pays_for_zero_fee_truc_parent() {
    let Some(env) = Regtest::start().await else {
        return;
    };
    let builder = Builder::new(&env);
    let alice = builder.wallet("package-alice").expect("wallet");
    let coins = builder
        .fund(&alice, "bech32", &[Amount::ONE_BTC])
        .expect("funding");
    let parent = builder
        .build_exact(
            &alice,
            TxSpec {
                version: 3,
                inputs: coins,
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                outputs: Vec::new(),
                change: alice
                    .new_address("bech32")
                    .expect("address")
                    .script_pubkey(),
                fee_rate_sat_per_kvb: 0,
                extra_vsize: 0,
            },
        )
        .expect("zero-fee parent");
    let alone = test_accept(&env, std::slice::from_ref(&parent)).expect("verdict");
    assert!(
        !alone[0].allowed,
        "a zero-fee parent alone is below the minimum relay fee"
    );

    let parent_txid = parent.compute_txid();
    let child = builder
        .build_exact(
            &alice,
            TxSpec {
                version: 3,
                inputs: vec![Coin {
                    outpoint: txdoctor::bitcoin::OutPoint {
                        txid: parent_txid,
                        vout: 0,
                    },
                    output: parent.output[0].clone(),
                }],
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                outputs: Vec::<TxOut>::new(),
                change: alice
                    .new_address("bech32")
                    .expect("address")
                    .script_pubkey(),
                fee_rate_sat_per_kvb: 2_000,
                extra_vsize: parent.vsize() as u64,
            },
        )
        .expect("child paying for both");
    submit_package(&env, &[parent, child.clone()]).expect("package accepted");
    let mempool = env.mempool_txids().expect("mempool");
    assert!(
        mempool.contains(&parent_txid),
        "the parent is in the mempool"
    );
    assert!(
        mempool.contains(&child.compute_txid()),
        "the child is in the mempool"
    );
}

#[tokio::test]
async fn electrum_serves_the_node_transactions() {
    use electrsd::electrum_client::{Client, ElectrumApi};

    let Some(env) = Regtest::start().await else {
        return;
    };
    let scenario = Builder::new(&env)
        .low_fee_payment("electrum", true)
        .expect("payment");
    env.sync().await.expect("electrs in sync");
    let url = format!("tcp://{}", env.electrum_addr());
    let client = Client::new(&url).expect("connects to the Electrum port");
    let served = client
        .transaction_get(&scenario.focus)
        .expect("transaction");
    assert_eq!(served, scenario.tx);
}

/// Plans every bump of each scenario just above its current rate, so that the rule
/// minimum binds, and checks the PSBTs on the node: each signs, the node accepts it, and
/// one satoshi less is rejected. Then the RBF bump is broadcast, a block mined, and both
/// the replacement and the original are diagnosed.
#[tokio::test]
async fn bump_psbts_pass_the_node() {
    use rust_decimal::Decimal;
    use txdoctor::analysis::verdict::Cause;
    use txdoctor::bump::plan::{BumpKind, Strategy};

    let Some(env) = Regtest::start().await else {
        return;
    };
    let builder = Builder::new(&env);
    let scenarios = [
        builder
            .low_fee_payment("signal", true)
            .expect("signalling payment"),
        builder
            .low_fee_ancestors("ancestors")
            .expect("low-fee ancestors"),
        builder
            .receiver_child("receiver-child", "1.5")
            .expect("low-fee receiver child"),
        builder
            .input_type("taproot", "bech32m", 2)
            .expect("taproot inputs"),
        builder
            .input_type("legacy", "legacy", 1)
            .expect("legacy input"),
        builder
            .input_type("nested", "p2sh-segwit", 1)
            .expect("P2SH-P2WPKH input"),
    ];
    let mut judged = 0;
    for scenario in &scenarios {
        let name = &scenario.name;
        let current = env.diagnose(scenario.focus, None).await.expect("diagnosis");
        let effective = current
            .package
            .as_ref()
            .expect("package")
            .effective_fee_rate_sat_per_vb;
        let target = (effective + Decimal::new(5, 2)).round_dp(2);
        for strategy in [Strategy::Rbf, Strategy::Cancel, Strategy::Cpfp] {
            let plan = plans::plan(&env, scenario, target, strategy, false)
                .await
                .expect("plan");
            for planned in plan.options.iter().filter(|option| option.possible) {
                let kind = planned.kind;
                let verdicts = plans::judge(&env, &scenario.owner, planned)
                    .unwrap_or_else(|error| panic!("{name} {kind:?}: {error:#}"));
                assert!(
                    verdicts.as_planned.allowed,
                    "{name} {kind:?} rejected: {:?}",
                    verdicts.as_planned.reject_reason
                );
                if let Some(one_below) = &verdicts.one_below {
                    assert!(
                        !one_below.allowed,
                        "{name} {kind:?}: one satoshi below the minimum was accepted"
                    );
                }
                let planned_vsize = planned.vsize.expect("vsize");
                let signed_vsize = verdicts.signed.weight().to_wu().div_ceil(4);
                assert!(
                    signed_vsize <= planned_vsize,
                    "{name} {kind:?}: signed {signed_vsize} vB over the {planned_vsize} vB estimate"
                );
                judged += 1;
            }
        }
    }
    assert!(
        judged >= scenarios.len() * 2,
        "at least RBF and cancel were judged for each scenario ({judged})"
    );

    // The cheapest bump of the first scenario, broadcast and mined.
    let scenario = &scenarios[0];
    let plan = plans::plan(&env, scenario, Decimal::from(5), Strategy::Rbf, false)
        .await
        .expect("plan");
    let rbf = plans::option(&plan, BumpKind::RbfKeepPayment);
    let signed = bump::sign_psbt(
        &scenario.owner,
        &rbf.psbt.as_deref().expect("psbt").parse().expect("PSBT"),
    )
    .expect("signs");
    let replacement = env
        .broadcast(&signed)
        .expect("the node accepts the replacement");
    env.mine(1).expect("mines a block");
    let diagnosis = env.diagnose(replacement, None).await.expect("diagnosis");
    assert!(
        matches!(diagnosis.status, Status::Confirmed { .. }),
        "the replacement is confirmed"
    );
    let original = env
        .diagnose(scenario.focus, Some(scenario.tx.clone()))
        .await
        .expect("diagnosis");
    assert_eq!(
        original.cause(),
        Cause::DoubleSpent,
        "the original lost to its confirmed replacement"
    );
}
