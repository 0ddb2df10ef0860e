//! Several backends in order: each request goes to the first backend that is up, and a
//! backend that fails is skipped for a while.
//!
//! A failed backend is skipped for the base back-off, doubled for each failure in a row up
//! to 16 times the base. When every backend is being skipped, all of them are tried in
//! order anyway, because failing without a try gives the caller nothing.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::join_all;

use super::{
    BackendHealth, BackendState, ChainError, ChainSource, ChainTx, FeeEstimates, MempoolSnapshot,
    OutputSpend, RelayFees, TxStatus,
};
use crate::bitcoin::{OutPoint, Transaction, Txid};
use crate::telemetry;

/// Maximum skip, as a multiple of the base back-off.
const MAX_BACKOFF_FACTOR: u32 = 16;

/// Outcome of one backend's last requests.
#[derive(Debug, Clone, Default)]
struct Record {
    failures_in_row: u32,
    skip_until: Option<Instant>,
    tip_height: Option<u32>,
    latency: Option<Duration>,
    last_error: Option<String>,
}

struct Backend {
    source: Arc<dyn ChainSource>,
    record: Mutex<Record>,
}

/// A [`ChainSource`] that tries its backends in order.
pub struct FailoverSource {
    name: String,
    backends: Vec<Backend>,
    backoff: Duration,
}

impl FailoverSource {
    /// Creates a source over `backends`, tried in the order given; a failing backend is
    /// skipped for `backoff`, and longer while it keeps failing.
    ///
    /// # Panics
    ///
    /// Panics when `backends` is empty, since such a source could answer nothing.
    pub fn new(backends: Vec<Arc<dyn ChainSource>>, backoff: Duration) -> Self {
        assert!(!backends.is_empty(), "a failover source needs a backend");
        // One backend keeps its own name, so that a diagnosis names it the same way.
        let name = backends
            .iter()
            .map(|backend| backend.name())
            .collect::<Vec<_>>()
            .join(", then ");
        let backends = backends
            .into_iter()
            .map(|source| Backend {
                source,
                record: Mutex::new(Record::default()),
            })
            .collect();
        Self {
            name,
            backends,
            backoff,
        }
    }

    /// The backends, in order.
    pub fn backends(&self) -> Vec<Arc<dyn ChainSource>> {
        self.backends
            .iter()
            .map(|backend| backend.source.clone())
            .collect()
    }

    /// Sends `request` to each backend in turn until one succeeds.
    async fn first_success<T, F, Fut>(
        &self,
        method: &'static str,
        request: F,
    ) -> Result<T, ChainError>
    where
        F: Fn(Arc<dyn ChainSource>) -> Fut,
        Fut: Future<Output = Result<T, ChainError>>,
    {
        let now = Instant::now();
        let up: Vec<&Backend> = self
            .backends
            .iter()
            .filter(|backend| !backend.is_skipped(now))
            .collect();
        let order = if up.is_empty() {
            self.backends.iter().collect()
        } else {
            up
        };
        let mut errors = Vec::new();
        for backend in order {
            let started = Instant::now();
            let result = request(backend.source.clone()).await;
            let elapsed = started.elapsed();
            let name = backend.source.name();
            telemetry::backend_request(name, method, elapsed, result.as_ref().err());
            match result {
                Ok(value) => {
                    backend.succeeded(elapsed);
                    return Ok(value);
                }
                Err(error) => {
                    let skip = backend.failed(elapsed, &error, self.backoff);
                    tracing::warn!(backend = name, method, %error, skip_ms = u64::try_from(skip.as_millis()).unwrap_or(u64::MAX), "backend failed; trying the next one");
                    errors.push(error);
                }
            }
        }
        Err(combine(errors))
    }
}

impl Backend {
    fn is_skipped(&self, now: Instant) -> bool {
        self.record
            .lock()
            .map(|record| record.skip_until.is_some_and(|until| until > now))
            .unwrap_or(false)
    }

    fn succeeded(&self, elapsed: Duration) {
        if let Ok(mut record) = self.record.lock() {
            record.failures_in_row = 0;
            record.skip_until = None;
            record.latency = Some(elapsed);
            record.last_error = None;
        }
    }

    /// Records a failure and returns how long the backend is skipped.
    fn failed(&self, elapsed: Duration, error: &ChainError, backoff: Duration) -> Duration {
        let Ok(mut record) = self.record.lock() else {
            return Duration::ZERO;
        };
        record.failures_in_row = record.failures_in_row.saturating_add(1);
        let factor = 2u32
            .saturating_pow(record.failures_in_row - 1)
            .min(MAX_BACKOFF_FACTOR);
        let skip = backoff.saturating_mul(factor);
        record.skip_until = Some(Instant::now() + skip);
        record.latency = Some(elapsed);
        record.last_error = Some(error.to_string());
        skip
    }

    fn health(&self) -> BackendHealth {
        let record = self
            .record
            .lock()
            .map(|record| record.clone())
            .unwrap_or_default();
        let state = if record.last_error.is_some() {
            BackendState::Down
        } else {
            BackendState::Up
        };
        BackendHealth {
            backend: self.source.name().to_owned(),
            state,
            tip_height: record.tip_height,
            latency_ms: record
                .latency
                .and_then(|latency| u64::try_from(latency.as_millis()).ok()),
            last_error: record.last_error,
        }
    }

    /// Asks the backend for its tip and records the outcome. The probe gives up after
    /// [`PROBE_TIMEOUT`], so that a hanging backend cannot hold a readiness check for the
    /// full timeout of every retry.
    async fn probe(&self, backoff: Duration) -> BackendHealth {
        let started = Instant::now();
        let result = match tokio::time::timeout(PROBE_TIMEOUT, self.source.tip_height()).await {
            Ok(result) => result,
            Err(_) => Err(ChainError::Unavailable {
                backend: self.source.name().to_owned(),
                reason: format!("the health probe timed out after {PROBE_TIMEOUT:?}"),
            }),
        };
        let elapsed = started.elapsed();
        telemetry::backend_request(
            self.source.name(),
            "tip_height",
            elapsed,
            result.as_ref().err(),
        );
        match result {
            Ok(height) => {
                self.succeeded(elapsed);
                if let Ok(mut record) = self.record.lock() {
                    record.tip_height = Some(height);
                }
            }
            Err(error) => {
                self.failed(elapsed, &error, backoff);
            }
        }
        self.health()
    }
}

/// Longest a health probe waits for one backend's tip.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Merges the errors of every backend into one; it is unavailable unless every backend
/// returned inconsistent data.
fn combine(mut errors: Vec<ChainError>) -> ChainError {
    if errors.len() == 1 {
        if let Some(error) = errors.pop() {
            return error;
        }
    }
    let all_inconsistent = errors
        .iter()
        .all(|error| matches!(error, ChainError::Inconsistent { .. }));
    let text = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let backend = format!("(all {} of them)", errors.len());
    if all_inconsistent {
        ChainError::Inconsistent {
            backend,
            detail: text,
        }
    } else {
        ChainError::Unavailable {
            backend,
            reason: text,
        }
    }
}

/// Warnings about backends that disagree on the best block, such as "esplora … is at
/// height 329 but electrum … is at 327".
pub fn tip_warnings(health: &[BackendHealth]) -> Vec<String> {
    let tips: Vec<(&str, u32)> = health
        .iter()
        .filter(|backend| backend.state == BackendState::Up)
        .filter_map(|backend| Some((backend.backend.as_str(), backend.tip_height?)))
        .collect();
    let Some(&(first_name, first_tip)) = tips.first() else {
        return Vec::new();
    };
    tips.iter()
        .skip(1)
        .filter(|(_, tip)| *tip != first_tip)
        .map(|(name, tip)| {
            format!("{first_name} is at height {first_tip} but {name} is at height {tip}")
        })
        .collect()
}

#[async_trait]
impl ChainSource for FailoverSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn transaction(&self, txid: Txid) -> Result<Option<Arc<ChainTx>>, ChainError> {
        self.first_success("transaction", |source| async move {
            source.transaction(txid).await
        })
        .await
    }

    async fn raw_transaction(&self, txid: Txid) -> Result<Option<Arc<Transaction>>, ChainError> {
        self.first_success("raw_transaction", |source| async move {
            source.raw_transaction(txid).await
        })
        .await
    }

    async fn status(&self, txid: Txid) -> Result<Option<TxStatus>, ChainError> {
        self.first_success("status", |source| async move { source.status(txid).await })
            .await
    }

    async fn outspends(&self, txid: Txid) -> Result<Option<Arc<Vec<OutputSpend>>>, ChainError> {
        self.first_success(
            "outspends",
            |source| async move { source.outspends(txid).await },
        )
        .await
    }

    async fn output_spend(&self, outpoint: OutPoint) -> Result<Option<OutputSpend>, ChainError> {
        self.first_success("output_spend", |source| async move {
            source.output_spend(outpoint).await
        })
        .await
    }

    async fn mempool(&self) -> Result<Arc<MempoolSnapshot>, ChainError> {
        self.first_success("mempool", |source| async move { source.mempool().await })
            .await
    }

    async fn fee_estimates(&self) -> Result<Arc<FeeEstimates>, ChainError> {
        self.first_success("fee_estimates", |source| async move {
            source.fee_estimates().await
        })
        .await
    }

    async fn tip_height(&self) -> Result<u32, ChainError> {
        self.first_success(
            "tip_height",
            |source| async move { source.tip_height().await },
        )
        .await
    }

    async fn relay_fees(&self) -> Result<Option<RelayFees>, ChainError> {
        self.first_success(
            "relay_fees",
            |source| async move { source.relay_fees().await },
        )
        .await
    }

    async fn health(&self) -> Vec<BackendHealth> {
        join_all(
            self.backends
                .iter()
                .map(|backend| backend.probe(self.backoff)),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(backend: &str, state: BackendState, tip: Option<u32>) -> BackendHealth {
        BackendHealth {
            backend: backend.to_owned(),
            state,
            tip_height: tip,
            latency_ms: None,
            last_error: None,
        }
    }

    #[test]
    fn equal_tips_raise_no_warning() {
        let backends = [
            health("a", BackendState::Up, Some(329)),
            health("b", BackendState::Up, Some(329)),
        ];
        assert!(tip_warnings(&backends).is_empty());
    }

    #[test]
    fn different_tips_are_named() {
        let backends = [
            health("a", BackendState::Up, Some(329)),
            health("b", BackendState::Up, Some(327)),
            health("c", BackendState::Down, None),
        ];
        assert_eq!(
            tip_warnings(&backends),
            vec!["a is at height 329 but b is at height 327".to_owned()]
        );
    }

    #[test]
    fn mixed_failures_are_unavailable() {
        let errors = vec![
            ChainError::Inconsistent {
                backend: "a".to_owned(),
                detail: "bad txid".to_owned(),
            },
            ChainError::Unavailable {
                backend: "b".to_owned(),
                reason: "timed out".to_owned(),
            },
        ];
        let combined = combine(errors);
        assert!(matches!(combined, ChainError::Unavailable { .. }));
        assert!(combined.to_string().contains("bad txid"));
        assert!(combined.to_string().contains("timed out"));
    }
}
