//! The Electrum backend: electrs, Fulcrum or ElectrumX over TCP (`tcp://`) or TLS (`ssl://`).
//!
//! The Electrum protocol has no "get mempool entry" and no input values, so every fact is
//! assembled and checked here:
//!
//! - a transaction's fee is inputs minus outputs, with the previous transactions fetched in
//!   one batch and their txids checked;
//! - its status comes from the history of its output scripts, where the server lists it at
//!   its block height, or at height 0 or -1 while it is in the mempool;
//! - who spends an output comes from the history of that output's script: each candidate is
//!   fetched and its inputs are checked;
//! - block hash and block time are not in a history entry, and the mempool's transaction
//!   count and total fee are not in the protocol at all, so they are left unknown.
//!
//! `electrum-client` is blocking, so every call runs on tokio's blocking pool, behind a
//! semaphore that caps the requests in flight and a timeout that bounds the wait.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use electrum_client::{Client, ConfigBuilder, ElectrumApi, GetHistoryRes, Param};
use rust_decimal::Decimal;
use tokio::sync::Semaphore;

use super::{
    ChainError, ChainSource, ChainTx, FeeEstimates, MempoolSnapshot, OutputSpend, RelayFees,
    TxStatus,
};
use crate::bitcoin::{OutPoint, ScriptBuf, Transaction, TxOut, Txid, consensus};

/// Confirmation targets asked of `blockchain.estimatefee`, in blocks.
const ESTIMATE_TARGETS: [u16; 4] = [1, 2, 6, 144];

/// Satoshis per vbyte in one BTC per kvB, the unit of Electrum's fee rates.
const SAT_PER_VB_PER_BTC_PER_KVB: u32 = 100_000;

/// Connection settings of the Electrum client.
#[derive(Debug, Clone)]
pub struct ElectrumOptions {
    /// Server URL: `tcp://host:port` or `ssl://host:port`.
    pub url: String,
    /// Time limit for one call, connection and protocol negotiation included.
    pub timeout: Duration,
    /// Calls allowed in flight at once.
    pub max_in_flight: usize,
    /// Whether to verify an `ssl://` server's certificate: it must chain to a root in
    /// webpki-roots and name the host. Off accepts any certificate, self-signed ones
    /// included, so the connection is encrypted but the server is not authenticated.
    pub validate_domain: bool,
}

impl ElectrumOptions {
    /// Options with the defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: Duration::from_secs(10),
            max_in_flight: 8,
            validate_domain: true,
        }
    }
}

/// Idle connections. A call takes one for itself and puts it back when it is done, unless
/// the connection failed.
///
/// NOTE: each connection serves one call at a time, because electrum-client 0.25.2 can
/// deadlock when several threads batch on one connection. The thread that finishes
/// reading wakes the waiter of any pending request, which may belong to a thread blocked
/// on another of its requests, and then no thread reads the socket. The replay tests hung
/// this way, and no socket timeout fired.
type ClientPool = Arc<Mutex<Vec<Client>>>;

/// An Electrum client that checks every response.
pub struct ElectrumSource {
    name: String,
    options: ElectrumOptions,
    idle: ClientPool,
    in_flight: Arc<Semaphore>,
    requests: AtomicU64,
}

impl std::fmt::Debug for ElectrumSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ElectrumSource")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A failed call, before it is turned into a [`ChainError`].
enum CallError {
    /// The server returned a JSON-RPC error object.
    Server(serde_json::Value),
    /// The response could not be decoded.
    Malformed(String),
    /// The connection failed, closed or timed out.
    Transport(String),
}

/// An error of electrum-client, by the step that raised it.
enum Failure {
    /// Connecting, the TLS handshake and the `server.version` negotiation.
    Connect(electrum_client::Error),
    /// The call itself, on a connected client.
    Call(electrum_client::Error),
}

impl ElectrumSource {
    /// Creates a client for the server at `options.url`; it connects on first use.
    ///
    /// # Errors
    ///
    /// Returns [`ChainError::Unavailable`] when the URL is not `tcp://` or `ssl://`, or is
    /// an `ssl://` URL whose host is an IPv6 address.
    pub fn new(options: ElectrumOptions) -> Result<Self, ChainError> {
        let name = format!("electrum {}", crate::config::redact_url(&options.url));
        if !options.url.starts_with("tcp://") && !options.url.starts_with("ssl://") {
            return Err(ChainError::Unavailable {
                backend: name,
                reason: "invalid Electrum URL: expected tcp://host:port or ssl://host:port"
                    .to_owned(),
            });
        }
        // NOTE: electrum-client 0.25.2 takes the TLS server name to be the text before the
        // first ':', which is "[" for an IPv6 address, so every connection would fail with
        // a misleading "invalid domain name" error.
        if options.url.starts_with("ssl://[") {
            return Err(ChainError::Unavailable {
                backend: name,
                reason: "unsupported Electrum URL: electrum-client cannot open TLS to an IPv6 \
                         address, so use a host name that resolves to it, or tcp://"
                    .to_owned(),
            });
        }
        let in_flight = Arc::new(Semaphore::new(options.max_in_flight.max(1)));
        Ok(Self {
            name,
            options,
            idle: Arc::new(Mutex::new(Vec::new())),
            in_flight,
            requests: AtomicU64::new(0),
        })
    }

    /// Number of JSON-RPC requests sent so far; a batch counts one per request in it.
    pub fn requests_made(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn unavailable(&self, reason: String) -> ChainError {
        ChainError::unavailable(&self.name, reason)
    }

    fn inconsistent(&self, detail: String) -> ChainError {
        ChainError::inconsistent(&self.name, detail)
    }

    /// Requests sent together at most: batches are split into chunks of this size, so
    /// that one batch never puts more requests in flight than the limit allows.
    fn batch_limit(&self) -> usize {
        self.options.max_in_flight.max(1)
    }

    /// Runs `work` on the blocking pool with a connected client, sending `requests`
    /// JSON-RPC requests, at most [`Self::batch_limit`] of them at a time.
    ///
    /// The permits travel with the blocking task, so that a call abandoned after its
    /// timeout still counts against the in-flight limit until its socket gives up too.
    async fn call<T, F>(&self, what: &str, requests: usize, work: F) -> Result<T, CallError>
    where
        T: Send + 'static,
        F: FnOnce(&Client) -> Result<T, electrum_client::Error> + Send + 'static,
    {
        let permits = u32::try_from(requests.clamp(1, self.batch_limit())).unwrap_or(1);
        let permit = self
            .in_flight
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| CallError::Transport("the client is shutting down".to_owned()))?;
        self.requests.fetch_add(requests as u64, Ordering::Relaxed);
        let idle = self.idle.clone();
        let options = self.options.clone();
        let tls = options.url.starts_with("ssl://");
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let client = take_or_connect(&idle, &options).map_err(Failure::Connect)?;
            let result = work(&client).map_err(Failure::Call);
            // A server error leaves the connection usable; anything else may leave it
            // half-read, so it is closed.
            let reusable = match &result {
                Ok(_) => true,
                Err(error) => matches!(error, Failure::Call(electrum_client::Error::Protocol(_))),
            };
            if reusable {
                if let Ok(mut idle) = idle.lock() {
                    idle.push(client);
                }
            }
            result
        });
        match tokio::time::timeout(self.options.timeout, task).await {
            Err(_) => Err(CallError::Transport(format!(
                "{what} timed out after {:?}",
                self.options.timeout
            ))),
            Ok(Err(join_error)) => Err(CallError::Transport(format!(
                "{what} failed on the blocking pool: {join_error}"
            ))),
            Ok(Ok(result)) => result.map_err(|failure| match failure {
                Failure::Connect(error) if tls => classify_tls_connect(what, error),
                Failure::Connect(error) | Failure::Call(error) => classify(what, error),
            }),
        }
    }

    /// Converts a failed call into the error returned to the caller.
    fn chain_error(&self, error: CallError) -> ChainError {
        match error {
            CallError::Server(value) => self.unavailable(format!("the server returned {value}")),
            CallError::Malformed(detail) => self.inconsistent(detail),
            CallError::Transport(reason) => self.unavailable(reason),
        }
    }

    /// Fetches raw transactions in one batch and checks each txid. Returns `None` when the
    /// server reports a txid as not found, because one unknown txid fails the whole batch.
    async fn raw_transactions(
        &self,
        txids: &[Txid],
    ) -> Result<Option<Vec<Transaction>>, ChainError> {
        if txids.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let owned = txids.to_vec();
        let chunk = self.batch_limit();
        let what = format!("blockchain.transaction.get of {}", list(txids));
        let result = self
            .call(&what, txids.len(), move |client| {
                let mut raws = Vec::with_capacity(owned.len());
                for txids in owned.chunks(chunk) {
                    raws.extend(client.batch_transaction_get_raw(txids.iter())?);
                }
                Ok(raws)
            })
            .await;
        let raws = match result {
            Ok(raws) => raws,
            Err(CallError::Server(value)) if is_not_found(&value) => return Ok(None),
            Err(error) => return Err(self.chain_error(error)),
        };
        if raws.len() != txids.len() {
            let detail = format!(
                "{what} returned {} of {} transactions",
                raws.len(),
                txids.len()
            );
            return Err(self.inconsistent(detail));
        }
        let mut transactions = Vec::with_capacity(raws.len());
        for (expected, raw) in txids.iter().zip(raws) {
            let tx: Transaction = consensus::deserialize(&raw).map_err(|error| {
                self.inconsistent(format!("malformed transaction {expected}: {error}"))
            })?;
            let actual = tx.compute_txid();
            if actual != *expected {
                return Err(
                    self.inconsistent(format!("requested transaction {expected} but got {actual}"))
                );
            }
            transactions.push(tx);
        }
        Ok(Some(transactions))
    }

    async fn fetch_raw(&self, txid: Txid) -> Result<Option<Transaction>, ChainError> {
        let transactions = self.raw_transactions(&[txid]).await?;
        Ok(transactions.and_then(|mut transactions| transactions.pop()))
    }

    /// Fetches the history of each script in one batch.
    async fn histories(
        &self,
        scripts: &[ScriptBuf],
    ) -> Result<Vec<Vec<GetHistoryRes>>, ChainError> {
        let owned = scripts.to_vec();
        let chunk = self.batch_limit();
        let what = "blockchain.scripthash.get_history";
        let histories = self
            .call(what, scripts.len(), move |client| {
                let mut histories = Vec::with_capacity(owned.len());
                for scripts in owned.chunks(chunk) {
                    let scripts = scripts.iter().map(ScriptBuf::as_script);
                    histories.extend(client.batch_script_get_history(scripts)?);
                }
                Ok(histories)
            })
            .await
            .map_err(|error| self.chain_error(error))?;
        if histories.len() != scripts.len() {
            let detail = format!(
                "{what} returned {} of {} histories",
                histories.len(),
                scripts.len()
            );
            return Err(self.inconsistent(detail));
        }
        Ok(histories)
    }

    /// Finds where `tx` is from its output scripts' histories, and the fee the server
    /// reported with it.
    async fn locate(&self, tx: &Transaction) -> Result<(TxStatus, Option<u64>), ChainError> {
        let txid = tx.compute_txid();
        let scripts = distinct_scripts(&tx.output);
        let histories = self.histories(&scripts).await?;
        let entry = histories
            .iter()
            .flatten()
            .find(|entry| entry.tx_hash == txid)
            .ok_or_else(|| {
                self.inconsistent(format!(
                    "transaction {txid} is in none of its output scripts' histories"
                ))
            })?;
        Ok((status_at(entry.height), entry.fee))
    }

    /// Fetches the outputs that `tx`'s inputs spend, in input order.
    async fn prevouts(&self, tx: &Transaction) -> Result<Vec<TxOut>, ChainError> {
        let txid = tx.compute_txid();
        if tx.is_coinbase() {
            // A coinbase spends nothing; its one null input is given what it pays out, so
            // that its fee is zero.
            let paid = tx.output.iter().map(|output| output.value).sum();
            return Ok(vec![TxOut {
                value: paid,
                script_pubkey: ScriptBuf::new(),
            }]);
        }
        let mut parents: Vec<Txid> = tx
            .input
            .iter()
            .map(|input| input.previous_output.txid)
            .collect();
        parents.sort();
        parents.dedup();
        let fetched = self.raw_transactions(&parents).await?.ok_or_else(|| {
            self.inconsistent(format!(
                "a previous transaction of {txid} is unknown to the server: {}",
                list(&parents)
            ))
        })?;
        let by_txid: BTreeMap<Txid, Transaction> = parents.into_iter().zip(fetched).collect();
        let mut prevouts = Vec::with_capacity(tx.input.len());
        for input in &tx.input {
            let outpoint = input.previous_output;
            let output = by_txid
                .get(&outpoint.txid)
                .and_then(|parent| parent.output.get(outpoint.vout as usize))
                .ok_or_else(|| {
                    self.inconsistent(format!(
                        "transaction {txid} spends {outpoint}, which does not exist"
                    ))
                })?;
            prevouts.push(output.clone());
        }
        Ok(prevouts)
    }

    /// Finds who spends each of `vouts` of `tx`: candidates are the other transactions in
    /// each output script's history, and a candidate spends the output only if one of its
    /// inputs names it.
    async fn spends_of(
        &self,
        tx: &Transaction,
        vouts: &[u32],
    ) -> Result<Vec<OutputSpend>, ChainError> {
        let txid = tx.compute_txid();
        let outputs: Vec<TxOut> = vouts
            .iter()
            .filter_map(|vout| tx.output.get(*vout as usize).cloned())
            .collect();
        let scripts = distinct_scripts(&outputs);
        let histories = self.histories(&scripts).await?;
        let own_height = histories
            .iter()
            .flatten()
            .find(|entry| entry.tx_hash == txid)
            .map(|entry| entry.height);
        let mut heights: BTreeMap<Txid, i32> = BTreeMap::new();
        for entry in histories.iter().flatten() {
            if entry.tx_hash != txid && may_spend_after(own_height, entry.height) {
                heights.insert(entry.tx_hash, entry.height);
            }
        }
        let candidates: Vec<Txid> = heights.keys().copied().collect();
        let fetched = self.raw_transactions(&candidates).await?.ok_or_else(|| {
            self.inconsistent(format!(
                "a transaction in the history of {txid}'s outputs is unknown to the server: {}",
                list(&candidates)
            ))
        })?;
        let mut spends = Vec::with_capacity(vouts.len());
        for vout in vouts {
            let outpoint = OutPoint::new(txid, *vout);
            let spend = fetched
                .iter()
                .find_map(|candidate| {
                    let vin = candidate
                        .input
                        .iter()
                        .position(|input| input.previous_output == outpoint)?;
                    let spender = candidate.compute_txid();
                    Some(OutputSpend::Spent {
                        txid: spender,
                        vin: u32::try_from(vin).ok()?,
                        confirmed: heights.get(&spender).is_some_and(|height| *height > 0),
                    })
                })
                .unwrap_or(OutputSpend::Unspent);
            spends.push(spend);
        }
        Ok(spends)
    }

    /// Reads a fee rate in BTC/kvB, as Electrum servers send it, into sat/vB.
    fn sat_per_vb(&self, method: &str, btc_per_kvb: f64) -> Result<Decimal, ChainError> {
        // The shortest decimal that prints the float keeps "0.00001" exact.
        Decimal::from_str(&btc_per_kvb.to_string())
            .ok()
            .filter(|rate| !rate.is_sign_negative())
            .map(|rate| {
                (rate * Decimal::from(SAT_PER_VB_PER_BTC_PER_KVB))
                    .round_dp(6)
                    .normalize()
            })
            .ok_or_else(|| self.inconsistent(format!("{method} returned fee rate {btc_per_kvb}")))
    }

    async fn protocol_version(&self) -> Result<String, ChainError> {
        self.call("server.version", 0, |client| client.protocol_version())
            .await
            .map_err(|error| self.chain_error(error))
    }
}

/// Takes an idle connection, or connects when there is none.
fn take_or_connect(
    idle: &ClientPool,
    options: &ElectrumOptions,
) -> Result<Client, electrum_client::Error> {
    if let Some(client) = idle.lock().ok().and_then(|mut idle| idle.pop()) {
        return Ok(client);
    }
    // No retries inside the client: it would sleep on the blocking pool, and the source
    // in front of this one moves on to the next backend instead.
    let config = ConfigBuilder::new()
        .timeout(Some(options.timeout))
        .retry(0)
        .validate_domain(options.validate_domain)
        .build();
    Client::from_config(&options.url, config)
}

fn classify(what: &str, error: electrum_client::Error) -> CallError {
    use electrum_client::Error;
    match error {
        Error::Protocol(value) => CallError::Server(value),
        Error::JSON(error) => CallError::Malformed(format!("malformed JSON from {what}: {error}")),
        Error::InvalidResponse(value) => CallError::Malformed(format!(
            "unexpected response to {what}: {}",
            truncate(&value.to_string())
        )),
        Error::Hex(error) => CallError::Malformed(format!("malformed hex from {what}: {error}")),
        Error::Bitcoin(error) => {
            CallError::Malformed(format!("malformed transaction from {what}: {error}"))
        }
        // NOTE: with retries off, electrum-client 0.25.2 returns this variant with an
        // empty list for any transport or decoding failure, so the cause is lost. A
        // malformed response then reads as a failed connection.
        Error::AllAttemptsErrored(errors) => match errors.into_iter().last() {
            Some(last) => classify(what, last),
            None => CallError::Transport(format!(
                "{what} failed: the connection failed, closed or returned an unreadable answer"
            )),
        },
        // The socket's own read timeout ends a silent server's call as WouldBlock or
        // TimedOut, which reads better as the timeout it is.
        Error::IOError(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            CallError::Transport(format!(
                "{what} timed out: the server sent no response ({io})"
            ))
        }
        other => CallError::Transport(format!("{what} failed: {other}")),
    }
}

/// Classifies a failure to connect to an `ssl://` server. electrum-client passes rustls's
/// errors on as they are, such as "invalid peer certificate: UnknownIssuer", so this adds
/// what the error means and what to do about it.
fn classify_tls_connect(what: &str, error: electrum_client::Error) -> CallError {
    use rustls::CertificateError;
    let electrum_client::Error::IOError(io_error) = &error else {
        return classify(what, error);
    };
    let Some(tls_error) = io_error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        if io_error.kind() == std::io::ErrorKind::UnexpectedEof {
            return CallError::Transport(format!(
                "{what} failed: the server closed the connection during the TLS handshake or \
                 the server.version request. Check that the port serves TLS, and use tcp:// \
                 for a plain-TCP server"
            ));
        }
        return classify(what, error);
    };
    let advice = match tls_error {
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => {
            "the server's TLS certificate does not name this host. Connect by a name that \
             it lists, or set electrum_validate_domain = false to skip all certificate checks"
        }
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the server's TLS certificate has expired and must be renewed on the server",
        rustls::Error::InvalidCertificate(_) => {
            "the server's TLS certificate is not trusted, because electrum-client accepts \
             only certificates that chain to a root in webpki-roots. To accept a self-signed \
             certificate, set electrum_validate_domain = false, which skips all certificate \
             checks"
        }
        _ => {
            "the TLS handshake failed. Check that the port serves TLS, and use tcp:// for a \
             plain-TCP server"
        }
    };
    CallError::Transport(format!("{what} failed: {advice} ({tls_error})"))
}

/// Checks whether a JSON-RPC error reports an unknown transaction. The recorded electrs
/// returns "missing transaction"; bitcoind's own message, which a server may pass on, is
/// "No such mempool or blockchain transaction".
fn is_not_found(error: &serde_json::Value) -> bool {
    let message = error
        .get("message")
        .and_then(serde_json::Value::as_str)
        .map_or_else(|| error.to_string(), str::to_owned)
        .to_lowercase();
    // A server that lacks the method returns "Method not found" (JSON-RPC -32601), which
    // is a server fault, not an unknown transaction.
    let code = error.get("code").and_then(serde_json::Value::as_i64);
    if code == Some(-32601) || message.contains("method not found") {
        return false;
    }
    [
        "missing transaction",
        "no such mempool or blockchain transaction",
        "transaction not found",
    ]
    .iter()
    .any(|phrase| message.contains(phrase))
}

/// Checks whether a history entry at `height` can spend an output of a transaction at
/// `own_height`. A spender is never in an earlier block, and a mempool spender may follow
/// anything.
fn may_spend_after(own_height: Option<i32>, height: i32) -> bool {
    match own_height {
        Some(own) if own > 0 => height <= 0 || height >= own,
        Some(_) => height <= 0,
        None => true,
    }
}

/// Electrum heights: a block height, or 0 or -1 for a mempool transaction (-1 when one of
/// its parents is unconfirmed too).
fn status_at(height: i32) -> TxStatus {
    match u32::try_from(height) {
        Ok(block_height) if block_height > 0 => TxStatus::Confirmed {
            block_height,
            block_hash: None,
            block_time: None,
        },
        _ => TxStatus::Unconfirmed,
    }
}

/// Whether `version` ("1.4", "1.6", "1.10") is at least `minimum`; an unreadable version
/// counts as older.
fn protocol_at_least(version: &str, minimum: (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), minor) => (major, minor.unwrap_or(0)) >= minimum,
        (None, _) => false,
    }
}

fn distinct_scripts(outputs: &[TxOut]) -> Vec<ScriptBuf> {
    let mut scripts: Vec<ScriptBuf> = Vec::new();
    for output in outputs {
        if !scripts.contains(&output.script_pubkey) {
            scripts.push(output.script_pubkey.clone());
        }
    }
    scripts
}

fn list(txids: &[Txid]) -> String {
    txids
        .iter()
        .map(Txid::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}

/// Reads `mempool.get_fee_histogram`: `[[fee rate, vsize], ...]`, highest rate first.
fn parse_histogram(value: &serde_json::Value) -> Option<Vec<(Decimal, u64)>> {
    let mut histogram = Vec::new();
    for bin in value.as_array()? {
        let [rate, vsize] = bin.as_array()?.as_slice() else {
            return None;
        };
        // The recorded electrs sends 32-bit float rates widened to 64 bits, such as
        // 60.00083923339844. Printing the value as a 32-bit float gives 60.00084, the
        // rate that Esplora reports for the same bin.
        #[allow(clippy::cast_possible_truncation)] // Narrowing to f32 is the point.
        let rate = Decimal::from_str(&(rate.as_f64()? as f32).to_string()).ok()?;
        if rate.is_sign_negative() {
            return None;
        }
        histogram.push((rate.round_dp(6), vsize.as_u64()?));
    }
    Some(histogram)
}

#[async_trait]
impl ChainSource for ElectrumSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn raw_transaction(&self, txid: Txid) -> Result<Option<Arc<Transaction>>, ChainError> {
        Ok(self.fetch_raw(txid).await?.map(Arc::new))
    }

    async fn transaction(&self, txid: Txid) -> Result<Option<Arc<ChainTx>>, ChainError> {
        let Some(tx) = self.fetch_raw(txid).await? else {
            return Ok(None);
        };
        let ((status, reported_fee), prevouts) =
            tokio::try_join!(self.locate(&tx), self.prevouts(&tx))?;
        let reported_fee = reported_fee.filter(|_| !tx.is_coinbase());
        let checked = ChainTx::checked(&self.name, txid, tx, prevouts, reported_fee, status)?;
        Ok(Some(Arc::new(checked)))
    }

    async fn status(&self, txid: Txid) -> Result<Option<TxStatus>, ChainError> {
        let Some(tx) = self.fetch_raw(txid).await? else {
            return Ok(None);
        };
        Ok(Some(self.locate(&tx).await?.0))
    }

    async fn outspends(&self, txid: Txid) -> Result<Option<Arc<Vec<OutputSpend>>>, ChainError> {
        let Some(tx) = self.fetch_raw(txid).await? else {
            return Ok(None);
        };
        let vouts: Vec<u32> = (0..tx.output.len())
            .map(|vout| u32::try_from(vout).unwrap_or(u32::MAX))
            .collect();
        Ok(Some(Arc::new(self.spends_of(&tx, &vouts).await?)))
    }

    async fn output_spend(&self, outpoint: OutPoint) -> Result<Option<OutputSpend>, ChainError> {
        let Some(tx) = self.fetch_raw(outpoint.txid).await? else {
            return Ok(None);
        };
        if tx.output.len() <= outpoint.vout as usize {
            return Ok(None);
        }
        let spends = self.spends_of(&tx, &[outpoint.vout]).await?;
        Ok(spends.into_iter().next())
    }

    async fn mempool(&self) -> Result<Arc<MempoolSnapshot>, ChainError> {
        let method = "mempool.get_fee_histogram";
        let value = self
            .call(method, 1, move |client| {
                client.raw_call(method, Vec::<Param>::new())
            })
            .await
            .map_err(|error| self.chain_error(error))?;
        let histogram = parse_histogram(&value).ok_or_else(|| {
            self.inconsistent(format!(
                "{method} returned {}",
                truncate(&value.to_string())
            ))
        })?;
        // The histogram bins every mempool transaction, so its sizes add up to the
        // mempool's; the count and total fee are not in the protocol.
        let vsize = histogram.iter().map(|(_, vsize)| vsize).sum();
        Ok(Arc::new(MempoolSnapshot {
            count: None,
            vsize,
            total_fee_sat: None,
            histogram,
        }))
    }

    async fn fee_estimates(&self) -> Result<Arc<FeeEstimates>, ChainError> {
        let method = "blockchain.estimatefee";
        let targets: Vec<usize> = ESTIMATE_TARGETS
            .iter()
            .map(|target| usize::from(*target))
            .collect();
        let chunk = self.batch_limit();
        let rates = self
            .call(method, targets.len(), move |client| {
                let mut rates = Vec::with_capacity(targets.len());
                for targets in targets.chunks(chunk) {
                    rates.extend(client.batch_estimate_fee(targets.iter())?);
                }
                Ok(rates)
            })
            .await
            .map_err(|error| self.chain_error(error))?;
        let mut estimates = FeeEstimates::new();
        for (target, rate) in ESTIMATE_TARGETS.iter().zip(rates) {
            // -1 means the server's node has no estimate for this target.
            if rate < 0.0 {
                continue;
            }
            estimates.insert(*target, self.sat_per_vb(method, rate)?);
        }
        Ok(Arc::new(estimates))
    }

    async fn tip_height(&self) -> Result<u32, ChainError> {
        let method = "blockchain.headers.subscribe";
        let header = self
            .call(method, 1, |client| client.block_headers_subscribe_raw())
            .await
            .map_err(|error| self.chain_error(error))?;
        u32::try_from(header.height)
            .map_err(|_| self.inconsistent(format!("{method} returned height {}", header.height)))
    }

    async fn relay_fees(&self) -> Result<Option<RelayFees>, ChainError> {
        // Protocol 1.6 replaced `blockchain.relayfee` with `mempool.get_info`; servers that
        // stop at 1.4, such as romanz electrs, only have the former.
        let version = self.protocol_version().await?;
        if protocol_at_least(&version, (1, 6)) {
            let method = "mempool.get_info";
            let info = self
                .call(method, 1, |client| client.mempool_get_info())
                .await
                .map_err(|error| self.chain_error(error))?;
            return Ok(Some(RelayFees {
                min_relay_fee_sat_per_vb: self.sat_per_vb(method, info.minrelaytxfee)?,
                mempool_min_fee_sat_per_vb: Some(self.sat_per_vb(method, info.mempoolminfee)?),
                incremental_relay_fee_sat_per_vb: Some(
                    self.sat_per_vb(method, info.incrementalrelayfee)?,
                ),
            }));
        }
        let method = "blockchain.relayfee";
        let fee = self
            .call(method, 1, |client| client.relay_fee())
            .await
            .map_err(|error| self.chain_error(error))?;
        Ok(Some(RelayFees {
            min_relay_fee_sat_per_vb: self.sat_per_vb(method, fee)?,
            mempool_min_fee_sat_per_vb: None,
            incremental_relay_fee_sat_per_vb: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_method_is_not_a_missing_transaction() {
        let missing_method = serde_json::json!({"code": -32601, "message": "Method not found"});
        assert!(!is_not_found(&missing_method));
        let missing_tx = serde_json::json!({"code": 2, "message": "missing transaction"});
        assert!(is_not_found(&missing_tx));
    }

    #[test]
    fn histogram_keeps_float_precision() {
        let value = serde_json::json!([[60.00083923339844, 143180], [1.0, 4151]]);
        let histogram = parse_histogram(&value).expect("valid histogram");
        assert_eq!(
            histogram[0],
            (Decimal::from_str("60.00084").expect("decimal"), 143180)
        );
        assert_eq!(histogram[1], (Decimal::ONE, 4151));
    }

    #[test]
    fn histogram_rejects_negative_rate() {
        let value = serde_json::json!([[-1.0, 10]]);
        assert!(parse_histogram(&value).is_none());
    }

    #[test]
    fn heights_map_to_status() {
        assert_eq!(status_at(0), TxStatus::Unconfirmed);
        assert_eq!(status_at(-1), TxStatus::Unconfirmed);
        assert!(status_at(326).is_confirmed());
    }

    #[test]
    fn spender_never_precedes_funding() {
        assert!(!may_spend_after(Some(326), 300));
        assert!(may_spend_after(Some(326), 326));
        assert!(may_spend_after(Some(326), 0));
        assert!(!may_spend_after(Some(0), 326));
        assert!(may_spend_after(Some(-1), -1));
    }

    #[test]
    fn protocol_versions_compare_as_numbers() {
        assert!(protocol_at_least("1.6", (1, 6)));
        assert!(protocol_at_least("1.10", (1, 6)));
        assert!(!protocol_at_least("1.4", (1, 6)));
        assert!(!protocol_at_least("garbage", (1, 6)));
    }

    #[test]
    fn not_found_messages() {
        assert!(is_not_found(
            &serde_json::json!({"code": 2, "message": "missing transaction"})
        ));
        assert!(is_not_found(&serde_json::json!({
            "code": 2,
            "message": "daemon error: No such mempool or blockchain transaction"
        })));
        assert!(!is_not_found(
            &serde_json::json!({"code": -32601, "message": "unknown method"})
        ));
    }

    #[test]
    fn url_scheme_is_checked() {
        assert!(ElectrumSource::new(ElectrumOptions::new("http://127.0.0.1:50001")).is_err());
        assert!(ElectrumSource::new(ElectrumOptions::new("tcp://127.0.0.1:50001")).is_ok());
    }

    #[test]
    fn tls_to_ipv6_address_is_rejected() {
        let error = ElectrumSource::new(ElectrumOptions::new("ssl://[::1]:50002"))
            .expect_err("an IPv6 address cannot be a TLS server name");
        assert!(error.to_string().contains("IPv6"), "{error}");
        assert!(ElectrumSource::new(ElectrumOptions::new("tcp://[::1]:50001")).is_ok());
        assert!(ElectrumSource::new(ElectrumOptions::new("ssl://localhost:50002")).is_ok());
    }
}
