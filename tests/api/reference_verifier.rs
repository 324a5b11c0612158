//! The Python reference verifier (`scripts/verify_chain.py`) and the Rust verifier agree with
//! the service on a chain the live server wrote and exported, intact and with one byte flipped.
//! Needs `python3` on PATH and fails loudly without it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use eleanor_ledger::chain::entry::{LedgerId, Timestamp};
use eleanor_ledger::chain::hash::Hash;
use eleanor_ledger::chain::verify::{ChainVerifier, Head, IndexClaim, check_entry};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{Api, spawn_app};

const LEDGER: &str = "reference";
/// The seq whose exported bytes get a flipped byte.
const TARGET: u64 = 23;

/// `(seq, kind)` of every failure.
type Failures = BTreeSet<(u64, String)>;

/// One line of the export.
#[derive(Clone)]
struct Line {
    seq: u64,
    stored: Option<Vec<u8>>,
    entry_hash: String,
    prev_hash: String,
    timestamp: String,
}

/// The export's entry lines (its end line, and any checkpoint line, left out).
fn parse_export(ndjson: &str) -> Vec<Line> {
    ndjson
        .lines()
        .filter(|l| l.starts_with(r#"{"seq""#))
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let text = |k: &str| {
                v[k].as_str()
                    .unwrap_or_else(|| panic!("{k}: {l}"))
                    .to_owned()
            };
            Line {
                seq: v["seq"].as_u64().expect("seq"),
                stored: v["stored"]
                    .as_str()
                    .map(|b| BASE64.decode(b).expect("stored is base64")),
                entry_hash: text("entry_hash"),
                prev_hash: text("prev_hash"),
                timestamp: text("timestamp"),
            }
        })
        .collect()
}

/// The export's end line.
fn end_line(ndjson: &str) -> String {
    let last = ndjson.lines().last().expect("a non-empty export");
    assert!(
        last.starts_with(r#"{"end":"#),
        "the last line is the end line: {last}"
    );
    format!("{last}\n")
}

/// Entry lines as the export writes them, followed by `end` (an end line, or nothing).
fn to_ndjson(lines: &[Line], end: &str) -> String {
    let entries: String = lines
        .iter()
        .map(|l| {
            let mut v = serde_json::json!({
                "seq": l.seq,
                "entry_hash": l.entry_hash,
                "prev_hash": l.prev_hash,
                "timestamp": l.timestamp,
            });
            if let Some(stored) = &l.stored {
                v["stored"] = BASE64.encode(stored).into();
            }
            format!("{v}\n")
        })
        .collect();
    entries + end
}

/// SHA-256("eleanor-ledger/entry/v1" || 0x00 || stored), from docs/FORMAT.md, computed here
/// independently of the crate.
fn entry_hash(stored: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"eleanor-ledger/entry/v1\0");
    hasher.update(stored);
    hex::encode(hasher.finalize())
}

fn python3() -> PathBuf {
    match Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
    {
        Ok(out) if out.status.success() && !out.stdout.trim_ascii().is_empty() => {
            PathBuf::from(String::from_utf8_lossy(out.stdout.trim_ascii()).into_owned())
        }
        _ => panic!("python3 is required to run scripts/verify_chain.py but was not found on PATH"),
    }
}

/// Runs the reference verifier on an export file: (exit code, ok, failures, report).
fn python_verify(file: &Path, head_seq: u64, head_hash: &str) -> (i32, bool, Failures, Value) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/verify_chain.py");
    let out = Command::new(python3())
        .arg(script)
        .args(["--ledger", LEDGER, "--jsonl"])
        .arg(file)
        .args([
            "--head-seq",
            &head_seq.to_string(),
            "--head-hash",
            head_hash,
            "--json",
        ])
        .output()
        .expect("run scripts/verify_chain.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "verify_chain.py printed no JSON report ({e}); stdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let failures = report["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| {
            (
                f["seq"].as_u64().expect("seq"),
                f["kind"].as_str().expect("kind").to_owned(),
            )
        })
        .collect();
    let ok = report["ok"].as_bool().expect("ok");
    (out.status.code().unwrap_or(-1), ok, failures, report)
}

/// The crate's verifier over export lines, from `first_seq` (linked to `anchor`) on.
fn rust_verify(
    lines: &[Line],
    first_seq: u64,
    anchor: Hash,
    head: Option<Head>,
) -> (bool, Failures) {
    let id = LedgerId::parse(LEDGER).unwrap();
    let by_seq: BTreeMap<u64, &Line> = lines.iter().map(|l| (l.seq, l)).collect();
    let last = by_seq
        .keys()
        .last()
        .copied()
        .into_iter()
        .chain(head.map(|h| h.seq))
        .max()
        .unwrap_or(0);
    let mut verifier = ChainVerifier::new(first_seq, Some(anchor), 10_000);
    for seq in first_seq..=last {
        let line = by_seq.get(&seq);
        let claim = line.map(|l| IndexClaim {
            entry_hash: l.entry_hash.parse().unwrap(),
            prev_hash: l.prev_hash.parse().unwrap(),
            timestamp: Timestamp::parse(&l.timestamp).unwrap(),
        });
        let stored = line.and_then(|l| l.stored.as_deref());
        verifier.push(check_entry(&id, seq, stored), claim.as_ref());
    }
    let outcome = verifier.finish(head);
    let failures = outcome
        .failures
        .iter()
        .map(|f| {
            let kind = serde_json::to_value(f.kind).unwrap();
            (f.seq, kind.as_str().unwrap().to_owned())
        })
        .collect();
    (outcome.ok(), failures)
}

/// Appends `n` varied records from 4 concurrent clients (so batches hold several entries).
async fn append_varied(api: &Api, n: u64) {
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            let api = api.fresh();
            tokio::spawn(async move {
                for i in (c..n).step_by(4) {
                    let body = match i % 5 {
                        0 => format!(r#"{{"i":{i},"text":"Grüße, 日本語, emoji 😀, escaped \u00e9 \ud83d\ude00"}}"#),
                        1 => format!(r#"{{"i":{i},"nested":{{"a":[1,{{"b":{{"c":[null,true,"x"]}}}}],"z":{{}}}}}}"#),
                        2 => format!(r#"{{"i":{i},"n":[1.50,-0,1E300,6.02e-23,12345678901234567890123,0.1]}}"#),
                        3 => format!(r#"{{"z":"last key first","i":{i},"s":"tab\tquote\"slash\/"}}"#),
                        _ => format!(r#"{{"i":{i},"actor":{{"id":"u-{i}","roles":["admin","audit"]}}}}"#),
                    };
                    api.append_ok(LEDGER, &body).await;
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_and_rust_verifiers_agree_with_the_service_on_a_live_chain() {
    let app = spawn_app().await;
    append_varied(&app, 50).await;
    let head = app.head_ok(LEDGER).await;
    assert_eq!(head.seq, 50);
    let export = app.export_ok(LEDGER, "").await;
    let lines = parse_export(&export);

    // The export is every entry, in order, its bytes hashing to what the index recorded.
    assert_eq!(
        lines.iter().map(|l| l.seq).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<u64>>()
    );
    for line in &lines {
        let stored = line.stored.as_deref().expect("every entry is stored");
        assert_eq!(entry_hash(stored), line.entry_hash, "seq {}", line.seq);
    }
    assert_eq!(lines[49].entry_hash, head.last_hash);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.ndjson");
    std::fs::write(&file, &export).unwrap();
    let (code, ok, failures, report) = python_verify(&file, head.seq, &head.last_hash);
    assert_eq!((code, ok), (0, true), "{report}");
    assert!(failures.is_empty());
    assert_eq!(report["verified"], 50);
    assert_eq!(report["last_hash"], head.last_hash.as_str());
    let rust_head = Head {
        seq: head.seq,
        last_hash: head.last_hash.parse().unwrap(),
    };
    assert_eq!(
        rust_verify(&lines, 1, Hash::GENESIS, Some(rust_head)),
        (true, Failures::new())
    );
    let service = app.verify_ok(LEDGER, "").await;
    assert!(service.ok && service.verified == 50, "{service:?}");

    // One byte flipped in one entry's stored bytes, at several places in the entry: both
    // verifiers fail, name that seq (or the next, for a broken link), and agree exactly.
    let target = lines[TARGET as usize - 1].stored.clone().unwrap();
    let text = String::from_utf8(target.clone()).unwrap();
    let in_record = text.find(r#""i":"#).expect("record has i") + 1; // the key's 'i'
    let in_prev_hash = text.find(r#""prev_hash":""#).unwrap() + 13;
    let in_timestamp = text.find(r#""timestamp":""#).unwrap() + 16;
    let first_brace = 0;
    for (what, offset, mask) in [
        ("a letter of the record", in_record, 0x20u8),
        ("a hex digit of prev_hash", in_prev_hash, 0x01),
        ("a digit of the timestamp", in_timestamp, 0x01),
        ("the opening brace", first_brace, 0x01),
        ("the last byte", target.len() - 1, 0x80),
    ] {
        let mut tampered = lines.clone();
        let stored = tampered[TARGET as usize - 1].stored.as_mut().unwrap();
        stored[offset] ^= mask;
        let file = dir.path().join("tampered.ndjson");
        std::fs::write(&file, to_ndjson(&tampered, &end_line(&export))).unwrap();

        let (code, ok, py_failures, report) = python_verify(&file, head.seq, &head.last_hash);
        assert_eq!((code, ok), (1, false), "{what}: {report}");
        assert!(
            py_failures.iter().any(|(seq, _)| *seq == TARGET),
            "{what}: python names seq {TARGET}: {py_failures:?}"
        );
        let (rust_ok, rust_failures) = rust_verify(&tampered, 1, Hash::GENESIS, Some(rust_head));
        assert!(!rust_ok, "{what}");
        assert!(
            rust_failures.iter().any(|(seq, _)| *seq == TARGET),
            "{what}: rust names seq {TARGET}: {rust_failures:?}"
        );
        assert_eq!(py_failures, rust_failures, "{what}: the verifiers agree");
        assert!(
            py_failures
                .iter()
                .all(|(seq, _)| *seq == TARGET || *seq == TARGET + 1),
            "{what}: nothing else fails: {py_failures:?}"
        );
    }
}

#[tokio::test]
async fn exporting_a_middle_range_gives_exactly_those_entries_linked_to_the_one_before() {
    let app = spawn_app().await;
    for n in 1..=30 {
        app.append_ok(LEDGER, &format!(r#"{{"n":{n}}}"#)).await;
    }
    let (before, _) = app.get_record_ok(LEDGER, 9).await;

    let lines = parse_export(&app.export_ok(LEDGER, "from=10&to=20").await);

    assert_eq!(
        lines.iter().map(|l| l.seq).collect::<Vec<_>>(),
        (10..=20).collect::<Vec<u64>>()
    );
    assert_eq!(lines[0].prev_hash, before.entry_hash);
    for line in &lines {
        let stored = line.stored.as_deref().unwrap();
        assert_eq!(entry_hash(stored), line.entry_hash);
        let (record, _) = app.get_record_ok(LEDGER, line.seq).await;
        assert_eq!(record.entry_hash, line.entry_hash);
        assert_eq!(record.timestamp, line.timestamp);
    }
    let (ok, failures) = rust_verify(&lines, 10, before.entry_hash.parse().unwrap(), None);
    assert!(ok, "{failures:?}");

    // Open ends: from alone runs to the head, to alone starts at 1; past the head is refused
    // (tests/api/export.rs).
    let tail = parse_export(&app.export_ok(LEDGER, "from=25").await);
    assert_eq!(
        tail.iter().map(|l| l.seq).collect::<Vec<_>>(),
        [25, 26, 27, 28, 29, 30]
    );
    assert_eq!(parse_export(&app.export_ok(LEDGER, "to=3").await).len(), 3);
}

/// What one verifier says about a bundle: exit code, the (seq, kind) failures, the report.
struct Said {
    code: i32,
    failures: Failures,
    report: Value,
}

fn said(out: &std::process::Output) -> Said {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let failures = report["failures"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    (
                        f["seq"].as_u64().unwrap(),
                        f["kind"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Said {
        code: out.status.code().unwrap_or(-1),
        failures,
        report,
    }
}

/// `ledger-verify --bundle` and `verify_chain.py --jsonl` on the same file, with the same
/// extra flags; both must agree on the exit code and the failures, which are returned.
fn both_on(file: &Path, extra: &[&str]) -> (i32, Failures, Value, Value) {
    let rust = said(
        &Command::new(env!("CARGO_BIN_EXE_ledger-verify"))
            .args(["--bundle", file.to_str().unwrap(), "--json"])
            .args(extra)
            .output()
            .expect("run ledger-verify"),
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/verify_chain.py");
    let python = said(
        &Command::new(python3())
            .arg(script)
            .args(["--ledger", LEDGER, "--json", "--jsonl"])
            .arg(file)
            .args(extra)
            .output()
            .expect("run scripts/verify_chain.py"),
    );
    assert_eq!(
        (rust.code, &rust.failures),
        (python.code, &python.failures),
        "the verifiers agree on {}: rust {} python {}",
        file.display(),
        rust.report,
        python.report
    );
    (rust.code, rust.failures, rust.report, python.report)
}

fn failures(list: &[(u64, &str)]) -> Failures {
    list.iter().map(|(s, k)| (*s, (*k).to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_or_emptied_export_fails_both_verifiers_and_one_without_an_end_line_needs_a_flag() {
    let app = spawn_app().await;
    for n in 1..=30 {
        app.append_ok(LEDGER, &format!(r#"{{"n":{n}}}"#)).await;
    }
    let export = app.export_ok(LEDGER, "").await;
    let lines = parse_export(&export);
    let end = end_line(&export);
    let ranged = app.export_ok(LEDGER, "from=10&to=20").await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        file
    };

    // Whole, and ranged (its first prev_hash the anchor): both verify, the end attested.
    let (code, found, rust, python) = both_on(&write("whole.jsonl", &export), &[]);
    assert_eq!((code, found), (0, Failures::new()));
    assert_eq!(
        (&rust["end_attested"], &python["end_attested"]),
        (&Value::Bool(true), &Value::Bool(true))
    );
    assert_eq!(rust["head"]["seq"], 30, "{rust}");
    let (code, found, ..) = both_on(&write("ranged.jsonl", &ranged), &[]);
    assert_eq!((code, found), (0, Failures::new()));

    // Cut short: the last entry line gone, the end line kept.
    let cut = to_ndjson(&lines[..29], &end);
    let (code, found, ..) = both_on(&write("cut.jsonl", &cut), &[]);
    assert_eq!((code, found), (1, failures(&[(30, "missing_entry")])));
    let ranged_lines = parse_export(&ranged);
    let ranged_cut = to_ndjson(&ranged_lines[..10], &end_line(&ranged));
    let (code, found, ..) = both_on(&write("ranged-cut.jsonl", &ranged_cut), &[]);
    assert_eq!((code, found), (1, failures(&[(20, "missing_entry")])));
    // The first lines gone.
    let (code, found, ..) = both_on(&write("headless.jsonl", &to_ndjson(&lines[3..], &end)), &[]);
    assert_eq!((code, found), (1, failures(&[(1, "missing_entry")])));

    // Emptied: no entry lines. Accepted with --allow-empty only for a ledger that was empty.
    let (code, found, ..) = both_on(&write("emptied.jsonl", &end), &[]);
    assert_eq!(code, 1);
    assert!(
        found.contains(&(1, "missing_entry".to_owned())),
        "{found:?}"
    );

    // The last entry replaced by another well-formed one: the end line's last_hash catches it.
    let mut swapped = lines.clone();
    let other = app.export_ok(LEDGER, "from=29&to=29").await;
    let mut forged = parse_export(&other).remove(0);
    forged.seq = 30;
    forged.stored = Some(
        String::from_utf8(forged.stored.unwrap())
            .unwrap()
            .replace(r#""seq":29"#, r#""seq":30"#)
            .replace(&lines[28].prev_hash, &lines[29].prev_hash)
            .into_bytes(),
    );
    forged.prev_hash = lines[29].prev_hash.clone();
    forged.entry_hash = entry_hash(forged.stored.as_deref().unwrap());
    swapped[29] = forged;
    let (code, found, ..) = both_on(&write("swapped.jsonl", &to_ndjson(&swapped, &end)), &[]);
    assert_eq!((code, found), (1, failures(&[(30, "end_mismatch")])));

    // No end line (as exports were written before end lines existed, or one cut off with its
    // end): a failure after the last entry, unless --allow-unattested-end, and then the report
    // says the end is unattested.
    let old = write("old.jsonl", &to_ndjson(&lines, ""));
    let (code, found, ..) = both_on(&old, &[]);
    assert_eq!((code, found), (1, failures(&[(31, "end_mismatch")])));
    let (code, found, rust, python) = both_on(&old, &["--allow-unattested-end"]);
    assert_eq!((code, found), (0, Failures::new()));
    assert_eq!(
        (&rust["end_attested"], &python["end_attested"]),
        (&Value::Bool(false), &Value::Bool(false))
    );
    for report in [&rust, &python] {
        assert!(
            report["notes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n.as_str().unwrap().contains("unattested")),
            "{report}"
        );
    }

    // A line after the end line is refused as no export (exit 2) by both.
    let (code, ..) = both_on(
        &write(
            "after.jsonl",
            &format!("{export}{}", to_ndjson(&lines[..1], "")),
        ),
        &[],
    );
    assert_eq!(code, 2);
}
