//! The command line: parse, call the use case, render, and choose the exit code.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::analysis::Diagnosis;
use crate::api;
use crate::bump::plan::Strategy;
use crate::bump::{BumpRequest, Bumper, Target, check};
use crate::chain::ChainSource;
use crate::chain::cache::CachedSource;
use crate::chain::failover::FailoverSource;
use crate::config::{Config, Network};
use crate::diagnose::{DiagnoseError, Doctor};
use crate::history::History;
use crate::input::{self, InputError};
use crate::policy::PolicyVersion;

/// Writes a line to standard output; a closed pipe, as in `txdoctor ... | head`, ends
/// the output quietly instead of a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Exit code: every transaction was diagnosed.
pub const EXIT_DIAGNOSED: u8 = 0;
/// Exit code: some input was invalid.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code: the backend was unavailable or returned inconsistent data.
pub const EXIT_BACKEND: u8 = 3;

/// Diagnoses stuck Bitcoin transactions and prices the ways to unstick them.
#[derive(Debug, Parser)]
#[command(name = "txdoctor", version, about)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "TXDOCTOR_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Bitcoin network of the backend.
    #[arg(long, env = "TXDOCTOR_NETWORK", global = true, value_enum)]
    pub network: Option<Network>,
    /// Esplora API base URL, such as http://127.0.0.1:3002 (default: the network's public API).
    #[arg(long = "esplora", env = "TXDOCTOR_ESPLORA_URL", global = true)]
    pub esplora_url: Option<String>,
    /// Electrum server, such as tcp://127.0.0.1:50001 or ssl://host:50002; repeat for more.
    #[arg(long = "electrum", global = true)]
    pub electrum_urls: Vec<String>,
    /// Backend URL (http(s):// Esplora, tcp:// or ssl:// Electrum), tried in the order given;
    /// repeat for more. With --esplora and --electrum, these come first.
    #[arg(long = "backend", global = true)]
    pub backend_urls: Vec<String>,
    /// Backend requests in flight at once, per backend.
    #[arg(long, env = "TXDOCTOR_MAX_IN_FLIGHT", global = true)]
    pub max_in_flight: Option<usize>,
    /// Time limit of one backend request, in seconds.
    #[arg(long, env = "TXDOCTOR_TIMEOUT_SECS", global = true)]
    pub timeout_secs: Option<u64>,
    /// Retries of a backend request after a 429, a 5xx or a failed connection.
    #[arg(long, env = "TXDOCTOR_MAX_RETRIES", global = true)]
    pub max_retries: Option<u32>,
    /// Directory where diagnosed raw transactions are remembered.
    #[arg(long, env = "TXDOCTOR_HISTORY_DIR", global = true)]
    pub history_dir: Option<PathBuf>,
    /// Addresses derived ahead on each keychain when looking for the owner's scripts.
    #[arg(long, env = "TXDOCTOR_LOOKAHEAD", global = true)]
    pub lookahead: Option<u32>,
    /// Largest fee a bump may pay without --force, in satoshis.
    #[arg(long, env = "TXDOCTOR_MAX_FEE_SAT", global = true)]
    pub max_fee_sat: Option<u64>,
    /// Replacement rules to satisfy: v31, pre31 or both (the larger minimum).
    #[arg(long, env = "TXDOCTOR_POLICY", global = true, value_parser = parse_policy_version)]
    pub policy: Option<PolicyVersion>,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Diagnose transactions by txid; "-" reads txids from standard input, one a line.
    Diagnose {
        /// Txids to diagnose, or "-" for standard input.
        #[arg(required = true)]
        txids: Vec<String>,
        /// Raw transaction in hex, to trace a transaction the backend no longer has.
        #[arg(long)]
        tx_hex: Option<String>,
        /// Print JSON: one document, or one a line for several txids.
        #[arg(long)]
        json: bool,
    },
    /// Plan fee bumps (RBF, CPFP, cancel) and write a PSBT for a hardware signer.
    Bump {
        /// The stuck transaction.
        txid: String,
        /// Public descriptor of the owner's wallet; repeat for several script types.
        #[arg(long = "descriptor", required = true)]
        descriptors: Vec<String>,
        /// Change descriptor, paired with the --descriptor at the same position.
        #[arg(long = "change-descriptor")]
        change_descriptors: Vec<String>,
        /// Target fee rate in sat/vB.
        #[arg(long, conflicts_with = "blocks")]
        feerate: Option<rust_decimal::Decimal>,
        /// Target confirmation within this many blocks (default 1).
        #[arg(long)]
        blocks: Option<u16>,
        /// Kinds of bump to build.
        #[arg(long, value_enum, default_value_t = Strategy::Auto)]
        strategy: Strategy,
        /// Allow reducing a payment to someone else, for example a send-max with no change.
        #[arg(long)]
        allow_payment_decrease: bool,
        /// Pay a fee above the configured ceiling.
        #[arg(long)]
        force: bool,
        /// Write the recommended PSBT (base64) to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Work with PSBTs.
    Psbt {
        /// The subcommand.
        #[command(subcommand)]
        command: PsbtCommand,
    },
    /// Probe every backend: state, tip height, latency and last error.
    Health {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the JSON API.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "TXDOCTOR_LISTEN")]
        listen: Option<SocketAddr>,
    },
}

/// PSBT subcommands.
#[derive(Debug, Subcommand)]
pub enum PsbtCommand {
    /// Check that a PSBT is ready for a hardware signer and meets the policy minimums.
    Check {
        /// File holding the PSBT in base64, or "-" for standard input.
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_policy_version(text: &str) -> Result<PolicyVersion, String> {
    match text {
        "v31" => Ok(PolicyVersion::V31),
        "pre31" => Ok(PolicyVersion::Pre31),
        "both" => Ok(PolicyVersion::Both),
        _ => Err("expected v31, pre31 or both".to_owned()),
    }
}

impl Cli {
    /// Loads the configuration file and applies environment variables and flags over it.
    ///
    /// # Errors
    ///
    /// Returns the configuration error when the file is unreadable or invalid.
    pub fn config(&self) -> Result<Config, crate::config::ConfigError> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(network) = self.network {
            config.network = network;
        }
        if let Some(url) = &self.esplora_url {
            config.esplora_url = Some(url.clone());
        }
        // Backends named on the command line replace the configured list.
        let mut flagged = self.backend_urls.clone();
        flagged.extend(self.esplora_url.iter().cloned());
        flagged.extend(self.electrum_urls.iter().cloned());
        if !flagged.is_empty() {
            config.backends = flagged;
        }
        if let Some(max_in_flight) = self.max_in_flight {
            config.max_in_flight = max_in_flight;
        }
        if let Some(timeout) = self.timeout_secs {
            config.timeout_secs = timeout;
        }
        if let Some(retries) = self.max_retries {
            config.max_retries = retries;
        }
        if let Some(directory) = &self.history_dir {
            config.history_dir = Some(directory.clone());
        }
        if let Some(lookahead) = self.lookahead {
            config.lookahead = lookahead;
        }
        if let Some(max_fee_sat) = self.max_fee_sat {
            config.max_fee_sat = max_fee_sat;
        }
        if let Some(version) = self.policy {
            config.policy.version = version;
        }
        if let Command::Serve {
            listen: Some(listen),
        } = &self.command
        {
            config.listen = *listen;
        }
        config.validate()?;
        config.backend_specs()?;
        Ok(config)
    }
}

/// Builds the doctor the configuration describes.
///
/// # Errors
///
/// Returns the chain error when a backend URL is invalid or a client cannot be built.
pub fn build_doctor(config: &Config) -> Result<Doctor, crate::chain::ChainError> {
    let specs = config
        .backend_specs()
        .map_err(|error| crate::chain::ChainError::Unavailable {
            backend: "configuration".to_owned(),
            reason: error.to_string(),
        })?;
    let backends = specs
        .iter()
        .map(crate::chain::BackendSpec::connect)
        .collect::<Result<Vec<_>, _>>()?;
    let failover = Arc::new(FailoverSource::new(backends, config.backend_backoff()));
    let source: Arc<dyn ChainSource> =
        Arc::new(CachedSource::new(failover, config.cache_options()));
    let history = Arc::new(History::new(10_000, config.history_dir.clone()));
    let options = crate::analysis::AnalysisOptions {
        policy: config.policy.relay_policy(),
        policy_version: config.policy.version,
    };
    Ok(Doctor::new(source, history, options))
}

/// Builds an Esplora client on the configured server, for scanning the owner's descriptors.
pub fn coin_lookup_client(config: &Config) -> bdk_esplora::esplora_client::AsyncClient {
    let timeout = std::time::Duration::from_secs(config.timeout_secs.max(1));
    // Building a client with only a timeout cannot fail short of a broken TLS setup, which
    // the diagnosis client would have hit first; fall back to the default client then.
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .unwrap_or_default();
    bdk_esplora::esplora_client::AsyncClient::from_client(config.effective_esplora_url(), client)
}

/// Runs the parsed command line and returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let config = match cli.config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let doctor = match build_doctor(&config) {
        Ok(doctor) => Arc::new(doctor),
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_BACKEND);
        }
    };
    match cli.command {
        Command::Diagnose {
            txids,
            tx_hex,
            json,
        } => ExitCode::from(diagnose_command(&doctor, txids, tx_hex, json).await),
        Command::Bump {
            txid,
            descriptors,
            change_descriptors,
            feerate,
            blocks,
            strategy,
            allow_payment_decrease,
            force,
            out,
            json,
        } => {
            let target = match (feerate, blocks) {
                (Some(rate), _) => Target::FeeRate(rate),
                (None, blocks) => Target::Blocks(blocks.unwrap_or(1)),
            };
            let txid = match input::parse_txid(&txid) {
                Ok(txid) => txid,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(EXIT_BAD_INPUT);
                }
            };
            let request = BumpRequest {
                txid,
                descriptors,
                change_descriptors,
                target,
                strategy,
                allow_payment_decrease,
                force,
            };
            let bumper = Bumper::new(doctor, config.bump_config())
                .with_coin_lookup(coin_lookup_client(&config))
                .with_progress(Arc::new(|line| eprintln!("{line}")));
            ExitCode::from(bump_command(&bumper, &request, out, json).await)
        }
        Command::Psbt {
            command: PsbtCommand::Check { file, json },
        } => ExitCode::from(psbt_check_command(&doctor, &file, json, config.max_fee_sat).await),
        Command::Health { json } => ExitCode::from(health_command(&doctor, json).await),
        Command::Serve { .. } => serve(doctor, &config).await,
    }
}

async fn bump_command(
    bumper: &Bumper,
    request: &BumpRequest,
    out: Option<PathBuf>,
    json: bool,
) -> u8 {
    let plan = match bumper.plan(request).await {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("error: {error}");
            return if error.is_bad_input() {
                EXIT_BAD_INPUT
            } else {
                EXIT_BACKEND
            };
        }
    };
    if let Some(path) = out {
        match plan
            .recommended_option()
            .and_then(|option| option.psbt.as_ref())
        {
            Some(psbt) => {
                if let Err(error) = std::fs::write(&path, format!("{psbt}\n")) {
                    eprintln!("error: failed to write {}: {error}", path.display());
                    return EXIT_BAD_INPUT;
                }
                eprintln!("wrote the recommended PSBT to {}", path.display());
            }
            None => eprintln!("no bump is possible, so no PSBT was written"),
        }
    }
    if json {
        say!(
            "{}",
            serde_json::to_string_pretty(&plan).unwrap_or_default()
        );
    } else {
        say!("{}", crate::report::bump_report(&plan).trim_end());
    }
    EXIT_DIAGNOSED
}

async fn psbt_check_command(
    doctor: &Doctor,
    file: &std::path::Path,
    json: bool,
    max_fee_sat: u64,
) -> u8 {
    let bytes = if file == std::path::Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).map(|_| bytes)
    } else {
        std::fs::read(file)
    };
    let bytes = match bytes {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("error: failed to read {}: {error}", file.display());
            return EXIT_BAD_INPUT;
        }
    };
    let psbt = match check::parse_psbt_bytes(&bytes) {
        Ok(psbt) => psbt,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_BAD_INPUT;
        }
    };
    let report = match check::check(doctor, &psbt, max_fee_sat).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_BACKEND;
        }
    };
    if json {
        say!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        return EXIT_DIAGNOSED;
    }
    let ready = if report.ready_for_signer { "yes" } else { "no" };
    say!(
        "  PSBT         {} ({} inputs, {} outputs)",
        report.txid,
        report.inputs,
        report.outputs
    );
    say!("  Ready        {ready}");
    if let (Some(fee), Some(vsize), Some(rate)) =
        (report.fee_sat, report.vsize, report.fee_rate_sat_per_vb)
    {
        say!(
            "  Fee          {fee} sat, about {vsize} vB, {:.2} sat/vB",
            rate.round_dp(2)
        );
    }
    for txid in &report.replaces {
        say!("  Replaces     {txid}");
    }
    for txid in &report.spends_unconfirmed {
        say!("  Pays for     {txid} (unconfirmed parent)");
    }
    if let Some(minimum) = report.minimum_fee_sat {
        say!("  Minimum      {minimum} sat");
    }
    for problem in &report.problems {
        say!("  Problem      {problem}");
    }
    EXIT_DIAGNOSED
}

async fn health_command(doctor: &Doctor, json: bool) -> u8 {
    let readiness = crate::ops::readiness(doctor.source().as_ref()).await;
    let rendered = if json {
        serde_json::to_string_pretty(&readiness).unwrap_or_default()
    } else {
        crate::ops::readiness_report(&readiness)
    };
    say!("{}", rendered.trim_end());
    if readiness.ready {
        EXIT_DIAGNOSED
    } else {
        EXIT_BACKEND
    }
}

async fn serve(doctor: Arc<Doctor>, config: &Config) -> ExitCode {
    tracing::info!(config = ?config, "starting");
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: failed to listen on {}: {error}", config.listen);
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    tracing::info!(listen = %config.listen, backend = doctor.source().name(), "serving");
    let bumper = Bumper::new(doctor.clone(), config.bump_config())
        .with_coin_lookup(coin_lookup_client(config));
    let app = api::router(api::AppState {
        doctor,
        bumper: Arc::new(bumper),
    });
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("stopping");
    };
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        eprintln!("error: the server failed: {error}");
        return ExitCode::from(EXIT_BACKEND);
    }
    ExitCode::SUCCESS
}

/// One txid's outcome, for rendering and the exit code.
enum Outcome {
    Diagnosed(Box<Diagnosis>),
    BadInput(String),
    Backend(String),
}

async fn diagnose_command(
    doctor: &Doctor,
    txids: Vec<String>,
    tx_hex: Option<String>,
    json: bool,
) -> u8 {
    let raw = match tx_hex.as_deref().map(input::parse_tx_hex).transpose() {
        Ok(raw) => raw,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_BAD_INPUT;
        }
    };
    let from_stdin = txids.len() == 1 && txids[0] == "-";
    if !from_stdin && txids.iter().any(|txid| txid == "-") {
        eprintln!("error: \"-\" reads txids from standard input and cannot be mixed with txids");
        return EXIT_BAD_INPUT;
    }
    let inputs: Vec<String> = if from_stdin {
        std::io::stdin()
            .lock()
            .lines()
            .map_while(Result::ok)
            .map(|line| line.trim().to_owned())
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect()
    } else {
        txids
    };
    let one_document = inputs.len() == 1 && !from_stdin;
    let mut worst = EXIT_DIAGNOSED;
    let mut stdout = std::io::stdout().lock();
    for (number, text) in inputs.iter().enumerate() {
        let outcome = diagnose_one(doctor, text, raw.clone()).await;
        let code = match &outcome {
            Outcome::Diagnosed(_) => EXIT_DIAGNOSED,
            Outcome::BadInput(_) => EXIT_BAD_INPUT,
            Outcome::Backend(_) => EXIT_BACKEND,
        };
        worst = worst.max(code);
        if from_stdin {
            let what = match &outcome {
                Outcome::Diagnosed(diagnosis) => crate::report::json_name(&diagnosis.cause()),
                Outcome::BadInput(_) => "invalid input".to_owned(),
                Outcome::Backend(_) => "backend error".to_owned(),
            };
            eprintln!("[{}/{}] {} {what}", number + 1, inputs.len(), short(text));
        }
        let Some(rendered) = render(&outcome, text, json, one_document) else {
            continue;
        };
        if writeln!(stdout, "{rendered}").is_err() {
            return worst;
        }
    }
    worst
}

async fn diagnose_one(
    doctor: &Doctor,
    text: &str,
    raw: Option<crate::bitcoin::Transaction>,
) -> Outcome {
    let txid = match input::parse_txid(text) {
        Ok(txid) => txid,
        Err(error) => return Outcome::BadInput(error.to_string()),
    };
    // A raw transaction given once applies only to the txid it belongs to.
    let raw = raw.filter(|raw| raw.compute_txid() == txid || text.trim() == txid.to_string());
    match doctor.diagnose(txid, raw).await {
        Ok(diagnosis) => Outcome::Diagnosed(Box::new(diagnosis)),
        Err(error @ DiagnoseError::RawTxMismatch { .. }) => Outcome::BadInput(error.to_string()),
        Err(error) => Outcome::Backend(error.to_string()),
    }
}

fn short(text: &str) -> String {
    if input::looks_like_private_key(text) {
        return "(private key, not shown)".to_owned();
    }
    text.chars().take(64).collect()
}

/// Renders one outcome for standard output; an error in text mode goes to standard
/// error instead, and `None` is returned.
fn render(outcome: &Outcome, text: &str, json: bool, one_document: bool) -> Option<String> {
    let (code, message) = match outcome {
        Outcome::Diagnosed(diagnosis) if json && one_document => {
            return serde_json::to_string_pretty(diagnosis).ok();
        }
        Outcome::Diagnosed(diagnosis) if json => {
            return serde_json::to_string(diagnosis).ok();
        }
        Outcome::Diagnosed(diagnosis) => return Some(crate::report::report(diagnosis)),
        Outcome::BadInput(message) => ("bad_input", message),
        Outcome::Backend(message) => ("backend_unavailable", message),
    };
    if json {
        let input = short(text);
        let line =
            serde_json::json!({ "input": input, "error": { "code": code, "message": message } });
        Some(line.to_string())
    } else {
        eprintln!("error: {message}");
        None
    }
}

impl From<InputError> for Outcome {
    fn from(error: InputError) -> Self {
        Outcome::BadInput(error.to_string())
    }
}
