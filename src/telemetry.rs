//! Logging: `tracing` to stderr as text or JSON, filtered by `RUST_LOG` (default `info` for
//! the server, `warn` for the command-line tools). Text has colour codes only when stderr is
//! a terminal, so a log file or a collector never sees escape sequences.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber for the server. Call once, first thing in a binary.
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// Installs the global subscriber for a command-line tool, whose output is its report: only
/// warnings and errors are logged unless `RUST_LOG` asks for more (`RUST_LOG=debug` shows,
/// for instance, the storage SDK's full error behind a one-sentence message).
pub fn init_cli() {
    init_with_default(LogFormat::Text, "warn");
}

fn init_with_default(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}
