//! Whether and how a transaction can be replaced.
//!
//! Bitcoin Core replaces any unconfirmed transaction since v28 (full RBF by default, and
//! unconditionally since v29). BIP125 signalling is still reported because older nodes and
//! some miners honour only signalling transactions. A transaction signals explicitly when
//! an input's nSequence is at most 0xfffffffd, and inherits the signal from any unconfirmed
//! ancestor that signals (`IsRBFOptIn` in `src/policy/rbf.cpp`). TRUC transactions
//! (nVersion 3, BIP431) are always replaceable and have their own size and topology limits.

use serde::Serialize;

use crate::bitcoin::{Transaction, Txid};
use crate::policy::{
    MAX_BIP125_RBF_SEQUENCE, TRUC_CHILD_MAX_VSIZE, TRUC_CLUSTER_LIMIT, TRUC_MAX_VSIZE, TRUC_VERSION,
};

/// Where a transaction's BIP125 replaceability comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalSource {
    /// One of its own inputs signals.
    Explicit,
    /// It does not signal, but an unconfirmed ancestor does.
    Inherited,
    /// Neither it nor any unconfirmed ancestor signals.
    None,
}

/// The replaceability of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replaceability {
    /// BIP125 replaceable, as Bitcoin Core's `bip125-replaceable` field reports it.
    pub bip125_replaceable: bool,
    /// Where the signal comes from.
    pub signal: SignalSource,
    /// The nearest signalling ancestor, when the signal is inherited.
    pub inherited_from: Option<Txid>,
    /// Replaceable by nodes with full RBF: every current Bitcoin Core node.
    pub full_rbf: bool,
    /// Version 3 (TRUC, BIP431).
    pub truc: bool,
    /// TRUC limits that bind the transaction, when it is TRUC.
    pub truc_limits: Option<TrucLimits>,
    /// Plain-language notes for older nodes and TRUC.
    pub notes: Vec<String>,
}

/// The BIP431 limits of a TRUC transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TrucLimits {
    /// Largest sigop-adjusted vsize of this transaction.
    pub max_vsize: u64,
    /// Largest vsize of a child that may spend it.
    pub max_child_vsize: u64,
    /// Transactions allowed in its cluster, itself included.
    pub max_cluster_count: usize,
    /// Whether it already has an unconfirmed parent or child, so no further relative fits.
    pub cluster_full: bool,
}

/// Whether any input of `tx` signals BIP125 (`SignalsOptInRBF` in `src/util/rbf.cpp`).
pub fn signals_bip125(tx: &Transaction) -> bool {
    tx.input
        .iter()
        .any(|input| input.sequence.to_consensus_u32() <= MAX_BIP125_RBF_SEQUENCE)
}

/// Assesses `tx`, given its unconfirmed ancestors nearest first and the number of
/// unconfirmed relatives (ancestors and descendants) in its cluster.
pub fn assess(
    tx: &Transaction,
    ancestors: &[(Txid, &Transaction)],
    relatives: usize,
) -> Replaceability {
    let explicit = signals_bip125(tx);
    let inherited_from = if explicit {
        None
    } else {
        ancestors
            .iter()
            .find(|(_, ancestor)| signals_bip125(ancestor))
            .map(|(txid, _)| *txid)
    };
    let signal = match (explicit, inherited_from) {
        (true, _) => SignalSource::Explicit,
        (false, Some(_)) => SignalSource::Inherited,
        (false, None) => SignalSource::None,
    };
    let truc = tx.version.0 == TRUC_VERSION;
    let truc_limits = truc.then(|| TrucLimits {
        max_vsize: if ancestors.is_empty() {
            TRUC_MAX_VSIZE
        } else {
            TRUC_CHILD_MAX_VSIZE
        },
        max_child_vsize: TRUC_CHILD_MAX_VSIZE,
        max_cluster_count: TRUC_CLUSTER_LIMIT,
        cluster_full: relatives + 1 >= TRUC_CLUSTER_LIMIT,
    });
    let mut notes = Vec::new();
    match (signal, inherited_from) {
        (SignalSource::Explicit, _) => notes.push(
            "It signals replaceability (BIP125), so every node relays a replacement.".to_owned(),
        ),
        (SignalSource::Inherited, Some(ancestor)) => notes.push(format!(
            "It does not signal itself but inherits the signal from unconfirmed ancestor {ancestor}; \
             nodes that check only its own inputs may not relay a replacement."
        )),
        _ => notes.push(
            "It does not signal replaceability (BIP125): current Bitcoin Core nodes (v28 and \
             later, full RBF) replace it anyway, but older nodes and some miners may not."
                .to_owned(),
        ),
    }
    if truc {
        notes.push(format!(
            "It is a version 3 (TRUC) transaction: always replaceable, at most one unconfirmed \
             parent or child, and a child of at most {TRUC_CHILD_MAX_VSIZE} vB."
        ));
    }
    Replaceability {
        bip125_replaceable: explicit || inherited_from.is_some(),
        signal,
        inherited_from,
        full_rbf: true,
        truc,
        truc_limits,
        notes,
    }
}
