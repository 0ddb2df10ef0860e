//! Where a transaction sits in the mempool and when it may confirm.
//!
//! The position comes from the backend's fee histogram, read against the transaction's
//! effective (chunk) fee rate. The estimate assumes that no transaction paying more arrives
//! and that blocks come every ten minutes on average, as a Poisson process; both
//! assumptions are stated in the output.

use rust_decimal::Decimal;
use serde::Serialize;

use crate::chain::{FeeEstimates, MempoolSnapshot};
use crate::policy::BLOCK_VSIZE;

/// Mean time between blocks, in minutes.
const BLOCK_INTERVAL_MINUTES: f64 = 10.0;

/// The transaction's place in the queue for block space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MempoolPosition {
    /// Virtual bytes that surely pay a higher rate: the histogram bins entirely above.
    pub vsize_ahead_min: u64,
    /// Virtual bytes that may pay a higher rate: also the bin the rate falls into.
    pub vsize_ahead_max: u64,
    /// Total virtual size of the mempool.
    pub mempool_vsize: u64,
    /// First projected block the transaction may be in (1 is the next block).
    pub projected_block_min: u64,
    /// Last projected block it should be in if nothing better-paying arrives.
    pub projected_block_max: u64,
}

/// When the transaction may confirm, as ranges with their assumptions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfirmationEstimate {
    /// Fewest blocks until confirmation.
    pub blocks_min: u64,
    /// Most blocks until confirmation, under the stated assumptions.
    pub blocks_max: u64,
    /// Minutes by which the first of `blocks_min` blocks arrive with 10% probability.
    pub minutes_min: u64,
    /// Minutes by which `blocks_max` blocks arrive with 90% probability.
    pub minutes_max: u64,
    /// The smallest target of the backend's fee estimator that the rate meets, if any.
    pub estimator_target_blocks: Option<u16>,
    /// A one-line summary, such as "in 3 blocks (about 10 to 50 minutes)".
    pub summary: String,
    /// The assumptions behind the ranges.
    pub assumptions: Vec<String>,
}

/// Locates a transaction paying `rate` (sat/vB) with `own_vsize` in the histogram.
pub fn locate(rate: Decimal, own_vsize: u64, mempool: &MempoolSnapshot) -> MempoolPosition {
    let mut ahead_min = 0;
    let mut ahead_max = 0;
    for &(bin_rate, vsize) in &mempool.histogram {
        if bin_rate > rate {
            ahead_min += vsize;
            ahead_max += vsize;
        } else {
            // The bin holds rates from `bin_rate` up to the previous bin's: some may pay
            // more than this transaction, some less.
            ahead_max += vsize;
            break;
        }
    }
    // The transaction itself may be counted in its own bin.
    ahead_max = ahead_max.saturating_sub(own_vsize).max(ahead_min);
    MempoolPosition {
        vsize_ahead_min: ahead_min,
        vsize_ahead_max: ahead_max,
        mempool_vsize: mempool.vsize,
        projected_block_min: ahead_min / BLOCK_VSIZE + 1,
        projected_block_max: (ahead_max + own_vsize) / BLOCK_VSIZE + 1,
    }
}

/// Returns the lowest rate (sat/vB) that places a transaction within the first `blocks`
/// projected blocks, or `None` when the whole mempool fits in them.
pub fn histogram_rate_for_blocks(mempool: &MempoolSnapshot, blocks: u64) -> Option<Decimal> {
    let capacity = blocks * BLOCK_VSIZE;
    let mut cumulative = 0;
    for &(rate, vsize) in &mempool.histogram {
        cumulative += vsize;
        if cumulative >= capacity {
            return Some(rate);
        }
    }
    None
}

/// Returns the smallest estimator target whose rate `rate` meets.
pub fn estimator_target(rate: Decimal, estimates: &FeeEstimates) -> Option<u16> {
    estimates
        .iter()
        .find(|(_, estimate)| rate >= **estimate)
        .map(|(target, _)| *target)
}

/// Builds the confirmation estimate from the position and the estimator.
pub fn estimate(
    position: &MempoolPosition,
    estimator_target_blocks: Option<u16>,
) -> ConfirmationEstimate {
    let blocks_min = position.projected_block_min;
    let blocks_max = position.projected_block_max.max(blocks_min);
    let minutes_min = whole_minutes(erlang_quantile(blocks_min, 0.1).floor());
    let minutes_max = whole_minutes(erlang_quantile(blocks_max, 0.9).ceil());
    let blocks = if blocks_min == blocks_max {
        format!(
            "in {blocks_min} block{}",
            if blocks_min == 1 { "" } else { "s" }
        )
    } else {
        format!("in {blocks_min} to {blocks_max} blocks")
    };
    let mut summary = format!("{blocks} (about {minutes_min} to {minutes_max} minutes)");
    if blocks_min > 1 {
        summary.push_str(&format!(
            ", not in the next {} block{}",
            blocks_min - 1,
            if blocks_min == 2 { "" } else { "s" }
        ));
    }
    ConfirmationEstimate {
        blocks_min,
        blocks_max,
        minutes_min,
        minutes_max,
        estimator_target_blocks,
        summary,
        assumptions: vec![
            "no transaction paying a higher fee rate arrives; new ones would push it back"
                .to_owned(),
            "blocks arrive every 10 minutes on average; the minutes are the 10% to 90% range"
                .to_owned(),
            "the backend's mempool is like the miners'".to_owned(),
        ],
    }
}

/// Converts a non-negative whole number of minutes; the quantiles stay far below 2^53.
#[allow(clippy::cast_possible_truncation)] // Checked against the range just above.
fn whole_minutes(minutes: f64) -> u64 {
    if (0.0..9.0e15).contains(&minutes) {
        minutes as u64
    } else {
        u64::MAX
    }
}

/// Minutes within which `blocks` blocks arrive with probability `probability`: the
/// quantile of an Erlang distribution with mean 10 minutes per block, found by bisection.
fn erlang_quantile(blocks: u64, probability: f64) -> f64 {
    let cdf = |minutes: f64| {
        let lambda_t = minutes / BLOCK_INTERVAL_MINUTES;
        let mut term = (-lambda_t).exp();
        let mut below = 0.0;
        for n in 0..blocks {
            below += term;
            term *= lambda_t / (n + 1) as f64;
        }
        1.0 - below
    };
    let (mut low, mut high) = (0.0, BLOCK_INTERVAL_MINUTES * (blocks as f64 + 10.0) * 4.0);
    for _ in 0..100 {
        let middle = (low + high) / 2.0;
        if cdf(middle) < probability {
            low = middle;
        } else {
            high = middle;
        }
    }
    high
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::dec;

    fn snapshot() -> MempoolSnapshot {
        MempoolSnapshot {
            count: Some(3),
            vsize: 2_500_000,
            total_fee_sat: Some(0),
            histogram: vec![
                (dec!(20), 900_000),
                (dec!(10), 1_000_000),
                (dec!(1), 600_000),
            ],
        }
    }

    #[test]
    fn position_counts_higher_bins() {
        let position = locate(dec!(1.005), 141, &snapshot());
        assert_eq!(position.vsize_ahead_min, 1_900_000);
        assert_eq!(position.vsize_ahead_max, 2_499_859);
        assert_eq!(position.projected_block_min, 2);
        assert_eq!(position.projected_block_max, 3);
    }

    #[test]
    fn top_rate_is_next_block() {
        let position = locate(dec!(50), 141, &snapshot());
        assert_eq!(position.vsize_ahead_min, 0);
        assert_eq!(position.projected_block_min, 1);
    }

    #[test]
    fn rate_for_blocks_from_histogram() {
        assert_eq!(histogram_rate_for_blocks(&snapshot(), 1), Some(dec!(10)));
        assert_eq!(histogram_rate_for_blocks(&snapshot(), 6), None);
    }

    #[test]
    fn erlang_one_block_quantiles() {
        // One block: exponential with mean 10, so the median is 10·ln 2.
        assert!((erlang_quantile(1, 0.5) - 6.931).abs() < 0.01);
        assert!((erlang_quantile(3, 0.9) - 53.22).abs() < 0.05);
    }
}
