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
use crate::policy::{MAX_BIP125_RBF_SEQUENCE, ReplacementCase, TRUC_VERSION};

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

/// Parses a PSBT given as base64 text or in its binary form (starting `psbt\xff`).
///
/// # Errors
///
/// Returns [`CheckError::InvalidPsbt`] with the parser's reason.
pub fn parse_psbt_bytes(bytes: &[u8]) -> Result<Psbt, CheckError> {
    if bytes.starts_with(b"psbt\xff") {
        return Psbt::deserialize(bytes)
            .map_err(|error| CheckError::InvalidPsbt(error.to_string()));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| CheckError::InvalidPsbt("neither base64 text nor a binary PSBT".to_owned()))?;
    parse_psbt(text)
}

/// Parses a base64 PSBT.
///
/// # Errors
///
/// Returns [`CheckError::InvalidPsbt`] with the parser's reason; the PSBT is not repeated.
pub fn parse_psbt(text: &str) -> Result<Psbt, CheckError> {
    Psbt::from_str(text.trim()).map_err(|error| CheckError::InvalidPsbt(error.to_string()))
}

/// Returns the output an input spends as the PSBT states it: from the full previous
/// transaction when it is there and matches the outpoint, else from `witness_utxo`.
fn spent_output(psbt: &Psbt, index: usize) -> Option<TxOut> {
    let input = &psbt.inputs[index];
    let outpoint = psbt.unsigned_tx.input[index].previous_output;
    let from_previous = input
        .non_witness_utxo
        .as_ref()
        .filter(|previous| previous.compute_txid() == outpoint.txid)
        .and_then(|previous| previous.output.get(outpoint.vout as usize).cloned());
    from_previous.or_else(|| input.witness_utxo.clone())
}

/// Lists what a hardware signer would miss in each input and output.
fn signer_problems(psbt: &Psbt, policy: &crate::policy::RelayPolicy) -> Vec<String> {
    let mut problems = Vec::new();
    let outpoints: Vec<OutPoint> = psbt
        .unsigned_tx
        .input
        .iter()
        .map(|input| input.previous_output)
        .collect();
    for (index, outpoint) in outpoints.iter().enumerate() {
        if outpoints[..index].contains(outpoint) {
            problems.push(format!(
                "input {index} spends {outpoint} a second time, which no node accepts"
            ));
        }
    }
    for (index, input) in psbt.inputs.iter().enumerate() {
        let (Some(stated), Some(actual)) = (&input.witness_utxo, spent_output(psbt, index)) else {
            continue;
        };
        if *stated != actual {
            problems.push(format!(
                "input {index}: witness_utxo states {} sat but its previous transaction pays {} sat",
                stated.value.to_sat(),
                actual.value.to_sat()
            ));
        }
    }
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

/// What the chain says about a PSBT's inputs.
struct ChainView {
    /// The outputs spent, as the backend has them, in input order.
    spent: Vec<Option<TxOut>>,
    /// Unconfirmed transactions it conflicts with, TRUC siblings included.
    replaces: Vec<Txid>,
    /// Unconfirmed transactions it spends from.
    spends_unconfirmed: Vec<Txid>,
    /// What the chain contradicts.
    problems: Vec<String>,
}

/// Looks up each input's previous transaction and spender.
async fn chain_view(doctor: &Doctor, psbt: &Psbt) -> Result<ChainView, CheckError> {
    let source = doctor.source();
    let own_txid = psbt.unsigned_tx.compute_txid();
    let mut view = ChainView {
        spent: Vec::new(),
        replaces: Vec::new(),
        spends_unconfirmed: Vec::new(),
        problems: Vec::new(),
    };
    for (index, input) in psbt.unsigned_tx.input.iter().enumerate() {
        let OutPoint { txid: parent, vout } = input.previous_output;
        let Some(parent_tx) = source.transaction(parent).await? else {
            view.problems.push(format!(
                "input {index} spends {parent}:{vout}, a transaction the backend does not know"
            ));
            view.spent.push(None);
            continue;
        };
        let actual = parent_tx.tx.output.get(vout as usize).cloned();
        match (&actual, spent_output(psbt, index)) {
            (None, _) => view.problems.push(format!(
                "input {index} spends output {vout} of {parent}, which has no such output"
            )),
            (Some(actual), Some(stated)) if *actual != stated => view.problems.push(format!(
                "input {index}: the PSBT states {} sat but the chain has {} sat at {parent}:{vout}",
                stated.value.to_sat(),
                actual.value.to_sat()
            )),
            _ => {}
        }
        view.spent.push(actual);
        let unconfirmed_parent = !parent_tx.status.is_confirmed();
        if unconfirmed_parent && !view.spends_unconfirmed.contains(&parent) {
            view.spends_unconfirmed.push(parent);
        }
        let Some(spends) = source.outspends(parent).await? else {
            continue;
        };
        for (spent_vout, spend) in spends.iter().enumerate() {
            let OutputSpend::Spent {
                txid, confirmed, ..
            } = spend
            else {
                continue;
            };
            if *txid == own_txid {
                continue;
            }
            let same_output = spent_vout == vout as usize;
            // A TRUC parent takes one child, so a new child replaces any other (BIP431).
            let sibling =
                unconfirmed_parent && parent_tx.tx.version.0 == TRUC_VERSION && !confirmed;
            if same_output && *confirmed {
                view.problems.push(format!(
                    "input {index} is already spent by confirmed transaction {txid}"
                ));
            } else if (same_output || sibling) && !view.replaces.contains(txid) {
                view.replaces.push(*txid);
            }
        }
    }
    Ok(view)
}

/// Lists outputs paying more than the same script received in a replaced transaction.
async fn raised_outputs(
    doctor: &Doctor,
    psbt: &Psbt,
    replaces: &[Txid],
) -> Result<Vec<String>, CheckError> {
    let mut problems = Vec::new();
    for txid in replaces {
        let Some(replaced) = doctor.source().transaction(*txid).await? else {
            continue;
        };
        for (index, output) in psbt.unsigned_tx.output.iter().enumerate() {
            let before = replaced
                .tx
                .output
                .iter()
                .find(|old| old.script_pubkey == output.script_pubkey);
            if let Some(before) = before.filter(|before| output.value > before.value) {
                problems.push(format!(
                    "output {index} pays {} sat where replaced transaction {txid} paid {} sat; a bump should not raise a payment",
                    output.value.to_sat(),
                    before.value.to_sat()
                ));
            }
        }
    }
    Ok(problems)
}

/// Checks `psbt` against the chain as `doctor` fetches it. The chain's values are the
/// truth for the fee; where the PSBT states others, that is a problem. A fee above
/// `max_fee_sat` is a problem too.
///
/// # Errors
///
/// Returns [`CheckError::Chain`] when the backend fails.
pub async fn check(
    doctor: &Doctor,
    psbt: &Psbt,
    max_fee_sat: u64,
) -> Result<PsbtReport, CheckError> {
    let policy = doctor.options().policy;
    let mut problems = signer_problems(psbt, &policy);
    let chain = chain_view(doctor, psbt).await?;
    problems.extend(chain.problems.iter().cloned());
    problems.extend(raised_outputs(doctor, psbt, &chain.replaces).await?);

    let tx = &psbt.unsigned_tx;
    let stated: Vec<Option<TxOut>> = (0..psbt.inputs.len())
        .map(|index| spent_output(psbt, index))
        .collect();
    let spent: Option<Vec<TxOut>> = chain
        .spent
        .iter()
        .zip(&stated)
        .map(|(actual, stated)| actual.clone().or_else(|| stated.clone()))
        .collect();
    let output_total: u64 = tx.output.iter().map(|output| output.value.to_sat()).sum();
    let input_total = spent.as_ref().map(|outputs| {
        outputs
            .iter()
            .map(|output| output.value.to_sat())
            .sum::<u64>()
    });
    let fee_sat = input_total.and_then(|total| total.checked_sub(output_total));
    if input_total.is_some() && fee_sat.is_none() {
        problems.push("the outputs exceed the inputs".to_owned());
    }
    if let Some(fee) = fee_sat.filter(|fee| *fee > max_fee_sat) {
        problems.push(format!(
            "the fee of {fee} sat exceeds the ceiling of {max_fee_sat} sat"
        ));
    }
    let weight = spent
        .as_ref()
        .and_then(|outputs| estimated_weight(tx, outputs));
    let vsize = weight.map(|weight| weight.div_ceil(WITNESS_SCALE_FACTOR));
    let fee_rate = fee_sat
        .zip(vsize)
        .map(|(fee, vsize)| FeeFrac::from_vsize(fee, vsize).sat_per_vb(RATE_SCALE));

    let minimum_fee_sat = match (chain.replaces.first(), weight, vsize) {
        (Some(conflict), Some(weight), Some(vsize)) => {
            replacement_minimum(doctor, *conflict, &chain.spends_unconfirmed, weight, vsize).await?
        }
        (None, _, Some(vsize)) => Some(
            policy
                .mempool_min_fee
                .max(policy.min_relay_fee)
                .fee_for_vsize(vsize),
        ),
        _ => None,
    };
    if chain.replaces.len() > 1 {
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
        txid: tx.compute_txid(),
        ready_for_signer: problems.is_empty(),
        problems,
        inputs: tx.input.len(),
        outputs: tx.output.len(),
        fee_sat,
        vsize,
        fee_rate_sat_per_vb: fee_rate,
        replaces: chain.replaces,
        spends_unconfirmed: chain.spends_unconfirmed,
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
    let facts = doctor.mempool_facts(conflict_tx).await?;
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
