//! Helpers for checking fee bumps against the node: sign a PSBT with a scenario's keys,
//! ask `testmempoolaccept` or `submitpackage`, and describe a replacement to
//! txdoctor's policy rules exactly as the node's mempool has it.

use std::collections::BTreeSet;

use anyhow::{Context, bail};
use serde_json::json;
use txdoctor::bitcoin::psbt::Psbt;
use txdoctor::bitcoin::{Amount, OutPoint, Transaction, Txid, absolute, consensus};
use txdoctor::feerate::{FeeFrac, WITNESS_SCALE_FACTOR};
use txdoctor::policy::{MempoolTx, PolicyVersion, ReplacementCase};

use crate::node::{Regtest, Wallet};
use crate::truth::{MempoolEntry, entries};

/// The node's verdict on one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance {
    /// The transaction.
    pub txid: Txid,
    /// Whether the node would accept it.
    pub allowed: bool,
    /// The node's reason, when it would not.
    pub reject_reason: Option<String>,
}

/// Asks the node whether it would accept `txs`, in order, without broadcasting them.
///
/// # Errors
///
/// Returns the node's error.
pub fn test_accept(env: &Regtest, txs: &[Transaction]) -> anyhow::Result<Vec<Acceptance>> {
    let hexes: Vec<String> = txs.iter().map(consensus::encode::serialize_hex).collect();
    let results = env.rpc("testmempoolaccept", &[json!(hexes)])?;
    results
        .as_array()
        .context("testmempoolaccept returned no list")?
        .iter()
        .map(|result| {
            Ok(Acceptance {
                txid: serde_json::from_value(result["txid"].clone())?,
                allowed: result["allowed"] == true,
                reject_reason: result["reject-reason"].as_str().map(str::to_owned),
            })
        })
        .collect()
}

/// Submits `txs` as one package, parents first, and returns the node's `package_msg`.
/// A child that pays for a parent below the mempool minimum fee must be sent this way.
///
/// # Errors
///
/// Returns the node's error, or the package message when it is not `success`.
pub fn submit_package(env: &Regtest, txs: &[Transaction]) -> anyhow::Result<String> {
    let hexes: Vec<String> = txs.iter().map(consensus::encode::serialize_hex).collect();
    let result = env.rpc("submitpackage", &[json!(hexes)])?;
    let message = result["package_msg"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if message != "success" {
        bail!("submitpackage rejected the package: {result}");
    }
    Ok(message)
}

/// Signs and finalizes `psbt` with the keys of `wallet`, and extracts the transaction.
///
/// # Errors
///
/// Returns an error when the wallet cannot sign every input or the PSBT cannot be
/// finalized.
pub fn sign_psbt(wallet: &Wallet, psbt: &Psbt) -> anyhow::Result<Transaction> {
    let processed = wallet.rpc("walletprocesspsbt", &[json!(psbt.to_string()), json!(true)])?;
    if processed["complete"] != true {
        bail!("wallet {} could not sign every input", wallet.name);
    }
    let finalized = wallet.rpc("finalizepsbt", &[processed["psbt"].clone()])?;
    if finalized["complete"] != true {
        bail!("the signed PSBT could not be finalized");
    }
    let hex = finalized["hex"]
        .as_str()
        .context("finalizepsbt returned no hex")?;
    Ok(consensus::encode::deserialize_hex(hex)?)
}

/// Returns the replacement rules that the node runs.
pub fn policy_version(env: &Regtest) -> PolicyVersion {
    if env.has_cluster_mempool() {
        PolicyVersion::V31
    } else {
        PolicyVersion::Pre31
    }
}

/// Describes `replacement` to the policy rules: every mempool transaction in the
/// clusters it touches, which of them it conflicts with or evicts, and its own size.
///
/// # Errors
///
/// Returns the node's error.
pub fn replacement_case(
    env: &Regtest,
    replacement: &Transaction,
) -> anyhow::Result<ReplacementCase> {
    let spent: BTreeSet<OutPoint> = replacement
        .input
        .iter()
        .map(|input| input.previous_output)
        .collect();
    let mempool = env.mempool_txids()?;
    let parents: BTreeSet<Txid> = spent
        .iter()
        .map(|outpoint| outpoint.txid)
        .filter(|txid| mempool.contains(txid))
        .collect();

    let conflicts = conflicting(env, &mempool, &spent)?;
    let members = clusters_of(env, conflicts.iter().chain(&parents).copied())?;
    let members = entries(env, &members)?;
    let evicted: BTreeSet<Txid> = conflicts
        .iter()
        .flat_map(|txid| {
            let descendants = members[txid].descendants.iter().copied();
            std::iter::once(*txid).chain(descendants)
        })
        .collect();

    let order: Vec<Txid> = members.keys().copied().collect();
    let index = |txid: &Txid| order.iter().position(|member| member == txid);
    let mempool_txs = order
        .iter()
        .map(|txid| mempool_tx(&members[txid], &conflicts, &evicted, txid, &index))
        .collect();
    let weight = replacement.weight().to_wu();
    Ok(ReplacementCase {
        mempool: mempool_txs,
        replacement_weight: weight,
        replacement_vsize: weight.div_ceil(WITNESS_SCALE_FACTOR),
        replacement_parents: parents.iter().filter_map(index).collect(),
    })
}

fn mempool_tx(
    entry: &MempoolEntry,
    conflicts: &BTreeSet<Txid>,
    evicted: &BTreeSet<Txid>,
    txid: &Txid,
    index: &impl Fn(&Txid) -> Option<usize>,
) -> MempoolTx {
    MempoolTx {
        // NOTE: this is the BIP141 weight, not the sigop-adjusted weight, which the node
        // does not report per transaction. They differ only for sigop-heavy
        // transactions, and no scenario builds one.
        frac: FeeFrac::new(entry.fee_sat, entry.weight),
        vsize: entry.vsize,
        parents: entry.parents.iter().filter_map(index).collect(),
        direct_conflict: conflicts.contains(txid),
        evicted: evicted.contains(txid),
    }
}

/// Finds the mempool transactions that spend any of `spent`.
fn conflicting(
    env: &Regtest,
    mempool: &BTreeSet<Txid>,
    spent: &BTreeSet<OutPoint>,
) -> anyhow::Result<BTreeSet<Txid>> {
    let mut conflicts = BTreeSet::new();
    for txid in mempool {
        let tx = env.transaction(*txid)?;
        if tx
            .input
            .iter()
            .any(|input| spent.contains(&input.previous_output))
        {
            conflicts.insert(*txid);
        }
    }
    Ok(conflicts)
}

/// Finds every mempool transaction connected to `start` through parents and children.
fn clusters_of(env: &Regtest, start: impl Iterator<Item = Txid>) -> anyhow::Result<BTreeSet<Txid>> {
    let mut found = BTreeSet::new();
    let mut frontier: Vec<Txid> = start.collect();
    while let Some(txid) = frontier.pop() {
        if !found.insert(txid) {
            continue;
        }
        let entry = env.rpc("getmempoolentry", &[json!(txid)])?;
        for field in ["depends", "spentby"] {
            let relatives: Vec<Txid> = serde_json::from_value(entry[field].clone())?;
            frontier.extend(relatives.into_iter().filter(|txid| !found.contains(txid)));
        }
    }
    Ok(found)
}

/// A replacement of `original` that spends the same inputs with the same sequences and
/// pays `fee`: the output at `reduce` absorbs the difference, the others stay as they
/// are. With `cancel`, the replacement has the `reduce` output alone.
pub struct Replacement<'a> {
    /// The transaction replaced.
    pub original: &'a Transaction,
    /// The values of the coins it spends, in input order.
    pub input_values: Vec<Amount>,
    /// The index of the output whose value changes.
    pub reduce: usize,
    /// Whether to drop every other output, paying everything back to `reduce`.
    pub cancel: bool,
}

impl Replacement<'_> {
    /// Reads the values of the coins `original` spends from the node.
    ///
    /// # Errors
    ///
    /// Returns the node's error.
    pub fn input_values(env: &Regtest, original: &Transaction) -> anyhow::Result<Vec<Amount>> {
        original
            .input
            .iter()
            .map(|input| {
                let parent = env.transaction(input.previous_output.txid)?;
                let vout = usize::try_from(input.previous_output.vout)?;
                Ok(parent.output.get(vout).context("no such output")?.value)
            })
            .collect()
    }

    /// Builds the unsigned replacement paying `fee`, as a PSBT with each input's previous
    /// transaction and, for segwit inputs, witness UTXO. A nonzero `salt` lowers the lock
    /// time by that many blocks, which changes the signatures but not the rules.
    ///
    /// # Errors
    ///
    /// Returns an error when the inputs cannot pay `fee` or the PSBT cannot be built.
    pub fn psbt(&self, env: &Regtest, fee: Amount, salt: u32) -> anyhow::Result<Psbt> {
        let mut tx = self.original.clone();
        let height = tx.lock_time.to_consensus_u32();
        // A height lock time below the tip stays final; 0 becomes `salt`, also below it.
        let salted = if height > salt { height - salt } else { salt };
        tx.lock_time = absolute::LockTime::from_consensus(salted);

        for input in &mut tx.input {
            input.script_sig = Default::default();
            input.witness = Default::default();
        }
        let mut reduced = tx.output[self.reduce].clone();
        if self.cancel {
            tx.output.clear();
        } else {
            tx.output.remove(self.reduce);
        }
        let input_total: Amount = self.input_values.iter().copied().sum();
        let kept: Amount = tx.output.iter().map(|output| output.value).sum();
        reduced.value = input_total
            .checked_sub(kept + fee)
            .context("the inputs cannot pay that fee")?;
        let position = if self.cancel { 0 } else { self.reduce };
        tx.output.insert(position, reduced);

        let mut psbt = Psbt::from_unsigned_tx(tx)?;
        for (psbt_input, input) in psbt.inputs.iter_mut().zip(&self.original.input) {
            let parent = env.transaction(input.previous_output.txid)?;
            let vout = usize::try_from(input.previous_output.vout)?;
            let spent = parent.output[vout].clone();
            if spent.script_pubkey.is_witness_program() || spent.script_pubkey.is_p2sh() {
                psbt_input.witness_utxo = Some(spent);
            }
            psbt_input.non_witness_utxo = Some(parent);
        }
        Ok(psbt)
    }
}

/// The node's acceptance of a replacement at the policy minimum and one satoshi below.
#[derive(Debug)]
pub struct MinimumCheck {
    /// The minimum fee from txdoctor's policy rules.
    pub minimum_fee_sat: u64,
    /// The node's verdict at that fee.
    pub at_minimum: Acceptance,
    /// The node's verdict one satoshi below.
    pub one_below: Acceptance,
    /// The minimum for the transaction signed one satoshi below, which differs from
    /// `minimum_fee_sat` when its signature came out a byte shorter or longer.
    pub one_below_minimum_sat: u64,
}

/// Computes the minimum fee of `replacement` with txdoctor's policy rules, signs it at
/// that fee and one satoshi below with `signer`, and tests both with the node.
///
/// # Errors
///
/// Returns an error when the rules find no acceptable fee or signing fails.
pub fn check_minimum(
    env: &Regtest,
    signer: &Wallet,
    replacement: &Replacement<'_>,
) -> anyhow::Result<MinimumCheck> {
    let policy = env.relay_policy()?;
    let version = policy_version(env);
    let minimum_of = |tx: &Transaction| -> anyhow::Result<u64> {
        Ok(replacement_case(env, tx)?
            .minimum_fee(&policy, version)?
            .fee_sat)
    };
    // At some fees a signature comes out a byte longer, and the minimum of the longer
    // transaction is one satoshi more, at which the signature is short again. The fee is
    // repriced on each signed size, and a salted lock time breaks such a cycle.
    for salt in 0..8 {
        let sign_at =
            |fee: u64| sign_psbt(signer, &replacement.psbt(env, Amount::from_sat(fee), salt)?);
        let mut fee = minimum_of(&sign_at(1_000)?)?;
        for _ in 0..3 {
            let at_minimum = sign_at(fee)?;
            let minimum = minimum_of(&at_minimum)?;
            if minimum != fee {
                fee = minimum;
                continue;
            }
            let one_below = sign_at(minimum - 1)?;
            let one_below_minimum_sat = minimum_of(&one_below)?;
            let verdicts = test_accept(env, &[at_minimum])?
                .into_iter()
                .chain(test_accept(env, &[one_below])?);
            let [at_minimum, one_below]: [Acceptance; 2] = verdicts
                .collect::<Vec<_>>()
                .try_into()
                .map_err(|_| anyhow::anyhow!("testmempoolaccept returned no verdict"))?;
            return Ok(MinimumCheck {
                minimum_fee_sat: minimum,
                at_minimum,
                one_below,
                one_below_minimum_sat,
            });
        }
    }
    bail!("the replacement's fee did not settle on its signed size")
}
