//! The command line: what each command takes, and which file runs it. Each command lives in
//! its own file and returns `Result<(), Failure>` (`process.rs` turns that into the exit code).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use paygate::telemetry::LogFormat;

mod check_config;
mod dev;
mod hash_token;
mod healthcheck;
mod process;
mod serve;
mod settle;
mod sim;

#[derive(Parser)]
#[command(
    name = "paygate",
    version,
    about = "gRPC gateway for subscription cancels and refunds at payment providers"
)]
pub(crate) struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "PAYGATE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log format (overrides the file and PAYGATE_LOG_FORMAT).
    #[arg(long, global = true, value_parser = log_format_parser())]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway from the configuration file and environment (the default).
    #[command(after_help = paygate::config::environment_help())]
    Serve,
    /// Load and validate the configuration and every file it names (keys, passwords, tokens,
    /// TLS) as `serve` would, without network: exit 0 and a summary, or exit 2 and one line.
    #[command(after_help = paygate::config::environment_help())]
    CheckConfig,
    /// Ask a running gateway's gRPC health service, as a container health check or the
    /// kubelet's grpc probe does: exit 0 when SERVING, 1 otherwise (plaintext gRPC only).
    Healthcheck(healthcheck::Args),
    /// Local demo: an Antom simulator with demo data on loopback and a gateway in front of it.
    #[command(after_help = "Environment:
  PAYGATE_LISTEN_ADDR   gRPC address (default 127.0.0.1:50051)
  PAYGATE_NOTIFY_ADDR   notification address (default: a free loopback port)
  RUST_LOG              log filter (default info)")]
    Dev(dev::Args),
    /// Print the SHA-256 of a bearer token read from standard input, for the tokens file.
    HashToken,
    /// Operator: settle a refund key whose outcome the gateway could not decide
    /// (OUTCOME_UNKNOWN), after checking the provider's back office.
    Settle(settle::Args),
    /// Run a provider simulator alone.
    Sim(sim::Args),
}

fn log_format_parser() -> impl clap::builder::TypedValueParser<Value = LogFormat> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["text", "json"])
        .map(|s| s.parse::<LogFormat>().unwrap_or_default())
}

/// Parses the command line and runs the command.
pub(crate) async fn run() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config.as_deref();
    let format = cli.log_format;
    let done = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve::run(config, format).await,
        Command::CheckConfig => check_config::run(config),
        Command::Healthcheck(args) => healthcheck::run(args).await,
        Command::Dev(args) => dev::run(args, format).await,
        Command::HashToken => hash_token::run(),
        Command::Settle(args) => settle::run(args).await,
        Command::Sim(args) => sim::run(args, format).await,
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.exit(),
    }
}
