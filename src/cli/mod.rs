//! The command line: what each command takes, and which file runs it. Each command lives in
//! its own file and returns `Result<(), Failure>` (`process.rs` turns that into the exit code).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use self::args::{ConfigArg, LogFormatArg};

mod admin;
mod args;
mod check_config;
mod dev;
mod hash_token;
mod healthcheck;
mod process;
mod serve;
mod settle;
mod sim;

/// The command line. `--config` and `--log-format` before the command (`paygate --config F
/// serve`, as the Helm chart runs it) are the default command's; each command takes (and its
/// help shows) only the options it reads.
#[derive(Parser)]
#[command(
    name = "paygate",
    version,
    about = "gRPC gateway for subscription cancels and refunds at payment providers"
)]
pub(crate) struct Cli {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    log_format: LogFormatArg,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The options of `serve` and `check-config`.
#[derive(clap::Args, Default)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    log_format: LogFormatArg,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway from the configuration file and environment (the default).
    #[command(after_help = paygate::config::environment_help())]
    Serve(ServeArgs),
    /// Load and validate the configuration and every file it names (keys, passwords, tokens,
    /// TLS) as `serve` would, without network: exit 0 and a summary, or exit 2 and one line.
    #[command(after_help = paygate::config::environment_help())]
    CheckConfig(ConfigArg),
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
    /// Operator: list the keys that need a person, read a key's history, settle it, read the
    /// audit trail, through a running gateway's admin service.
    Admin(admin::Args),
    /// Operator, with no gateway running: settle a refund key whose outcome the gateway could
    /// not decide (OUTCOME_UNKNOWN) on the store directly, after checking the provider's back
    /// office.
    Settle(settle::Args),
    /// Run a provider simulator alone.
    Sim(sim::Args),
}

/// Parses the command line and runs the command.
pub(crate) async fn run() -> ExitCode {
    let cli = Cli::parse();
    // What is given before the command counts for it, unless the command gives its own.
    let config = |own: ConfigArg| own.path.or_else(|| cli.config.path.clone());
    let format = |own: LogFormatArg| own.format.or(cli.log_format.format);
    let done = match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(a) => serve::run(config(a.config).as_deref(), format(a.log_format)).await,
        Command::CheckConfig(a) => check_config::run(config(a).as_deref()),
        Command::Healthcheck(args) => healthcheck::run(args).await,
        Command::Dev(mut args) => {
            let f = format(std::mem::take(&mut args.log_format));
            dev::run(args, f).await
        }
        Command::HashToken => hash_token::run(),
        Command::Admin(args) => admin::run(args).await,
        Command::Settle(mut args) => {
            let path = config(std::mem::take(&mut args.config));
            settle::run(args, path.as_deref()).await
        }
        Command::Sim(mut args) => {
            let f = format(std::mem::take(&mut args.log_format));
            sim::run(args, f).await
        }
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.exit(),
    }
}
