//! The pure analysis: facts in, a [`Diagnosis`] out. Nothing here does I/O.

pub mod cluster;
pub mod eta;
pub mod package;
pub mod replaceability;
pub mod size;
pub mod verdict;

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::bitcoin::{BlockHash, OutPoint, Transaction, Txid};
use crate::chain::{ChainTx, FeeEstimates, MempoolSnapshot};
use crate::policy::{PolicyVersion, RelayPolicy};
use eta::{ConfirmationEstimate, MempoolPosition};
use package::{ClusterView, PackageReport, RATE_SCALE};
use replaceability::Replaceability;
use size::TxSize;
use verdict::{Cause, Triage, Verdict};

/// Everything txdoctor can tell about one transaction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnosis {
    /// The diagnosed transaction.
    pub txid: Txid,
    /// Confirmed, in the mempool, or not found.
    pub status: Status,
    /// Its fee and sizes, when the transaction is known.
    pub transaction: Option<TxSummary>,
    /// Its unconfirmed ancestors and descendants and the chunk it is mined in.
    pub package: Option<PackageReport>,
    /// Whether and how it can be replaced.
    pub replaceability: Option<Replaceability>,
    /// The fee rates that reach the next block and about six blocks.
    pub targets: Option<FeeTargets>,
    /// Its place in the mempool.
    pub position: Option<MempoolPosition>,
    /// When it may confirm.
    pub estimate: Option<ConfirmationEstimate>,
    /// The cause and the options.
    pub verdict: Verdict,
    /// The support desk's view: priority, category, who acts.
    pub triage: Triage,
    /// Facts the backend could not provide, so that the verdict is read with care.
    pub data_gaps: Vec<String>,
    /// The backend that supplied the facts.
    pub backend: String,
}

/// The place of the transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    /// In a block.
    Confirmed {
        /// Height of the block.
        block_height: u32,
        /// Blocks from the tip, the block itself included.
        confirmations: u32,
        /// Hash of the block.
        block_hash: Option<BlockHash>,
        /// Block timestamp, seconds since the Unix epoch.
        block_time: Option<u64>,
    },
    /// In the backend's mempool.
    Mempool,
    /// The backend does not know it.
    NotFound {
        /// Inputs now spent by another transaction.
        conflicts: Vec<Conflict>,
        /// Whether the raw transaction was available to check its inputs.
        inputs_checked: bool,
    },
}

/// An input of a missing transaction that another transaction spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// The contested output.
    pub outpoint: OutPoint,
    /// The transaction spending it now.
    pub spender: Txid,
    /// Whether that spender is confirmed.
    pub spender_confirmed: bool,
}

/// Fee and sizes of the diagnosed transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TxSummary {
    /// nVersion.
    pub version: i32,
    /// Number of inputs.
    pub inputs: usize,
    /// Number of outputs.
    pub outputs: usize,
    /// Sum of the outputs.
    pub output_total_sat: u64,
    /// Fee, inputs minus outputs.
    pub fee_sat: u64,
    /// Fee in BTC.
    #[serde(with = "rust_decimal::serde::str")]
    pub fee_btc: Decimal,
    /// Sizes as policy counts them.
    #[serde(flatten)]
    pub size: TxSize,
    /// Fee over sigop-adjusted vsize.
    #[serde(with = "rust_decimal::serde::str")]
    pub fee_rate_sat_per_vb: Decimal,
}

impl TxSummary {
    fn of(tx: &ChainTx, size: TxSize) -> Self {
        let fee_sat = tx.fee.to_sat();
        Self {
            version: tx.tx.version.0,
            inputs: tx.tx.input.len(),
            outputs: tx.tx.output.len(),
            output_total_sat: tx
                .tx
                .output
                .iter()
                .map(|output| output.value.to_sat())
                .sum(),
            fee_sat,
            fee_btc: sat_to_btc(fee_sat),
            size,
            fee_rate_sat_per_vb: size.rate_of(fee_sat).sat_per_vb(RATE_SCALE),
        }
    }
}

/// Converts satoshis to BTC exactly.
pub fn sat_to_btc(sat: u64) -> Decimal {
    Decimal::from(sat) / Decimal::from(100_000_000u64)
}

/// The fee rates to aim for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeeTargets {
    /// Rate that reaches the next block, in sat/vB.
    #[serde(with = "rust_decimal::serde::str")]
    pub next_block_sat_per_vb: Decimal,
    /// Rate that reaches about six blocks, in sat/vB.
    #[serde(with = "rust_decimal::serde::str")]
    pub six_blocks_sat_per_vb: Decimal,
    /// The source of the rates.
    pub source: String,
}

/// The facts about an unconfirmed transaction.
#[derive(Debug, Clone)]
pub struct MempoolFacts {
    /// The diagnosed transaction.
    pub focus: Txid,
    /// It and every unconfirmed transaction connected to it that was found.
    pub cluster: Vec<Arc<ChainTx>>,
    /// Whether the walk found the whole cluster.
    pub cluster_complete: bool,
    /// The mempool histogram, if the backend gave one.
    pub mempool: Option<Arc<MempoolSnapshot>>,
    /// Fee estimates, if the backend gave them.
    pub estimates: Option<Arc<FeeEstimates>>,
    /// Gaps found while fetching.
    pub gaps: Vec<String>,
}

/// The facts about a transaction the backend does not know.
#[derive(Debug, Clone)]
pub struct MissingFacts {
    /// The txid asked for.
    pub txid: Txid,
    /// The raw transaction, when the caller gave it or txdoctor saw it before.
    pub raw: Option<Transaction>,
    /// Inputs that another transaction spends.
    pub conflicts: Vec<Conflict>,
    /// Inputs whose previous transaction the backend does not know either.
    pub missing_parents: Vec<OutPoint>,
    /// Fee rate of the raw transaction in sat/vB, when its parents could be fetched.
    pub fee_rate_sat_per_vb: Option<Decimal>,
    /// Gaps found while fetching.
    pub gaps: Vec<String>,
}

/// Policy and targets shared by every diagnosis of a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnalysisOptions {
    /// Relay policy constants.
    pub policy: RelayPolicy,
    /// Replacement rules that price the options.
    pub policy_version: PolicyVersion,
}

/// Diagnoses a confirmed transaction; returns `None` when `tx` is unconfirmed.
pub fn diagnose_confirmed(
    tx: &ChainTx,
    tip_height: Option<u32>,
    backend: &str,
    options: &AnalysisOptions,
) -> Option<Diagnosis> {
    let size = TxSize::of(tx, &options.policy);
    let crate::chain::TxStatus::Confirmed {
        block_height,
        block_hash,
        block_time,
    } = tx.status
    else {
        return None;
    };
    let confirmations = tip_height.map_or(1, |tip| tip.saturating_sub(block_height) + 1);
    let mut gaps = Vec::new();
    if let Some(tip) = tip_height.filter(|&tip| tip < block_height) {
        gaps.push(format!(
            "the backend's tip height {tip} is below the block height {block_height}, so its data is inconsistent or lagging"
        ));
    }
    if tip_height.is_none() {
        gaps.push(
            "the tip height was unavailable, so the confirmation count is a minimum".to_owned(),
        );
    }
    let verdict = verdict::confirmed(confirmations);
    let triage = verdict::triage(&verdict, None, tx.txid);
    Some(Diagnosis {
        txid: tx.txid,
        status: Status::Confirmed {
            block_height,
            confirmations,
            block_hash,
            block_time,
        },
        transaction: Some(TxSummary::of(tx, size)),
        package: None,
        replaceability: None,
        targets: None,
        position: None,
        estimate: None,
        verdict,
        triage,
        data_gaps: gaps,
        backend: backend.to_owned(),
    })
}

/// Diagnoses a transaction in the mempool.
pub fn diagnose_unconfirmed(
    facts: &MempoolFacts,
    backend: &str,
    options: &AnalysisOptions,
) -> Option<Diagnosis> {
    let view = ClusterView::new(facts.cluster.clone(), facts.focus, &options.policy)?;
    let focus_tx = &view.txs[view.focus];
    let size = view.sizes[view.focus];
    let package = view.report(facts.cluster_complete);
    let ancestors: Vec<(Txid, &Transaction)> = view
        .ancestors_of(view.focus)
        .into_iter()
        .map(|i| (view.txs[i].txid, &view.txs[i].tx))
        .collect();
    let replaceability = replaceability::assess(&focus_tx.tx, &ancestors, view.txs.len() - 1);
    let effective = view.focus_chunk().frac.sat_per_vb(RATE_SCALE);
    let targets = verdict::targets(
        facts.mempool.as_deref(),
        facts.estimates.as_deref(),
        &options.policy,
    );
    let position = facts.mempool.as_deref().map(|mempool| {
        eta::locate(
            effective,
            view.focus_chunk().frac.weight.div_ceil(4),
            mempool,
        )
    });
    let estimator_target = facts
        .estimates
        .as_deref()
        .and_then(|estimates| eta::estimator_target(effective, estimates));
    let estimate = position
        .as_ref()
        .map(|position| eta::estimate(position, estimator_target));
    let mut gaps = facts.gaps.clone();
    if !facts.cluster_complete {
        gaps.push("not every unconfirmed relative could be fetched: the effective fee rate and the minimum fees may be off".to_owned());
    }
    if facts.mempool.is_none() {
        gaps.push("the mempool histogram was unavailable: no position or estimate".to_owned());
    }
    let verdict = verdict::unconfirmed(
        &view,
        &replaceability,
        targets.as_ref(),
        estimate.as_ref(),
        options,
    );
    let triage = verdict::triage(&verdict, estimate.as_ref(), focus_tx.txid);
    Some(Diagnosis {
        txid: focus_tx.txid,
        status: Status::Mempool,
        transaction: Some(TxSummary::of(focus_tx, size)),
        package: Some(package),
        replaceability: Some(replaceability),
        targets,
        position,
        estimate,
        verdict,
        triage,
        data_gaps: gaps,
        backend: backend.to_owned(),
    })
}

/// Diagnoses a transaction the backend does not know.
pub fn diagnose_missing(facts: &MissingFacts, backend: &str) -> Diagnosis {
    let verdict = verdict::missing(facts);
    let triage = verdict::triage(&verdict, None, facts.txid);
    let mut gaps = facts.gaps.clone();
    if facts.raw.is_none() {
        gaps.push(
            "the raw transaction is unknown, so its inputs could not be checked for a replacement; \
             give it with --tx-hex (CLI) or tx_hex (API)"
                .to_owned(),
        );
    }
    Diagnosis {
        txid: facts.txid,
        status: Status::NotFound {
            conflicts: facts.conflicts.clone(),
            inputs_checked: facts.raw.is_some(),
        },
        transaction: None,
        package: None,
        replaceability: None,
        targets: None,
        position: None,
        estimate: None,
        verdict,
        triage,
        data_gaps: gaps,
        backend: backend.to_owned(),
    }
}

impl Diagnosis {
    /// The cause code of the verdict.
    pub fn cause(&self) -> Cause {
        self.verdict.cause
    }
}
