//! `ledger-verify`: verify a ledger from storage or an export bundle, without the service.
//! `ledger-verify --help`.

#![allow(clippy::print_stdout)] // The report on stdout is what this command is for.

use std::process::ExitCode;

use eleanor_ledger::audit::run;

#[tokio::main]
async fn main() -> ExitCode {
    let (args, metrics_file) = match eleanor_ledger::textfile::parse_verify_args(std::env::args_os())
    {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let ledger = args.ledger.clone();
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
            eprintln!("ledger-verify: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
