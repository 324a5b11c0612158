//! `ledger-verify`: verify a ledger from storage or an export bundle, without the service.
//! `ledger-verify --help`.

#![allow(clippy::print_stdout)] // The report on stdout is what this command is for.

use std::process::ExitCode;

use clap::Parser;
use eleanor_ledger::audit::{VerifyArgs, run};

#[tokio::main]
async fn main() -> ExitCode {
    let args = match VerifyArgs::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(args).await {
        Ok(verdict) => {
            print!("{}", verdict.text);
            ExitCode::from(verdict.exit_code)
        }
        Err(e) => {
            eprintln!("ledger-verify: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
