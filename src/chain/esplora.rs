//! The Esplora backend: Blockstream's and mempool.space's REST API over HTTP(S).
//!
//! Responses are decoded into `esplora_client`'s API types and then checked: the raw
//! transaction is fetched beside its JSON so that the txid can be recomputed and the fee
//! recomputed from the previous outputs.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bdk_esplora::esplora_client::api::{
    MempoolStats, OutputStatus, Tx, TxStatus as EsploraTxStatus,
};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use super::{
    ChainError, ChainSource, ChainTx, FeeEstimates, MempoolSnapshot, OutputSpend, TxStatus,
};
use crate::bitcoin::{Amount, Transaction, TxOut, Txid, consensus};

/// Connection and retry settings of the Esplora client.
#[derive(Debug, Clone)]
pub struct EsploraOptions {
    /// Base URL, such as `https://host/api`, without a trailing slash.
    pub url: String,
    /// Time limit for one HTTP request.
    pub timeout: Duration,
    /// Retries after a 429, a 5xx or a failed connection.
    pub max_retries: u32,
    /// Requests allowed in flight at once.
    pub max_in_flight: usize,
    /// First back-off delay; it doubles with each retry.
    pub backoff: Duration,
    /// Longest `Retry-After` that is honoured; a longer one fails the request at once.
    pub max_retry_after: Duration,
}

impl EsploraOptions {
    /// Options with the defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into().trim_end_matches('/').to_owned(),
            timeout: Duration::from_secs(10),
            max_retries: 2,
            max_in_flight: 8,
            backoff: Duration::from_millis(250),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

/// An Esplora REST client that checks every response.
#[derive(Debug)]
pub struct EsploraSource {
    name: String,
    options: EsploraOptions,
    client: reqwest::Client,
    in_flight: Semaphore,
    requests: AtomicU64,
}

/// One failed attempt: whether it is worth retrying, and after how long.
struct AttemptError {
    error: ChainError,
    retry_after: Option<Duration>,
    retryable: bool,
}

impl EsploraSource {
    /// Creates a client for the server at `options.url`.
    ///
    /// # Errors
    ///
    /// Returns [`ChainError::Unavailable`] when the HTTP client cannot be built.
    pub fn new(options: EsploraOptions) -> Result<Self, ChainError> {
        let name = format!("esplora {}", crate::config::redact_url(&options.url));
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .user_agent(concat!("txdoctor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| ChainError::Unavailable {
                backend: name.clone(),
                reason: format!("failed to build the HTTP client: {error}"),
            })?;
        let in_flight = Semaphore::new(options.max_in_flight.max(1));
        Ok(Self {
            name,
            options,
            client,
            in_flight,
            requests: AtomicU64::new(0),
        })
    }

    /// Returns the shared HTTP client, for `esplora_client::AsyncClient::from_client`.
    pub fn http_client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Returns the base URL.
    pub fn url(&self) -> &str {
        &self.options.url
    }

    /// Number of HTTP requests sent so far, retries included.
    pub fn requests_made(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn unavailable(&self, reason: String) -> ChainError {
        ChainError::unavailable(&self.name, reason)
    }

    fn inconsistent(&self, detail: String) -> ChainError {
        ChainError::inconsistent(&self.name, detail)
    }

    /// Sends `GET path`, retrying as configured. Returns `None` on 404.
    async fn get_text(&self, path: &str) -> Result<Option<String>, ChainError> {
        let mut attempt = 0;
        loop {
            match self.attempt(path).await {
                Ok(body) => return Ok(body),
                Err(failure) if failure.retryable && attempt < self.options.max_retries => {
                    let delay = failure.retry_after.unwrap_or_else(|| self.backoff(attempt));
                    if delay > self.options.max_retry_after {
                        return Err(failure.error);
                    }
                    tracing::debug!(backend = %self.name, path, attempt, ?delay, error = %failure.error, "retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(failure) => return Err(failure.error),
            }
        }
    }

    /// Exponential back-off with up to 50% jitter, from the clock's sub-second noise.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .options
            .backoff
            .saturating_mul(2u32.saturating_pow(attempt));
        let noise = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        base + base.mul_f64(f64::from(noise % 1000) / 2000.0)
    }

    async fn attempt(&self, path: &str) -> Result<Option<String>, AttemptError> {
        let transient = |error: ChainError| AttemptError {
            error,
            retry_after: None,
            retryable: true,
        };
        let _permit =
            self.in_flight.acquire().await.map_err(|_| {
                transient(self.unavailable("the client is shutting down".to_owned()))
            })?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let url = format!("{}{}", self.options.url, path);
        let response = self.client.get(&url).send().await.map_err(|error| {
            let reason = if error.is_timeout() {
                format!("GET {path} timed out after {:?}", self.options.timeout)
            } else {
                format!("GET {path} failed: {}", without_url(&error))
            };
            transient(self.unavailable(reason))
        })?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            // Esplora returns "Transaction not found" for an unknown transaction. Any other
            // 404, such as "endpoint does not exist" from a wrong base path, is a fault
            // and must not read as a missing transaction.
            let body = response.text().await.unwrap_or_default();
            if body.to_lowercase().contains("not found") {
                return Ok(None);
            }
            let reason = format!(
                "GET {path} returned HTTP 404 {:?}; check the base URL",
                truncate(body.trim())
            );
            let error = self.unavailable(reason);
            return Err(AttemptError {
                error,
                retry_after: None,
                retryable: false,
            });
        }
        if !status.is_success() {
            let retry_after = retry_after(response.headers());
            let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            let error = self.unavailable(format!("GET {path} returned HTTP {status}"));
            return Err(AttemptError {
                error,
                retry_after,
                retryable,
            });
        }
        let body = response.text().await.map_err(|error| {
            transient(self.unavailable(format!("GET {path} body failed: {}", without_url(&error))))
        })?;
        Ok(Some(body))
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, ChainError> {
        let Some(body) = self.get_text(path).await? else {
            return Ok(None);
        };
        serde_json::from_str(&body)
            .map(Some)
            .map_err(|error| self.inconsistent(format!("malformed JSON from GET {path}: {error}")))
    }

    async fn get_required_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ChainError> {
        self.get_json(path)
            .await?
            .ok_or_else(|| self.unavailable(format!("GET {path} returned HTTP 404")))
    }

    async fn fetch_raw(&self, txid: Txid) -> Result<Option<Transaction>, ChainError> {
        let path = format!("/tx/{txid}/hex");
        let Some(hex) = self.get_text(&path).await? else {
            return Ok(None);
        };
        consensus::encode::deserialize_hex(hex.trim())
            .map(Some)
            .map_err(|error| {
                self.inconsistent(format!("malformed transaction from GET {path}: {error}"))
            })
    }

    fn checked_transaction(
        &self,
        txid: Txid,
        info: Tx,
        tx: Transaction,
    ) -> Result<ChainTx, ChainError> {
        // The raw bytes are the evidence: check that they are what was requested before
        // comparing them with the JSON.
        let actual = tx.compute_txid();
        if actual != txid {
            return Err(self.inconsistent(format!("requested transaction {txid} but got {actual}")));
        }
        if info.vin.len() != tx.input.len() {
            let detail = format!(
                "GET /tx/{txid} lists {} inputs, the raw transaction {}",
                info.vin.len(),
                tx.input.len()
            );
            return Err(self.inconsistent(detail));
        }
        let mut prevouts = Vec::with_capacity(info.vin.len());
        for (vin, input) in info.vin.iter().zip(&tx.input) {
            if vin.txid != input.previous_output.txid || vin.vout != input.previous_output.vout {
                let detail = format!(
                    "GET /tx/{txid} lists input {}:{} that the raw transaction does not spend",
                    vin.txid, vin.vout
                );
                return Err(self.inconsistent(detail));
            }
            let prevout = match &vin.prevout {
                Some(prevout) => TxOut {
                    value: Amount::from_sat(prevout.value),
                    script_pubkey: prevout.scriptpubkey.clone(),
                },
                // A coinbase input spends nothing.
                None if vin.is_coinbase => TxOut {
                    value: Amount::ZERO,
                    script_pubkey: Default::default(),
                },
                None => {
                    let detail = format!(
                        "GET /tx/{txid} omits the previous output of {}:{}",
                        vin.txid, vin.vout
                    );
                    return Err(self.inconsistent(detail));
                }
            };
            prevouts.push(prevout);
        }
        let status = match (info.status.confirmed, info.status.block_height) {
            (true, Some(block_height)) => TxStatus::Confirmed {
                block_height,
                block_hash: info.status.block_hash,
                block_time: info.status.block_time,
            },
            (true, None) => {
                return Err(
                    self.inconsistent(format!("GET /tx/{txid} is confirmed without a height"))
                );
            }
            (false, _) => TxStatus::Unconfirmed,
        };
        let coinbase = tx.is_coinbase();
        let reported_fee = (!coinbase).then_some(info.fee);
        if coinbase {
            let outputs = tx.output.iter().map(|output| output.value).sum();
            prevouts[0].value = outputs;
        }
        ChainTx::checked(&self.name, txid, tx, prevouts, reported_fee, status)
    }
}

/// Drops the URL from a reqwest error: it repeats what the message already names.
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    text
}

/// Reads a `Retry-After` header given in seconds.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[async_trait]
impl ChainSource for EsploraSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn raw_transaction(&self, txid: Txid) -> Result<Option<Arc<Transaction>>, ChainError> {
        let Some(tx) = self.fetch_raw(txid).await? else {
            return Ok(None);
        };
        let actual = tx.compute_txid();
        if actual != txid {
            return Err(self.inconsistent(format!("requested transaction {txid} but got {actual}")));
        }
        Ok(Some(Arc::new(tx)))
    }

    async fn transaction(&self, txid: Txid) -> Result<Option<Arc<ChainTx>>, ChainError> {
        let info_path = format!("/tx/{txid}");
        let (info, raw) = tokio::try_join!(self.get_json::<Tx>(&info_path), self.fetch_raw(txid))?;
        match (info, raw) {
            (Some(info), Some(raw)) => {
                Ok(Some(Arc::new(self.checked_transaction(txid, info, raw)?)))
            }
            (None, None) => Ok(None),
            _ => Err(self.inconsistent(format!(
                "GET /tx/{txid} and GET /tx/{txid}/hex disagree on whether it exists"
            ))),
        }
    }

    async fn status(&self, txid: Txid) -> Result<Option<TxStatus>, ChainError> {
        let path = format!("/tx/{txid}/status");
        let Some(status) = self.get_json::<EsploraTxStatus>(&path).await? else {
            return Ok(None);
        };
        match (status.confirmed, status.block_height) {
            (true, Some(block_height)) => Ok(Some(TxStatus::Confirmed {
                block_height,
                block_hash: status.block_hash,
                block_time: status.block_time,
            })),
            (true, None) => {
                Err(self.inconsistent(format!("GET {path} is confirmed without a height")))
            }
            (false, _) => Ok(Some(TxStatus::Unconfirmed)),
        }
    }

    async fn outspends(&self, txid: Txid) -> Result<Option<Arc<Vec<OutputSpend>>>, ChainError> {
        let path = format!("/tx/{txid}/outspends");
        let Some(statuses) = self.get_json::<Vec<OutputStatus>>(&path).await? else {
            return Ok(None);
        };
        let mut spends = Vec::with_capacity(statuses.len());
        for status in statuses {
            let spend = match (status.spent, status.txid, status.vin) {
                (false, _, _) => OutputSpend::Unspent,
                (true, Some(spender), Some(vin)) => OutputSpend::Spent {
                    txid: spender,
                    vin: u32::try_from(vin).map_err(|_| {
                        self.inconsistent(format!("GET {path} has input index {vin}"))
                    })?,
                    confirmed: status.status.is_some_and(|status| status.confirmed),
                },
                (true, _, _) => {
                    return Err(self.inconsistent(format!(
                        "GET {path} marks an output spent without naming the spender"
                    )));
                }
            };
            spends.push(spend);
        }
        Ok(Some(Arc::new(spends)))
    }

    async fn mempool(&self) -> Result<Arc<MempoolSnapshot>, ChainError> {
        let stats: MempoolStats = self.get_required_json("/mempool").await?;
        let mut histogram = Vec::with_capacity(stats.fee_histogram.len());
        for (rate, vsize) in stats.fee_histogram {
            let rate = Decimal::from_f64(rate)
                .filter(|rate| !rate.is_sign_negative())
                .ok_or_else(|| self.inconsistent(format!("GET /mempool has fee rate {rate}")))?;
            histogram.push((rate.round_dp(6), vsize as u64));
        }
        Ok(Arc::new(MempoolSnapshot {
            count: Some(stats.count as u64),
            vsize: stats.vsize as u64,
            total_fee_sat: Some(stats.total_fee),
            histogram,
        }))
    }

    async fn fee_estimates(&self) -> Result<Arc<FeeEstimates>, ChainError> {
        let raw: std::collections::HashMap<String, f64> =
            self.get_required_json("/fee-estimates").await?;
        let mut estimates = FeeEstimates::new();
        for (target, rate) in raw {
            let parsed_target = u16::from_str(&target).ok();
            let parsed_rate = Decimal::from_f64(rate).filter(|rate| !rate.is_sign_negative());
            let (Some(target), Some(rate)) = (parsed_target, parsed_rate) else {
                return Err(
                    self.inconsistent(format!("GET /fee-estimates has entry {target}: {rate}"))
                );
            };
            estimates.insert(target, rate.round_dp(6));
        }
        Ok(Arc::new(estimates))
    }

    async fn tip_height(&self) -> Result<u32, ChainError> {
        let path = "/blocks/tip/height";
        let body = self
            .get_text(path)
            .await?
            .ok_or_else(|| self.unavailable(format!("GET {path} returned HTTP 404")))?;
        body.trim().parse().map_err(|_| {
            self.inconsistent(format!(
                "GET {path} returned {:?}, not a height",
                truncate(&body)
            ))
        })
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}
