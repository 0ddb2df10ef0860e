//! Transaction sizes as policy counts them.

use serde::Serialize;

use crate::chain::ChainTx;
use crate::feerate::{FeeFrac, WITNESS_SCALE_FACTOR};
use crate::policy::RelayPolicy;

/// Sizes and fee of one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TxSize {
    /// Serialized size in bytes, witness included.
    pub size: u64,
    /// Weight in weight units.
    pub weight: u64,
    /// Virtual size: weight / 4, rounded up.
    pub vsize: u64,
    /// Signature-operation cost, with the P2SH and witness sigops of the inputs.
    pub sigop_cost: u64,
    /// Virtual size that relay policy charges: the larger of `vsize` and
    /// `sigop_cost × bytes_per_sigop / 4`, rounded up.
    pub sigop_adjusted_vsize: u64,
    /// Weight that relay policy charges: the larger of `weight` and
    /// `sigop_cost × bytes_per_sigop`.
    pub sigop_adjusted_weight: u64,
}

impl TxSize {
    /// Measures `tx`, counting the sigops of the outputs it spends.
    pub fn of(tx: &ChainTx, policy: &RelayPolicy) -> Self {
        let weight = tx.tx.weight().to_wu();
        let sigop_cost =
            tx.tx
                .total_sigop_cost(|outpoint| tx.prevout_of(outpoint).cloned()) as u64;
        Self {
            size: tx.tx.total_size() as u64,
            weight,
            vsize: weight.div_ceil(WITNESS_SCALE_FACTOR),
            sigop_cost,
            sigop_adjusted_vsize: policy.sigop_adjusted_vsize(weight, sigop_cost),
            sigop_adjusted_weight: policy.sigop_adjusted_weight(weight, sigop_cost),
        }
    }

    /// The fee over the sigop-adjusted virtual size, as wallets and explorers quote it.
    pub fn rate_of(&self, fee_sat: u64) -> FeeFrac {
        FeeFrac::from_vsize(fee_sat, self.sigop_adjusted_vsize)
    }
}
