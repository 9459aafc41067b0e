//! Options several commands share: `--config` and `--log-format`. Each command takes only the
//! options it reads, so its help shows only those.

use std::path::PathBuf;

use paygate::telemetry::LogFormat;

/// `--config` (PAYGATE_CONFIG), for the commands that read the configuration file.
#[derive(clap::Args, Default)]
pub(super) struct ConfigArg {
    /// TOML configuration file.
    #[arg(long = "config", env = "PAYGATE_CONFIG")]
    pub(super) path: Option<PathBuf>,
}

/// `--log-format`, for the commands that log.
#[derive(clap::Args, Default)]
pub(super) struct LogFormatArg {
    /// Log format, text or json (for serve, it overrides the file's log_format and
    /// PAYGATE_LOG_FORMAT).
    #[arg(long = "log-format", value_parser = log_format_parser())]
    pub(super) format: Option<LogFormat>,
}

fn log_format_parser() -> impl clap::builder::TypedValueParser<Value = LogFormat> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["text", "json"])
        .map(|s| s.parse::<LogFormat>().unwrap_or_default())
}
