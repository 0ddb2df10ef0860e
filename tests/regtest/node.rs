//! The regtest node and the Esplora electrs in front of it: found, started on loopback
//! ports in temporary directories, kept in sync, and stopped cleanly.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bitcoind::BitcoinD;
use bitcoind::tempfile::TempDir;
use serde_json::{Value, json};
use txdoctor::bitcoin::{Address, Amount, BlockHash, Transaction, Txid, consensus};

/// Set to `1` to turn missing binaries into a failure instead of a skip.
pub const REQUIRED_VAR: &str = "TXDOCTOR_REGTEST_REQUIRED";

/// How long electrs may take to start and to catch up with the node.
const SYNC_TIMEOUT: Duration = Duration::from_secs(90);

/// How often a wait polls.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Coinbase outputs need 100 confirmations; 120 blocks leave 20 mature coins to spend.
const INITIAL_BLOCKS: u64 = 120;

static SKIP_NOTICE: Once = Once::new();

/// The two binaries the suite runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// Bitcoin Core's `bitcoind`.
    pub bitcoind: PathBuf,
    /// An Esplora-flavoured electrs (Blockstream's or mempool's), with the HTTP REST API.
    pub electrs: PathBuf,
}

impl Binaries {
    /// Finds the binaries through `BITCOIND_EXE` and `ELECTRS_EXEC`, then on `PATH`.
    ///
    /// # Errors
    ///
    /// Returns a sentence saying which binary is missing and how to provide it.
    pub fn find() -> Result<Self, String> {
        let bitcoind = bitcoind::exe_path()
            .map_err(|_| "no bitcoind: set BITCOIND_EXE or put bitcoind on PATH".to_owned())?;
        let electrs = electrsd::exe_path().map_err(|error| {
            format!("no electrs ({error}): set ELECTRS_EXEC or put electrs on PATH")
        })?;
        for (variable, path) in [("BITCOIND_EXE", &bitcoind), ("ELECTRS_EXEC", &electrs)] {
            if !Path::new(path).is_file() {
                return Err(format!("{variable} names {path}, which is not a file"));
            }
        }
        Ok(Self {
            bitcoind: bitcoind.into(),
            electrs: electrs.into(),
        })
    }
}

/// Returns the binaries, or `None` after printing, once per test binary, why the suite
/// is skipped. With `TXDOCTOR_REGTEST_REQUIRED=1` a missing binary panics instead.
pub fn binaries_or_skip() -> Option<Binaries> {
    match Binaries::find() {
        Ok(binaries) => Some(binaries),
        Err(reason) => {
            let required = std::env::var(REQUIRED_VAR).is_ok_and(|value| value == "1");
            assert!(!required, "{REQUIRED_VAR}=1 but {reason}");
            SKIP_NOTICE.call_once(|| {
                // Written to the process's stderr, past the test harness's capture, so that
                // the one line shows in a passing run.
                let _ = writeln!(
                    std::io::stderr(),
                    "regtest suite skipped: {reason} (the suite needs Bitcoin Core and an Esplora electrs)"
                );
            });
            None
        }
    }
}

/// A running regtest node with a funded `miner` wallet, and electrs in front of it.
pub struct Regtest {
    /// The node; its RPC listens on 127.0.0.1.
    pub node: BitcoinD,
    /// The wallet that mines every block and funds the scenarios.
    pub miner: Wallet,
    electrs: Electrs,
    miner_address: Address,
    /// `getnetworkinfo`'s `version`, such as 310000 or 299900.
    pub core_version: u64,
}

impl Regtest {
    /// Starts the node and electrs, mines the first blocks and waits for electrs to index
    /// them; `None` when the binaries are missing (see [`binaries_or_skip`]).
    ///
    /// # Panics
    ///
    /// Panics when a binary is present but fails to start.
    pub async fn start() -> Option<Self> {
        let binaries = binaries_or_skip()?;
        let regtest = Self::start_with(&binaries)
            .await
            .unwrap_or_else(|error| panic!("failed to start the regtest nodes: {error:#}"));
        Some(regtest)
    }

    async fn start_with(binaries: &Binaries) -> anyhow::Result<Self> {
        let mut conf = bitcoind::Conf::default();
        conf.args = vec![
            "-regtest",
            "-fallbackfee=0.0001",
            // Confirmed transactions stay readable with getrawtransaction.
            "-txindex=1",
            // Core v31 reports BIP125 signalling in getmempoolentry only on request.
            "-deprecatedrpc=bip125",
        ];
        conf.wallet = None;

        let node = BitcoinD::with_conf(&binaries.bitcoind, &conf)
            .with_context(|| format!("failed to start {}", binaries.bitcoind.display()))?;
        let miner = Wallet {
            name: "miner".to_owned(),
            client: Arc::new(node.create_wallet("miner")?),
        };
        let core_version = node
            .client
            .call::<Value>("getnetworkinfo", &[])?
            .get("version")
            .and_then(Value::as_u64)
            .context("getnetworkinfo has no version")?;

        let miner_address = miner.new_address("bech32")?;
        node.client.call::<Value>(
            "generatetoaddress",
            &[json!(INITIAL_BLOCKS), json!(miner_address.to_string())],
        )?;

        let electrs = Electrs::start(&binaries.electrs, &node)?;
        let regtest = Self {
            node,
            miner,
            electrs,
            miner_address,
            core_version,
        };
        regtest.sync().await?;
        Ok(regtest)
    }

    /// Returns the Esplora base URL, such as `http://127.0.0.1:41234`.
    pub fn esplora_url(&self) -> String {
        format!("http://{}", self.electrs.http_addr)
    }

    /// Returns the Electrum RPC address.
    pub fn electrum_addr(&self) -> SocketAddr {
        self.electrs.electrum_addr
    }

    /// Returns whether the node runs the cluster mempool (Core v31 and later).
    pub fn has_cluster_mempool(&self) -> bool {
        self.core_version >= 310_000
    }

    /// Calls a node RPC.
    ///
    /// # Errors
    ///
    /// Returns the node's error, with the method named.
    pub fn rpc(&self, method: &str, params: &[Value]) -> anyhow::Result<Value> {
        self.node
            .client
            .call::<Value>(method, params)
            .with_context(|| format!("{method} failed"))
    }

    /// Creates a wallet with the node's default descriptors.
    ///
    /// # Errors
    ///
    /// Returns the node's error.
    pub fn create_wallet(&self, name: &str) -> anyhow::Result<Wallet> {
        let client = self
            .node
            .create_wallet(name)
            .with_context(|| format!("failed to create wallet {name}"))?;
        Ok(Wallet {
            name: name.to_owned(),
            client: Arc::new(client),
        })
    }

    /// Mines `count` blocks to the miner wallet.
    ///
    /// # Errors
    ///
    /// Returns the node's error.
    pub fn mine(&self, count: u64) -> anyhow::Result<Vec<BlockHash>> {
        let hashes = self.rpc(
            "generatetoaddress",
            &[json!(count), json!(self.miner_address.to_string())],
        )?;
        Ok(serde_json::from_value(hashes)?)
    }

    /// Mines one block holding only `txids` from the mempool, leaving the rest there.
    ///
    /// # Errors
    ///
    /// Returns the node's error.
    pub fn mine_only(&self, txids: &[Txid]) -> anyhow::Result<BlockHash> {
        let address = json!(self.miner_address.to_string());
        let block = self.rpc("generateblock", &[address, json!(txids)])?;
        Ok(serde_json::from_value(block["hash"].clone())?)
    }

    /// Sends `tx` to the node's mempool.
    ///
    /// # Errors
    ///
    /// Returns the node's error, which names the rejection reason.
    pub fn broadcast(&self, tx: &Transaction) -> anyhow::Result<Txid> {
        let hex = consensus::encode::serialize_hex(tx);
        Ok(serde_json::from_value(
            self.rpc("sendrawtransaction", &[json!(hex)])?,
        )?)
    }

    /// Fetches a transaction that the node has in its mempool or, with `-txindex`, in a block.
    ///
    /// # Errors
    ///
    /// Returns the node's error.
    pub fn transaction(&self, txid: Txid) -> anyhow::Result<Transaction> {
        let hex = self.rpc("getrawtransaction", &[json!(txid)])?;
        let hex = hex.as_str().context("getrawtransaction returned no hex")?;
        Ok(consensus::encode::deserialize_hex(hex)?)
    }

    /// Lists the node's mempool txids.
    ///
    /// # Errors
    ///
    /// Returns the node's error.
    pub fn mempool_txids(&self) -> anyhow::Result<BTreeSet<Txid>> {
        Ok(serde_json::from_value(self.rpc("getrawmempool", &[])?)?)
    }

    /// Waits until electrs has the node's best block and exactly the node's mempool, in
    /// its transaction index and in its mempool statistics, which it refreshes less often.
    ///
    /// # Errors
    ///
    /// Returns an error naming what still differs after the time limit.
    pub async fn sync(&self) -> anyhow::Result<()> {
        let tip: BlockHash = serde_json::from_value(self.rpc("getbestblockhash", &[])?)?;
        let mempool = self.mempool_txids()?;
        let http = reqwest::Client::new();
        let base = self.esplora_url();
        let deadline = Instant::now() + SYNC_TIMEOUT;
        let mut last_difference = String::new();
        while Instant::now() < deadline {
            self.electrs.check_running()?;
            self.electrs.trigger_sync();
            let electrs_tip = get_text(&http, &format!("{base}/blocks/tip/hash")).await;
            let electrs_mempool = get_text(&http, &format!("{base}/mempool/txids")).await;
            let electrs_stats = get_text(&http, &format!("{base}/mempool")).await;
            match (electrs_tip, electrs_mempool, electrs_stats) {
                (Ok(electrs_tip), Ok(electrs_mempool), Ok(electrs_stats)) => {
                    let electrs_mempool: BTreeSet<Txid> = serde_json::from_str(&electrs_mempool)?;
                    let electrs_stats: Value = serde_json::from_str(&electrs_stats)?;
                    let counted = electrs_stats["count"].as_u64();
                    if electrs_tip == tip.to_string()
                        && electrs_mempool == mempool
                        && counted == Some(u64::try_from(mempool.len())?)
                    {
                        return Ok(());
                    }
                    last_difference = format!(
                        "electrs tip {electrs_tip}, node tip {tip}; electrs mempool {} txs ({counted:?} in its statistics), node mempool {} txs",
                        electrs_mempool.len(),
                        mempool.len()
                    );
                }
                (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => {
                    last_difference = error.to_string();
                }
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        bail!(
            "electrs did not catch up with the node in {SYNC_TIMEOUT:?}: {last_difference}; log tail:\n{}",
            self.electrs.log_tail()
        )
    }
}

impl Drop for Regtest {
    fn drop(&mut self) {
        // electrs first, so that it does not log the node's shutdown as an error.
        self.electrs.stop();
        if let Err(error) = self.node.stop() {
            let _ = writeln!(
                std::io::stderr(),
                "bitcoind did not stop cleanly: {error:#}"
            );
        }
    }
}

async fn get_text(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let response = http.get(url).timeout(Duration::from_secs(5)).send().await?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        bail!("GET {url} returned {status}: {body}");
    }
    Ok(body)
}

/// Parses an address the node returned; the node and the suite are on regtest.
pub fn parse_address(value: &Value) -> anyhow::Result<Address> {
    let text = value.as_str().context("the address is not a string")?;
    Ok(text.parse::<Address<_>>()?.assume_checked())
}

/// Formats an amount as the node's RPCs take it: BTC, as a decimal string.
pub fn btc(amount: Amount) -> Value {
    let sat = amount.to_sat();
    json!(format!("{}.{:08}", sat / 100_000_000, sat % 100_000_000))
}

/// Reads an amount the node gave in BTC.
pub fn amount_of(value: &Value) -> anyhow::Result<Amount> {
    let btc = value.as_f64().context("the amount is not a number")?;
    Ok(Amount::from_btc(btc)?)
}

/// A wallet on the node, through its own RPC endpoint.
#[derive(Debug, Clone)]
pub struct Wallet {
    /// The wallet's name on the node.
    pub name: String,
    client: Arc<bitcoind::Client>,
}

impl Wallet {
    /// Calls a wallet RPC.
    ///
    /// # Errors
    ///
    /// Returns the node's error, with the wallet and method named.
    pub fn rpc(&self, method: &str, params: &[Value]) -> anyhow::Result<Value> {
        self.client
            .call::<Value>(method, params)
            .with_context(|| format!("{method} on wallet {} failed", self.name))
    }

    /// Returns a new receiving address of `address_type` (`bech32`, `bech32m`, `legacy`,
    /// `p2sh-segwit`).
    ///
    /// # Errors
    ///
    /// Returns the node's error.
    pub fn new_address(&self, address_type: &str) -> anyhow::Result<Address> {
        parse_address(&self.rpc("getnewaddress", &[json!(""), json!(address_type)])?)
    }

    /// Returns a new change address of `address_type`.
    ///
    /// # Errors
    ///
    /// Returns the node's error.
    pub fn change_address(&self, address_type: &str) -> anyhow::Result<Address> {
        parse_address(&self.rpc("getrawchangeaddress", &[json!(address_type)])?)
    }
}

/// An electrs process serving Electrum and Esplora on loopback ports.
///
/// The `electrsd` crate's own launcher binds every port on 0.0.0.0, so this one passes
/// loopback addresses itself.
struct Electrs {
    process: Mutex<Child>,
    pid: u32,
    http_addr: SocketAddr,
    electrum_addr: SocketAddr,
    log_path: PathBuf,
    _workdir: TempDir,
}

impl Electrs {
    /// Starts electrs against `node`, retrying with fresh ports if another process took one.
    fn start(exe: &Path, node: &BitcoinD) -> anyhow::Result<Self> {
        let mut last_error = None;
        for _ in 0..3 {
            match Self::spawn(exe, node) {
                Ok(electrs) => return Ok(electrs),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("electrs was never started")))
    }

    fn spawn(exe: &Path, node: &BitcoinD) -> anyhow::Result<Self> {
        let workdir = match std::env::var_os("TEMPDIR_ROOT") {
            Some(root) => TempDir::new_in(root)?,
            None => TempDir::new()?,
        };
        let cookie = node
            .params
            .get_cookie_values()?
            .context("the node wrote no RPC cookie")?;
        let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let http_addr = loopback(bitcoind::get_available_port()?);
        let electrum_addr = loopback(bitcoind::get_available_port()?);
        let monitoring_addr = loopback(bitcoind::get_available_port()?);
        let log_path = workdir.path().join("electrs.log");
        let log = File::create(&log_path)?;

        let process = Command::new(exe)
            .arg("-vv")
            .args(["--network", "regtest"])
            .arg("--db-dir")
            .arg(workdir.path().join("db"))
            .arg("--daemon-dir")
            .arg(node.workdir())
            .arg("--cookie")
            .arg(format!("{}:{}", cookie.user, cookie.password))
            .arg("--daemon-rpc-addr")
            .arg(node.params.rpc_socket.to_string())
            // Blocks come over RPC: Core v28 and later obfuscate the block files.
            .arg("--jsonrpc-import")
            .arg("--electrum-rpc-addr")
            .arg(electrum_addr.to_string())
            .arg("--http-addr")
            .arg(http_addr.to_string())
            .arg("--monitoring-addr")
            .arg(monitoring_addr.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to run {}", exe.display()))?;

        let electrs = Self {
            pid: process.id(),
            process: Mutex::new(process),
            http_addr,
            electrum_addr,
            log_path,
            _workdir: workdir,
        };
        electrs.wait_for_http()?;
        Ok(electrs)
    }

    /// Waits until the HTTP port accepts connections.
    fn wait_for_http(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + SYNC_TIMEOUT;
        while Instant::now() < deadline {
            self.check_running()?;
            if std::net::TcpStream::connect_timeout(&self.http_addr, POLL_INTERVAL).is_ok() {
                return Ok(());
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        bail!(
            "electrs did not open {} in {SYNC_TIMEOUT:?}; log tail:\n{}",
            self.http_addr,
            self.log_tail()
        )
    }

    fn check_running(&self) -> anyhow::Result<()> {
        let exited = self
            .process
            .lock()
            .map_err(|_| anyhow::anyhow!("the electrs process lock is poisoned"))?
            .try_wait()?;
        if let Some(status) = exited {
            bail!(
                "electrs exited with {status}; log tail:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Asks electrs to poll the node now rather than at its next interval.
    fn trigger_sync(&self) {
        self.signal("USR1");
    }

    fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .args(["-s", name, &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }

    /// Sends SIGTERM and waits; kills the process if it has not exited after ten seconds.
    fn stop(&mut self) {
        let process = match self.process.get_mut() {
            Ok(process) => process,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Ok(Some(_)) = process.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = process.try_wait() {
                return;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        let _ = process.kill();
        let _ = process.wait();
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Electrs {
    fn drop(&mut self) {
        self.stop();
    }
}
