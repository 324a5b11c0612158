//! `ledger-verify`: verify a ledger from storage or an export bundle, without the service.
//! `ledger-verify --help`.

#![allow(clippy::print_stdout)] // The report on stdout is what this command is for.

use std::process::ExitCode;

use eleanor_ledger::audit::{AuditError, run};

#[tokio::main]
async fn main() -> ExitCode {
    eleanor_ledger::telemetry::init_cli();
    let (args, metrics_file) = match eleanor_ledger::textfile::parse_verify_args(std::env::args_os())
    {
        Ok(parsed) => parsed,
        Err(e) if !e.use_stderr() => {
            // --help, --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let error = AuditError::from_clap(&e);
            if std::env::args_os().any(|a| a == "--json") {
                print!("{}", error.to_json());
            }
            let _ = e.print();
            return ExitCode::from(error.exit_code());
        }
    };
    let (json, ledger) = (args.json, args.ledger.clone());
    match run(args).await {
        Ok(verdict) => {
            print!("{}", verdict.text);
            let ok = verdict.exit_code == 0;
            if let Err(e) =
                eleanor_ledger::textfile::record(metrics_file.as_deref(), ledger.as_deref(), ok)
            {
                eprintln!("ledger-verify: {e}");
                return ExitCode::from(2);
            }
            ExitCode::from(verdict.exit_code)
        }
        Err(e) => {
            if json {
                print!("{}", e.to_json());
            }
            eprintln!("ledger-verify: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
