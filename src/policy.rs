//! Bitcoin Core's relay and replacement policy as pure functions.
//!
//! Sources are Bitcoin Core's `src/policy/policy.h`, `src/policy/rbf.cpp`,
//! `src/policy/truc_policy.h` and `src/util/feefrac.cpp` (v31 cluster mempool), and the
//! same files in v28 to v30 for the pre-31 rules that many nodes still run.

use serde::{Deserialize, Serialize};

use crate::analysis::cluster::{Chunk, ClusterTx, chunk_cluster, chunk_of};
use crate::bitcoin;
use crate::feerate::{FeeFrac, SatPerKvb, WITNESS_SCALE_FACTOR};

/// `DEFAULT_MIN_RELAY_TX_FEE`: 0.1 sat/vB since v29.1 and v30.0 (it was 1 sat/vB).
pub const DEFAULT_MIN_RELAY_FEE: SatPerKvb = SatPerKvb(100);
/// `DEFAULT_INCREMENTAL_RELAY_FEE`: 0.1 sat/vB since v29.1 and v30.0 (it was 1 sat/vB).
pub const DEFAULT_INCREMENTAL_RELAY_FEE: SatPerKvb = SatPerKvb(100);
/// `DUST_RELAY_TX_FEE`: 3 sat/vB.
pub const DEFAULT_DUST_RELAY_FEE: SatPerKvb = SatPerKvb(3000);
/// `DEFAULT_BYTES_PER_SIGOP`: each signature operation counts as 20 virtual bytes.
pub const DEFAULT_BYTES_PER_SIGOP: u64 = 20;
/// `MAX_BIP125_RBF_SEQUENCE`: an input with nSequence at or below this signals BIP125.
pub const MAX_BIP125_RBF_SEQUENCE: u32 = 0xffff_fffd;
/// `DEFAULT_MEMPOOL_EXPIRY_HOURS`: unconfirmed transactions leave the mempool after 14 days.
pub const MEMPOOL_EXPIRY_HOURS: u64 = 336;
/// `DEFAULT_CLUSTER_LIMIT` (v31): at most 64 transactions in one cluster.
pub const CLUSTER_COUNT_LIMIT: usize = 64;
/// `DEFAULT_CLUSTER_SIZE_LIMIT_KVB` (v31): at most 101,000 vB in one cluster.
pub const CLUSTER_VSIZE_LIMIT: u64 = 101_000;
/// `MAX_REPLACEMENT_CANDIDATES`: 100 clusters on v31, 100 evicted transactions before.
pub const MAX_REPLACEMENT_CANDIDATES: usize = 100;
/// `TRUC_VERSION`: BIP431 transactions carry nVersion 3.
pub const TRUC_VERSION: i32 = 3;
/// `TRUC_MAX_VSIZE`: a TRUC transaction is at most 10,000 sigop-adjusted vB.
pub const TRUC_MAX_VSIZE: u64 = 10_000;
/// `TRUC_CHILD_MAX_VSIZE`: a TRUC child of an unconfirmed TRUC parent is at most 1,000 vB.
pub const TRUC_CHILD_MAX_VSIZE: u64 = 1_000;
/// `TRUC_ANCESTOR_LIMIT` and `TRUC_DESCENDANT_LIMIT`: a TRUC cluster is one parent and one child.
pub const TRUC_CLUSTER_LIMIT: usize = 2;
/// Block capacity in virtual bytes: 4,000,000 weight units.
pub const BLOCK_VSIZE: u64 = 1_000_000;

/// Generation of replacement rules to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyVersion {
    /// Bitcoin Core v31 and later: fee-rate diagram, clusters.
    V31,
    /// Bitcoin Core v28 to v30: a strictly higher fee rate than each replaced transaction.
    Pre31,
    /// The larger of the two minimums, so that both kinds of node accept it.
    #[default]
    Both,
}

/// The relay policy constants a node applies; each is configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayPolicy {
    /// `-minrelaytxfee`.
    pub min_relay_fee: SatPerKvb,
    /// `-incrementalrelayfee`, charged by replacement Rule 4.
    pub incremental_relay_fee: SatPerKvb,
    /// `-dustrelayfee`, the rate that defines dust outputs.
    pub dust_relay_fee: SatPerKvb,
    /// `-bytespersigop`.
    pub bytes_per_sigop: u64,
    /// The node's current dynamic mempool minimum fee, at least `min_relay_fee`.
    pub mempool_min_fee: SatPerKvb,
}

impl Default for RelayPolicy {
    fn default() -> Self {
        Self {
            min_relay_fee: DEFAULT_MIN_RELAY_FEE,
            incremental_relay_fee: DEFAULT_INCREMENTAL_RELAY_FEE,
            dust_relay_fee: DEFAULT_DUST_RELAY_FEE,
            bytes_per_sigop: DEFAULT_BYTES_PER_SIGOP,
            mempool_min_fee: DEFAULT_MIN_RELAY_FEE,
        }
    }
}

impl RelayPolicy {
    /// Returns the weight that policy charges: the larger of the real weight and the sigop
    /// cost times bytes per sigop (`GetSigOpsAdjustedWeight` in `src/policy/policy.cpp`).
    pub fn sigop_adjusted_weight(&self, weight: u64, sigop_cost: u64) -> u64 {
        weight.max(sigop_cost.saturating_mul(self.bytes_per_sigop))
    }

    /// Returns the sigop-adjusted virtual size, rounded up (`GetVirtualTransactionSize`).
    pub fn sigop_adjusted_vsize(&self, weight: u64, sigop_cost: u64) -> u64 {
        self.sigop_adjusted_weight(weight, sigop_cost)
            .div_ceil(WITNESS_SCALE_FACTOR)
    }

    /// Returns the dust threshold of an output: what spending it would cost at the dust
    /// relay fee (`GetDustThreshold`). Unspendable outputs have none.
    pub fn dust_threshold(&self, script_pubkey: &bitcoin::ScriptBuf) -> u64 {
        if script_pubkey.is_op_return() {
            return 0;
        }
        let output_size = bitcoin::consensus::serialize(&bitcoin::TxOut {
            value: bitcoin::Amount::ZERO,
            script_pubkey: script_pubkey.clone(),
        })
        .len() as u64;
        // An input spending a witness program costs 32 + 4 + 1 + 107 / 4 + 4 bytes, any
        // other input 32 + 4 + 1 + 107 + 4 bytes.
        let spend_size = if script_pubkey.is_witness_program() {
            67
        } else {
            148
        };
        self.dust_relay_fee.fee_for_vsize(output_size + spend_size)
    }
}

/// A mempool transaction that a replacement's fee-rate diagram is compared against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MempoolTx {
    /// Fee and sigop-adjusted weight.
    pub frac: FeeFrac,
    /// Sigop-adjusted virtual size.
    pub vsize: u64,
    /// Indexes of in-set parents.
    pub parents: Vec<usize>,
    /// Whether the replacement spends one of this transaction's inputs.
    pub direct_conflict: bool,
    /// Whether the replacement evicts it: a direct conflict or a descendant of one.
    pub evicted: bool,
}

/// Everything the replacement rules look at: the clusters the replacement touches and the
/// replacement's own shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplacementCase {
    /// All transactions of the clusters that hold an evicted transaction or a parent of
    /// the replacement.
    pub mempool: Vec<MempoolTx>,
    /// Sigop-adjusted weight of the replacement.
    pub replacement_weight: u64,
    /// Sigop-adjusted virtual size of the replacement.
    pub replacement_vsize: u64,
    /// Indexes of the in-mempool transactions the replacement spends from.
    pub replacement_parents: Vec<usize>,
}

/// The rule that set a replacement's minimum fee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingRule {
    /// Rules 3 and 4: pay for everything evicted plus the incremental relay fee.
    PaysForEvicted,
    /// v31: the mempool's fee-rate diagram must strictly improve.
    FeerateDiagram,
    /// Pre-31: a higher fee rate than each directly conflicting transaction.
    HigherFeerateThanConflicts,
    /// The replacement's own rate must meet the mempool minimum fee.
    MempoolMinFee,
}

/// The smallest fee a replacement may pay, and which rule set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReplacementMinimum {
    /// Minimum total fee of the replacement, in satoshis.
    pub fee_sat: u64,
    /// The rule that binds at that fee.
    pub binding_rule: BindingRule,
}

/// Reasons no fee makes a replacement acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum ReplacementError {
    /// The replacement would spend an output of a transaction it evicts.
    #[error("the replacement spends an output of a transaction it would evict")]
    SpendsConflictingTx,
    /// More transactions would be evicted than pre-31 nodes allow.
    #[error("the replacement would evict {evicted} transactions, more than {limit}")]
    TooManyReplacements {
        /// Transactions the replacement would evict.
        evicted: usize,
        /// The limit.
        limit: usize,
    },
    /// A pre-31 node rejects a replacement that adds an unconfirmed input.
    #[error("pre-31 nodes reject a replacement that adds unconfirmed inputs")]
    AddsUnconfirmedInput,
    /// The cluster after replacement would exceed the cluster limits.
    #[error("the resulting cluster of {count} transactions and {vsize} vB exceeds the limits")]
    ClusterTooLarge {
        /// Transactions in the resulting cluster.
        count: usize,
        /// Virtual size of the resulting cluster.
        vsize: u64,
    },
}

impl ReplacementCase {
    fn evicted_fee(&self) -> u64 {
        self.mempool
            .iter()
            .filter(|tx| tx.evicted)
            .map(|tx| tx.frac.fee_sat)
            .sum()
    }

    /// Rules 3 and 4: `fee ≥ Σ evicted fees + incremental_fee(replacement vsize)`.
    fn pays_for_evicted(&self, policy: &RelayPolicy) -> u64 {
        self.evicted_fee()
            + policy
                .incremental_relay_fee
                .fee_for_vsize(self.replacement_vsize)
    }

    fn check_structure(&self, version: PolicyVersion) -> Result<(), ReplacementError> {
        if self
            .replacement_parents
            .iter()
            .any(|&parent| self.mempool[parent].evicted)
        {
            return Err(ReplacementError::SpendsConflictingTx);
        }
        let kept: Vec<&MempoolTx> = self.mempool.iter().filter(|tx| !tx.evicted).collect();
        let count = kept.len() + 1;
        let vsize = kept.iter().map(|tx| tx.vsize).sum::<u64>() + self.replacement_vsize;
        // NOTE: every kept transaction is counted as if it joined the replacement's
        // cluster, which overstates the size when the replacement splits a cluster.
        if count > CLUSTER_COUNT_LIMIT || vsize > CLUSTER_VSIZE_LIMIT {
            return Err(ReplacementError::ClusterTooLarge { count, vsize });
        }
        if version != PolicyVersion::V31 {
            let evicted = self.mempool.iter().filter(|tx| tx.evicted).count();
            if evicted > MAX_REPLACEMENT_CANDIDATES {
                let limit = MAX_REPLACEMENT_CANDIDATES;
                return Err(ReplacementError::TooManyReplacements { evicted, limit });
            }
            let conflict_parents: Vec<usize> = self
                .mempool
                .iter()
                .filter(|tx| tx.direct_conflict)
                .flat_map(|tx| tx.parents.iter().copied())
                .collect();
            let adds_unconfirmed = self
                .replacement_parents
                .iter()
                .any(|parent| !conflict_parents.contains(parent));
            if adds_unconfirmed {
                return Err(ReplacementError::AddsUnconfirmedInput);
            }
        }
        Ok(())
    }

    /// Checks the v31 diagram rule for a replacement paying `fee_sat`.
    pub fn improves_diagram(&self, fee_sat: u64) -> bool {
        let old: Vec<ClusterTx> = self
            .mempool
            .iter()
            .map(|tx| ClusterTx {
                frac: tx.frac,
                parents: tx.parents.clone(),
            })
            .collect();
        // Indexes are assigned before any parent is mapped, because `mempool` need not list
        // parents before their children.
        let kept: Vec<usize> = (0..self.mempool.len())
            .filter(|&i| !self.mempool[i].evicted)
            .collect();
        let mut kept_index = vec![usize::MAX; self.mempool.len()];
        for (new_index, &i) in kept.iter().enumerate() {
            kept_index[i] = new_index;
        }
        let mut new: Vec<ClusterTx> = kept
            .iter()
            .map(|&i| ClusterTx {
                frac: self.mempool[i].frac,
                parents: self.mempool[i]
                    .parents
                    .iter()
                    .map(|&p| kept_index[p])
                    .collect(),
            })
            .collect();
        let parents = self
            .replacement_parents
            .iter()
            .map(|&p| kept_index[p])
            .collect();
        new.push(ClusterTx {
            frac: FeeFrac::new(fee_sat, self.replacement_weight),
            parents,
        });
        let old_diagram = diagram(&old);
        let new_diagram = diagram(&new);
        compare_diagrams(&new_diagram, &old_diagram) == Some(std::cmp::Ordering::Greater)
    }

    /// Returns the smallest fee at which a node running `version` accepts the replacement.
    ///
    /// # Errors
    ///
    /// Returns a [`ReplacementError`] when no fee can make the replacement acceptable.
    pub fn minimum_fee(
        &self,
        policy: &RelayPolicy,
        version: PolicyVersion,
    ) -> Result<ReplacementMinimum, ReplacementError> {
        self.check_structure(version)?;
        let mut minimum = ReplacementMinimum {
            fee_sat: self.pays_for_evicted(policy),
            binding_rule: BindingRule::PaysForEvicted,
        };
        let raise = |minimum: &mut ReplacementMinimum, fee_sat: u64, binding_rule: BindingRule| {
            if fee_sat > minimum.fee_sat {
                *minimum = ReplacementMinimum {
                    fee_sat,
                    binding_rule,
                };
            }
        };
        let own_rate_floor = policy.mempool_min_fee.max(policy.min_relay_fee);
        let own_rate_fee = own_rate_floor.fee_for_vsize(self.replacement_vsize);
        raise(&mut minimum, own_rate_fee, BindingRule::MempoolMinFee);
        if version != PolicyVersion::Pre31 {
            let diagram_fee = self.diagram_minimum(minimum.fee_sat);
            raise(&mut minimum, diagram_fee, BindingRule::FeerateDiagram);
        }
        if version != PolicyVersion::V31 {
            let feerate_fee = self.pre31_feerate_minimum();
            raise(
                &mut minimum,
                feerate_fee,
                BindingRule::HigherFeerateThanConflicts,
            );
        }
        Ok(minimum)
    }

    /// Finds the smallest fee at or above `floor` that improves the diagram. A higher fee
    /// never makes the new diagram worse, so a binary search is exact.
    fn diagram_minimum(&self, floor: u64) -> u64 {
        if self.improves_diagram(floor) {
            return floor;
        }
        let mut low = floor;
        let mut high = floor.max(1);
        while !self.improves_diagram(high) {
            low = high;
            high = high.saturating_mul(2);
            if high == u64::MAX {
                return u64::MAX;
            }
        }
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if self.improves_diagram(middle) {
                high = middle;
            } else {
                low = middle;
            }
        }
        high
    }

    /// Pre-31 nodes require `floor(1000·F/V) > floor(1000·F_d/V_d)` for every direct
    /// conflict `d`, the truncated sat/kvB comparison of older `CFeeRate`.
    fn pre31_feerate_minimum(&self) -> u64 {
        let vsize = self.replacement_vsize;
        self.mempool
            .iter()
            .filter(|tx| tx.direct_conflict)
            .map(|tx| {
                let conflict_rate = tx.frac.fee_sat * 1000 / tx.vsize.max(1);
                ((conflict_rate + 1) * vsize).div_ceil(1000)
            })
            .max()
            .unwrap_or(0)
    }
}

/// Builds a fee-rate diagram: cumulative (weight, fee) at the end of each chunk, from (0, 0).
fn diagram(cluster: &[ClusterTx]) -> Vec<(u64, u64)> {
    let mut points = vec![(0, 0)];
    let (mut weight, mut fee) = (0, 0);
    for chunk in chunk_cluster(cluster) {
        weight += chunk.frac.weight;
        fee += chunk.frac.fee_sat;
        points.push((weight, fee));
    }
    points
}

/// Compares two diagrams point by point, each extended flat past its end
/// (`CompareChunks` in `src/util/feefrac.cpp`). Returns `None` when neither is at least the
/// other everywhere.
fn compare_diagrams(left: &[(u64, u64)], right: &[(u64, u64)]) -> Option<std::cmp::Ordering> {
    let mut better = false;
    let mut worse = false;
    let xs = left.iter().chain(right).map(|point| point.0);
    for x in xs {
        match fee_at(left, x).cmp(&fee_at(right, x)) {
            std::cmp::Ordering::Greater => better = true,
            std::cmp::Ordering::Less => worse = true,
            std::cmp::Ordering::Equal => {}
        }
    }
    match (better, worse) {
        (true, false) => Some(std::cmp::Ordering::Greater),
        (false, true) => Some(std::cmp::Ordering::Less),
        (false, false) => Some(std::cmp::Ordering::Equal),
        (true, true) => None,
    }
}

/// An exact rational `numerator / denominator`, denominator positive.
#[derive(Debug, Clone, Copy)]
struct Ratio {
    numerator: i128,
    denominator: i128,
}

impl PartialEq for Ratio {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Ratio {}
impl PartialOrd for Ratio {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ratio {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.numerator * other.denominator).cmp(&(other.numerator * self.denominator))
    }
}

/// Interpolates a diagram's fee at weight `x`.
fn fee_at(points: &[(u64, u64)], x: u64) -> Ratio {
    for pair in points.windows(2) {
        let ((x0, f0), (x1, f1)) = (pair[0], pair[1]);
        if x <= x1 && x1 > x0 {
            let span = i128::from(x1 - x0);
            let rise = i128::from(f1) - i128::from(f0);
            let numerator = i128::from(f0) * span + rise * (i128::from(x) - i128::from(x0));
            return Ratio {
                numerator,
                denominator: span,
            };
        }
    }
    let last_fee = points.last().map_or(0, |point| point.1);
    Ratio {
        numerator: i128::from(last_fee),
        denominator: 1,
    }
}

/// Estimates the fee of [`fee_to_reach`]: the target on the new transaction and on every
/// ancestor whose chunk is below the target, minus what those ancestors already pay.
fn guess_joining_fee(
    cluster: &[ClusterTx],
    parents: &[usize],
    vsize: u64,
    target: SatPerKvb,
) -> u64 {
    let chunks = chunk_cluster(cluster);
    let mut ancestors: Vec<usize> = Vec::new();
    let mut frontier: Vec<usize> = parents.to_vec();
    while let Some(next) = frontier.pop() {
        if !ancestors.contains(&next) {
            ancestors.push(next);
            frontier.extend(cluster[next].parents.iter().copied());
        }
    }
    let below_target = |index: usize| {
        chunk_of(&chunks, index).is_some_and(|chunk| {
            let frac = chunks[chunk].frac;
            u128::from(frac.fee_sat) * 1000
                < u128::from(target.0) * u128::from(frac.weight / WITNESS_SCALE_FACTOR)
        })
    };
    let paid: Vec<usize> = ancestors.into_iter().filter(|&i| below_target(i)).collect();
    let paid_vsize: u64 = paid
        .iter()
        .map(|&i| cluster[i].frac.weight / WITNESS_SCALE_FACTOR)
        .sum();
    let paid_fee: u64 = paid.iter().map(|&i| cluster[i].frac.fee_sat).sum();
    target
        .fee_for_vsize(vsize + paid_vsize)
        .saturating_sub(paid_fee)
}

/// Returns the chunk a transaction of `vsize` vB paying `fee_sat` lands in when it joins
/// `cluster` spending from `parents` (sizes in vB × 4, as for [`fee_to_reach`]). Its
/// members are cluster indexes, the joining transaction being `cluster.len()`.
fn chunk_when_joining(cluster: &[ClusterTx], parents: &[usize], vsize: u64, fee_sat: u64) -> Chunk {
    let mut extended = cluster.to_vec();
    let frac = FeeFrac::from_vsize(fee_sat, vsize);
    extended.push(ClusterTx {
        frac,
        parents: parents.to_vec(),
    });
    let joining = extended.len() - 1;
    let chunks = chunk_cluster(&extended);
    match chunk_of(&chunks, joining) {
        Some(index) => chunks[index].clone(),
        None => Chunk {
            members: vec![joining],
            frac,
        },
    }
}

/// Returns the fee and size of the chunk a transaction of `vsize` vB paying `fee_sat`
/// lands in when it joins `cluster` spending from `parents`.
pub fn joining_chunk(
    cluster: &[ClusterTx],
    parents: &[usize],
    vsize: u64,
    fee_sat: u64,
) -> FeeFrac {
    chunk_when_joining(cluster, parents, vsize, fee_sat).frac
}

/// A transaction joining a cluster, priced to reach a target rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JoiningTx {
    /// Fee the new transaction must pay, in satoshis.
    pub fee_sat: u64,
    /// Indexes of the ancestors that end up in its chunk: those it pays for.
    pub paid_for: Vec<usize>,
    /// Fee and size of its chunk (size as vB × 4).
    pub chunk: FeeFrac,
}

/// Returns the smallest fee for a transaction of `vsize` vB spending from `parents` that
/// puts its chunk at `target` or above: the fee of a CPFP child, or of a replacement that
/// keeps unconfirmed parents.
///
/// The cluster's sizes are virtual bytes (`FeeFrac::from_vsize`), so the rate is the one
/// wallets and explorers quote: fee over summed vsize. Ancestors whose own chunk already
/// meets the target stay out of the new chunk and cost nothing.
pub fn fee_to_reach(
    cluster: &[ClusterTx],
    parents: &[usize],
    vsize: u64,
    target: SatPerKvb,
) -> JoiningTx {
    let attempt = |fee_sat: u64| -> (bool, JoiningTx) {
        let joining = cluster.len();
        let chunk = chunk_when_joining(cluster, parents, vsize, fee_sat);
        let chunk_vsize = chunk.frac.weight / WITNESS_SCALE_FACTOR;
        let reaches =
            u128::from(chunk.frac.fee_sat) * 1000 >= u128::from(target.0) * u128::from(chunk_vsize);
        let paid_for = chunk
            .members
            .iter()
            .copied()
            .filter(|&i| i != joining)
            .collect();
        (
            reaches,
            JoiningTx {
                fee_sat,
                paid_for,
                chunk: chunk.frac,
            },
        )
    };
    // The fee that pays the target on the new transaction alone is a lower bound.
    let mut low = target.fee_for_vsize(vsize);
    let first = attempt(low);
    if first.0 {
        return first.1;
    }
    // Usually the fee pays for exactly the ancestors whose chunks are below the target.
    // Two attempts confirm it, and the search below covers the cases where it does not.
    let guess = guess_joining_fee(cluster, parents, vsize, target);
    if guess > low {
        let at_guess = attempt(guess);
        if at_guess.0 && !attempt(guess - 1).0 {
            return at_guess.1;
        }
    }
    let mut high = low.max(1);
    loop {
        high = high.saturating_mul(2);
        if attempt(high).0 || high == u64::MAX {
            break;
        }
        low = high;
    }
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if attempt(middle).0 {
            high = middle;
        } else {
            low = middle;
        }
    }
    attempt(high).1
}

#[cfg(test)]
mod tests;
