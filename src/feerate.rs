//! Exact fee rates: a fee and a size kept as integers, compared by cross-multiplication.
//!
//! Bitcoin Core compares chunk fee rates as exact fractions of fee per weight unit
//! (`FeeFrac` in `src/util/feefrac.h`); floating point would misorder close rates.

use std::cmp::Ordering;

use rust_decimal::Decimal;
use rust_decimal::prelude::RoundingStrategy;
use serde::{Deserialize, Serialize};

/// Number of weight units in one virtual byte.
pub const WITNESS_SCALE_FACTOR: u64 = 4;

/// A fee and the size that pays it, in satoshis and weight units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FeeFrac {
    /// Total fee in satoshis.
    pub fee_sat: u64,
    /// Total size in weight units (sigop-adjusted where the caller says so).
    pub weight: u64,
}

impl FeeFrac {
    /// Creates a fee fraction from a fee in satoshis and a size in weight units.
    pub const fn new(fee_sat: u64, weight: u64) -> Self {
        Self { fee_sat, weight }
    }

    /// Creates a fee fraction from a fee and a size in virtual bytes.
    pub const fn from_vsize(fee_sat: u64, vsize: u64) -> Self {
        Self {
            fee_sat,
            weight: vsize * WITNESS_SCALE_FACTOR,
        }
    }

    /// Compares fee rates exactly; an empty fraction sorts below every non-empty one.
    pub fn cmp_rate(&self, other: &FeeFrac) -> Ordering {
        let left = u128::from(self.fee_sat) * u128::from(other.weight);
        let right = u128::from(other.fee_sat) * u128::from(self.weight);
        left.cmp(&right)
    }

    /// Returns the rate in sat/vB, rounded half-even to `scale` decimal places.
    pub fn sat_per_vb(&self, scale: u32) -> Decimal {
        if self.weight == 0 {
            return Decimal::ZERO;
        }
        let rate = Decimal::from(self.fee_sat) * Decimal::from(WITNESS_SCALE_FACTOR)
            / Decimal::from(self.weight);
        rate.round_dp_with_strategy(scale, RoundingStrategy::MidpointNearestEven)
    }
}

impl std::ops::Add for FeeFrac {
    type Output = FeeFrac;

    /// Sums fees and sizes: the fraction of two transactions mined together.
    fn add(self, other: FeeFrac) -> FeeFrac {
        FeeFrac {
            fee_sat: self.fee_sat + other.fee_sat,
            weight: self.weight + other.weight,
        }
    }
}

/// A fee rate in satoshis per 1000 virtual bytes, the unit of Bitcoin Core's policy options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SatPerKvb(pub u64);

impl SatPerKvb {
    /// Returns the fee for `vsize` virtual bytes at this rate, rounded up to a whole
    /// satoshi as `CFeeRate::GetFee` does (`src/policy/feerate.cpp`).
    ///
    /// ```
    /// use txdoctor::feerate::SatPerKvb;
    ///
    /// // Bitcoin Core's default incremental relay fee on a 105 vB replacement: 10.5 sat,
    /// // rounded up.
    /// assert_eq!(SatPerKvb(100).fee_for_vsize(105), 11);
    /// ```
    pub fn fee_for_vsize(self, vsize: u64) -> u64 {
        let fee = (u128::from(self.0) * u128::from(vsize)).div_ceil(1000);
        u64::try_from(fee).unwrap_or(u64::MAX)
    }

    /// Returns the rate in sat/vB.
    pub fn sat_per_vb(self) -> Decimal {
        Decimal::from(self.0) / Decimal::from(1000)
    }

    /// Converts a rate in sat/vB, rounding up to a whole sat/kvB so that a target is never
    /// undershot.
    pub fn from_sat_per_vb(rate: Decimal) -> Option<Self> {
        if rate.is_sign_negative() {
            return None;
        }
        let per_kvb = (rate * Decimal::from(1000)).ceil();
        u64::try_from(per_kvb).ok().map(SatPerKvb)
    }
}

/// Returns the smallest whole-satoshi fee that pays `rate` for `vsize` virtual bytes.
pub fn fee_at_rate(rate: Decimal, vsize: u64) -> u64 {
    let fee = (rate * Decimal::from(vsize)).ceil();
    u64::try_from(fee).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::dec;

    #[test]
    fn rate_matches_core_chunk_rate() {
        // Core reports 141 sat over 561 WU as 1.0053475935828877 sat/vB.
        let rate = FeeFrac::new(141, 561).sat_per_vb(8);
        assert_eq!(rate, dec!(1.00534759));
    }

    #[test]
    fn rates_compare_exactly() {
        let parent = FeeFrac::new(110, 437);
        let child = FeeFrac::new(141, 561);
        assert_eq!(parent.cmp_rate(&child), Ordering::Greater);
        assert_eq!(
            FeeFrac::new(2, 8).cmp_rate(&FeeFrac::new(1, 4)),
            Ordering::Equal
        );
    }

    #[test]
    fn fee_for_vsize_rounds_up() {
        // 0.1 sat/vB on 105 vB costs ceil(10.5) = 11 sat.
        assert_eq!(SatPerKvb(100).fee_for_vsize(105), 11);
        assert_eq!(SatPerKvb(100).fee_for_vsize(110), 11);
        assert_eq!(SatPerKvb(100).fee_for_vsize(141), 15);
    }

    #[test]
    fn decimal_rate_converts_up() {
        assert_eq!(
            SatPerKvb::from_sat_per_vb(dec!(2.0901)),
            Some(SatPerKvb(2091))
        );
        assert_eq!(SatPerKvb::from_sat_per_vb(dec!(-1)), None);
        assert_eq!(fee_at_rate(dec!(2.09), 141), 295);
    }
}
