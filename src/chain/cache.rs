//! A cache in front of any [`ChainSource`].
//!
//! Confirmed transactions change only in a reorganisation, so they are kept long; mempool
//! facts (unconfirmed transactions, outspends, the histogram, estimates, the tip) are kept
//! for a few seconds. Concurrent requests for the same key share one backend call, because
//! moka runs a single loader per key and hands its result to every waiter.
//!
//! Every fact fetched is also kept, for `stale_ttl`, in a second store of last known
//! values. When the source behind the cache is unavailable, a fact from that store is
//! served instead and recorded with its age through [`super::stale`], so that the
//! diagnosis says what is old. Inconsistent answers are never papered over this way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;

use super::stale::{self, StaleFact};
use super::{
    BackendHealth, ChainError, ChainSource, ChainTx, FeeEstimates, MempoolSnapshot, OutputSpend,
    RelayFees, TxStatus,
};
use crate::bitcoin::{OutPoint, Transaction, Txid};
use crate::telemetry;

/// How long cached facts live.
#[derive(Debug, Clone, Copy)]
pub struct CacheOptions {
    /// Lifetime of a confirmed transaction.
    pub confirmed_ttl: Duration,
    /// Lifetime of mempool facts and of a "not found".
    pub mempool_ttl: Duration,
    /// Maximum number of entries.
    pub max_entries: u64,
    /// How long a fetched fact may still be served, marked stale, when the source is
    /// unavailable; zero never serves stale facts.
    pub stale_ttl: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            confirmed_ttl: Duration::from_secs(3600),
            mempool_ttl: Duration::from_secs(10),
            max_entries: 100_000,
            stale_ttl: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Transaction(Txid),
    RawTransaction(Txid),
    Status(Txid),
    Outspends(Txid),
    OutputSpend(OutPoint),
    Mempool,
    FeeEstimates,
    TipHeight,
}

impl Key {
    /// Returns the kind of fact, as a metric label.
    fn kind(&self) -> &'static str {
        match self {
            Key::Transaction(_) => "transaction",
            Key::RawTransaction(_) => "raw_transaction",
            Key::Status(_) => "status",
            Key::Outspends(_) => "outspends",
            Key::OutputSpend(_) => "output_spend",
            Key::Mempool => "mempool",
            Key::FeeEstimates => "fee_estimates",
            Key::TipHeight => "tip_height",
        }
    }

    /// Describes the fact, for a stale-data note.
    fn describe(&self) -> String {
        match self {
            Key::Transaction(txid) => format!("transaction {txid}"),
            Key::RawTransaction(txid) => format!("the raw transaction {txid}"),
            Key::Status(txid) => format!("the status of {txid}"),
            Key::Outspends(txid) => format!("the spenders of {txid}'s outputs"),
            Key::OutputSpend(outpoint) => format!("the spender of {outpoint}"),
            Key::Mempool => "the mempool histogram".to_owned(),
            Key::FeeEstimates => "the fee estimates".to_owned(),
            Key::TipHeight => "the tip height".to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
enum Value {
    Transaction(Option<Arc<ChainTx>>),
    RawTransaction(Option<Arc<Transaction>>),
    Status(Option<TxStatus>),
    Outspends(Option<Arc<Vec<OutputSpend>>>),
    OutputSpend(Option<OutputSpend>),
    Mempool(Arc<MempoolSnapshot>),
    FeeEstimates(Arc<FeeEstimates>),
    TipHeight(u32),
}

struct Lifetimes(CacheOptions);

impl Expiry<Key, Value> for Lifetimes {
    fn expire_after_create(&self, _key: &Key, value: &Value, _now: Instant) -> Option<Duration> {
        let confirmed = match value {
            Value::Transaction(Some(tx)) => tx.status.is_confirmed(),
            // The bytes behind a txid never change.
            Value::RawTransaction(Some(_)) => true,
            Value::Status(Some(status)) => status.is_confirmed(),
            _ => false,
        };
        Some(if confirmed {
            self.0.confirmed_ttl
        } else {
            self.0.mempool_ttl
        })
    }
}

/// A [`ChainSource`] that returns facts from memory when it can.
pub struct CachedSource {
    inner: Arc<dyn ChainSource>,
    cache: Cache<Key, Value>,
    last_known: Cache<Key, (Value, Instant)>,
}

impl CachedSource {
    /// Wraps `inner` with a cache configured by `options`.
    pub fn new(inner: Arc<dyn ChainSource>, options: CacheOptions) -> Self {
        let cache = Cache::builder()
            .max_capacity(options.max_entries)
            .expire_after(Lifetimes(options))
            .build();
        let last_known = Cache::builder()
            .max_capacity(options.max_entries)
            .time_to_live(options.stale_ttl)
            .build();
        Self {
            inner,
            cache,
            last_known,
        }
    }

    /// Returns the source behind the cache.
    pub fn inner(&self) -> &Arc<dyn ChainSource> {
        &self.inner
    }

    async fn load<F>(&self, key: Key, loader: F) -> Result<Value, ChainError>
    where
        F: Future<Output = Result<Value, ChainError>> + Send,
    {
        let kind = key.kind();
        let entry = self
            .cache
            .entry(key.clone())
            .or_try_insert_with(loader)
            .await;
        match entry {
            Ok(entry) => {
                telemetry::cache_lookup(kind, !entry.is_fresh());
                if entry.is_fresh() {
                    self.last_known
                        .insert(key, (entry.value().clone(), Instant::now()))
                        .await;
                }
                Ok(entry.into_value())
            }
            Err(error) => {
                telemetry::cache_lookup(kind, false);
                let error = (*error).clone();
                if !matches!(error, ChainError::Unavailable { .. }) {
                    return Err(error);
                }
                let Some((value, fetched_at)) = self.last_known.get(&key).await else {
                    return Err(error);
                };
                stale::record(StaleFact {
                    what: key.describe(),
                    age: fetched_at.elapsed(),
                    reason: error.to_string(),
                });
                Ok(value)
            }
        }
    }
}

/// Turns a cached value of the wrong variant into an error rather than a panic; the keys
/// and variants are paired in this file, so it cannot happen short of a bug here.
fn mismatch(source: &CachedSource) -> ChainError {
    ChainError::Inconsistent {
        backend: source.inner.name().to_owned(),
        detail: "the cache returned a value of the wrong kind".to_owned(),
    }
}

#[async_trait]
impl ChainSource for CachedSource {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn transaction(&self, txid: Txid) -> Result<Option<Arc<ChainTx>>, ChainError> {
        let loader = async { self.inner.transaction(txid).await.map(Value::Transaction) };
        match self.load(Key::Transaction(txid), loader).await? {
            Value::Transaction(tx) => Ok(tx),
            _ => Err(mismatch(self)),
        }
    }

    async fn raw_transaction(&self, txid: Txid) -> Result<Option<Arc<Transaction>>, ChainError> {
        // A transaction fetched already carries its raw form.
        if let Some(Value::Transaction(Some(tx))) = self.cache.get(&Key::Transaction(txid)).await {
            return Ok(Some(Arc::new(tx.tx.clone())));
        }
        let loader = async {
            self.inner
                .raw_transaction(txid)
                .await
                .map(Value::RawTransaction)
        };
        match self.load(Key::RawTransaction(txid), loader).await? {
            Value::RawTransaction(tx) => Ok(tx),
            _ => Err(mismatch(self)),
        }
    }

    async fn status(&self, txid: Txid) -> Result<Option<TxStatus>, ChainError> {
        // A transaction fetched already carries its status.
        if let Some(Value::Transaction(tx)) = self.cache.get(&Key::Transaction(txid)).await {
            telemetry::cache_lookup(Key::Status(txid).kind(), true);
            return Ok(tx.map(|tx| tx.status));
        }
        let loader = async { self.inner.status(txid).await.map(Value::Status) };
        match self.load(Key::Status(txid), loader).await? {
            Value::Status(status) => Ok(status),
            _ => Err(mismatch(self)),
        }
    }

    async fn output_spend(&self, outpoint: OutPoint) -> Result<Option<OutputSpend>, ChainError> {
        let loader = async {
            self.inner
                .output_spend(outpoint)
                .await
                .map(Value::OutputSpend)
        };
        match self.load(Key::OutputSpend(outpoint), loader).await? {
            Value::OutputSpend(spend) => Ok(spend),
            _ => Err(mismatch(self)),
        }
    }

    async fn relay_fees(&self) -> Result<Option<RelayFees>, ChainError> {
        self.inner.relay_fees().await
    }

    async fn health(&self) -> Vec<BackendHealth> {
        self.inner.health().await
    }

    async fn outspends(&self, txid: Txid) -> Result<Option<Arc<Vec<OutputSpend>>>, ChainError> {
        let loader = async { self.inner.outspends(txid).await.map(Value::Outspends) };
        match self.load(Key::Outspends(txid), loader).await? {
            Value::Outspends(spends) => Ok(spends),
            _ => Err(mismatch(self)),
        }
    }

    async fn mempool(&self) -> Result<Arc<MempoolSnapshot>, ChainError> {
        let loader = async { self.inner.mempool().await.map(Value::Mempool) };
        match self.load(Key::Mempool, loader).await? {
            Value::Mempool(mempool) => Ok(mempool),
            _ => Err(mismatch(self)),
        }
    }

    async fn fee_estimates(&self) -> Result<Arc<FeeEstimates>, ChainError> {
        let loader = async { self.inner.fee_estimates().await.map(Value::FeeEstimates) };
        match self.load(Key::FeeEstimates, loader).await? {
            Value::FeeEstimates(estimates) => Ok(estimates),
            _ => Err(mismatch(self)),
        }
    }

    async fn tip_height(&self) -> Result<u32, ChainError> {
        let loader = async { self.inner.tip_height().await.map(Value::TipHeight) };
        match self.load(Key::TipHeight, loader).await? {
            Value::TipHeight(height) => Ok(height),
            _ => Err(mismatch(self)),
        }
    }
}
