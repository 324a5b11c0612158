//! `ledger-verify --metrics-file FILE`: the verdict of a verification as a file for
//! node-exporter's textfile collector, so the verification alerts see a scheduled
//! `ledger-verify` run and keep seeing its result across restarts of the service and of the
//! verifier (the file stays until the next run replaces it).
//!
//! The file holds the two gauges the service exports for its own verifications, with the same
//! names, labelled `ledger_id` and `verifier="ledger-verify"`: of the one ledger it verified,
//! how many failed (0 or 1), and when. The service's own gauges carry no ledger id (a series
//! per ledger does not scale to a million ledgers); this file names the one ledger an operator
//! chose to verify offline, one file per ledger scheduled.
//!
//! ```text
//! ledger_verify_failing_ledgers{ledger_id="default",verifier="ledger-verify"} 0
//! ledger_verify_last_timestamp_seconds{ledger_id="default",verifier="ledger-verify"} 1764763200
//! ```
//!
//! It is written to a temporary file beside it and renamed into place, so the collector never
//! reads half a file. Only a verdict (exit 0 or 1) is written: a run that could not verify
//! (exit 2 or 3) leaves the last result, and `EleanorLedgerVerificationStale` catches a
//! verifier that keeps failing to run.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Arg, CommandFactory, FromArgMatches, value_parser};

use crate::audit::VerifyArgs;

const FLAG: &str = "metrics_file";

/// Parses `ledger-verify`'s arguments from `argv`, with `--metrics-file FILE` added to
/// [`VerifyArgs`].
pub fn parse_verify_args<I, T>(argv: I) -> Result<(VerifyArgs, Option<PathBuf>), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut matches = VerifyArgs::command()
        .arg(
            Arg::new(FLAG)
                .long("metrics-file")
                .value_name("FILE")
                .value_parser(value_parser!(PathBuf))
                .requires("ledger")
                .help(
                    "Also write the verdict to FILE (e.g. .../textfile/ledger-verify-ID.prom) for \
                     node-exporter's textfile collector: ledger_verify_failing_ledgers and \
                     ledger_verify_last_timestamp_seconds. Needs --ledger.",
                ),
        )
        .try_get_matches_from(argv)?;
    let path = matches.remove_one::<PathBuf>(FLAG);
    let args = VerifyArgs::from_arg_matches_mut(&mut matches)?;
    Ok((args, path))
}

/// The file's content: the verdict on `ledger_id` (`ok`: no failure found), reached at `at`.
pub fn render(ledger_id: &str, ok: bool, at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let labels = format!(
        r#"{{ledger_id="{}",verifier="ledger-verify"}}"#,
        escape(ledger_id)
    );
    format!(
        "# HELP ledger_verify_failing_ledgers 1 if the last verification of the ledger found failures, 0 if it found it intact.\n\
         # TYPE ledger_verify_failing_ledgers gauge\n\
         ledger_verify_failing_ledgers{labels} {}\n\
         # HELP ledger_verify_last_timestamp_seconds When the ledger was last verified (Unix time).\n\
         # TYPE ledger_verify_last_timestamp_seconds gauge\n\
         ledger_verify_last_timestamp_seconds{labels} {secs}\n",
        u8::from(!ok)
    )
}

/// Writes [`render`]'s content to `path` atomically (a temporary file in the same directory,
/// synced, then renamed over `path`).
pub fn write(path: &Path, ledger_id: &str, ok: bool, at: SystemTime) -> std::io::Result<()> {
    use std::io::Write;
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let mut temporary_name = OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(temporary_name);
    let written = std::fs::File::create(&temporary).and_then(|mut file| {
        file.write_all(render(ledger_id, ok, at).as_bytes())?;
        file.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&temporary, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&temporary);
            Err(e)
        }
    }
}

/// After a verdict on `ledger` (`ok`: no failure found), writes it to `metrics_file` if one was
/// given (the flag requires `--ledger`), now; the error is one sentence naming the file.
pub fn record(metrics_file: Option<&Path>, ledger: Option<&str>, ok: bool) -> Result<(), String> {
    match (metrics_file, ledger) {
        (Some(path), Some(ledger)) => write(path, ledger, ok, SystemTime::now())
            .map_err(|e| format!("cannot write --metrics-file {}: {e}", path.display())),
        _ => Ok(()),
    }
}

/// A label value in the text exposition format.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_file_holds_both_gauges_of_the_verdict() {
        let at = UNIX_EPOCH + Duration::from_secs(1_764_763_200);
        let text = render("default", false, at);
        assert!(text.contains(
            "\nledger_verify_failing_ledgers{ledger_id=\"default\",verifier=\"ledger-verify\"} 1\n"
        ));
        assert!(text.contains("\nledger_verify_last_timestamp_seconds{ledger_id=\"default\",verifier=\"ledger-verify\"} 1764763200\n"));
        assert!(render("default", true, at).contains("verifier=\"ledger-verify\"} 0\n"));
        assert_eq!(escape("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }

    #[test]
    fn writing_replaces_the_file_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger-verify-default.prom");
        write(&path, "default", false, SystemTime::now()).unwrap();
        write(&path, "default", true, SystemTime::now()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("ledger_verify_failing_ledgers{ledger_id=\"default\",verifier=\"ledger-verify\"} 0\n"),
            "{text}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the .prom file: {names:?}");
    }

    #[test]
    fn the_flag_parses_and_needs_a_ledger() {
        let (args, path) = parse_verify_args([
            "ledger-verify",
            "--ledger",
            "default",
            "--metrics-file",
            "/tmp/x.prom",
        ])
        .unwrap();
        assert_eq!(args.ledger.as_deref(), Some("default"));
        assert_eq!(path, Some(PathBuf::from("/tmp/x.prom")));
        let (_, none) = parse_verify_args(["ledger-verify", "--ledger", "default"]).unwrap();
        assert_eq!(none, None);
        let err = parse_verify_args(["ledger-verify", "--metrics-file", "/tmp/x.prom"])
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }
}
