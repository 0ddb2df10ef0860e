//! Text reports for people: a diagnosis and a bump plan, with the same words as the JSON.

use crate::analysis::verdict::{BumpOption, OptionCost, OptionKind};
use crate::analysis::{Diagnosis, Status};
use crate::bump::BumpPlan;
use crate::bump::plan::BumpKind;

/// Returns the name a value has in JSON, such as `fee_rate_too_low`, so that text and
/// JSON output use the same words.
pub fn json_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Renders a diagnosis as a readable report.
pub fn report(diagnosis: &Diagnosis) -> String {
    facts_section(diagnosis) + &verdict_section(diagnosis)
}

/// Renders the facts of a diagnosis: status, fee, package, position and estimate.
fn facts_section(diagnosis: &Diagnosis) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("  {label:<13}{value}\n"));
    line("Transaction", diagnosis.txid.to_string());
    line("Status", status_text(&diagnosis.status));
    if let Some(tx) = &diagnosis.transaction {
        line(
            "Fee",
            format!(
                "{} sat ({} BTC), {} vB, {:.2} sat/vB",
                tx.fee_sat,
                tx.fee_btc,
                tx.size.sigop_adjusted_vsize,
                tx.fee_rate_sat_per_vb.round_dp(2)
            ),
        );
    }
    if let Some(package) = &diagnosis.package {
        line(
            "Effective",
            format!(
                "{:.2} sat/vB: chunk of {} transaction(s), {} sat over {} vB",
                package.effective_fee_rate_sat_per_vb.round_dp(2),
                package.chunk.txids.len(),
                package.chunk.fee_sat,
                package.chunk.vsize
            ),
        );
        let relatives = |list: &[crate::analysis::package::RelativeTx]| {
            if list.is_empty() {
                return "none".to_owned();
            }
            list.iter()
                .map(|tx| {
                    format!(
                        "{} ({:.2} sat/vB)",
                        tx.txid,
                        tx.fee_rate_sat_per_vb.round_dp(2)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        line("Ancestors", relatives(&package.ancestors));
        line("Descendants", relatives(&package.descendants));
    }
    if let Some(replaceability) = &diagnosis.replaceability {
        line("Replaceable", replaceability.notes.join(" "));
    }
    if let Some(targets) = &diagnosis.targets {
        line(
            "Targets",
            format!(
                "next block {} sat/vB, about 6 blocks {} sat/vB",
                targets.next_block_sat_per_vb, targets.six_blocks_sat_per_vb
            ),
        );
    }
    if let Some(position) = &diagnosis.position {
        line(
            "Position",
            format!(
                "{} to {} vB ahead of it in a mempool of {} vB",
                position.vsize_ahead_min, position.vsize_ahead_max, position.mempool_vsize
            ),
        );
    }
    if let Some(estimate) = &diagnosis.estimate {
        line("Estimate", estimate.summary.clone());
    }
    out
}

/// Renders the verdict, the options, the advice and the triage.
fn verdict_section(diagnosis: &Diagnosis) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "\n  Verdict      {}: {}\n",
        json_name(&diagnosis.verdict.cause),
        diagnosis.verdict.headline
    ));
    if !diagnosis.verdict.options.is_empty() {
        out.push_str("\n  Options (extra fee to reach the next block / about 6 blocks):\n");
        for option in &diagnosis.verdict.options {
            out.push_str(&format!("    {}\n", option_text(option)));
        }
    }
    out.push_str(&format!("\n  Advice       {}\n", diagnosis.verdict.advice));
    let triage = &diagnosis.triage;
    out.push_str(&format!(
        "  Triage       {} priority, {}, {} acts\n",
        json_name(&triage.priority),
        triage.category,
        json_name(&triage.actor)
    ));
    for gap in &diagnosis.data_gaps {
        out.push_str(&format!("  Data gap     {gap}\n"));
    }
    out
}

fn status_text(status: &Status) -> String {
    match status {
        Status::Confirmed {
            block_height,
            confirmations,
            ..
        } => format!("confirmed in block {block_height}, {confirmations} confirmation(s)"),
        Status::Mempool => "unconfirmed, in the mempool".to_owned(),
        Status::NotFound { .. } => "not found by the backend".to_owned(),
    }
}

fn option_text(option: &BumpOption) -> String {
    let name = match option.kind {
        OptionKind::Rbf => "rbf",
        OptionKind::Cpfp => "cpfp",
        OptionKind::Cancel => "cancel",
        OptionKind::Wait => "wait",
    };
    if !option.possible {
        return format!(
            "{name:<7}not possible: {}",
            option.reason.clone().unwrap_or_default()
        );
    }
    let cost = |cost: &Option<OptionCost>| {
        cost.as_ref().map_or("-".to_owned(), |cost| {
            format!("+{} sat (fee {} sat)", cost.extra_fee_sat, cost.fee_sat)
        })
    };
    if option.kind == OptionKind::Wait {
        return format!("{name:<7}{}", option.note);
    }
    let minimum = option.minimum_fee_sat.map_or(String::new(), |fee| {
        format!(", nodes accept from {fee} sat")
    });
    format!(
        "{name:<7}{} / {}{minimum}",
        cost(&option.next_block),
        cost(&option.six_blocks)
    )
}

/// Renders a bump plan as a readable report.
pub fn bump_report(plan: &BumpPlan) -> String {
    let mut out = format!(
        "  Transaction  {}\n  Current      {:.2} sat/vB effective\n  Target       {} sat/vB\n\n",
        plan.txid,
        plan.current_effective_fee_rate_sat_per_vb.round_dp(2),
        plan.target_sat_per_vb
    );
    for option in &plan.options {
        let mark = if Some(option.kind) == plan.recommended {
            "*"
        } else {
            " "
        };
        let name = json_name(&option.kind);
        if !option.possible {
            out.push_str(&format!(
                " {mark} {name:<17}not possible: {}\n",
                option.reason.clone().unwrap_or_default()
            ));
            continue;
        }
        out.push_str(&format!(
            " {mark} {name:<17}fee {} sat (+{} sat), {} vB, {:.2} sat/vB effective; {}\n",
            option.fee_sat.unwrap_or_default(),
            option.added_fee_sat.unwrap_or_default(),
            option.vsize.unwrap_or_default(),
            option
                .effective_fee_rate_sat_per_vb
                .unwrap_or_default()
                .round_dp(2),
            option.minimum_fee_sat.map_or_else(
                || "no replacement rule applies".to_owned(),
                |fee| format!("nodes accept from {fee} sat")
            ),
        ));
        for output in &option.outputs {
            let before = output
                .before_sat
                .map_or("new".to_owned(), |sat| format!("{sat} sat"));
            let gone = if option.kind == BumpKind::Cpfp {
                "spent by the child"
            } else {
                "removed"
            };
            let after = output
                .after_sat
                .map_or(gone.to_owned(), |sat| format!("{sat} sat"));
            let whose = if output.owner { "owner" } else { "other" };
            out.push_str(&format!(
                "      {whose:<6}{}  {before} -> {after}\n",
                output.address
            ));
        }
        if !option.replaces.is_empty() {
            let replaced: Vec<String> = option.replaces.iter().map(ToString::to_string).collect();
            out.push_str(&format!("      replaces {}\n", replaced.join(", ")));
        }
    }
    for gap in &plan.data_gaps {
        out.push_str(&format!("  Data gap     {gap}\n"));
    }
    out
}
