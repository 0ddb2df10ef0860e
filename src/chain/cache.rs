//! A cache in front of any [`ChainSource`].
//!
//! Confirmed transactions change only in a reorganisation, so they are kept long; mempool
//! facts (unconfirmed transactions, outspends, the histogram, estimates, the tip) are kept
//! for a few seconds. Concurrent requests for the same key share one backend call, because
//! moka runs a single loader per key and hands its result to every waiter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;

use super::{ChainError, ChainSource, ChainTx, FeeEstimates, MempoolSnapshot, OutputSpend};
use crate::bitcoin::Txid;

/// How long cached facts live.
#[derive(Debug, Clone, Copy)]
pub struct CacheOptions {
    /// Lifetime of a confirmed transaction.
    pub confirmed_ttl: Duration,
    /// Lifetime of mempool facts and of a "not found".
    pub mempool_ttl: Duration,
    /// Maximum number of entries.
    pub max_entries: u64,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            confirmed_ttl: Duration::from_secs(3600),
            mempool_ttl: Duration::from_secs(10),
            max_entries: 100_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Transaction(Txid),
    Outspends(Txid),
    Mempool,
    FeeEstimates,
    TipHeight,
}

#[derive(Debug, Clone)]
enum Value {
    Transaction(Option<Arc<ChainTx>>),
    Outspends(Option<Arc<Vec<OutputSpend>>>),
    Mempool(Arc<MempoolSnapshot>),
    FeeEstimates(Arc<FeeEstimates>),
    TipHeight(u32),
}

struct Lifetimes(CacheOptions);

impl Expiry<Key, Value> for Lifetimes {
    fn expire_after_create(&self, _key: &Key, value: &Value, _now: Instant) -> Option<Duration> {
        let confirmed = match value {
            Value::Transaction(Some(tx)) => tx.status.is_confirmed(),
            _ => false,
        };
        Some(if confirmed {
            self.0.confirmed_ttl
        } else {
            self.0.mempool_ttl
        })
    }
}

/// A [`ChainSource`] that answers from memory when it can.
pub struct CachedSource {
    inner: Arc<dyn ChainSource>,
    cache: Cache<Key, Value>,
}

impl CachedSource {
    /// Wraps `inner` with a cache configured by `options`.
    pub fn new(inner: Arc<dyn ChainSource>, options: CacheOptions) -> Self {
        let cache = Cache::builder()
            .max_capacity(options.max_entries)
            .expire_after(Lifetimes(options))
            .build();
        Self { inner, cache }
    }

    /// The source behind the cache.
    pub fn inner(&self) -> &Arc<dyn ChainSource> {
        &self.inner
    }

    async fn load<F>(&self, key: Key, loader: F) -> Result<Value, ChainError>
    where
        F: Future<Output = Result<Value, ChainError>> + Send,
    {
        self.cache
            .try_get_with(key, loader)
            .await
            .map_err(|error| (*error).clone())
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
