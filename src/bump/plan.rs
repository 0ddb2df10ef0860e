//! Bump planning: every way to speed a transaction up, built as a transaction, priced
//! exactly and checked against the rules before it becomes a PSBT.

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde::Serialize;

use super::coins::Coin;
use super::owner::{Owner, satisfaction_weight};
use crate::analysis::cluster::ClusterTx;
use crate::analysis::package::{ClusterView, RATE_SCALE};
use crate::bitcoin::{
    Address, Amount, Network, OutPoint, Psbt, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
    Witness,
};
use crate::feerate::{FeeFrac, SatPerKvb, WITNESS_SCALE_FACTOR};
use crate::policy::{
    BindingRule, CLUSTER_COUNT_LIMIT, PolicyVersion, RelayPolicy, ReplacementCase,
    TRUC_CHILD_MAX_VSIZE, TRUC_VERSION, fee_to_reach, joining_chunk,
};

/// Kinds of bump to build.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Every kind that keeps the payment; the cheapest is recommended.
    #[default]
    Auto,
    /// Replacements only.
    Rbf,
    /// A child only.
    Cpfp,
    /// A cancel only.
    Cancel,
}

/// A kind of bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BumpKind {
    /// Same inputs, the payment unchanged, the owner's change reduced.
    RbfKeepPayment,
    /// Same inputs, the payment to someone else reduced to pay the fee.
    RbfReducePayment,
    /// The inputs paid back to the owner.
    Cancel,
    /// A child spending an owner's output.
    Cpfp,
}

/// Settings of one plan, beyond the cluster and the owner.
#[derive(Debug, Clone)]
pub struct PlanSettings {
    /// The fee rate to reach, in sat/vB.
    pub target: Decimal,
    /// Kinds of bump to build.
    pub strategy: Strategy,
    /// Whether an output paid to someone else may be reduced.
    pub allow_payment_decrease: bool,
    /// Largest fee a bump may pay without `force`, in satoshis.
    pub max_fee_sat: u64,
    /// Pay above `max_fee_sat` anyway.
    pub force: bool,
    /// Relay policy constants.
    pub policy: RelayPolicy,
    /// Replacement rules to satisfy.
    pub policy_version: PolicyVersion,
    /// Network, for addresses in the report.
    pub network: Network,
}

/// One output's value before and after a bump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputChange {
    /// Address, or the script in hex when it has none.
    pub address: String,
    /// Whether the owner's descriptors own it.
    pub owner: bool,
    /// Value in the original transaction; `None` for a new output.
    pub before_sat: Option<u64>,
    /// Value in the bump; `None` when the bump drops it.
    pub after_sat: Option<u64>,
}

/// One bump, priced; with its PSBT when it is possible.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedBump {
    /// The kind.
    pub kind: BumpKind,
    /// Whether it can be done.
    pub possible: bool,
    /// The reason it cannot be done, when it cannot.
    pub reason: Option<String>,
    /// Smallest fee nodes accept for it under the chosen policy, in satoshis.
    pub minimum_fee_sat: Option<u64>,
    /// The rule that sets the minimum.
    pub binding_rule: Option<BindingRule>,
    /// Fee the new transaction pays.
    pub fee_sat: Option<u64>,
    /// Fee beyond what the original already pays.
    pub added_fee_sat: Option<u64>,
    /// Estimated virtual size of the new transaction, signed with the largest signatures.
    pub vsize: Option<u64>,
    /// Effective fee rate of the new transaction's chunk, in sat/vB.
    #[serde(with = "rust_decimal::serde::str_option")]
    pub effective_fee_rate_sat_per_vb: Option<Decimal>,
    /// Transactions it evicts from the mempool.
    pub replaces: Vec<Txid>,
    /// Unconfirmed ancestors whose fee it pays for.
    pub pays_for: Vec<Txid>,
    /// Every output's value before and after.
    pub outputs: Vec<OutputChange>,
    /// The PSBT in base64, ready for a signer.
    pub psbt: Option<String>,
    /// Set when more of the owner's coins would make it possible.
    #[serde(skip)]
    pub needs_more_coins: bool,
}

impl PlannedBump {
    fn impossible(kind: BumpKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            possible: false,
            reason: Some(reason.into()),
            minimum_fee_sat: None,
            binding_rule: None,
            fee_sat: None,
            added_fee_sat: None,
            vsize: None,
            effective_fee_rate_sat_per_vb: None,
            replaces: Vec::new(),
            pays_for: Vec::new(),
            outputs: Vec::new(),
            psbt: None,
            needs_more_coins: false,
        }
    }

    fn needing_coins(kind: BumpKind, reason: impl Into<String>) -> Self {
        Self {
            needs_more_coins: true,
            ..Self::impossible(kind, reason)
        }
    }
}

/// Estimates the signed weight of `tx` spending `prevouts`: its unsigned weight plus each
/// input's satisfaction, with the segwit marker and an empty witness for legacy inputs
/// when any input has a witness. `None` when an input's script type is unknown.
pub fn estimated_weight(tx: &Transaction, prevouts: &[TxOut]) -> Option<u64> {
    let mut unsigned = tx.clone();
    for input in &mut unsigned.input {
        input.script_sig = ScriptBuf::new();
        input.witness = Witness::new();
    }
    let mut weight = unsigned.weight().to_wu();
    let mut legacy_inputs = 0;
    for prevout in prevouts {
        weight += satisfaction_weight(&prevout.script_pubkey)?;
        if prevout.script_pubkey.is_p2pkh() {
            legacy_inputs += 1;
        }
    }
    if legacy_inputs < prevouts.len() {
        weight += 2 + legacy_inputs as u64;
    }
    Some(weight)
}

/// The planner for one stuck transaction.
pub struct Planner<'a> {
    view: &'a ClusterView,
    owner: &'a Owner,
    previous: &'a HashMap<Txid, Transaction>,
    settings: &'a PlanSettings,
    target: SatPerKvb,
    extra_coins: &'a [Coin],
}

impl<'a> Planner<'a> {
    /// Creates a planner. `previous` contains the full transactions the stuck one and
    /// `extra_coins` spend, for the PSBTs' `non_witness_utxo`; `extra_coins` are the owner's
    /// confirmed coins a replacement may add when its change cannot pay.
    pub fn new(
        view: &'a ClusterView,
        owner: &'a Owner,
        previous: &'a HashMap<Txid, Transaction>,
        settings: &'a PlanSettings,
        extra_coins: &'a [Coin],
    ) -> Option<Self> {
        let target = SatPerKvb::from_sat_per_vb(settings.target)?;
        Some(Self {
            view,
            owner,
            previous,
            settings,
            target,
            extra_coins,
        })
    }

    fn focus(&self) -> &Transaction {
        &self.view.txs[self.view.focus].tx
    }

    fn original_fee(&self) -> u64 {
        self.view.txs[self.view.focus].fee.to_sat()
    }

    fn address(&self, script: &ScriptBuf) -> String {
        Address::from_script(script, self.settings.network)
            .map_or_else(|_| script.to_hex_string(), |address| address.to_string())
    }

    /// Builds every kind the strategy names, cheapest possible first.
    pub fn plan(&self) -> Vec<PlannedBump> {
        let strategy = self.settings.strategy;
        let mut options = Vec::new();
        if matches!(strategy, Strategy::Auto | Strategy::Rbf) {
            options.push(self.replacement(BumpKind::RbfKeepPayment));
            if self.settings.allow_payment_decrease {
                options.push(self.replacement(BumpKind::RbfReducePayment));
            }
        }
        if matches!(strategy, Strategy::Auto | Strategy::Cpfp) {
            options.push(self.child());
        }
        if strategy == Strategy::Cancel {
            options.push(self.replacement(BumpKind::Cancel));
        }
        options.sort_by_key(|option| (!option.possible, option.added_fee_sat.unwrap_or(u64::MAX)));
        options
    }

    /// Checks that every input of the stuck transaction is the owner's, so that a
    /// replacement can be signed.
    fn owns_all_inputs(&self) -> Result<(), String> {
        let prevouts = &self.view.txs[self.view.focus].prevouts;
        match prevouts
            .iter()
            .position(|prevout| self.owner.owns(&prevout.script_pubkey).is_none())
        {
            Some(index) => Err(format!(
                "input {index} is not the owner's, so the owner alone cannot sign a replacement"
            )),
            None => Ok(()),
        }
    }

    /// Returns the cluster, in vB, after the stuck transaction and its descendants leave.
    fn kept_cluster(&self, evicted: &[usize]) -> (Vec<ClusterTx>, Vec<usize>) {
        let remap = |indexes: &[usize]| -> Vec<usize> {
            indexes
                .iter()
                .filter(|i| !evicted.contains(i))
                .map(|&i| i - evicted.iter().filter(|&&gone| gone < i).count())
                .collect()
        };
        let kept = self
            .view
            .vsize_cluster()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !evicted.contains(i))
            .map(|(_, mut tx)| {
                tx.parents = remap(&tx.parents);
                tx
            })
            .collect();
        (kept, remap(&self.view.parents[self.view.focus]))
    }

    /// Returns the stuck transaction and its descendants, which a replacement evicts.
    fn evicted(&self) -> Vec<usize> {
        let mut evicted = self.view.descendants_of(self.view.focus);
        evicted.push(self.view.focus);
        evicted.sort_unstable();
        evicted
    }

    /// Derives a fresh script of the wallet that owns `owned_script`, unused in the cluster.
    fn fresh_script_beside(&self, owned_script: &ScriptBuf) -> Option<ScriptBuf> {
        let wallet = self
            .owner
            .owns(owned_script)
            .map_or(0, |owned| owned.wallet);
        let used: Vec<ScriptBuf> = self
            .view
            .txs
            .iter()
            .flat_map(|tx| {
                tx.tx
                    .output
                    .iter()
                    .map(|output| output.script_pubkey.clone())
            })
            .collect();
        self.owner.fresh_change_script(wallet, &used)
    }

    /// Copies the stuck transaction unsigned, every input signalling replaceability.
    fn unsigned_copy(&self) -> Transaction {
        let focus = self.focus();
        let signalling = |input: &TxIn| TxIn {
            previous_output: input.previous_output,
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            ..TxIn::default()
        };
        Transaction {
            version: focus.version,
            lock_time: focus.lock_time,
            input: focus.input.iter().map(signalling).collect(),
            output: focus.output.clone(),
        }
    }

    fn replacement(&self, kind: BumpKind) -> PlannedBump {
        if let Err(reason) = self.owns_all_inputs() {
            return PlannedBump::impossible(kind, reason);
        }
        let prevouts = self.view.txs[self.view.focus].prevouts.clone();
        let evicted = self.evicted();
        let mut tx = self.unsigned_copy();

        // The output that absorbs the fee: the owner's change, a payment, or a new refund.
        let absorbing = match kind {
            BumpKind::RbfKeepPayment => match self.change_output() {
                Some(index) => index,
                None => return self.with_coins(kind, tx, prevouts, &evicted, None),
            },
            BumpKind::RbfReducePayment => match self.largest_payment() {
                Some(index) => index,
                None => {
                    return PlannedBump::impossible(
                        kind,
                        "there is no payment to someone else to reduce",
                    );
                }
            },
            BumpKind::Cancel | BumpKind::Cpfp => {
                let Some(refund) = self.fresh_script_beside(&prevouts[0].script_pubkey) else {
                    return PlannedBump::impossible(
                        kind,
                        "no fresh owner address could be derived",
                    );
                };
                tx.output = vec![TxOut {
                    value: Amount::ZERO,
                    script_pubkey: refund,
                }];
                0
            }
        };
        let Some((fee_sat, minimum)) = self.price_replacement(&tx, &prevouts, &evicted) else {
            return PlannedBump::impossible(kind, "an input's script type cannot be sized");
        };
        let minimum = match minimum {
            Ok(minimum) => minimum,
            Err(error) => return PlannedBump::impossible(kind, error.to_string()),
        };
        let input_total: u64 = prevouts.iter().map(|prevout| prevout.value.to_sat()).sum();
        let others: u64 = tx
            .output
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != absorbing)
            .map(|(_, output)| output.value.to_sat())
            .sum();
        let available = input_total.saturating_sub(others);
        let dust = self
            .settings
            .policy
            .dust_threshold(&tx.output[absorbing].script_pubkey);
        if let Some(value) = available
            .checked_sub(fee_sat)
            .filter(|value| *value >= dust)
        {
            tx.output[absorbing].value = Amount::from_sat(value);
            return self.finish(kind, tx, &prevouts, &evicted, fee_sat, Some(minimum));
        }
        if kind == BumpKind::RbfKeepPayment && tx.output.len() > 1 {
            return self.without_change(kind, tx, prevouts, &evicted, absorbing, available);
        }
        let what = if kind == BumpKind::RbfReducePayment {
            "the payment"
        } else {
            "the inputs"
        };
        PlannedBump::impossible(
            kind,
            format!(
                "{what} cannot pay the {fee_sat} sat fee and keep an output above the {dust} sat dust limit"
            ),
        )
    }

    /// Drops a change output too small to pay the fee, paying all of it as fee, when that
    /// meets the minimum and the target; otherwise adds the owner's coins.
    fn without_change(
        &self,
        kind: BumpKind,
        tx: Transaction,
        prevouts: Vec<TxOut>,
        evicted: &[usize],
        change: usize,
        available: u64,
    ) -> PlannedBump {
        let mut smaller = tx.clone();
        smaller.output.remove(change);
        let Some((fee_needed, minimum)) = self.price_replacement(&smaller, &prevouts, evicted)
        else {
            return PlannedBump::impossible(kind, "an input's script type cannot be sized");
        };
        match minimum {
            Ok(minimum) if available >= minimum.fee_sat.max(fee_needed) => {
                self.finish(kind, smaller, &prevouts, evicted, available, Some(minimum))
            }
            _ => self.with_coins(kind, tx, prevouts, evicted, Some(change)),
        }
    }

    /// Adds the owner's confirmed coins, largest first, until the change (kept, or new)
    /// pays the fee and stays above dust. New inputs are confirmed, so no rule forbids them.
    fn with_coins(
        &self,
        kind: BumpKind,
        mut tx: Transaction,
        mut prevouts: Vec<TxOut>,
        evicted: &[usize],
        change: Option<usize>,
    ) -> PlannedBump {
        if self.extra_coins.is_empty() {
            let reason = match change {
                Some(index) => format!("the change of {} sat cannot pay the fee, and no other confirmed coins of the owner's were found", tx.output[index].value.to_sat()),
                None => "no output of the owner's can pay the fee, and no other confirmed coins of the owner's were found; allow a payment decrease, or use CPFP".to_owned(),
            };
            return PlannedBump::needing_coins(kind, reason);
        }
        let change = match change {
            Some(index) => index,
            None => {
                let Some(script) = self.fresh_script_beside(&prevouts[0].script_pubkey) else {
                    return PlannedBump::impossible(
                        kind,
                        "no fresh owner address could be derived for the change",
                    );
                };
                tx.output.push(TxOut {
                    value: Amount::ZERO,
                    script_pubkey: script,
                });
                tx.output.len() - 1
            }
        };
        let others: u64 = tx
            .output
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != change)
            .map(|(_, output)| output.value.to_sat())
            .sum();
        let dust = self
            .settings
            .policy
            .dust_threshold(&tx.output[change].script_pubkey);
        for coin in self.extra_coins {
            if tx
                .input
                .iter()
                .any(|input| input.previous_output == coin.outpoint)
            {
                continue;
            }
            tx.input.push(TxIn {
                previous_output: coin.outpoint,
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                ..TxIn::default()
            });
            prevouts.push(coin.txout.clone());
            let Some((fee_sat, minimum)) = self.price_replacement(&tx, &prevouts, evicted) else {
                return PlannedBump::impossible(kind, "a coin's script type cannot be sized");
            };
            let minimum = match minimum {
                Ok(minimum) => minimum,
                Err(error) => return PlannedBump::impossible(kind, error.to_string()),
            };
            let input_total: u64 = prevouts.iter().map(|prevout| prevout.value.to_sat()).sum();
            if let Some(value) = input_total
                .checked_sub(others + fee_sat)
                .filter(|value| *value >= dust)
            {
                tx.output[change].value = Amount::from_sat(value);
                return self.finish(kind, tx, &prevouts, evicted, fee_sat, Some(minimum));
            }
        }
        PlannedBump::needing_coins(
            kind,
            format!(
                "even with its {} other confirmed coins the owner's wallet cannot pay the fee",
                self.extra_coins.len()
            ),
        )
    }

    /// Prices a replacement: the fee to reach the target and the rule minimum.
    fn price_replacement(
        &self,
        tx: &Transaction,
        prevouts: &[TxOut],
        evicted: &[usize],
    ) -> Option<(
        u64,
        Result<crate::policy::ReplacementMinimum, crate::policy::ReplacementError>,
    )> {
        let (weight, vsize) = self.policy_size(tx, prevouts)?;
        let case = ReplacementCase {
            mempool: self.view.mempool_txs(evicted),
            replacement_weight: weight,
            replacement_vsize: vsize,
            replacement_parents: self.view.parents[self.view.focus].clone(),
        };
        let minimum = case.minimum_fee(&self.settings.policy, self.settings.policy_version);
        let (kept, parents) = self.kept_cluster(evicted);
        let reach = fee_to_reach(&kept, &parents, vsize, self.target).fee_sat;
        let fee = minimum
            .as_ref()
            .map_or(reach, |minimum| reach.max(minimum.fee_sat));
        Some((fee, minimum))
    }

    /// Sigop-adjusted weight and vsize of `tx` once signed.
    fn policy_size(&self, tx: &Transaction, prevouts: &[TxOut]) -> Option<(u64, u64)> {
        let weight = estimated_weight(tx, prevouts)?;
        let lookup: HashMap<OutPoint, TxOut> = tx
            .input
            .iter()
            .map(|input| input.previous_output)
            .zip(prevouts.iter().cloned())
            .collect();
        let sigop_cost = tx.total_sigop_cost(|outpoint| lookup.get(outpoint).cloned()) as u64;
        let adjusted = self
            .settings
            .policy
            .sigop_adjusted_weight(weight, sigop_cost);
        Some((adjusted, adjusted.div_ceil(WITNESS_SCALE_FACTOR)))
    }

    /// Picks the owner's output to reduce: a change-keychain output first, else the largest owned.
    fn change_output(&self) -> Option<usize> {
        let outputs = &self.focus().output;
        let owned: Vec<(usize, bool)> = outputs
            .iter()
            .enumerate()
            .filter_map(|(i, output)| {
                self.owner
                    .owns(&output.script_pubkey)
                    .map(|owned| (i, owned.is_change()))
            })
            .collect();
        owned
            .iter()
            .find(|(_, change)| *change)
            .or_else(|| owned.iter().max_by_key(|(i, _)| outputs[*i].value))
            .map(|(i, _)| *i)
    }

    fn largest_payment(&self) -> Option<usize> {
        let outputs = &self.focus().output;
        (0..outputs.len())
            .filter(|&i| {
                self.owner.owns(&outputs[i].script_pubkey).is_none()
                    && !outputs[i].script_pubkey.is_op_return()
            })
            .max_by_key(|&i| outputs[i].value)
    }

    /// Completes a priced replacement: ceiling, report and PSBT.
    fn finish(
        &self,
        kind: BumpKind,
        tx: Transaction,
        prevouts: &[TxOut],
        evicted: &[usize],
        fee_sat: u64,
        minimum: Option<crate::policy::ReplacementMinimum>,
    ) -> PlannedBump {
        let Some((_, vsize)) = self.policy_size(&tx, prevouts) else {
            return PlannedBump::impossible(kind, "an input's script type cannot be sized");
        };
        let (kept, parents) = self.kept_cluster(evicted);
        let chunk = joining_chunk(&kept, &parents, vsize, fee_sat);
        let mut outputs: Vec<OutputChange> = Vec::new();
        for original in &self.focus().output {
            let after = tx
                .output
                .iter()
                .find(|output| output.script_pubkey == original.script_pubkey)
                .map(|output| output.value.to_sat());
            outputs.push(self.output_change(
                &original.script_pubkey,
                Some(original.value.to_sat()),
                after,
            ));
        }
        for new in tx.output.iter().filter(|new| {
            !self
                .focus()
                .output
                .iter()
                .any(|original| original.script_pubkey == new.script_pubkey)
        }) {
            outputs.push(self.output_change(&new.script_pubkey, None, Some(new.value.to_sat())));
        }
        let replaces = evicted.iter().map(|&i| self.view.txs[i].txid).collect();
        let added = fee_sat.saturating_sub(self.original_fee());
        self.complete(
            kind, tx, prevouts, fee_sat, added, vsize, chunk, minimum, replaces, outputs,
        )
    }

    fn output_change(
        &self,
        script: &ScriptBuf,
        before_sat: Option<u64>,
        after_sat: Option<u64>,
    ) -> OutputChange {
        OutputChange {
            address: self.address(script),
            owner: self.owner.owns(script).is_some(),
            before_sat,
            after_sat,
        }
    }

    /// Applies the fee ceiling and builds the PSBT.
    #[allow(clippy::too_many_arguments)] // Each value is one field of the finished bump.
    fn complete(
        &self,
        kind: BumpKind,
        tx: Transaction,
        prevouts: &[TxOut],
        fee_sat: u64,
        added_fee_sat: u64,
        vsize: u64,
        chunk: FeeFrac,
        minimum: Option<crate::policy::ReplacementMinimum>,
        replaces: Vec<Txid>,
        outputs: Vec<OutputChange>,
    ) -> PlannedBump {
        let mut planned = PlannedBump {
            kind,
            possible: true,
            reason: None,
            minimum_fee_sat: minimum.map(|minimum| minimum.fee_sat),
            binding_rule: minimum.map(|minimum| minimum.binding_rule),
            fee_sat: Some(fee_sat),
            added_fee_sat: Some(added_fee_sat),
            vsize: Some(vsize),
            effective_fee_rate_sat_per_vb: Some(chunk.sat_per_vb(RATE_SCALE)),
            replaces,
            pays_for: Vec::new(),
            outputs,
            psbt: None,
            needs_more_coins: false,
        };
        if fee_sat > self.settings.max_fee_sat && !self.settings.force {
            planned.possible = false;
            planned.reason = Some(format!(
                "the fee of {fee_sat} sat exceeds the ceiling of {} sat; raise the ceiling or force it",
                self.settings.max_fee_sat
            ));
            return planned;
        }
        match self.psbt(tx, prevouts) {
            Ok(psbt) => planned.psbt = Some(psbt.to_string()),
            Err(reason) => {
                planned.possible = false;
                planned.reason = Some(reason);
            }
        }
        planned
    }

    /// Builds the PSBT: every input with `witness_utxo`, non-taproot inputs also with the
    /// full previous transaction, and the owner's derivation data.
    fn psbt(&self, tx: Transaction, prevouts: &[TxOut]) -> Result<Psbt, String> {
        let mut psbt = Psbt::from_unsigned_tx(tx)
            .map_err(|error| format!("failed to build the PSBT: {error}"))?;
        for (index, prevout) in prevouts.iter().enumerate() {
            psbt.inputs[index].witness_utxo = Some(prevout.clone());
            if !prevout.script_pubkey.is_p2tr() {
                let txid = psbt.unsigned_tx.input[index].previous_output.txid;
                let previous = self.previous.get(&txid).ok_or_else(|| {
                    format!("the previous transaction {txid} of input {index} is unavailable")
                })?;
                psbt.inputs[index].non_witness_utxo = Some(previous.clone());
            }
        }
        self.owner.complete_psbt(&mut psbt)?;
        Ok(psbt)
    }

    /// Finds the owner's largest output of the stuck transaction that nothing spends yet.
    fn spendable_owned_output(&self) -> Option<(u32, TxOut)> {
        let focus_txid = self.view.txs[self.view.focus].txid;
        let spent: Vec<u32> = self
            .view
            .txs
            .iter()
            .flat_map(|tx| tx.tx.input.iter())
            .filter(|input| input.previous_output.txid == focus_txid)
            .map(|input| input.previous_output.vout)
            .collect();
        let outputs = self.focus().output.iter().enumerate();
        let owned = outputs.filter_map(|(vout, output)| {
            let vout = u32::try_from(vout).ok()?;
            let unspent_and_owned =
                !spent.contains(&vout) && self.owner.owns(&output.script_pubkey).is_some();
            unspent_and_owned.then(|| (vout, output.clone()))
        });
        owned.max_by_key(|(_, output)| output.value)
    }

    fn child(&self) -> PlannedBump {
        let kind = BumpKind::Cpfp;
        let focus_index = self.view.focus;
        let Some((vout, output)) = self.spendable_owned_output() else {
            return PlannedBump::impossible(
                kind,
                "no unspent output of the stuck transaction is the owner's",
            );
        };
        let truc = self.focus().version.0 == TRUC_VERSION;
        if !truc && self.view.txs.len() >= CLUSTER_COUNT_LIMIT {
            return PlannedBump::impossible(
                kind,
                format!("the cluster already holds {CLUSTER_COUNT_LIMIT} transactions, the limit"),
            );
        }
        // A TRUC parent takes one child, so a new child evicts the existing one (sibling
        // eviction) and must pay for it as a replacement would.
        let evicted: Vec<usize> = if truc {
            self.view.descendants_of(focus_index)
        } else {
            Vec::new()
        };
        let Some(script) = self.fresh_script_beside(&output.script_pubkey) else {
            return PlannedBump::impossible(kind, "no fresh owner address could be derived");
        };
        let version = if truc {
            self.focus().version
        } else {
            crate::bitcoin::transaction::Version::TWO
        };
        let mut child = Transaction {
            version,
            lock_time: crate::bitcoin::absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint {
                    txid: self.view.txs[focus_index].txid,
                    vout,
                },
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                ..TxIn::default()
            }],
            output: vec![TxOut {
                value: Amount::ZERO,
                script_pubkey: script.clone(),
            }],
        };
        let prevouts = vec![output.clone()];
        let Some((weight, vsize)) = self.policy_size(&child, &prevouts) else {
            return PlannedBump::impossible(kind, "the output's script type cannot be sized");
        };
        if truc && vsize > TRUC_CHILD_MAX_VSIZE {
            return PlannedBump::impossible(
                kind,
                format!("a TRUC child may be at most {TRUC_CHILD_MAX_VSIZE} vB"),
            );
        }
        let minimum = match self.sibling_minimum(&evicted, weight, vsize) {
            Ok(minimum) => minimum,
            Err(error) => return PlannedBump::impossible(kind, error.to_string()),
        };
        let (kept, _) = self.kept_cluster(&evicted);
        let parent = focus_index - evicted.iter().filter(|&&gone| gone < focus_index).count();
        let joining = fee_to_reach(&kept, &[parent], vsize, self.target);
        let fee_sat = joining
            .fee_sat
            .max(minimum.map_or(0, |minimum| minimum.fee_sat));
        let dust = self.settings.policy.dust_threshold(&script);
        let Some(value) = output
            .value
            .to_sat()
            .checked_sub(fee_sat)
            .filter(|value| *value >= dust)
        else {
            let reason = format!(
                "the owner's output of {} sat cannot pay the {fee_sat} sat fee and stay above the {dust} sat dust limit",
                output.value.to_sat()
            );
            return PlannedBump::impossible(kind, reason);
        };
        child.output[0].value = Amount::from_sat(value);
        let chunk = joining_chunk(&kept, &[parent], vsize, fee_sat);
        let kept_txids: Vec<Txid> = (0..self.view.txs.len())
            .filter(|i| !evicted.contains(i))
            .map(|i| self.view.txs[i].txid)
            .collect();
        let outputs = vec![
            self.output_change(&output.script_pubkey, Some(output.value.to_sat()), None),
            self.output_change(&script, None, Some(value)),
        ];
        let replaces = evicted.iter().map(|&i| self.view.txs[i].txid).collect();
        let mut planned = self.complete(
            kind, child, &prevouts, fee_sat, fee_sat, vsize, chunk, minimum, replaces, outputs,
        );
        planned.pays_for = joining.paid_for.iter().map(|&i| kept_txids[i]).collect();
        planned
    }

    /// Computes the replacement minimum a TRUC child pays to evict its sibling, or `None`
    /// when there is no sibling.
    fn sibling_minimum(
        &self,
        evicted: &[usize],
        weight: u64,
        vsize: u64,
    ) -> Result<Option<crate::policy::ReplacementMinimum>, crate::policy::ReplacementError> {
        if evicted.is_empty() {
            return Ok(None);
        }
        // The sibling, not the parent, is what the new child conflicts with.
        let mut mempool = self.view.mempool_txs(evicted);
        for (index, tx) in mempool.iter_mut().enumerate() {
            tx.direct_conflict = evicted.contains(&index);
        }
        let case = ReplacementCase {
            mempool,
            replacement_weight: weight,
            replacement_vsize: vsize,
            replacement_parents: vec![self.view.focus],
        };
        case.minimum_fee(&self.settings.policy, self.settings.policy_version)
            .map(Some)
    }
}
