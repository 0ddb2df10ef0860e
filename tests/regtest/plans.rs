//! Bump plans on the real node: txdoctor plans from the owner's public descriptors, the
//! node's wallet signs the PSBT, and `testmempoolaccept` judges the result.

use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use rust_decimal::Decimal;
use serde_json::json;
use txdoctor::analysis::AnalysisOptions;
use txdoctor::bitcoin::{Amount, Psbt, Transaction};
use txdoctor::bump::plan::{BumpKind, PlannedBump, Strategy};
use txdoctor::bump::{BumpConfig, BumpPlan, BumpRequest, Bumper, Target};
use txdoctor::chain::ChainSource;
use txdoctor::chain::esplora::{EsploraOptions, EsploraSource};
use txdoctor::diagnose::Doctor;
use txdoctor::history::History;

use crate::bump::{Acceptance, policy_version, sign_psbt, test_accept};
use crate::node::{Regtest, Wallet};
use crate::scenarios::Scenario;

/// Returns the public descriptors of `wallet`, as a watch-only copy would import them.
pub fn public_descriptors(wallet: &Wallet) -> anyhow::Result<Vec<String>> {
    let listed = wallet.rpc("listdescriptors", &[json!(false)])?;
    let descriptors = listed["descriptors"]
        .as_array()
        .context("listdescriptors returned no list")?;
    Ok(descriptors
        .iter()
        .filter(|descriptor| descriptor["active"] == true)
        .filter_map(|descriptor| descriptor["desc"].as_str().map(str::to_owned))
        .collect())
}

/// Plans bumps of `scenario` at `target` sat/vB through the node's Esplora server.
pub async fn plan(
    env: &Regtest,
    scenario: &Scenario,
    target: Decimal,
    strategy: Strategy,
    allow_payment_decrease: bool,
) -> anyhow::Result<BumpPlan> {
    env.sync().await?;
    let esplora = EsploraSource::new(EsploraOptions {
        max_retries: 0,
        ..EsploraOptions::new(env.esplora_url())
    })?;
    let source: Arc<dyn ChainSource> = Arc::new(esplora);
    let options = AnalysisOptions {
        policy: env.relay_policy()?,
        policy_version: policy_version(env),
    };
    let doctor = Arc::new(Doctor::new(source, Arc::new(History::in_memory()), options));
    let config = BumpConfig {
        network: txdoctor::config::Network::Regtest,
        lookahead: 200,
        max_fee_sat: 10_000_000,
    };
    let request = BumpRequest {
        txid: scenario.focus,
        descriptors: public_descriptors(&scenario.owner)?,
        change_descriptors: Vec::new(),
        target: Target::FeeRate(target),
        strategy,
        allow_payment_decrease,
        force: false,
    };
    Ok(Bumper::new(doctor, config).plan(&request).await?)
}

/// The node's verdicts on a planned bump, signed as planned and signed one satoshi cheaper.
#[derive(Debug)]
pub struct Verdicts {
    /// The signed bump.
    pub signed: Transaction,
    /// The node's verdict on it.
    pub as_planned: Acceptance,
    /// The node's verdict with one satoshi less fee, when the plan paid its rule minimum
    /// and the signed size equals the estimate, so that the minimum is the node's too.
    pub one_below: Option<Acceptance>,
}

/// Signs `planned` with `owner` and tests it on the node; where the plan paid its rule
/// minimum, also tests the same bump paying one satoshi less.
pub fn judge(env: &Regtest, owner: &Wallet, planned: &PlannedBump) -> anyhow::Result<Verdicts> {
    let psbt = Psbt::from_str(
        planned
            .psbt
            .as_deref()
            .context("a possible bump has a PSBT")?,
    )?;
    let signed = sign_psbt(owner, &psbt)?;
    let as_planned = test_accept(env, std::slice::from_ref(&signed))?.remove(0);
    let signed_vsize = signed.weight().to_wu().div_ceil(4);
    let at_minimum = planned.fee_sat.is_some() && planned.fee_sat == planned.minimum_fee_sat;
    let one_below = if at_minimum && Some(signed_vsize) == planned.vsize {
        // The owner's new or reduced output takes the satoshi back.
        let mut cheaper = psbt.clone();
        let index = absorbing_output(&psbt, planned).context("the bump has an owner's output")?;
        cheaper.unsigned_tx.output[index].value += Amount::from_sat(1);
        let signed = sign_psbt(owner, &cheaper)?;
        Some(test_accept(env, &[signed])?.remove(0))
    } else {
        None
    };
    Ok(Verdicts {
        signed,
        as_planned,
        one_below,
    })
}

/// Finds the output of the bump that takes what the fee leaves: the owner's output whose
/// value the plan set.
fn absorbing_output(psbt: &Psbt, planned: &PlannedBump) -> Option<usize> {
    let owned: Vec<u64> = planned
        .outputs
        .iter()
        .filter(|output| {
            output.owner && output.after_sat.is_some() && output.after_sat != output.before_sat
        })
        .filter_map(|output| output.after_sat)
        .collect();
    psbt.unsigned_tx
        .output
        .iter()
        .position(|output| owned.contains(&output.value.to_sat()))
}

/// Returns the planned option of `kind`.
pub fn option(plan: &BumpPlan, kind: BumpKind) -> &PlannedBump {
    plan.options
        .iter()
        .find(|option| option.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} option"))
}
