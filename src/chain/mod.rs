//! The chain layer: facts about transactions and the mempool, from a backend.
//!
//! Every backend implements [`ChainSource`] and translates its responses into the types of
//! this module, checking them on the way in: a transaction whose txid or fee does not add
//! up is a [`ChainError::Inconsistent`], never a fact. [`cache::CachedSource`] sits in
//! front of any source.

pub mod cache;
pub mod electrum;
pub mod esplora;
pub mod failover;
pub mod stale;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::bitcoin::{Amount, BlockHash, OutPoint, Transaction, TxOut, Txid};

/// The place of a transaction, as the backend reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TxStatus {
    /// In a block of the best chain.
    Confirmed {
        /// Height of the block.
        block_height: u32,
        /// Hash of the block, where the backend gives it.
        block_hash: Option<BlockHash>,
        /// Block timestamp in seconds since the Unix epoch, where the backend gives it.
        block_time: Option<u64>,
    },
    /// In the backend's mempool.
    Unconfirmed,
}

impl TxStatus {
    /// Returns whether the transaction is in a block.
    pub fn is_confirmed(&self) -> bool {
        matches!(self, TxStatus::Confirmed { .. })
    }
}

/// A transaction with the outputs it spends and its status, checked for consistency.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainTx {
    /// The transaction, decoded from its raw bytes.
    pub tx: Transaction,
    /// The txid, computed from the raw bytes.
    pub txid: Txid,
    /// The output each input spends, in input order.
    pub prevouts: Vec<TxOut>,
    /// Inputs minus outputs.
    pub fee: Amount,
    /// Confirmed or in the mempool.
    pub status: TxStatus,
}

impl ChainTx {
    /// Builds a checked transaction: `expected` must be the txid of `tx`, and `fee`, where
    /// the backend reported one, must equal inputs minus outputs.
    ///
    /// # Errors
    ///
    /// Returns [`ChainError::Inconsistent`] naming what does not add up.
    pub fn checked(
        backend: &str,
        expected: Txid,
        tx: Transaction,
        prevouts: Vec<TxOut>,
        reported_fee: Option<u64>,
        status: TxStatus,
    ) -> Result<Self, ChainError> {
        let inconsistent = |detail: String| ChainError::Inconsistent {
            backend: backend.to_owned(),
            detail,
        };
        let txid = tx.compute_txid();
        if txid != expected {
            return Err(inconsistent(format!(
                "requested transaction {expected} but got {txid}"
            )));
        }
        if prevouts.len() != tx.input.len() {
            let detail = format!(
                "transaction {txid} has {} inputs but {} previous outputs",
                tx.input.len(),
                prevouts.len()
            );
            return Err(inconsistent(detail));
        }
        let input_total: u64 = prevouts.iter().map(|prevout| prevout.value.to_sat()).sum();
        let output_total: u64 = tx.output.iter().map(|output| output.value.to_sat()).sum();
        let Some(fee) = input_total.checked_sub(output_total) else {
            let detail = format!(
                "transaction {txid} spends {input_total} sat but pays out {output_total} sat"
            );
            return Err(inconsistent(detail));
        };
        if let Some(reported) = reported_fee.filter(|&reported| reported != fee) {
            let detail = format!(
                "transaction {txid} reported fee {reported} sat but inputs minus outputs is {fee} sat"
            );
            return Err(inconsistent(detail));
        }
        Ok(Self {
            tx,
            txid,
            prevouts,
            fee: Amount::from_sat(fee),
            status,
        })
    }

    /// Returns the output this transaction spends at `outpoint`, if one of its inputs
    /// spends it.
    pub fn prevout_of(&self, outpoint: &OutPoint) -> Option<&TxOut> {
        let index = self
            .tx
            .input
            .iter()
            .position(|input| input.previous_output == *outpoint)?;
        self.prevouts.get(index)
    }
}

/// The spender of an output, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OutputSpend {
    /// No transaction the backend has spends it.
    Unspent,
    /// A transaction spends it.
    Spent {
        /// The spending transaction.
        txid: Txid,
        /// Its input index.
        vin: u32,
        /// Whether the spender is confirmed.
        confirmed: bool,
    },
}

/// The backend's view of its mempool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MempoolSnapshot {
    /// Number of transactions, where the backend reports it (Electrum does not).
    pub count: Option<u64>,
    /// Total virtual size.
    pub vsize: u64,
    /// Total fees, in satoshis, where the backend reports them (Electrum does not).
    pub total_fee_sat: Option<u64>,
    /// Fee histogram, highest rate first: each entry is the lowest rate of a bin, in sat/vB,
    /// and the virtual size of the transactions at or above it and below the previous
    /// entry's rate.
    pub histogram: Vec<(Decimal, u64)>,
}

/// The backend's fee estimates: confirmation target in blocks to rate in sat/vB.
pub type FeeEstimates = BTreeMap<u16, Decimal>;

/// The relay fee floors of the backend's node, in sat/vB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelayFees {
    /// `minrelaytxfee`.
    pub min_relay_fee_sat_per_vb: Decimal,
    /// The mempool's current minimum fee, where the backend reports it.
    pub mempool_min_fee_sat_per_vb: Option<Decimal>,
    /// `incrementalrelayfee`, where the backend reports it.
    pub incremental_relay_fee_sat_per_vb: Option<Decimal>,
}

/// State of one backend after its last request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendHealth {
    /// The backend's name, as [`ChainSource::name`] returns it.
    pub backend: String,
    /// Whether requests are sent to it now.
    pub state: BackendState,
    /// Height of its best block, when it was last reached.
    pub tip_height: Option<u32>,
    /// Duration of its last request, in milliseconds.
    pub latency_ms: Option<u64>,
    /// The last error it returned, if its last request failed.
    pub last_error: Option<String>,
}

/// Whether a backend takes requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendState {
    /// Its last request succeeded, or none has been made yet.
    Up,
    /// Its last request failed; it is skipped until its back-off ends.
    Down,
}

/// One backend to connect to, as configured.
#[derive(Debug, Clone)]
pub enum BackendSpec {
    /// An Esplora REST API.
    Esplora(esplora::EsploraOptions),
    /// An Electrum server.
    Electrum(electrum::ElectrumOptions),
}

impl BackendSpec {
    /// Creates the source this spec describes; no connection is made yet.
    ///
    /// # Errors
    ///
    /// Returns [`ChainError::Unavailable`] when the client cannot be built.
    pub fn connect(&self) -> Result<Arc<dyn ChainSource>, ChainError> {
        Ok(match self {
            BackendSpec::Esplora(options) => {
                Arc::new(esplora::EsploraSource::new(options.clone())?)
            }
            BackendSpec::Electrum(options) => {
                Arc::new(electrum::ElectrumSource::new(options.clone())?)
            }
        })
    }
}

/// Errors of a backend request.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// The backend could not be reached, timed out, or returned an error status.
    #[error("backend {backend} is unavailable: {reason}")]
    Unavailable {
        /// Which backend.
        backend: String,
        /// What failed.
        reason: String,
    },
    /// The backend responded, but with data that is malformed or does not add up.
    #[error("backend {backend} returned inconsistent data: {detail}")]
    Inconsistent {
        /// Which backend.
        backend: String,
        /// The inconsistency found.
        detail: String,
    },
}

impl ChainError {
    /// Builds an [`ChainError::Unavailable`] for `backend`.
    pub fn unavailable(backend: &str, reason: String) -> Self {
        ChainError::Unavailable {
            backend: backend.to_owned(),
            reason,
        }
    }

    /// Builds an [`ChainError::Inconsistent`] for `backend`.
    pub fn inconsistent(backend: &str, detail: String) -> Self {
        ChainError::Inconsistent {
            backend: backend.to_owned(),
            detail,
        }
    }
}

/// A source of chain and mempool facts.
///
/// Implementations only fetch and check; they never interpret. `Ok(None)` means the backend
/// does not know the transaction, which is different from the backend failing.
#[async_trait]
pub trait ChainSource: Send + Sync {
    /// Returns a short name for messages and metrics, such as `esplora https://host/api`.
    fn name(&self) -> &str;

    /// Fetches a transaction with the outputs it spends and its status.
    async fn transaction(&self, txid: Txid) -> Result<Option<Arc<ChainTx>>, ChainError>;

    /// Fetches who spends each output of a transaction, in output order; `None` when the
    /// backend does not know the transaction.
    async fn outspends(&self, txid: Txid) -> Result<Option<Arc<Vec<OutputSpend>>>, ChainError>;

    /// Fetches the mempool's size and fee histogram.
    async fn mempool(&self) -> Result<Arc<MempoolSnapshot>, ChainError>;

    /// Fetches fee estimates.
    async fn fee_estimates(&self) -> Result<Arc<FeeEstimates>, ChainError>;

    /// Fetches the height of the best block.
    async fn tip_height(&self) -> Result<u32, ChainError>;

    /// Fetches a transaction's raw form only, its txid checked, to verify the values
    /// others state for its outputs. The default goes through [`ChainSource::transaction`];
    /// backends with a cheaper request override it.
    async fn raw_transaction(&self, txid: Txid) -> Result<Option<Arc<Transaction>>, ChainError> {
        Ok(self
            .transaction(txid)
            .await?
            .map(|tx| Arc::new(tx.tx.clone())))
    }

    /// Fetches where a transaction is, without the previous outputs that
    /// [`ChainSource::transaction`] needs; `None` when the backend does not know it.
    ///
    /// The default fetches the whole transaction; a backend that pays extra for previous
    /// outputs (Electrum) or has a cheaper request (Esplora) overrides it.
    async fn status(&self, txid: Txid) -> Result<Option<TxStatus>, ChainError> {
        Ok(self.transaction(txid).await?.map(|tx| tx.status))
    }

    /// Fetches who spends one output; `None` when the backend does not know the
    /// transaction or the output.
    async fn output_spend(&self, outpoint: OutPoint) -> Result<Option<OutputSpend>, ChainError> {
        let spends = self.outspends(outpoint.txid).await?;
        Ok(spends.and_then(|spends| spends.get(outpoint.vout as usize).copied()))
    }

    /// Fetches the relay fee floors of the backend's node; `None` when the backend does
    /// not expose them (Esplora).
    async fn relay_fees(&self) -> Result<Option<RelayFees>, ChainError> {
        Ok(None)
    }

    /// Probes each backend behind this source and reports how it fares. The default
    /// probes this source as a single backend by asking for its tip.
    async fn health(&self) -> Vec<BackendHealth> {
        let started = std::time::Instant::now();
        let result = self.tip_height().await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).ok();
        let (state, tip_height, last_error) = match result {
            Ok(height) => (BackendState::Up, Some(height), None),
            Err(error) => (BackendState::Down, None, Some(error.to_string())),
        };
        vec![BackendHealth {
            backend: self.name().to_owned(),
            state,
            tip_height,
            latency_ms,
            last_error,
        }]
    }
}
