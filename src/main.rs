//! The txdoctor command: parse the command line, run it, exit with its code.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("TXDOCTOR_LOG")
                .unwrap_or_else(|_| EnvFilter::new("warn,txdoctor=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = txdoctor::cli::Cli::parse();
    txdoctor::cli::run(cli).await
}
