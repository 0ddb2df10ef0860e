//! Fee bumps: plans for every way to speed a transaction up, each priced exactly, with a
//! PSBT a hardware wallet can sign. No private key is ever seen here.

pub mod check;
pub mod coins;
pub mod owner;
pub mod plan;

use std::collections::HashMap;
use std::sync::Arc;

use bdk_esplora::esplora_client::AsyncClient;
use futures::future::join_all;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::analysis::MempoolFacts;
use crate::analysis::package::{ClusterView, RATE_SCALE};
use crate::analysis::verdict::rate_for_blocks;
use crate::bitcoin::{Transaction, Txid};
use crate::chain::{ChainError, ChainTx};
use crate::config::Network;
use crate::diagnose::Doctor;
use crate::policy::PolicyVersion;
use owner::{DescriptorError, Owner};
use plan::{BumpKind, PlanSettings, PlannedBump, Planner, Strategy};

/// The rate to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A fee rate in sat/vB.
    FeeRate(Decimal),
    /// Confirmation within this many blocks, from the mempool histogram and estimates.
    Blocks(u16),
}

/// A bump request, as the CLI and API take it.
#[derive(Debug, Clone)]
pub struct BumpRequest {
    /// The stuck transaction.
    pub txid: Txid,
    /// Public descriptors of the owner's wallet.
    pub descriptors: Vec<String>,
    /// Change descriptors, paired with `descriptors` by position.
    pub change_descriptors: Vec<String>,
    /// The rate to reach.
    pub target: Target,
    /// Kinds of bump to build.
    pub strategy: Strategy,
    /// Whether a payment to someone else may be reduced.
    pub allow_payment_decrease: bool,
    /// Pay above the fee ceiling anyway.
    pub force: bool,
}

/// Settings from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct BumpConfig {
    /// Network of the descriptors and addresses.
    pub network: Network,
    /// Addresses derived ahead on each keychain when looking for the owner's scripts.
    pub lookahead: u32,
    /// Largest fee a bump may pay without `force`, in satoshis.
    pub max_fee_sat: u64,
}

/// The plan: every option, cheapest first, and the recommended one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BumpPlan {
    /// The stuck transaction.
    pub txid: Txid,
    /// The rate to reach, in sat/vB.
    #[serde(with = "rust_decimal::serde::str")]
    pub target_sat_per_vb: Decimal,
    /// Its current effective (chunk) fee rate, in sat/vB.
    #[serde(with = "rust_decimal::serde::str")]
    pub current_effective_fee_rate_sat_per_vb: Decimal,
    /// Replacement rules the minimums satisfy.
    pub policy: PolicyVersion,
    /// The options, possible ones first, cheapest first.
    pub options: Vec<PlannedBump>,
    /// The kind of the cheapest possible option.
    pub recommended: Option<BumpKind>,
    /// Facts the backend could not provide.
    pub data_gaps: Vec<String>,
}

impl BumpPlan {
    /// Returns the recommended option.
    pub fn recommended_option(&self) -> Option<&PlannedBump> {
        let kind = self.recommended?;
        self.options.iter().find(|option| option.kind == kind)
    }
}

/// Errors of bump planning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BumpError {
    /// The descriptors cannot be used.
    #[error(transparent)]
    Descriptor(#[from] DescriptorError),
    /// The backend does not know the transaction.
    #[error(
        "transaction {0} is not known to the backend: it may have been replaced or dropped; diagnose it for details"
    )]
    NotFound(Txid),
    /// The transaction is confirmed.
    #[error("transaction {txid} is already confirmed in block {height}; there is nothing to bump")]
    Confirmed {
        /// The transaction.
        txid: Txid,
        /// Its block height.
        height: u32,
    },
    /// The target does not exceed what the transaction already pays.
    #[error(
        "the target of {target} sat/vB is not above the {current} sat/vB the transaction already pays"
    )]
    TargetNotAbove {
        /// The target, sat/vB.
        target: Decimal,
        /// The current effective rate, sat/vB.
        current: Decimal,
    },
    /// The target is not a usable rate.
    #[error("invalid target: {0}")]
    InvalidTarget(String),
    /// The descriptors own nothing in the transaction.
    #[error(
        "the descriptors own no input or output of transaction {0}; check the wallet, the network and the lookahead"
    )]
    NothingOwned(Txid),
    /// The backend failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

impl BumpError {
    /// Returns whether the caller's input is at fault, as opposed to the backend.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, BumpError::Chain(_))
    }
}

/// Receives progress lines of a long step, such as a coin scan.
pub type Progress = Arc<dyn Fn(String) + Send + Sync>;

/// Plans bumps with the facts a [`Doctor`] fetches.
pub struct Bumper {
    doctor: Arc<Doctor>,
    config: BumpConfig,
    esplora: Option<AsyncClient>,
    known_coins: Option<Vec<coins::Coin>>,
    progress: Progress,
}

impl Bumper {
    /// Creates a bumper that cannot look up more coins.
    pub fn new(doctor: Arc<Doctor>, config: BumpConfig) -> Self {
        Self {
            doctor,
            config,
            esplora: None,
            known_coins: None,
            progress: Arc::new(|_| {}),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &BumpConfig {
        &self.config
    }

    /// Lets the bumper scan the owner's descriptors through `esplora` for more coins when a
    /// replacement's change cannot pay.
    pub fn with_coin_lookup(mut self, esplora: AsyncClient) -> Self {
        self.esplora = Some(esplora);
        self
    }

    /// Gives the owner's other confirmed coins directly, for a caller that already tracks
    /// them; no scan is made then. Coins that the descriptors do not own are ignored.
    pub fn with_known_coins(mut self, coins: Vec<coins::Coin>) -> Self {
        self.known_coins = Some(coins);
        self
    }

    /// Sends progress lines of the coin scan to `progress`.
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    /// Builds the plan for `request`.
    ///
    /// # Errors
    ///
    /// Returns [`BumpError`] for unusable descriptors or targets, a transaction that is
    /// confirmed, unknown or not the owner's, and backend failures.
    pub async fn plan(&self, request: &BumpRequest) -> Result<BumpPlan, BumpError> {
        let mut owner = Owner::from_descriptors(
            &request.descriptors,
            &request.change_descriptors,
            self.config.network,
            self.config.lookahead,
        )?;
        let tx = self.owned_unconfirmed(request.txid, &owner).await?;
        let facts = self.doctor.mempool_facts(tx.clone()).await?;
        let options = self.doctor.options();
        let view = ClusterView::new(facts.cluster.clone(), request.txid, &options.policy)
            .ok_or(BumpError::NotFound(request.txid))?;
        let target = self.resolve_target(request.target, &facts)?;
        let current = view.focus_chunk().frac.sat_per_vb(RATE_SCALE);
        if target <= current {
            return Err(BumpError::TargetNotAbove { target, current });
        }
        let mut previous = self.previous_transactions(&tx).await;
        let settings = PlanSettings {
            target,
            strategy: request.strategy,
            allow_payment_decrease: request.allow_payment_decrease,
            max_fee_sat: self.config.max_fee_sat,
            force: request.force,
            policy: options.policy,
            policy_version: options.policy_version,
            network: self.config.network.bitcoin(),
        };
        let invalid_target = || BumpError::InvalidTarget(format!("{target} sat/vB"));
        let mut data_gaps = facts.gaps.clone();
        let mut planned = Planner::new(&view, &owner, &previous, &settings, &[])
            .ok_or_else(invalid_target)?
            .plan();

        // A replacement whose change cannot pay gets a second try with the owner's coins.
        if planned.iter().any(|option| option.needs_more_coins) {
            match self.find_coins(&mut owner).await {
                Ok(coins) => {
                    for coin in &coins {
                        previous.insert(coin.outpoint.txid, coin.previous.clone());
                    }
                    planned = Planner::new(&view, &owner, &previous, &settings, &coins)
                        .ok_or_else(invalid_target)?
                        .plan();
                }
                Err(gap) => data_gaps.push(gap),
            }
        }
        if !facts.cluster_complete {
            data_gaps.push(
                "not every unconfirmed relative could be fetched: the minimums may be too low"
                    .to_owned(),
            );
        }
        let recommended = planned
            .iter()
            .find(|option| option.possible)
            .map(|option| option.kind);
        Ok(BumpPlan {
            txid: request.txid,
            target_sat_per_vb: target,
            current_effective_fee_rate_sat_per_vb: current,
            policy: options.policy_version,
            options: planned,
            recommended,
            data_gaps,
        })
    }

    /// Fetches `txid` and checks that it is unconfirmed and touches the owner's scripts.
    async fn owned_unconfirmed(
        &self,
        txid: Txid,
        owner: &Owner,
    ) -> Result<Arc<ChainTx>, BumpError> {
        let tx = self
            .doctor
            .source()
            .transaction(txid)
            .await?
            .ok_or(BumpError::NotFound(txid))?;
        if let crate::chain::TxStatus::Confirmed { block_height, .. } = tx.status {
            return Err(BumpError::Confirmed {
                txid,
                height: block_height,
            });
        }
        let spent = tx.prevouts.iter().map(|prevout| &prevout.script_pubkey);
        let paid = tx.tx.output.iter().map(|output| &output.script_pubkey);
        if !spent.chain(paid).any(|script| owner.owns(script).is_some()) {
            return Err(BumpError::NothingOwned(txid));
        }
        Ok(tx)
    }

    /// Turns the requested target into a rate in sat/vB.
    fn resolve_target(&self, target: Target, facts: &MempoolFacts) -> Result<Decimal, BumpError> {
        match target {
            Target::FeeRate(rate) if rate > Decimal::ZERO => Ok(rate),
            Target::FeeRate(rate) => Err(BumpError::InvalidTarget(format!(
                "{rate} sat/vB is not a positive fee rate"
            ))),
            Target::Blocks(0) => Err(BumpError::InvalidTarget(
                "0 blocks; give 1 or more".to_owned(),
            )),
            Target::Blocks(blocks) => Ok(rate_for_blocks(
                facts.mempool.as_deref(),
                facts.estimates.as_deref(),
                &self.doctor.options().policy,
                blocks,
            )),
        }
    }

    /// Fetches the transactions `tx` spends, with `tx` itself, for the PSBTs'
    /// `non_witness_utxo`. One that cannot be fetched is left out, and the PSBT that would
    /// need it reports that.
    async fn previous_transactions(&self, tx: &ChainTx) -> HashMap<Txid, Transaction> {
        let source = self.doctor.source();
        let parents = tx
            .tx
            .input
            .iter()
            .map(|input| source.transaction(input.previous_output.txid));
        let mut previous: HashMap<Txid, Transaction> = HashMap::from([(tx.txid, tx.tx.clone())]);
        for parent in join_all(parents).await.into_iter().flatten().flatten() {
            previous.insert(parent.txid, parent.tx.clone());
        }
        previous
    }

    /// Finds the owner's confirmed coins: the known ones, or a scan through Esplora. The
    /// error is a data gap for the plan.
    async fn find_coins(&self, owner: &mut Owner) -> Result<Vec<coins::Coin>, String> {
        match (&self.known_coins, &self.esplora) {
            (Some(known), _) => {
                let owned = known
                    .iter()
                    .filter(|coin| owner.owns(&coin.txout.script_pubkey).is_some());
                Ok(owned.cloned().collect())
            }
            (None, Some(client)) => {
                coins::confirmed_coins(owner, client, self.progress.as_ref()).await
            }
            (None, None) => {
                Err("looking up the owner's other coins needs an Esplora backend".to_owned())
            }
        }
    }
}
