//! Worked examples from Bitcoin Core's policy: each minimum was computed with Core's rules
//! and matches the arithmetic of its functional tests (`feature_rbf.py`, `mempool_truc.py`).

use super::*;

const PRE_V29_1: RelayPolicy = RelayPolicy {
    min_relay_fee: SatPerKvb(1000),
    incremental_relay_fee: SatPerKvb(1000),
    dust_relay_fee: DEFAULT_DUST_RELAY_FEE,
    bytes_per_sigop: DEFAULT_BYTES_PER_SIGOP,
    mempool_min_fee: SatPerKvb(1000),
};

fn original(fee_sat: u64, vsize: u64) -> MempoolTx {
    MempoolTx {
        frac: FeeFrac::from_vsize(fee_sat, vsize),
        vsize,
        parents: Vec::new(),
        direct_conflict: true,
        evicted: true,
    }
}

fn single(fee_sat: u64, vsize: u64, replacement_vsize: u64) -> ReplacementCase {
    ReplacementCase {
        mempool: vec![original(fee_sat, vsize)],
        replacement_weight: replacement_vsize * 4,
        replacement_vsize,
        replacement_parents: Vec::new(),
    }
}

fn minimum(case: &ReplacementCase, policy: &RelayPolicy, version: PolicyVersion) -> u64 {
    case.minimum_fee(policy, version)
        .expect("replacement is possible")
        .fee_sat
}

#[test]
fn rbf_1_incremental_fee_binds() {
    let case = single(282, 141, 141);
    let policy = RelayPolicy::default();
    assert_eq!(minimum(&case, &policy, PolicyVersion::V31), 297);
    assert_eq!(minimum(&case, &policy, PolicyVersion::Pre31), 297);
    assert_eq!(minimum(&case, &PRE_V29_1, PolicyVersion::Pre31), 423);
}

#[test]
fn rbf_2_feerate_binds_for_larger_replacement() {
    let case = single(400, 200, 220);
    let policy = RelayPolicy::default();
    let v31 = case
        .minimum_fee(&policy, PolicyVersion::V31)
        .expect("possible");
    assert_eq!(v31.fee_sat, 440);
    assert_eq!(v31.binding_rule, BindingRule::FeerateDiagram);
    assert!(!case.improves_diagram(439));
    assert_eq!(minimum(&case, &policy, PolicyVersion::Pre31), 441);
    assert_eq!(minimum(&case, &policy, PolicyVersion::Both), 441);
    assert_eq!(minimum(&case, &PRE_V29_1, PolicyVersion::Pre31), 620);
}

#[test]
fn rbf_3_smaller_replacement() {
    let case = single(400, 200, 169);
    let policy = RelayPolicy::default();
    assert_eq!(minimum(&case, &policy, PolicyVersion::V31), 417);
    assert_eq!(minimum(&case, &policy, PolicyVersion::Pre31), 417);
    assert_eq!(minimum(&case, &PRE_V29_1, PolicyVersion::Pre31), 569);
}

#[test]
fn rbf_4_pays_for_evicted_child() {
    let mut child = original(1500, 150);
    child.parents = vec![0];
    child.direct_conflict = false;
    let case = ReplacementCase {
        mempool: vec![original(200, 200), child],
        replacement_weight: 800,
        replacement_vsize: 200,
        replacement_parents: Vec::new(),
    };
    let policy = RelayPolicy::default();
    assert_eq!(minimum(&case, &policy, PolicyVersion::V31), 1720);
    assert_eq!(minimum(&case, &policy, PolicyVersion::Pre31), 1720);
    assert_eq!(minimum(&case, &PRE_V29_1, PolicyVersion::Pre31), 1900);
}

#[test]
fn rbf_5_diagram_rejects_lower_rate() {
    let case = single(1000, 100, 300);
    let policy = RelayPolicy::default();
    assert!(!case.improves_diagram(2000));
    assert!(!case.improves_diagram(2999));
    assert_eq!(minimum(&case, &policy, PolicyVersion::V31), 3000);
    assert_eq!(minimum(&case, &policy, PolicyVersion::Pre31), 3001);
}

#[test]
fn rbf_6_unconfirmed_parent_drags_rate() {
    let unrelated_parent = MempoolTx {
        frac: FeeFrac::from_vsize(1000, 1000),
        vsize: 1000,
        parents: Vec::new(),
        direct_conflict: false,
        evicted: false,
    };
    let case = ReplacementCase {
        mempool: vec![original(1000, 200), unrelated_parent],
        replacement_weight: 1000,
        replacement_vsize: 250,
        replacement_parents: vec![1],
    };
    let policy = RelayPolicy::default();
    assert_eq!(minimum(&case, &policy, PolicyVersion::V31), 5250);
    assert!(!case.improves_diagram(5249));
    assert_eq!(
        case.minimum_fee(&policy, PolicyVersion::Pre31),
        Err(ReplacementError::AddsUnconfirmedInput)
    );
}

#[test]
fn rbf_6_order_of_parents_does_not_matter() {
    // The same case as above with the kept grandparent listed after its kept child.
    let kept = |fee_sat: u64, parents: Vec<usize>| MempoolTx {
        frac: FeeFrac::from_vsize(fee_sat, 1000),
        vsize: 1000,
        parents,
        direct_conflict: false,
        evicted: false,
    };
    let parent_first = ReplacementCase {
        mempool: vec![
            original(1000, 200),
            kept(1000, Vec::new()),
            kept(1000, vec![1]),
        ],
        replacement_weight: 1000,
        replacement_vsize: 250,
        replacement_parents: vec![2],
    };
    let child_first = ReplacementCase {
        mempool: vec![
            original(1000, 200),
            kept(1000, vec![2]),
            kept(1000, Vec::new()),
        ],
        replacement_parents: vec![1],
        ..parent_first.clone()
    };
    let policy = RelayPolicy::default();
    assert_eq!(
        minimum(&child_first, &policy, PolicyVersion::V31),
        minimum(&parent_first, &policy, PolicyVersion::V31)
    );
}

#[test]
fn rbf_8_spending_conflict_rejected() {
    let mut case = single(400, 200, 200);
    case.replacement_parents = vec![0];
    let policy = RelayPolicy::default();
    assert_eq!(
        case.minimum_fee(&policy, PolicyVersion::V31),
        Err(ReplacementError::SpendsConflictingTx)
    );
}

#[test]
fn rbf_9_incremental_fee_rounds_up() {
    assert_eq!(DEFAULT_INCREMENTAL_RELAY_FEE.fee_for_vsize(105), 11);
    assert_eq!(SatPerKvb(1000).fee_for_vsize(105), 105);
}

#[test]
fn rbf_10_diagram_compares_weight() {
    let case = ReplacementCase {
        mempool: vec![MempoolTx {
            frac: FeeFrac::new(400, 797),
            ..original(400, 200)
        }],
        replacement_weight: 880,
        replacement_vsize: 220,
        replacement_parents: Vec::new(),
    };
    let policy = RelayPolicy::default();
    assert_eq!(minimum(&case, &policy, PolicyVersion::V31), 442);
    assert!(!case.improves_diagram(441));
    assert_eq!(minimum(&case, &policy, PolicyVersion::Pre31), 441);
    assert_eq!(minimum(&case, &policy, PolicyVersion::Both), 442);
}

#[test]
fn mempool_min_fee_binds_replacement() {
    let policy = RelayPolicy {
        mempool_min_fee: SatPerKvb(5000),
        ..RelayPolicy::default()
    };
    let case = single(200, 200, 200);
    let floor = case
        .minimum_fee(&policy, PolicyVersion::V31)
        .expect("possible");
    assert_eq!(floor.fee_sat, 1000);
    assert_eq!(floor.binding_rule, BindingRule::MempoolMinFee);
}

fn chain(links: &[(u64, u64)]) -> Vec<ClusterTx> {
    links
        .iter()
        .enumerate()
        .map(|(i, &(fee_sat, vsize))| ClusterTx {
            frac: FeeFrac::from_vsize(fee_sat, vsize),
            parents: if i == 0 { Vec::new() } else { vec![i - 1] },
        })
        .collect()
}

const TEN_SAT_PER_VB: SatPerKvb = SatPerKvb(10_000);

#[test]
fn cpfp_1_single_parent() {
    let child = fee_to_reach(&chain(&[(200, 200)]), &[0], 110, TEN_SAT_PER_VB);
    assert_eq!(child.fee_sat, 2900);
    assert_eq!(child.paid_for, vec![0]);
}

#[test]
fn cpfp_2_pays_for_grandparent() {
    let child = fee_to_reach(&chain(&[(300, 300), (200, 200)]), &[1], 110, TEN_SAT_PER_VB);
    assert_eq!(child.fee_sat, 5600);
    assert_eq!(child.paid_for, vec![0, 1]);
}

#[test]
fn cpfp_3_skips_ancestor_at_target() {
    let child = fee_to_reach(
        &chain(&[(3000, 300), (200, 200)]),
        &[1],
        110,
        TEN_SAT_PER_VB,
    );
    assert_eq!(child.fee_sat, 2900);
    assert_eq!(child.paid_for, vec![1]);
}

#[test]
fn cpfp_4_ancestor_just_below_target() {
    let child = fee_to_reach(
        &chain(&[(2700, 300), (200, 200)]),
        &[1],
        110,
        TEN_SAT_PER_VB,
    );
    assert_eq!(child.fee_sat, 3200);
    assert_eq!(child.paid_for, vec![0, 1]);
}

#[test]
fn sigop_adjusted_vsize_of_bare_multisig() {
    // 894 WU with a sigop cost of 81 counts as 81 × 20 = 1620 WU, so 405 vB.
    let policy = RelayPolicy::default();
    assert_eq!(policy.sigop_adjusted_vsize(894, 81), 405);
    assert_eq!(policy.sigop_adjusted_vsize(561, 4), 141);
}

#[test]
fn dust_thresholds_at_three_sat_per_vb() {
    use bitcoin::hashes::Hash;
    let policy = RelayPolicy::default();
    let pubkey_hash = bitcoin::PubkeyHash::all_zeros();
    let wpubkey_hash = bitcoin::WPubkeyHash::all_zeros();
    let script_hash = bitcoin::ScriptHash::all_zeros();
    let wscript_hash = bitcoin::WScriptHash::all_zeros();
    let cases = [
        (bitcoin::ScriptBuf::new_p2pkh(&pubkey_hash), 546),
        (bitcoin::ScriptBuf::new_p2sh(&script_hash), 540),
        (bitcoin::ScriptBuf::new_p2wpkh(&wpubkey_hash), 294),
        (bitcoin::ScriptBuf::new_p2wsh(&wscript_hash), 330),
        (bitcoin::ScriptBuf::new_op_return([1u8, 2, 3]), 0),
    ];
    for (script, threshold) in cases {
        assert_eq!(policy.dust_threshold(&script), threshold, "{script}");
    }
}
