//! The pre-flight check of a PSBT: is it ready for a hardware signer, what does it spend
//! and replace, what fee and rate does it pay, and does it meet the policy minimums.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Serialize;

use super::plan::estimated_weight;
use crate::analysis::package::{ClusterView, RATE_SCALE};
use crate::bitcoin::{OutPoint, Psbt, TxOut, Txid};
use crate::chain::{ChainError, OutputSpend};
use crate::diagnose::Doctor;
use crate::feerate::{FeeFrac, WITNESS_SCALE_FACTOR};
use crate::policy::{MAX_BIP125_RBF_SEQUENCE, ReplacementCase};

/// Errors of the PSBT check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// Not a PSBT.
    #[error("invalid PSBT: {0}")]
    InvalidPsbt(String),
    /// The backend failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// The findings on a PSBT.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PsbtReport {
    /// Txid of the unsigned transaction.
    pub txid: Txid,
    /// Whether a hardware signer has everything it needs and nothing is wrong.
    pub ready_for_signer: bool,
    /// Missing or wrong items, one line each.
    pub problems: Vec<String>,
    /// Number of inputs.
    pub inputs: usize,
    /// Number of outputs.
    pub outputs: usize,
    /// Inputs minus outputs, when every input's value is known.
    pub fee_sat: Option<u64>,
    /// Estimated signed virtual size (largest signatures).
    pub vsize: Option<u64>,
    /// Fee over estimated vsize.
    #[serde(with = "rust_decimal::serde::str_option")]
    pub fee_rate_sat_per_vb: Option<Decimal>,
    /// Unconfirmed transactions it conflicts with: what it replaces.
    pub replaces: Vec<Txid>,
    /// Unconfirmed transactions it spends from: what it pays for as a child.
    pub spends_unconfirmed: Vec<Txid>,
    /// Smallest fee nodes accept for it, where it could be computed.
    pub minimum_fee_sat: Option<u64>,
    /// Whether the fee meets that minimum.
    pub meets_minimum: Option<bool>,
}

/// Parses a base64 PSBT.
///
/// # Errors
///
/// Returns [`CheckError::InvalidPsbt`] with the parser's reason; the PSBT is not repeated.
pub fn parse_psbt(text: &str) -> Result<Psbt, CheckError> {
    Psbt::from_str(text.trim()).map_err(|error| CheckError::InvalidPsbt(error.to_string()))
}

/// Returns the output an input spends, from `witness_utxo` or the previous transaction.
fn spent_output(psbt: &Psbt, index: usize) -> Option<TxOut> {
    let input = &psbt.inputs[index];
    let outpoint = psbt.unsigned_tx.input[index].previous_output;
    input.witness_utxo.clone().or_else(|| {
        input
            .non_witness_utxo
            .as_ref()
            .and_then(|previous| previous.output.get(outpoint.vout as usize).cloned())
    })
}

/// Lists what a hardware signer would miss in each input and output.
fn signer_problems(psbt: &Psbt, policy: &crate::policy::RelayPolicy) -> Vec<String> {
    let mut problems = Vec::new();
    for (index, (input, txin)) in psbt.inputs.iter().zip(&psbt.unsigned_tx.input).enumerate() {
        let Some(spent) = spent_output(psbt, index) else {
            problems.push(format!(
                "input {index} has neither witness_utxo nor the previous transaction"
            ));
            continue;
        };
        if input.witness_utxo.is_none() {
            problems.push(format!("input {index} lacks witness_utxo"));
        }
        let taproot = spent.script_pubkey.is_p2tr();
        match &input.non_witness_utxo {
            None if !taproot => problems.push(format!("input {index} lacks the full previous transaction (non_witness_utxo) that segwit v0 and legacy signers check")),
            Some(previous) if previous.compute_txid() != txin.previous_output.txid => {
                problems.push(format!("input {index} carries previous transaction {} instead of {}", previous.compute_txid(), txin.previous_output.txid));
            }
            _ => {}
        }
        if taproot && (input.tap_key_origins.is_empty() || input.tap_internal_key.is_none()) {
            problems.push(format!(
                "input {index} lacks taproot key origins or the internal key"
            ));
        }
        if !taproot && input.bip32_derivation.is_empty() {
            problems.push(format!(
                "input {index} lacks BIP32 derivations, so a hardware signer cannot find its key"
            ));
        }
        if txin.sequence.to_consensus_u32() > MAX_BIP125_RBF_SEQUENCE {
            problems.push(format!(
                "input {index} does not signal replaceability (nSequence above 0xfffffffd)"
            ));
        }
    }
    for (index, output) in psbt.unsigned_tx.output.iter().enumerate() {
        let threshold = policy.dust_threshold(&output.script_pubkey);
        if output.value.to_sat() < threshold {
            problems.push(format!(
                "output {index} pays {} sat, below the {threshold} sat dust limit",
                output.value.to_sat()
            ));
        }
    }
    problems
}

/// Checks `psbt` against the chain as `doctor` fetches it.
///
/// # Errors
///
/// Returns [`CheckError::Chain`] when the backend fails.
pub async fn check(doctor: &Doctor, psbt: &Psbt) -> Result<PsbtReport, CheckError> {
    let policy = doctor.options().policy;
    let mut problems = signer_problems(psbt, &policy);
    let tx = &psbt.unsigned_tx;
    let spent: Vec<Option<TxOut>> = (0..psbt.inputs.len())
        .map(|index| spent_output(psbt, index))
        .collect();
    let known: Option<Vec<TxOut>> = spent.iter().cloned().collect();
    let output_total: u64 = tx.output.iter().map(|output| output.value.to_sat()).sum();
    let fee_sat = known.as_ref().and_then(|outputs| {
        outputs
            .iter()
            .map(|output| output.value.to_sat())
            .sum::<u64>()
            .checked_sub(output_total)
    });
    if known.is_some() && fee_sat.is_none() {
        problems.push("the outputs exceed the inputs".to_owned());
    }
    let weight = known
        .as_ref()
        .and_then(|outputs| estimated_weight(tx, outputs));
    let vsize = weight.map(|weight| weight.div_ceil(WITNESS_SCALE_FACTOR));
    let fee_rate = fee_sat
        .zip(vsize)
        .map(|(fee, vsize)| FeeFrac::from_vsize(fee, vsize).sat_per_vb(RATE_SCALE));

    let source = doctor.source();
    let own_txid = tx.compute_txid();
    let mut replaces = Vec::new();
    let mut spends_unconfirmed = Vec::new();
    for input in &tx.input {
        let OutPoint { txid: parent, vout } = input.previous_output;
        if let Some(parent_tx) = source.transaction(parent).await? {
            if !parent_tx.status.is_confirmed() && !spends_unconfirmed.contains(&parent) {
                spends_unconfirmed.push(parent);
            }
        } else {
            problems.push(format!(
                "input {parent}:{vout} spends a transaction the backend does not know"
            ));
        }
        if let Some(spends) = source.outspends(parent).await? {
            if let Some(OutputSpend::Spent {
                txid, confirmed, ..
            }) = spends.get(vout as usize)
            {
                if *confirmed && *txid != own_txid {
                    problems.push(format!(
                        "input {parent}:{vout} is already spent by confirmed transaction {txid}"
                    ));
                } else if *txid != own_txid && !replaces.contains(txid) {
                    replaces.push(*txid);
                }
            }
        }
    }
    let minimum_fee_sat = match (replaces.first(), weight, vsize) {
        (Some(conflict), Some(weight), Some(vsize)) => {
            replacement_minimum(doctor, *conflict, &spends_unconfirmed, weight, vsize).await?
        }
        (None, _, Some(vsize)) => Some(
            policy
                .mempool_min_fee
                .max(policy.min_relay_fee)
                .fee_for_vsize(vsize),
        ),
        _ => None,
    };
    if replaces.len() > 1 {
        problems.push("it replaces several transactions; the minimum shown covers the first one's cluster only".to_owned());
    }
    let meets_minimum = fee_sat
        .zip(minimum_fee_sat)
        .map(|(fee, minimum)| fee >= minimum);
    if meets_minimum == Some(false) {
        problems.push(format!(
            "the fee is below the {} sat that nodes require",
            minimum_fee_sat.unwrap_or_default()
        ));
    }
    Ok(PsbtReport {
        txid: own_txid,
        ready_for_signer: problems.is_empty(),
        problems,
        inputs: tx.input.len(),
        outputs: tx.output.len(),
        fee_sat,
        vsize,
        fee_rate_sat_per_vb: fee_rate,
        replaces,
        spends_unconfirmed,
        minimum_fee_sat,
        meets_minimum,
    })
}

/// Computes the replacement minimum against `conflict`'s cluster.
async fn replacement_minimum(
    doctor: &Doctor,
    conflict: Txid,
    parents: &[Txid],
    weight: u64,
    vsize: u64,
) -> Result<Option<u64>, CheckError> {
    let Some(conflict_tx) = doctor.source().transaction(conflict).await? else {
        return Ok(None);
    };
    let facts = doctor.mempool_facts(conflict_tx).await;
    let options = doctor.options();
    let Some(view) = ClusterView::new(facts.cluster.clone(), conflict, &options.policy) else {
        return Ok(None);
    };
    let mut evicted = view.descendants_of(view.focus);
    evicted.push(view.focus);
    let replacement_parents = (0..view.txs.len())
        .filter(|&i| parents.contains(&view.txs[i].txid))
        .collect();
    let case = ReplacementCase {
        mempool: view.mempool_txs(&evicted),
        replacement_weight: weight,
        replacement_vsize: vsize,
        replacement_parents,
    };
    Ok(case
        .minimum_fee(&options.policy, options.policy_version)
        .ok()
        .map(|minimum| minimum.fee_sat))
}
