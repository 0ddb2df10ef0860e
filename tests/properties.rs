//! Properties of the fee rules and of bump plans, over generated cases: a price is never
//! below the rule minimum and is the smallest that works, and a plan never changes an
//! output that is not the owner's beyond what its kind allows.
#![allow(clippy::cast_possible_truncation)] // Generated sizes are small.

mod support;

use std::sync::Arc;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use rust_decimal::Decimal;
use txdoctor::analysis::AnalysisOptions;
use txdoctor::analysis::cluster::ClusterTx;
use txdoctor::bump::plan::{BumpKind, Strategy as BumpStrategy};
use txdoctor::bump::{BumpConfig, BumpRequest, Bumper, Target};
use txdoctor::feerate::{FeeFrac, SatPerKvb};
use txdoctor::policy::{
    MempoolTx, PolicyVersion, RelayPolicy, ReplacementCase, fee_to_reach, joining_chunk,
};

/// A cluster of up to five transactions, each spending from any earlier ones.
fn cluster() -> impl proptest::strategy::Strategy<Value = Vec<ClusterTx>> {
    prop::collection::vec(
        (
            0u64..20_000,
            60u64..2_000,
            prop::collection::vec(any::<bool>(), 5),
        ),
        1..6,
    )
    .prop_map(|txs| {
        txs.into_iter()
            .enumerate()
            .map(|(i, (fee, vsize, links))| ClusterTx {
                frac: FeeFrac::from_vsize(fee, vsize),
                parents: (0..i).filter(|&parent| links[parent]).collect(),
            })
            .collect()
    })
}

fn reaches(
    cluster: &[ClusterTx],
    parents: &[usize],
    vsize: u64,
    fee: u64,
    target: SatPerKvb,
) -> bool {
    let chunk = joining_chunk(cluster, parents, vsize, fee);
    u128::from(chunk.fee_sat) * 1000 >= u128::from(target.0) * u128::from(chunk.weight / 4)
}

proptest! {
    #[test]
    fn child_fee_is_smallest_that_reaches(cluster in cluster(), target in 100u64..200_000, vsize in 60u64..1_000, pick in any::<prop::sample::Index>()) {
        let parent = pick.index(cluster.len());
        let target = SatPerKvb(target);
        let child = fee_to_reach(&cluster, &[parent], vsize, target);
        prop_assert!(reaches(&cluster, &[parent], vsize, child.fee_sat, target));
        if child.fee_sat > 0 {
            prop_assert!(!reaches(&cluster, &[parent], vsize, child.fee_sat - 1, target));
        }
    }

    #[test]
    fn replacement_minimum_is_exact(old_fee in 0u64..50_000, old_vsize in 60u64..2_000, new_vsize in 60u64..2_000) {
        let policy = RelayPolicy::default();
        let case = ReplacementCase {
            mempool: vec![MempoolTx { frac: FeeFrac::from_vsize(old_fee, old_vsize), vsize: old_vsize, parents: Vec::new(), direct_conflict: true, evicted: true }],
            replacement_weight: new_vsize * 4,
            replacement_vsize: new_vsize,
            replacement_parents: Vec::new(),
        };
        let minimum = case.minimum_fee(&policy, PolicyVersion::V31).expect("a singleton can be replaced").fee_sat;
        let pays_for_evicted = |fee: u64| fee >= old_fee + policy.incremental_relay_fee.fee_for_vsize(new_vsize);
        let meets_relay = |fee: u64| fee >= policy.min_relay_fee.fee_for_vsize(new_vsize);
        prop_assert!(pays_for_evicted(minimum) && case.improves_diagram(minimum) && meets_relay(minimum));
        let below = minimum - 1;
        prop_assert!(!(pays_for_evicted(below) && case.improves_diagram(below) && meets_relay(below)));
        let both = case.minimum_fee(&policy, PolicyVersion::Both).expect("possible").fee_sat;
        prop_assert!(both >= minimum);
    }
}

fn bumper_for(url: &str) -> Bumper {
    let options = AnalysisOptions {
        policy: RelayPolicy::default(),
        policy_version: PolicyVersion::Both,
    };
    let doctor = Arc::new(support::esplora_doctor(url, options, None));
    let config = BumpConfig {
        lookahead: 30,
        max_fee_sat: u64::MAX,
        ..support::bump_config()
    };
    Bumper::new(doctor, config)
}

/// Plans at generated targets never pay below the minimum, and never touch another
/// party's output except the payment a payment-reducing replacement lowers on request.
#[tokio::test]
async fn plans_respect_minimums_and_others_outputs() {
    let mut runner = TestRunner::deterministic();
    let targets =
        (11u64..5_000).prop_map(|tenths| Decimal::new(i64::try_from(tenths).expect("small"), 1));
    for name in [
        "s01_signal_low_fee",
        "s04_low_fee_ancestors",
        "s11_no_change",
        "s12_receiver_child",
        "s09_taproot_inputs",
        "s06_truc",
    ] {
        let scenario = support::Scenario::load(name);
        let replay = support::start(scenario.routes.clone()).await;
        let bumper = bumper_for(&replay.url);
        let descriptors: Vec<String> = scenario.scenario["wallets"]["alice"]["public"]
            .as_array()
            .expect("list")
            .iter()
            .map(|d| d.as_str().expect("text").to_owned())
            .collect();
        for _ in 0..6 {
            let target = targets.new_tree(&mut runner).expect("value").current();
            for strategy in [BumpStrategy::Auto, BumpStrategy::Cancel] {
                let request = BumpRequest {
                    txid: scenario.focus().parse().expect("txid"),
                    descriptors: descriptors.clone(),
                    change_descriptors: Vec::new(),
                    target: Target::FeeRate(target),
                    strategy,
                    allow_payment_decrease: true,
                    force: false,
                };
                let Ok(plan) = bumper.plan(&request).await else {
                    continue;
                };
                for option in plan.options.iter().filter(|option| option.possible) {
                    let fee = option.fee_sat.expect("fee");
                    if let Some(minimum) = option.minimum_fee_sat {
                        assert!(
                            fee >= minimum,
                            "{name} at {target}: {:?} pays {fee} below {minimum}",
                            option.kind
                        );
                    }
                    let vsize = option.vsize.expect("vsize");
                    assert!(
                        Decimal::from(fee) >= target * Decimal::from(vsize)
                            || option.kind == BumpKind::Cpfp,
                        "{name}: {:?} below target",
                        option.kind
                    );
                    for output in option.outputs.iter().filter(|output| !output.owner) {
                        match option.kind {
                            BumpKind::RbfKeepPayment => assert_eq!(
                                output.after_sat, output.before_sat,
                                "{name}: payment kept"
                            ),
                            BumpKind::RbfReducePayment => assert!(
                                output.after_sat <= output.before_sat,
                                "{name}: payment never raised"
                            ),
                            BumpKind::Cancel => assert_eq!(
                                output.after_sat, None,
                                "{name}: a cancel pays no one else"
                            ),
                            BumpKind::Cpfp => assert!(
                                output.before_sat.is_none() || output.after_sat.is_none(),
                                "{name}: a child touches no other output"
                            ),
                        }
                        assert!(
                            output.after_sat.is_none() || output.before_sat.is_some(),
                            "{name}: no new output to someone else"
                        );
                    }
                }
            }
        }
    }
}
