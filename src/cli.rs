//! The command line: parse, call the use case, render, and choose the exit code.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::analysis::verdict::OptionKind;
use crate::analysis::{Diagnosis, Status};
use crate::api;
use crate::chain::ChainSource;
use crate::chain::cache::CachedSource;
use crate::chain::failover::FailoverSource;
use crate::config::{Config, Network};
use crate::diagnose::{DiagnoseError, Doctor};
use crate::history::History;
use crate::input::{self, InputError};
use crate::policy::PolicyVersion;

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
    /// Replacement rules to satisfy: v31, pre31 or both (the larger minimum).
    #[arg(long, env = "TXDOCTOR_POLICY", global = true, value_parser = parse_policy_version)]
    pub policy: Option<PolicyVersion>,
    /// What to do.
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
        /// Raw transaction in hex, to trace a transaction the backend no longer knows.
        #[arg(long)]
        tx_hex: Option<String>,
        /// Print JSON: one document, or one a line for several txids.
        #[arg(long)]
        json: bool,
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
        if let Some(version) = self.policy {
            config.policy.version = version;
        }
        if let Command::Serve {
            listen: Some(listen),
        } = &self.command
        {
            config.listen = *listen;
        }
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
        Command::Health { json } => ExitCode::from(health_command(&doctor, json).await),
        Command::Serve { .. } => serve(doctor, &config).await,
    }
}

async fn health_command(doctor: &Doctor, json: bool) -> u8 {
    let readiness = crate::ops::readiness(doctor.source().as_ref()).await;
    let rendered = if json {
        serde_json::to_string_pretty(&readiness).unwrap_or_default()
    } else {
        crate::ops::readiness_report(&readiness)
    };
    println!("{}", rendered.trim_end());
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
    let app = api::router(api::AppState { doctor });
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
                Outcome::Diagnosed(diagnosis) => format!("{:?}", diagnosis.cause()).to_lowercase(),
                Outcome::BadInput(_) => "invalid input".to_owned(),
                Outcome::Backend(_) => "backend error".to_owned(),
            };
            eprintln!("[{}/{}] {} {what}", number + 1, inputs.len(), short(text));
        }
        let rendered = render(&outcome, text, json, one_document);
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

fn render(outcome: &Outcome, text: &str, json: bool, one_document: bool) -> String {
    let (code, message) = match outcome {
        Outcome::Diagnosed(diagnosis) if json && one_document => {
            return serde_json::to_string_pretty(diagnosis).unwrap_or_default();
        }
        Outcome::Diagnosed(diagnosis) if json => {
            return serde_json::to_string(diagnosis).unwrap_or_default();
        }
        Outcome::Diagnosed(diagnosis) => return report(diagnosis),
        Outcome::BadInput(message) => ("bad_input", message),
        Outcome::Backend(message) => ("backend_unavailable", message),
    };
    if json {
        let input = short(text);
        serde_json::json!({ "input": input, "error": { "code": code, "message": message } })
            .to_string()
    } else {
        eprintln!("error: {message}");
        String::new()
    }
}

/// Renders a diagnosis as a readable report.
pub fn report(diagnosis: &Diagnosis) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("  {label:<13}{value}\n"));
    line("Transaction", diagnosis.txid.to_string());
    line("Status", status_text(&diagnosis.status));
    if let Some(tx) = &diagnosis.transaction {
        line(
            "Fee",
            format!(
                "{} sat ({} BTC), {} vB, {:.2} sat/vB",
                tx.fee_sat, tx.fee_btc, tx.size.sigop_adjusted_vsize, tx.fee_rate_sat_per_vb
            ),
        );
    }
    if let Some(package) = &diagnosis.package {
        line(
            "Effective",
            format!(
                "{:.2} sat/vB: chunk of {} transaction(s), {} sat over {} vB",
                package.effective_fee_rate_sat_per_vb,
                package.chunk.txids.len(),
                package.chunk.fee_sat,
                package.chunk.vsize
            ),
        );
        let relatives = |list: &[crate::analysis::package::RelativeTx]| {
            if list.is_empty() {
                return "none".to_owned();
            }
            list.iter()
                .map(|tx| format!("{} ({:.2} sat/vB)", tx.txid, tx.fee_rate_sat_per_vb))
                .collect::<Vec<_>>()
                .join(", ")
        };
        line("Ancestors", relatives(&package.ancestors));
        line("Descendants", relatives(&package.descendants));
    }
    if let Some(replaceability) = &diagnosis.replaceability {
        line("Replaceable", replaceability.notes.join(" "));
    }
    if let Some(targets) = &diagnosis.targets {
        line(
            "Targets",
            format!(
                "next block {} sat/vB, about 6 blocks {} sat/vB",
                targets.next_block_sat_per_vb, targets.six_blocks_sat_per_vb
            ),
        );
    }
    if let Some(position) = &diagnosis.position {
        line(
            "Position",
            format!(
                "{} to {} vB ahead of it in a mempool of {} vB",
                position.vsize_ahead_min, position.vsize_ahead_max, position.mempool_vsize
            ),
        );
    }
    if let Some(estimate) = &diagnosis.estimate {
        line("Estimate", estimate.summary.clone());
    }
    out.push_str(&format!(
        "\n  Verdict      {:?}: {}\n",
        diagnosis.verdict.cause, diagnosis.verdict.headline
    ));
    if !diagnosis.verdict.options.is_empty() {
        out.push_str("\n  Options (extra fee to reach the next block / about 6 blocks):\n");
        for option in &diagnosis.verdict.options {
            out.push_str(&format!("    {}\n", option_text(option)));
        }
    }
    out.push_str(&format!("\n  Advice       {}\n", diagnosis.verdict.advice));
    let triage = &diagnosis.triage;
    out.push_str(&format!(
        "  Triage       {:?} priority, {}, {:?} acts\n",
        triage.priority, triage.category, triage.actor
    ));
    for gap in &diagnosis.data_gaps {
        out.push_str(&format!("  Data gap     {gap}\n"));
    }
    out
}

fn status_text(status: &Status) -> String {
    match status {
        Status::Confirmed {
            block_height,
            confirmations,
            ..
        } => format!("confirmed in block {block_height}, {confirmations} confirmation(s)"),
        Status::Mempool => "unconfirmed, in the mempool".to_owned(),
        Status::NotFound { .. } => "not found by the backend".to_owned(),
    }
}

fn option_text(option: &crate::analysis::verdict::BumpOption) -> String {
    let name = match option.kind {
        OptionKind::Rbf => "rbf",
        OptionKind::Cpfp => "cpfp",
        OptionKind::Cancel => "cancel",
        OptionKind::Wait => "wait",
    };
    if !option.possible {
        return format!(
            "{name:<7}not possible: {}",
            option.reason.clone().unwrap_or_default()
        );
    }
    let cost = |cost: &Option<crate::analysis::verdict::OptionCost>| {
        cost.as_ref().map_or("-".to_owned(), |cost| {
            format!("+{} sat (fee {} sat)", cost.extra_fee_sat, cost.fee_sat)
        })
    };
    if option.kind == OptionKind::Wait {
        return format!("{name:<7}{}", option.note);
    }
    let minimum = option.minimum_fee_sat.map_or(String::new(), |fee| {
        format!(", nodes accept from {fee} sat")
    });
    format!(
        "{name:<7}{} / {}{minimum}",
        cost(&option.next_block),
        cost(&option.six_blocks)
    )
}

impl From<InputError> for Outcome {
    fn from(error: InputError) -> Self {
        Outcome::BadInput(error.to_string())
    }
}
