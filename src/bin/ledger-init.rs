//! `ledger-init`: create the index table and a ledger's `META`, check the entry bucket. Run
//! once per environment; safe to run again. `ledger-init --help`.

#![allow(clippy::print_stdout)] // The report on stdout is what this command is for.

use std::process::ExitCode;

use clap::Parser;
use eleanor_ledger::init::{InitArgs, run};

#[tokio::main]
async fn main() -> ExitCode {
    eleanor_ledger::telemetry::init_cli();
    match run(InitArgs::parse()).await {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ledger-init: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
