//! The node's own view of a transaction, and the checks of a diagnosis against it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::{Arc, Once};

use anyhow::Context;
use serde_json::{Value, json};
use txdoctor::analysis::package::{RATE_SCALE, RelativeTx};
use txdoctor::analysis::{AnalysisOptions, Diagnosis, Status};
use txdoctor::bitcoin::Txid;
use txdoctor::chain::ChainSource;
use txdoctor::chain::esplora::{EsploraOptions, EsploraSource};
use txdoctor::diagnose::Doctor;
use txdoctor::feerate::{FeeFrac, SatPerKvb};
use txdoctor::history::History;
use txdoctor::policy::RelayPolicy;

use crate::node::{Regtest, amount_of};
use crate::scenarios::Scenario;

static NO_CHUNK_NOTICE: Once = Once::new();

/// `getmempoolentry` of one transaction, with its full sets of relatives.
#[derive(Debug, Clone)]
pub struct MempoolEntry {
    /// Base fee, in satoshis.
    pub fee_sat: u64,
    /// Sigop-adjusted virtual size.
    pub vsize: u64,
    /// BIP141 weight.
    pub weight: u64,
    /// Every unconfirmed ancestor (`getmempoolancestors`).
    pub ancestors: BTreeSet<Txid>,
    /// Every unconfirmed descendant (`getmempooldescendants`).
    pub descendants: BTreeSet<Txid>,
    /// Unconfirmed parents (`depends`).
    pub parents: BTreeSet<Txid>,
    /// Fee and sigop-adjusted weight of the chunk it is mined in; Core v31 and later.
    pub chunk: Option<FeeFrac>,
    /// `bip125-replaceable`, where the node reports it.
    pub bip125_replaceable: Option<bool>,
}

impl Regtest {
    /// Reads the node's mempool entry for `txid`.
    ///
    /// # Errors
    ///
    /// Returns the node's error, such as when `txid` is not in its mempool.
    pub fn mempool_entry(&self, txid: Txid) -> anyhow::Result<MempoolEntry> {
        let entry = self.rpc("getmempoolentry", &[json!(txid)])?;
        let number = |field: &str| {
            entry[field]
                .as_u64()
                .with_context(|| format!("getmempoolentry has no {field}"))
        };
        let txids =
            |value: Value| -> anyhow::Result<BTreeSet<Txid>> { Ok(serde_json::from_value(value)?) };
        let chunk = match (entry["fees"].get("chunk"), entry["chunkweight"].as_u64()) {
            (Some(fee), Some(weight)) => Some(FeeFrac::new(amount_of(fee)?.to_sat(), weight)),
            _ => None,
        };
        Ok(MempoolEntry {
            fee_sat: amount_of(&entry["fees"]["base"])?.to_sat(),
            vsize: number("vsize")?,
            weight: number("weight")?,
            ancestors: txids(self.rpc("getmempoolancestors", &[json!(txid)])?)?,
            descendants: txids(self.rpc("getmempooldescendants", &[json!(txid)])?)?,
            parents: txids(entry["depends"].clone())?,
            chunk,
            bip125_replaceable: entry["bip125-replaceable"].as_bool(),
        })
    }

    /// Reads the node's relay policy: its relay fees and its current mempool minimum fee.
    ///
    /// # Errors
    ///
    /// Returns the node's error.
    pub fn relay_policy(&self) -> anyhow::Result<RelayPolicy> {
        let info = self.rpc("getmempoolinfo", &[])?;
        // The node gives rates in BTC/kvB, so satoshis of the amount are sat/kvB.
        let rate = |field: &str| -> anyhow::Result<SatPerKvb> {
            Ok(SatPerKvb(amount_of(&info[field])?.to_sat()))
        };
        Ok(RelayPolicy {
            min_relay_fee: rate("minrelaytxfee")?,
            incremental_relay_fee: rate("incrementalrelayfee")?,
            mempool_min_fee: rate("mempoolminfee")?,
            ..RelayPolicy::default()
        })
    }

    /// Diagnoses `txid` with txdoctor's library, reading electrs' Esplora API after
    /// waiting for electrs to catch up with the node.
    ///
    /// # Errors
    ///
    /// Returns an error when electrs lags behind or the diagnosis fails.
    pub async fn diagnose(
        &self,
        txid: Txid,
        raw: Option<txdoctor::bitcoin::Transaction>,
    ) -> anyhow::Result<Diagnosis> {
        self.sync().await?;
        let esplora = EsploraSource::new(EsploraOptions {
            max_retries: 0,
            ..EsploraOptions::new(self.esplora_url())
        })?;
        // No cache: each diagnosis must see the chain as it is now.
        let source: Arc<dyn ChainSource> = Arc::new(esplora);
        let options = AnalysisOptions {
            policy: self.relay_policy()?,
            ..AnalysisOptions::default()
        };
        let doctor = Doctor::new(source, Arc::new(History::in_memory()), options);
        Ok(doctor.diagnose(txid, raw).await?)
    }
}

/// Checks the diagnosis of an unconfirmed scenario against the node, field by field.
///
/// # Panics
///
/// Panics, naming the scenario and the field, on the first mismatch.
pub fn check_mempool_diagnosis(env: &Regtest, scenario: &Scenario, diagnosis: &Diagnosis) {
    let name = &scenario.name;
    let entry = env
        .mempool_entry(scenario.focus)
        .unwrap_or_else(|error| panic!("{name}: {error:#}"));
    assert_eq!(diagnosis.txid, scenario.focus, "{name}: txid");
    assert_eq!(diagnosis.status, Status::Mempool, "{name}: status");

    let summary = diagnosis
        .transaction
        .as_ref()
        .expect("a mempool diagnosis has a summary");
    assert_eq!(summary.fee_sat, entry.fee_sat, "{name}: fee");
    assert_eq!(
        summary.size.sigop_adjusted_vsize, entry.vsize,
        "{name}: sigop-adjusted vsize"
    );
    assert_eq!(summary.size.weight, entry.weight, "{name}: weight");
    assert_eq!(summary.version, scenario.tx.version.0, "{name}: version");

    let package = diagnosis
        .package
        .as_ref()
        .expect("a mempool diagnosis has a package");
    assert!(
        package.complete,
        "{name}: the package walk found every relative"
    );
    assert_eq!(
        txids(&package.ancestors),
        entry.ancestors,
        "{name}: ancestors"
    );
    assert_eq!(
        txids(&package.descendants),
        entry.descendants,
        "{name}: descendants"
    );
    for relative in package.ancestors.iter().chain(&package.descendants) {
        let truth = env
            .mempool_entry(relative.txid)
            .unwrap_or_else(|error| panic!("{name}: {error:#}"));
        assert_eq!(
            relative.fee_sat, truth.fee_sat,
            "{name}: fee of {}",
            relative.txid
        );
        assert_eq!(
            relative.vsize, truth.vsize,
            "{name}: vsize of {}",
            relative.txid
        );
    }
    check_chunk(env, name, &entry, package);

    let replaceability = diagnosis
        .replaceability
        .as_ref()
        .expect("a mempool diagnosis has replaceability");
    if let Some(bip125) = entry.bip125_replaceable {
        assert_eq!(
            replaceability.bip125_replaceable, bip125,
            "{name}: BIP125 signal"
        );
    }
    assert_eq!(
        replaceability.signal, scenario.signal,
        "{name}: signal source"
    );
    assert!(replaceability.full_rbf, "{name}: full RBF");
    assert_eq!(
        replaceability.truc,
        scenario.tx.version.0 == 3,
        "{name}: TRUC"
    );
}

fn check_chunk(
    env: &Regtest,
    name: &str,
    entry: &MempoolEntry,
    package: &txdoctor::analysis::package::PackageReport,
) {
    let Some(chunk) = entry.chunk else {
        NO_CHUNK_NOTICE.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "chunk checks skipped: Core {} reports no chunk in getmempoolentry (v31 and later do)",
                env.core_version
            );
        });
        return;
    };
    assert_eq!(package.chunk.fee_sat, chunk.fee_sat, "{name}: chunk fee");
    assert_eq!(package.chunk.weight, chunk.weight, "{name}: chunk weight");
    assert_eq!(
        package.effective_fee_rate_sat_per_vb,
        chunk.sat_per_vb(RATE_SCALE),
        "{name}: effective fee rate against Core's chunk rate"
    );
}

/// Checks that the diagnosis reports `scenario` confirmed where the node has it.
///
/// # Panics
///
/// Panics on a mismatch.
pub fn check_confirmed_diagnosis(env: &Regtest, scenario: &Scenario, diagnosis: &Diagnosis) {
    let name = &scenario.name;
    let txid = scenario.replaced_by.unwrap_or(scenario.focus);
    let verbose = env
        .rpc("getrawtransaction", &[json!(txid), json!(true)])
        .unwrap_or_else(|error| panic!("{name}: {error:#}"));
    let block_hash = verbose["blockhash"]
        .as_str()
        .expect("the node has it in a block");
    let header = env
        .rpc("getblockheader", &[json!(block_hash)])
        .unwrap_or_else(|error| panic!("{name}: {error:#}"));
    let height = header["height"].as_u64().expect("a header has a height");
    let confirmations = verbose["confirmations"].as_u64().expect("confirmations");
    let Status::Confirmed {
        block_height,
        confirmations: reported,
        block_hash: reported_hash,
        ..
    } = &diagnosis.status
    else {
        panic!("{name}: expected confirmed, got {:?}", diagnosis.status);
    };
    assert_eq!(u64::from(*block_height), height, "{name}: block height");
    assert_eq!(u64::from(*reported), confirmations, "{name}: confirmations");
    assert_eq!(
        reported_hash.map(|hash| hash.to_string()).as_deref(),
        Some(block_hash),
        "{name}: block hash"
    );
}

/// Mines until the node has `txid` in a block; returns how many blocks that took.
///
/// # Errors
///
/// Returns an error when 10 blocks are not enough.
pub fn mine_until_confirmed(env: &Regtest, txid: Txid) -> anyhow::Result<u64> {
    for blocks in 1..=10 {
        env.mine(1)?;
        let verbose = env.rpc("getrawtransaction", &[json!(txid), json!(true)])?;
        if verbose["confirmations"].as_u64().unwrap_or(0) > 0 {
            return Ok(blocks);
        }
    }
    anyhow::bail!("{txid} is still unconfirmed after 10 blocks")
}

fn txids(relatives: &[RelativeTx]) -> BTreeSet<Txid> {
    relatives.iter().map(|relative| relative.txid).collect()
}

/// Reads the mempool entries of every transaction in `txids`.
///
/// # Errors
///
/// Returns the node's error.
pub fn entries(
    env: &Regtest,
    txids: &BTreeSet<Txid>,
) -> anyhow::Result<BTreeMap<Txid, MempoolEntry>> {
    txids
        .iter()
        .map(|txid| Ok((*txid, env.mempool_entry(*txid)?)))
        .collect()
}
