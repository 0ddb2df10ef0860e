//! The txdoctor command: parse the command line, run it, exit with its code.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let filter = match EnvFilter::try_from_env("TXDOCTOR_LOG") {
        Ok(filter) => filter,
        Err(error) => {
            if std::env::var_os("TXDOCTOR_LOG").is_some() {
                eprintln!("warning: ignoring TXDOCTOR_LOG: {error}");
            }
            EnvFilter::new("warn,txdoctor=info")
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = txdoctor::cli::Cli::parse();
    txdoctor::cli::run(cli).await
}
