//! The diagnose use case: fetch the facts about one transaction, then analyse them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::future::join_all;

use crate::analysis::{self, AnalysisOptions, Conflict, Diagnosis, MempoolFacts, MissingFacts};
use crate::bitcoin::{OutPoint, Transaction, Txid};
use crate::chain::{ChainError, ChainSource, ChainTx, OutputSpend, TxStatus, stale};
use crate::history::History;
use crate::policy::CLUSTER_COUNT_LIMIT;

/// Errors of a diagnosis.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DiagnoseError {
    /// The raw transaction given is not the one named by the txid.
    #[error("the raw transaction has txid {actual}, not the requested {requested}")]
    RawTxMismatch {
        /// The txid requested.
        requested: Txid,
        /// The txid of the raw transaction given.
        actual: Txid,
    },
    /// The backend failed or returned inconsistent data.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// Diagnoses transactions against one chain source.
pub struct Doctor {
    source: Arc<dyn ChainSource>,
    history: Arc<History>,
    options: AnalysisOptions,
    max_cluster: usize,
}

impl Doctor {
    /// Creates a doctor reading from `source`.
    pub fn new(
        source: Arc<dyn ChainSource>,
        history: Arc<History>,
        options: AnalysisOptions,
    ) -> Self {
        // Beyond Core's cluster limit a walk has found something Core would not hold.
        Self {
            source,
            history,
            options,
            max_cluster: CLUSTER_COUNT_LIMIT,
        }
    }

    /// Returns the chain source.
    pub fn source(&self) -> &Arc<dyn ChainSource> {
        &self.source
    }

    /// Diagnoses `txid`; `raw`, when given, lets a replaced or dropped transaction be
    /// traced through its inputs.
    ///
    /// # Errors
    ///
    /// Returns [`DiagnoseError::RawTxMismatch`] when `raw` is another transaction, and
    /// [`DiagnoseError::Chain`] when the backend fails on the transaction itself.
    pub async fn diagnose(
        &self,
        txid: Txid,
        raw: Option<Transaction>,
    ) -> Result<Diagnosis, DiagnoseError> {
        let (result, stale_facts) = stale::collect(self.diagnose_fresh(txid, raw)).await;
        let mut diagnosis = result?;
        diagnosis
            .data_gaps
            .extend(stale_facts.iter().map(ToString::to_string));
        Ok(diagnosis)
    }

    async fn diagnose_fresh(
        &self,
        txid: Txid,
        raw: Option<Transaction>,
    ) -> Result<Diagnosis, DiagnoseError> {
        if let Some(raw) = &raw {
            let actual = raw.compute_txid();
            if actual != txid {
                return Err(DiagnoseError::RawTxMismatch {
                    requested: txid,
                    actual,
                });
            }
        }
        let backend = self.source.name().to_owned();
        let Some(tx) = self.source.transaction(txid).await? else {
            let raw = match raw {
                Some(raw) => Some(raw),
                None => self.history.recall(txid).await,
            };
            // A transaction given by the caller is remembered too, so that the next
            // look-up can trace it without the raw bytes.
            if let Some(raw) = &raw {
                self.history.remember(raw).await;
            }
            let facts = self.missing_facts(txid, raw).await?;
            return Ok(analysis::diagnose_missing(&facts, &backend));
        };
        self.history.remember(&tx.tx).await;
        if tx.status.is_confirmed() {
            let tip = self.source.tip_height().await.ok();
            let diagnosis = analysis::diagnose_confirmed(&tx, tip, &backend, &self.options);
            return diagnosis.ok_or_else(|| inconsistent(&backend, txid));
        }
        let facts = self.mempool_facts(tx).await?;
        analysis::diagnose_unconfirmed(&facts, &backend, &self.options)
            .ok_or_else(|| inconsistent(&backend, txid))
    }

    async fn missing_facts(
        &self,
        txid: Txid,
        raw: Option<Transaction>,
    ) -> Result<MissingFacts, DiagnoseError> {
        let mut facts = MissingFacts {
            txid,
            raw: raw.clone(),
            conflicts: Vec::new(),
            missing_parents: Vec::new(),
            fee_rate_sat_per_vb: None,
            gaps: Vec::new(),
        };
        let Some(raw) = raw else {
            return Ok(facts);
        };
        facts.fee_rate_sat_per_vb = self.fee_rate_of_raw(&raw).await;
        let outpoints: Vec<OutPoint> = raw
            .input
            .iter()
            .map(|input| input.previous_output)
            .collect();
        let lookups = outpoints
            .iter()
            .map(|outpoint| self.source.output_spend(*outpoint));
        for (outpoint, spend) in outpoints.iter().zip(join_all(lookups).await) {
            match spend? {
                None => facts.missing_parents.push(*outpoint),
                Some(OutputSpend::Spent {
                    txid: spender,
                    confirmed,
                    ..
                }) if spender != txid => {
                    facts.conflicts.push(Conflict {
                        outpoint: *outpoint,
                        spender,
                        spender_confirmed: confirmed,
                    });
                }
                Some(_) => {}
            }
        }
        Ok(facts)
    }

    /// Computes the fee rate of a raw transaction from its parents, when every parent can
    /// be fetched; `None` otherwise.
    async fn fee_rate_of_raw(&self, raw: &Transaction) -> Option<rust_decimal::Decimal> {
        let parents = raw
            .input
            .iter()
            .map(|input| self.source.transaction(input.previous_output.txid));
        let mut prevouts = Vec::with_capacity(raw.input.len());
        for (input, parent) in raw.input.iter().zip(join_all(parents).await) {
            let parent = parent.ok()??;
            prevouts.push(
                parent
                    .tx
                    .output
                    .get(input.previous_output.vout as usize)?
                    .clone(),
            );
        }
        let status = crate::chain::TxStatus::Unconfirmed;
        let backend = self.source.name();
        let checked = ChainTx::checked(
            backend,
            raw.compute_txid(),
            raw.clone(),
            prevouts,
            None,
            status,
        )
        .ok()?;
        let size = crate::analysis::size::TxSize::of(&checked, &self.options.policy);
        Some(size.rate_of(checked.fee.to_sat()).sat_per_vb(2))
    }

    /// Returns the analysis options in force.
    pub fn options(&self) -> &AnalysisOptions {
        &self.options
    }

    /// Walks the unconfirmed cluster around `focus`, one generation at a time, fetching
    /// each generation's transactions concurrently, with the mempool histogram and fee
    /// estimates beside it. Failures become data gaps.
    ///
    /// # Errors
    ///
    /// Returns [`ChainError::Inconsistent`] when an input's previous output differs from
    /// the output of the parent transaction the backend returned.
    pub async fn mempool_facts(&self, focus: Arc<ChainTx>) -> Result<MempoolFacts, ChainError> {
        let focus_txid = focus.txid;
        let mut cluster: HashMap<Txid, Arc<ChainTx>> = HashMap::from([(focus_txid, focus)]);
        let mut confirmed: HashSet<Txid> = HashSet::new();
        let mut frontier = vec![focus_txid];
        let mut gaps = Vec::new();
        let mut complete = true;
        let (mempool, estimates) = tokio::join!(self.source.mempool(), self.source.fee_estimates());
        while !frontier.is_empty() {
            let candidates = self
                .relatives_of(&frontier, &cluster, &confirmed, &mut gaps, &mut complete)
                .await?;
            let unconfirmed = self
                .unconfirmed_among(candidates, &mut confirmed, &mut gaps, &mut complete)
                .await;
            let fetched = join_all(
                unconfirmed
                    .iter()
                    .map(|txid| self.source.transaction(*txid)),
            )
            .await;
            frontier.clear();
            for (txid, result) in unconfirmed.into_iter().zip(fetched) {
                match result {
                    Ok(Some(tx)) if tx.status == TxStatus::Unconfirmed => {
                        if cluster.len() >= self.max_cluster {
                            complete = false;
                            continue;
                        }
                        cluster.insert(txid, tx);
                        frontier.push(txid);
                    }
                    Ok(Some(_)) => {
                        confirmed.insert(txid);
                    }
                    Ok(None) => {
                        complete = false;
                        gaps.push(format!("related transaction {txid} was not found"));
                    }
                    Err(error) => {
                        complete = false;
                        gaps.push(format!(
                            "related transaction {txid} could not be fetched: {error}"
                        ));
                    }
                }
            }
        }
        self.check_prevouts(&cluster).await?;
        let mut gaps_out = gaps;
        let mempool = mempool
            .map_err(|error| gaps_out.push(format!("mempool histogram: {error}")))
            .ok();
        let estimates = estimates
            .map_err(|error| gaps_out.push(format!("fee estimates: {error}")))
            .ok();
        // A fixed order keeps the report the same from one run to the next.
        let mut cluster: Vec<Arc<ChainTx>> = cluster.into_values().collect();
        cluster.sort_by_key(|tx| tx.txid);
        Ok(MempoolFacts {
            focus: focus_txid,
            cluster,
            cluster_complete: complete,
            mempool,
            estimates,
            gaps: gaps_out,
        })
    }

    /// Checks every previous output the backend stated for the cluster against the parent
    /// transaction's own bytes, so that a consistent lie about a value cannot pass.
    /// Parents in the cluster are at hand; the others are fetched raw.
    async fn check_prevouts(
        &self,
        cluster: &HashMap<Txid, Arc<ChainTx>>,
    ) -> Result<(), ChainError> {
        let outside: HashSet<Txid> = cluster
            .values()
            .flat_map(|tx| tx.tx.input.iter().map(|input| input.previous_output.txid))
            .filter(|txid| !cluster.contains_key(txid))
            .collect();
        let outside: Vec<Txid> = outside.into_iter().collect();
        let fetched = join_all(
            outside
                .iter()
                .map(|txid| self.source.raw_transaction(*txid)),
        )
        .await;
        let mut parents: HashMap<Txid, Arc<Transaction>> = HashMap::new();
        for (txid, raw) in outside.into_iter().zip(fetched) {
            if let Some(raw) = raw? {
                parents.insert(txid, raw);
            }
        }
        for tx in cluster.values() {
            for (input, stated) in tx.tx.input.iter().zip(&tx.prevouts) {
                let outpoint = input.previous_output;
                let actual = match cluster.get(&outpoint.txid) {
                    Some(parent) => parent.tx.output.get(outpoint.vout as usize),
                    None => match parents.get(&outpoint.txid) {
                        Some(parent) => parent.output.get(outpoint.vout as usize),
                        None => continue,
                    },
                };
                if actual != Some(stated) {
                    return Err(ChainError::Inconsistent {
                        backend: self.source.name().to_owned(),
                        detail: format!(
                            "transaction {} states that it spends {} sat at {outpoint}, but that output of the parent differs",
                            tx.txid,
                            stated.value.to_sat()
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sorts `candidates` by status: confirmed ones go to `confirmed`, unknown ones to the
    /// gaps, and the unconfirmed ones are returned. Asking for the status first spares a
    /// backend that must fetch previous transactions for a fee (Electrum) that work for
    /// confirmed relatives, which the analysis does not need.
    async fn unconfirmed_among(
        &self,
        candidates: Vec<Txid>,
        confirmed: &mut HashSet<Txid>,
        gaps: &mut Vec<String>,
        complete: &mut bool,
    ) -> Vec<Txid> {
        let statuses = join_all(candidates.iter().map(|txid| self.source.status(*txid))).await;
        let mut unconfirmed = Vec::new();
        for (txid, status) in candidates.into_iter().zip(statuses) {
            match status {
                Ok(Some(TxStatus::Unconfirmed)) => unconfirmed.push(txid),
                Ok(Some(TxStatus::Confirmed { .. })) => {
                    confirmed.insert(txid);
                }
                Ok(None) => {
                    *complete = false;
                    gaps.push(format!("related transaction {txid} was not found"));
                }
                Err(error) => {
                    *complete = false;
                    gaps.push(format!(
                        "related transaction {txid} could not be fetched: {error}"
                    ));
                }
            }
        }
        unconfirmed
    }

    /// Returns the txids that `frontier` spends from or is spent by, not yet classified.
    async fn relatives_of(
        &self,
        frontier: &[Txid],
        cluster: &HashMap<Txid, Arc<ChainTx>>,
        confirmed: &HashSet<Txid>,
        gaps: &mut Vec<String>,
        complete: &mut bool,
    ) -> Result<Vec<Txid>, ChainError> {
        let mut candidates: Vec<Txid> = Vec::new();
        let consider = |txid: Txid, candidates: &mut Vec<Txid>| {
            if !cluster.contains_key(&txid)
                && !confirmed.contains(&txid)
                && !candidates.contains(&txid)
            {
                candidates.push(txid);
            }
        };
        for txid in frontier {
            for input in &cluster[txid].tx.input {
                if !input.previous_output.is_null() {
                    consider(input.previous_output.txid, &mut candidates);
                }
            }
        }
        let spends = join_all(frontier.iter().map(|txid| self.source.outspends(*txid))).await;
        for (txid, result) in frontier.iter().zip(spends) {
            match result {
                Ok(Some(spends)) if spends.len() != cluster[txid].tx.output.len() => {
                    return Err(ChainError::Inconsistent {
                        backend: self.source.name().to_owned(),
                        detail: format!(
                            "GET outspends of {txid} lists {} outputs, but the transaction has {}",
                            spends.len(),
                            cluster[txid].tx.output.len()
                        ),
                    });
                }
                Ok(Some(spends)) => {
                    for spend in spends.iter() {
                        if let OutputSpend::Spent {
                            txid: child,
                            confirmed: false,
                            ..
                        } = spend
                        {
                            consider(*child, &mut candidates);
                        }
                    }
                }
                Ok(None) => {
                    *complete = false;
                    gaps.push(format!("the spenders of {txid}'s outputs are unknown"));
                }
                Err(error) => {
                    *complete = false;
                    gaps.push(format!(
                        "the spenders of {txid}'s outputs could not be fetched: {error}"
                    ));
                }
            }
        }
        Ok(candidates)
    }
}

fn inconsistent(backend: &str, txid: Txid) -> DiagnoseError {
    DiagnoseError::Chain(ChainError::Inconsistent {
        backend: backend.to_owned(),
        detail: format!("transaction {txid} changed state while it was being diagnosed"),
    })
}
