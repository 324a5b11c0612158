//! `ledger-server`: the HTTP service. Configuration: `ledger-server --help`.

use std::process::ExitCode;

use clap::Parser;
use eleanor_ledger::app::{Application, StartError};
use eleanor_ledger::config::ServerArgs;

#[tokio::main]
async fn main() -> ExitCode {
    let args = ServerArgs::parse();
    if args.probe {
        return match eleanor_ledger::probe::probe(args.listen).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ledger-server --probe: {e}");
                ExitCode::from(1)
            }
        };
    }
    let config = match args.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ledger-server: {e}");
            return ExitCode::from(2);
        }
    };
    eleanor_ledger::telemetry::init(config.log_format);
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("ledger-server: {e}");
            return ExitCode::from(if matches!(e, StartError::Config(_)) {
                2
            } else {
                1
            });
        }
    };
    app.run_until(eleanor_ledger::app::shutdown_signal()).await;
    ExitCode::SUCCESS
}
