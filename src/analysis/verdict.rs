//! The verdict: the cause, the options with their exact costs, advice, and triage.

use rust_decimal::Decimal;
use serde::Serialize;

use super::eta::{ConfirmationEstimate, histogram_rate_for_blocks};
use super::package::{ClusterView, RATE_SCALE};
use super::replaceability::Replaceability;
use super::{AnalysisOptions, MissingFacts, Status};
use crate::bitcoin::{ScriptBuf, Txid};
use crate::chain::{FeeEstimates, MempoolSnapshot};
use crate::feerate::{FeeFrac, SatPerKvb, WITNESS_SCALE_FACTOR};
use crate::policy::{RelayPolicy, ReplacementCase, fee_to_reach};

/// The reason a transaction is where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// It is in a block.
    Confirmed,
    /// Its effective rate reaches the next block.
    NextBlock,
    /// Its own rate is low, but a child lifts its chunk to the next block.
    BoostedByChild,
    /// Its own rate would do, but low-fee unconfirmed ancestors hold its chunk down.
    HeldBackByAncestors,
    /// Its effective rate is below what the next blocks need.
    FeeRateTooLow,
    /// Another unconfirmed transaction spends one of its inputs: it was replaced.
    Replaced,
    /// A confirmed transaction spends one of its inputs: it can never confirm.
    DoubleSpent,
    /// Its inputs are unspent but the backend does not know it: dropped or never sent.
    PossiblyDropped,
    /// An input's previous transaction is unknown too: its parent is gone or it is invalid.
    MissingInputs,
    /// The backend does not know it, and nothing more can be checked.
    NotFound,
}

/// A way to move the transaction along.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OptionKind {
    /// Replace it with a version paying a higher fee, same payment.
    Rbf,
    /// Spend one of its outputs in a child paying for both.
    Cpfp,
    /// Replace it with a transaction paying the coins back to the sender.
    Cancel,
    /// Do nothing.
    Wait,
}

/// The cost of an option at one target rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OptionCost {
    /// The target rate, in sat/vB.
    #[serde(with = "rust_decimal::serde::str")]
    pub target_sat_per_vb: Decimal,
    /// Total fee of the new transaction.
    pub fee_sat: u64,
    /// Fee beyond what is already paid.
    pub extra_fee_sat: u64,
    /// Estimated virtual size of the new transaction.
    pub vsize: u64,
}

/// One option with its costs, or why it is not possible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BumpOption {
    /// The kind of option.
    pub kind: OptionKind,
    /// Whether it can be done.
    pub possible: bool,
    /// The reason it cannot be done, when it cannot.
    pub reason: Option<String>,
    /// The party that can do it.
    pub who: String,
    /// Smallest fee nodes accept for it, where a rule sets one.
    pub minimum_fee_sat: Option<u64>,
    /// Cost to reach the next block.
    pub next_block: Option<OptionCost>,
    /// Cost to reach about six blocks.
    pub six_blocks: Option<OptionCost>,
    /// A caveat to keep in mind.
    pub note: String,
}

/// The verdict on a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Cause code.
    pub cause: Cause,
    /// One line for a support agent.
    pub headline: String,
    /// Plain-language advice for the customer.
    pub advice: String,
    /// The options, cheapest first among the possible ones.
    pub options: Vec<BumpOption>,
}

/// The urgency of a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Nothing to do.
    Low,
    /// Acting saves waiting.
    Medium,
    /// Acting is needed for the payment to go through soon.
    High,
    /// The payment will not happen as sent.
    Critical,
}

/// The party that should act next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// The customer, with their wallet.
    Customer,
    /// The support agent, by explaining or checking.
    SupportAgent,
    /// Engineering, because the data cannot be trusted.
    Engineering,
}

/// The support desk's view of a diagnosis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Triage {
    /// How urgent.
    pub priority: Priority,
    /// The ticket category, the cause code's family.
    pub category: String,
    /// The party that acts next.
    pub actor: Actor,
    /// One sentence for the ticket.
    pub summary: String,
}

/// Finds the rate (sat/vB) that confirms within `blocks` blocks: the histogram's edge of
/// that many projected blocks, raised to the estimator's rate for the same target and never
/// below the minimum relay fee. It is rounded up to 0.1 sat/vB so that display rounding
/// never undershoots it.
pub fn rate_for_blocks(
    mempool: Option<&MempoolSnapshot>,
    estimates: Option<&FeeEstimates>,
    policy: &RelayPolicy,
    blocks: u16,
) -> Decimal {
    let floor = policy
        .mempool_min_fee
        .max(policy.min_relay_fee)
        .sat_per_vb();
    let from_histogram =
        mempool.and_then(|mempool| histogram_rate_for_blocks(mempool, u64::from(blocks)));
    let from_estimates = estimates.and_then(|estimates| {
        estimates
            .range(..=blocks)
            .next_back()
            .or_else(|| estimates.iter().next())
            .map(|(_, rate)| *rate)
    });
    let best = [from_histogram, from_estimates, Some(floor)]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(floor);
    let mut tenths = (best * Decimal::TEN).ceil() / Decimal::TEN;
    tenths.rescale(1);
    tenths
}

/// Finds the next-block and six-block rates with [`rate_for_blocks`]; `None` when the
/// backend gave neither a histogram nor estimates.
pub fn targets(
    mempool: Option<&MempoolSnapshot>,
    estimates: Option<&FeeEstimates>,
    policy: &RelayPolicy,
) -> Option<super::FeeTargets> {
    if mempool.is_none() && estimates.is_none() {
        return None;
    }
    Some(super::FeeTargets {
        next_block_sat_per_vb: rate_for_blocks(mempool, estimates, policy, 1),
        six_blocks_sat_per_vb: rate_for_blocks(mempool, estimates, policy, 6),
        source: "the larger of the backend's mempool histogram (rate at the edge of the projected \
                 blocks) and its fee estimates, at least the minimum relay fee"
            .to_owned(),
    })
}

/// Returns the verdict on a confirmed transaction.
pub fn confirmed(confirmations: u32) -> Verdict {
    let plural = if confirmations == 1 { "" } else { "s" };
    Verdict {
        cause: Cause::Confirmed,
        headline: format!("Confirmed, with {confirmations} confirmation{plural}."),
        advice: "The payment is in a block; nothing needs to be done. If the receiver does not \
                 see it yet, their wallet may wait for more confirmations."
            .to_owned(),
        options: Vec::new(),
    }
}

/// Returns the verdict on a transaction the backend does not know.
pub fn missing(facts: &MissingFacts) -> Verdict {
    let confirmed_conflict = facts
        .conflicts
        .iter()
        .find(|conflict| conflict.spender_confirmed);
    let (cause, headline, advice) = if let Some(conflict) = confirmed_conflict {
        (
            Cause::DoubleSpent,
            format!(
                "Double-spent: input {} is spent by confirmed transaction {}.",
                conflict.outpoint, conflict.spender
            ),
            "This transaction can never confirm, because a confirmed transaction spent the same \
             coins. Check whether that transaction pays the same receiver; if not, the payment \
             must be sent again."
                .to_owned(),
        )
    } else if let Some(conflict) = facts.conflicts.first() {
        (
            Cause::Replaced,
            format!(
                "Replaced: input {} is now spent by unconfirmed transaction {}.",
                conflict.outpoint, conflict.spender
            ),
            format!(
                "This transaction was replaced, usually by a fee bump from the sender's wallet. \
                 Follow transaction {} instead; it has not confirmed yet.",
                conflict.spender
            ),
        )
    } else if !facts.missing_parents.is_empty() {
        (
            Cause::MissingInputs,
            format!(
                "Not found, and neither is the transaction behind input {}.",
                facts.missing_parents[0]
            ),
            "The transaction spends coins the backend does not know: its parent was dropped or \
             replaced, or the transaction is invalid. The sender's wallet should rebuild it."
                .to_owned(),
        )
    } else if facts.raw.is_some() {
        (
            Cause::PossiblyDropped,
            match facts.fee_rate_sat_per_vb {
                Some(rate) => format!(
                    "Not found, and its inputs are still unspent: it was dropped or never broadcast. It pays {rate} sat/vB."
                ),
                None => "Not found, and its inputs are still unspent: it was dropped or never broadcast."
                    .to_owned(),
            },
            "Nodes do not have this transaction. It may never have been broadcast, or it was \
             dropped for paying less than the mempool minimum fee or after 14 days unconfirmed. \
             The coins are still the sender's: broadcast it again, or send a new transaction \
             paying a current fee rate."
                .to_owned(),
        )
    } else {
        (
            Cause::NotFound,
            "Not found by the backend.".to_owned(),
            "The backend does not know this transaction: it was never broadcast, was replaced, \
             or was dropped. Check the txid; with the raw transaction txdoctor can tell which."
                .to_owned(),
        )
    };
    Verdict {
        cause,
        headline,
        advice,
        options: Vec::new(),
    }
}

/// Returns the verdict on a transaction in the mempool.
pub fn unconfirmed(
    view: &ClusterView,
    replaceability: &Replaceability,
    targets: Option<&super::FeeTargets>,
    estimate: Option<&ConfirmationEstimate>,
    options: &AnalysisOptions,
) -> Verdict {
    let own = view.own_rate();
    let chunk = view.focus_chunk().frac;
    let effective = chunk.sat_per_vb(RATE_SCALE);
    let (shown_own, shown_effective) = (own.sat_per_vb(2), chunk.sat_per_vb(2));
    let next_block = targets.map(|targets| targets.next_block_sat_per_vb);
    let reaches_next = next_block.is_none_or(|rate| effective >= rate);
    // Compare in the chunk's own units (fee per weight), and only credit relatives that are
    // really in the chunk: rounding the size up to whole vB must not look like a child.
    let own_by_weight = FeeFrac::new(
        view.txs[view.focus].fee.to_sat(),
        view.sizes[view.focus].sigop_adjusted_weight,
    );
    let members = &view.focus_chunk().members;
    let has_descendant = view
        .descendants_of(view.focus)
        .iter()
        .any(|i| members.contains(i));
    let has_ancestor = view
        .ancestors_of(view.focus)
        .iter()
        .any(|i| members.contains(i));
    let lifted = has_descendant && chunk.cmp_rate(&own_by_weight).is_gt();
    let dragged = has_ancestor && chunk.cmp_rate(&own_by_weight).is_lt();
    let when = estimate.map_or_else(
        || "its confirmation time is unknown".to_owned(),
        |estimate| format!("it should confirm {}", estimate.summary),
    );
    let (cause, headline) = match (reaches_next, lifted, dragged) {
        (true, true, _) => (
            Cause::BoostedByChild,
            format!(
                "Boosted: its own rate is {shown_own:.2} sat/vB, but a child lifts its package to {shown_effective:.2} sat/vB; {when}."
            ),
        ),
        (true, _, _) => (
            Cause::NextBlock,
            format!("Paying {shown_effective:.2} sat/vB, enough for the next block; {when}."),
        ),
        (false, _, true) => (
            Cause::HeldBackByAncestors,
            format!(
                "Held back: it pays {shown_own:.2} sat/vB, but unconfirmed low-fee ancestors pull its package down to {shown_effective:.2} sat/vB, below the {} sat/vB of the next block; {when}.",
                next_block.unwrap_or_default()
            ),
        ),
        (false, _, _) => (
            Cause::FeeRateTooLow,
            format!(
                "Fee too low: it pays {shown_effective:.2} sat/vB, below the {} sat/vB of the next block; {when}.",
                next_block.unwrap_or_default()
            ),
        ),
    };
    let bump_options = targets
        .map(|targets| price_options(view, replaceability, targets, estimate, options))
        .unwrap_or_default();
    let advice = advice_for(cause, &bump_options);
    Verdict {
        cause,
        headline,
        advice,
        options: bump_options,
    }
}

fn advice_for(cause: Cause, options: &[BumpOption]) -> String {
    let cheapest = options
        .iter()
        .filter(|option| {
            option.possible && option.kind != OptionKind::Wait && option.kind != OptionKind::Cancel
        })
        .filter_map(|option| option.next_block.as_ref().map(|cost| (option, cost)))
        .min_by_key(|(_, cost)| cost.extra_fee_sat);
    let bump = cheapest.map_or_else(String::new, |(option, cost)| {
        let how = match option.kind {
            OptionKind::Rbf => "a replacement (RBF) from the sender's wallet",
            OptionKind::Cpfp => "a child transaction (CPFP) spending one of its outputs",
            _ => "a fee bump",
        };
        format!(
            " The cheapest way to the next block is {how}, paying about {} sat more.",
            cost.extra_fee_sat
        )
    });
    match cause {
        Cause::NextBlock | Cause::BoostedByChild => {
            "The payment pays enough to confirm soon; waiting is the best option.".to_owned()
        }
        Cause::HeldBackByAncestors => format!(
            "The payment waits on earlier unconfirmed transactions that pay too little; it cannot \
             confirm before them.{bump}"
        ),
        _ => format!(
            "The payment pays less than miners currently choose, so it waits in line. It stays \
             valid and will confirm when the fees paid by others fall, or the sender can \
             speed it up.{bump}"
        ),
    }
}

/// Prices every option at the next-block and six-block rates, best first.
fn price_options(
    view: &ClusterView,
    replaceability: &Replaceability,
    targets: &super::FeeTargets,
    estimate: Option<&ConfirmationEstimate>,
    options: &AnalysisOptions,
) -> Vec<BumpOption> {
    let rates = [targets.next_block_sat_per_vb, targets.six_blocks_sat_per_vb];
    let mut priced = vec![
        replacement_option(view, OptionKind::Rbf, rates, options),
        cpfp_option(view, replaceability, rates, options),
        replacement_option(view, OptionKind::Cancel, rates, options),
        BumpOption {
            kind: OptionKind::Wait,
            possible: true,
            reason: None,
            who: "anyone".to_owned(),
            minimum_fee_sat: None,
            next_block: None,
            six_blocks: None,
            note: estimate.map_or_else(
                || "No estimate is available.".to_owned(),
                |estimate| format!("Costs nothing; it should confirm {}, if no better-paying transactions arrive.", estimate.summary),
            ),
        },
    ];
    // Options that keep the payment come first, cheapest first; a cancel gives the payment
    // up and waiting costs time, so they follow.
    priced.sort_by_key(|option| {
        let cost = option
            .next_block
            .as_ref()
            .map_or(u64::MAX, |cost| cost.extra_fee_sat);
        let class = match option.kind {
            OptionKind::Rbf | OptionKind::Cpfp => 0,
            OptionKind::Cancel => 1,
            OptionKind::Wait => 2,
        };
        (!option.possible, class, cost)
    });
    priced
}

/// Estimated vsize of a replacement: the original itself, or for a cancel the original
/// with all outputs swapped for one paying the first input's script type.
fn replacement_vsize(view: &ClusterView, kind: OptionKind) -> u64 {
    let tx = &view.txs[view.focus];
    let vsize = view.sizes[view.focus].sigop_adjusted_vsize;
    if kind != OptionKind::Cancel {
        return vsize;
    }
    let output_size =
        |script: &ScriptBuf| 8 + compact_size_len(script.len() as u64) + script.len() as u64;
    let removed: u64 = tx
        .tx
        .output
        .iter()
        .map(|output| output.script_pubkey.clone())
        .map(|script| output_size(&script))
        .sum();
    let refund_script = tx
        .prevouts
        .first()
        .map(|prevout| prevout.script_pubkey.clone())
        .unwrap_or_default();
    let count_change = compact_size_len(tx.tx.output.len() as u64) - 1;
    vsize - removed - count_change + output_size(&refund_script)
}

fn compact_size_len(value: u64) -> u64 {
    match value {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

fn replacement_option(
    view: &ClusterView,
    kind: OptionKind,
    rates: [Decimal; 2],
    options: &AnalysisOptions,
) -> BumpOption {
    let who = "the sender, from the wallet that signed it".to_owned();
    let note = match kind {
        OptionKind::Cancel => "Pays the coins back to the sender instead of the receiver; only the fee is spent.".to_owned(),
        _ => "Same inputs and payment; the sender's change pays the extra fee. Descendants are evicted and must be paid for.".to_owned(),
    };
    let vsize = replacement_vsize(view, kind);
    let mut evicted = view.descendants_of(view.focus);
    evicted.push(view.focus);
    let parents = view.parents[view.focus].clone();
    let case = ReplacementCase {
        mempool: view.mempool_txs(&evicted),
        replacement_weight: vsize * WITNESS_SCALE_FACTOR,
        replacement_vsize: vsize,
        replacement_parents: parents.clone(),
    };
    let minimum = match case.minimum_fee(&options.policy, options.policy_version) {
        Ok(minimum) => minimum.fee_sat,
        Err(error) => {
            return BumpOption {
                kind,
                possible: false,
                reason: Some(error.to_string()),
                who,
                minimum_fee_sat: None,
                next_block: None,
                six_blocks: None,
                note,
            };
        }
    };
    let kept: Vec<crate::analysis::cluster::ClusterTx> = kept_cluster(view, &evicted);
    let kept_parents = remap(&parents, &evicted);
    let original_fee = view.txs[view.focus].fee.to_sat();
    let cost_at = |rate: Decimal| -> Option<OptionCost> {
        let target = SatPerKvb::from_sat_per_vb(rate)?;
        let reach = fee_to_reach(&kept, &kept_parents, vsize, target).fee_sat;
        let fee_sat = reach.max(minimum);
        Some(OptionCost {
            target_sat_per_vb: rate,
            fee_sat,
            extra_fee_sat: fee_sat.saturating_sub(original_fee),
            vsize,
        })
    };
    let spendable: u64 = view.txs[view.focus]
        .prevouts
        .iter()
        .map(|prevout| prevout.value.to_sat())
        .sum();
    let next_block = cost_at(rates[0]);
    let possible = next_block
        .as_ref()
        .is_none_or(|cost| cost.fee_sat < spendable);
    BumpOption {
        kind,
        possible,
        reason: (!possible).then(|| "the inputs cannot pay that fee".to_owned()),
        who,
        minimum_fee_sat: Some(minimum),
        next_block,
        six_blocks: cost_at(rates[1]),
        note,
    }
}

/// Returns the cluster without `evicted`, sizes in vB, parents renumbered.
fn kept_cluster(view: &ClusterView, evicted: &[usize]) -> Vec<crate::analysis::cluster::ClusterTx> {
    view.vsize_cluster()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !evicted.contains(i))
        .map(|(_, mut tx)| {
            tx.parents = remap(&tx.parents, evicted);
            tx
        })
        .collect()
}

/// Renumbers indexes after removing `evicted`; evicted indexes are dropped.
fn remap(indexes: &[usize], evicted: &[usize]) -> Vec<usize> {
    indexes
        .iter()
        .filter(|i| !evicted.contains(i))
        .map(|&i| i - evicted.iter().filter(|&&gone| gone < i).count())
        .collect()
}

/// Estimated vsize of a one-input, one-output child spending `script`, with the largest
/// standard signatures (72-byte ECDSA, 65-byte Schnorr) so that the estimate is never low.
pub fn child_vsize_for(script: &ScriptBuf) -> u64 {
    if script.is_p2wpkh() {
        110
    } else if script.is_p2tr() {
        112
    } else if script.is_p2pkh() {
        192
    } else if script.is_p2sh() {
        134
    } else if script.is_p2wsh() {
        158
    } else {
        200
    }
}

fn cpfp_option(
    view: &ClusterView,
    replaceability: &Replaceability,
    rates: [Decimal; 2],
    options: &AnalysisOptions,
) -> BumpOption {
    let tx = &view.txs[view.focus];
    let who = "whoever owns an output: the receiver, or the sender through the change".to_owned();
    let spendable = tx
        .tx
        .output
        .iter()
        .filter(|output| !output.script_pubkey.is_op_return())
        .max_by_key(|output| output.value);
    let Some(output) = spendable else {
        let reason = Some("it has no spendable output".to_owned());
        return BumpOption {
            kind: OptionKind::Cpfp,
            possible: false,
            reason,
            who,
            minimum_fee_sat: None,
            next_block: None,
            six_blocks: None,
            note: String::new(),
        };
    };
    let child_vsize = child_vsize_for(&output.script_pubkey);
    // A TRUC transaction has room for one child: a new child must evict the existing one.
    let evicted = if replaceability.truc {
        view.descendants_of(view.focus)
    } else {
        Vec::new()
    };
    let evicted_fee: u64 = evicted.iter().map(|&i| view.txs[i].fee.to_sat()).sum();
    let minimum = (!evicted.is_empty()).then(|| {
        evicted_fee
            + options
                .policy
                .incremental_relay_fee
                .fee_for_vsize(child_vsize)
    });
    let kept = kept_cluster(view, &evicted);
    let parent = remap(&[view.focus], &evicted);
    let cost_at = |rate: Decimal| -> Option<OptionCost> {
        let target = SatPerKvb::from_sat_per_vb(rate)?;
        let fee_sat = fee_to_reach(&kept, &parent, child_vsize, target)
            .fee_sat
            .max(minimum.unwrap_or(0));
        Some(OptionCost {
            target_sat_per_vb: rate,
            fee_sat,
            extra_fee_sat: fee_sat,
            vsize: child_vsize,
        })
    };
    let next_block = cost_at(rates[0]);
    let dust = options.policy.dust_threshold(&output.script_pubkey);
    let affordable = next_block
        .as_ref()
        .is_none_or(|cost| cost.fee_sat + dust <= output.value.to_sat());
    let mut note = format!(
        "A child of about {child_vsize} vB spending its largest output ({} sat) pays for every unconfirmed ancestor below the target.",
        output.value.to_sat()
    );
    if !evicted.is_empty() {
        note.push_str(" As a TRUC transaction it allows one child, so the new child replaces the existing one and pays for it too.");
    }
    BumpOption {
        kind: OptionKind::Cpfp,
        possible: affordable,
        reason: (!affordable).then(|| {
            "its largest output cannot pay the child's fee and stay above dust".to_owned()
        }),
        who,
        minimum_fee_sat: minimum,
        next_block,
        six_blocks: cost_at(rates[1]),
        note,
    }
}

/// Triage for a verdict: priority, category, who acts and a one-sentence summary.
pub fn triage(verdict: &Verdict, estimate: Option<&ConfirmationEstimate>, txid: Txid) -> Triage {
    let far = estimate.is_none_or(|estimate| estimate.blocks_max > 6);
    let (priority, category, actor) = match verdict.cause {
        Cause::Confirmed => (Priority::Low, "confirmed", Actor::SupportAgent),
        Cause::NextBlock | Cause::BoostedByChild => {
            (Priority::Low, "confirming", Actor::SupportAgent)
        }
        Cause::FeeRateTooLow | Cause::HeldBackByAncestors => (
            if far {
                Priority::High
            } else {
                Priority::Medium
            },
            "low_fee",
            Actor::Customer,
        ),
        Cause::Replaced => (Priority::High, "replaced", Actor::SupportAgent),
        Cause::DoubleSpent => (Priority::Critical, "double_spent", Actor::SupportAgent),
        Cause::PossiblyDropped | Cause::MissingInputs => {
            (Priority::High, "dropped", Actor::Customer)
        }
        Cause::NotFound => (Priority::High, "not_found", Actor::SupportAgent),
    };
    Triage {
        priority,
        category: category.to_owned(),
        actor,
        summary: format!("{txid}: {}", verdict.headline),
    }
}

impl Status {
    /// Returns whether the backend has the transaction.
    pub fn is_found(&self) -> bool {
        !matches!(self, Status::NotFound { .. })
    }
}
