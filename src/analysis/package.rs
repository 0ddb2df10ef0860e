//! The unconfirmed cluster around a transaction: its ancestors, descendants and chunks.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Serialize;

use super::cluster::{Chunk, ClusterTx, chunk_cluster, chunk_of};
use super::size::TxSize;
use crate::bitcoin::Txid;
use crate::chain::ChainTx;
use crate::feerate::{FeeFrac, WITNESS_SCALE_FACTOR};
use crate::policy::{MempoolTx, RelayPolicy};

/// Decimal places of fee rates in reports.
pub const RATE_SCALE: u32 = 8;

/// The cluster of unconfirmed transactions connected to the focus transaction.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// The transactions; `focus` indexes the one being diagnosed.
    pub txs: Vec<Arc<ChainTx>>,
    /// Sizes of each transaction.
    pub sizes: Vec<TxSize>,
    /// In-cluster parents of each transaction.
    pub parents: Vec<Vec<usize>>,
    /// Index of the focus transaction.
    pub focus: usize,
    /// Chunks in mining order, by fee per sigop-adjusted weight.
    pub chunks: Vec<Chunk>,
}

impl ClusterView {
    /// Builds the view of `txs` (all unconfirmed) around `focus`.
    ///
    /// Returns `None` when `focus` is not among `txs`.
    pub fn new(txs: Vec<Arc<ChainTx>>, focus: Txid, policy: &RelayPolicy) -> Option<Self> {
        let index: HashMap<Txid, usize> =
            txs.iter().enumerate().map(|(i, tx)| (tx.txid, i)).collect();
        let focus = *index.get(&focus)?;
        let sizes: Vec<TxSize> = txs.iter().map(|tx| TxSize::of(tx, policy)).collect();
        let parents: Vec<Vec<usize>> = txs
            .iter()
            .map(|tx| {
                let spent: BTreeSet<usize> = tx
                    .tx
                    .input
                    .iter()
                    .filter_map(|input| index.get(&input.previous_output.txid).copied())
                    .collect();
                spent.into_iter().collect()
            })
            .collect();
        let weighted: Vec<ClusterTx> = (0..txs.len())
            .map(|i| ClusterTx {
                frac: FeeFrac::new(txs[i].fee.to_sat(), sizes[i].sigop_adjusted_weight),
                parents: parents[i].clone(),
            })
            .collect();
        let chunks = chunk_cluster(&weighted);
        Some(Self {
            txs,
            sizes,
            parents,
            focus,
            chunks,
        })
    }

    /// Indexes of the transactions `index` descends from, nearest first.
    pub fn ancestors_of(&self, index: usize) -> Vec<usize> {
        let mut found = Vec::new();
        let mut frontier = self.parents[index].clone();
        while let Some(next) = frontier.first().copied() {
            frontier.remove(0);
            if !found.contains(&next) {
                found.push(next);
                frontier.extend(self.parents[next].iter().copied());
            }
        }
        found
    }

    /// Indexes of the transactions descending from `index`, nearest first.
    pub fn descendants_of(&self, index: usize) -> Vec<usize> {
        let mut found = Vec::new();
        let mut frontier = vec![index];
        while let Some(current) = frontier.first().copied() {
            frontier.remove(0);
            for (child, parents) in self.parents.iter().enumerate() {
                if parents.contains(&current) && !found.contains(&child) {
                    found.push(child);
                    frontier.push(child);
                }
            }
        }
        found
    }

    /// Returns the chunk the focus transaction is mined in.
    pub fn focus_chunk(&self) -> &Chunk {
        let index = chunk_of(&self.chunks, self.focus).unwrap_or(0);
        &self.chunks[index]
    }

    /// Returns the focus transaction's own fee rate: fee over sigop-adjusted vsize.
    pub fn own_rate(&self) -> FeeFrac {
        self.sizes[self.focus].rate_of(self.txs[self.focus].fee.to_sat())
    }

    /// Returns the cluster with sizes in virtual bytes, for rates quoted per vB.
    pub fn vsize_cluster(&self) -> Vec<ClusterTx> {
        (0..self.txs.len())
            .map(|i| ClusterTx {
                frac: FeeFrac::from_vsize(
                    self.txs[i].fee.to_sat(),
                    self.sizes[i].sigop_adjusted_vsize,
                ),
                parents: self.parents[i].clone(),
            })
            .collect()
    }

    /// Returns the cluster as replacement rules see it when `evicted` leave the mempool and the
    /// focus transaction is the one directly conflicted.
    pub fn mempool_txs(&self, evicted: &[usize]) -> Vec<MempoolTx> {
        (0..self.txs.len())
            .map(|i| MempoolTx {
                frac: FeeFrac::new(
                    self.txs[i].fee.to_sat(),
                    self.sizes[i].sigop_adjusted_weight,
                ),
                vsize: self.sizes[i].sigop_adjusted_vsize,
                parents: self.parents[i].clone(),
                direct_conflict: i == self.focus,
                evicted: evicted.contains(&i),
            })
            .collect()
    }

    fn relative(&self, index: usize) -> RelativeTx {
        let size = &self.sizes[index];
        let fee_sat = self.txs[index].fee.to_sat();
        RelativeTx {
            txid: self.txs[index].txid,
            fee_sat,
            vsize: size.sigop_adjusted_vsize,
            weight: size.weight,
            fee_rate_sat_per_vb: size.rate_of(fee_sat).sat_per_vb(RATE_SCALE),
        }
    }

    /// Builds the report of ancestors, descendants and the focus chunk.
    pub fn report(&self, complete: bool) -> PackageReport {
        let chunk = self.focus_chunk();
        let ancestors = self
            .ancestors_of(self.focus)
            .into_iter()
            .map(|i| self.relative(i))
            .collect();
        let descendants = self
            .descendants_of(self.focus)
            .into_iter()
            .map(|i| self.relative(i))
            .collect();
        PackageReport {
            ancestors,
            descendants,
            cluster_count: self.txs.len(),
            chunk: ChunkReport {
                txids: chunk.members.iter().map(|&i| self.txs[i].txid).collect(),
                fee_sat: chunk.frac.fee_sat,
                weight: chunk.frac.weight,
                vsize: chunk.frac.weight.div_ceil(WITNESS_SCALE_FACTOR),
                fee_rate_sat_per_vb: chunk.frac.sat_per_vb(RATE_SCALE),
            },
            effective_fee_rate_sat_per_vb: chunk.frac.sat_per_vb(RATE_SCALE),
            complete,
        }
    }
}

/// An unconfirmed relative of the diagnosed transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelativeTx {
    /// Its txid.
    pub txid: Txid,
    /// Its fee.
    pub fee_sat: u64,
    /// Its sigop-adjusted virtual size.
    pub vsize: u64,
    /// Its weight.
    pub weight: u64,
    /// Its own fee rate.
    #[serde(with = "rust_decimal::serde::str")]
    pub fee_rate_sat_per_vb: Decimal,
}

/// The chunk a transaction is mined in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChunkReport {
    /// Members in cluster order.
    pub txids: Vec<Txid>,
    /// Summed fee.
    pub fee_sat: u64,
    /// Summed sigop-adjusted weight.
    pub weight: u64,
    /// `weight / 4`, rounded up.
    pub vsize: u64,
    /// Fee over weight / 4.
    #[serde(with = "rust_decimal::serde::str")]
    pub fee_rate_sat_per_vb: Decimal,
}

/// The unconfirmed package around a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageReport {
    /// Unconfirmed ancestors, nearest first.
    pub ancestors: Vec<RelativeTx>,
    /// Unconfirmed descendants, nearest first.
    pub descendants: Vec<RelativeTx>,
    /// Transactions in the whole cluster, the diagnosed one included.
    pub cluster_count: usize,
    /// The chunk it is mined in.
    pub chunk: ChunkReport,
    /// The rate that decides when it is mined: its chunk's.
    #[serde(with = "rust_decimal::serde::str")]
    pub effective_fee_rate_sat_per_vb: Decimal,
    /// False when the walk stopped early or a relative could not be fetched.
    pub complete: bool,
}
