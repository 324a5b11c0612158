//! The Python reference verifier (`scripts/verify_chain.py`) and the Rust verifier
//! (`eleanor_ledger::chain::verify`) must agree: on the vectors chain, and on copies of it with
//! one byte flipped, an entry removed or swapped, or a wrong head. "Agree" means the same
//! ok/not-ok and the same (seq, kind) failures; a flipped byte in entry k must make both name
//! seq k when an index (entry hashes) is given.
//!
//! Both verifiers walk seqs 1..M, M = max(largest seq given, head seq), as docs/FORMAT.md says.
//! The vectors chain holds keyed and unkeyed entries; a key repeated in a later entry must be
//! named by both, at that seq and with the same detail.
//! These tests need `python3` on PATH and fail loudly without it.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use eleanor_ledger::chain::entry::{
    EntryHeader, IdempotencyKey, LedgerId, Record, Timestamp, decode, encode,
};
use eleanor_ledger::chain::hash::Hash;
use eleanor_ledger::chain::verify::{ChainVerifier, Head, IndexClaim, Outcome, check_entry};
use serde_json::Value;

const LEDGER: &str = "audit-demo";

/// A chain as both verifiers see it: stored bytes and (optionally) index claims, by seq.
#[derive(Clone)]
struct Chain {
    stored: BTreeMap<u64, Vec<u8>>,
    claims: BTreeMap<u64, IndexClaim>,
    head: Option<Head>,
}

/// (seq, kind) pairs; the order within one seq is not part of the contract.
type Failures = BTreeSet<(u64, String)>;

struct Report {
    exit_code: i32,
    ok: bool,
    verified: u64,
    last_hash: Option<String>,
    failures: Failures,
    /// Each failure's detail, by (seq, kind).
    details: BTreeMap<(u64, String), String>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn vectors() -> Value {
    let text = std::fs::read_to_string(root().join("tests/data/vectors/vectors.json"))
        .expect("vectors.json");
    serde_json::from_str(&text).expect("vectors.json parses")
}

/// The vectors chain, with the index claims and head the vectors record for it.
fn vectors_chain() -> Chain {
    let v = vectors();
    let mut chain = Chain {
        stored: BTreeMap::new(),
        claims: BTreeMap::new(),
        head: None,
    };
    for e in v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["ledger_id"] == LEDGER)
    {
        let seq = e["seq"].as_u64().expect("seq");
        let hash = |field: &str| {
            e[field]
                .as_str()
                .expect("hash")
                .parse::<Hash>()
                .expect("hash")
        };
        chain.stored.insert(
            seq,
            hex::decode(e["stored_hex"].as_str().expect("hex")).expect("hex"),
        );
        chain.claims.insert(
            seq,
            IndexClaim {
                entry_hash: hash("entry_hash"),
                prev_hash: hash("prev_hash"),
                timestamp: Timestamp::parse(e["timestamp"].as_str().expect("ts")).expect("ts"),
            },
        );
    }
    let head_hash = v["chain"]["head_hash"]
        .as_str()
        .expect("head")
        .parse()
        .expect("hash");
    chain.head = Some(Head {
        seq: v["chain"]["head_seq"].as_u64().expect("seq"),
        last_hash: head_hash,
    });
    let head_seq = chain.head.expect("a head").seq;
    assert_eq!(
        chain.stored.len() as u64,
        head_seq,
        "the vectors chain is 1..=head"
    );
    assert!(
        chain.stored.values().any(|b| decode(b)
            .expect("an entry")
            .header
            .idempotency_key
            .is_some()),
        "the vectors chain holds keyed entries"
    );
    chain
}

/// The chain's head seq (its last entry).
fn last_seq(chain: &Chain) -> u64 {
    chain.head.expect("a head").seq
}

/// An index claim that matches `bytes` exactly.
fn claim_for(bytes: &[u8]) -> IndexClaim {
    let header = decode(bytes).expect("an entry").header;
    IndexClaim {
        entry_hash: Hash::of_entry(bytes),
        prev_hash: header.prev_hash,
        timestamp: header.timestamp,
    }
}

/// `bytes` re-encoded with the idempotency key `key` instead of its own.
fn with_key(bytes: &[u8], key: Option<&str>) -> Vec<u8> {
    let entry = decode(bytes).expect("an entry");
    let header = EntryHeader {
        idempotency_key: key.map(|k| IdempotencyKey::parse(k).expect("a key")),
        ..entry.header
    };
    encode(
        &header,
        &Record::parse(entry.record.get().as_bytes()).expect("a record"),
    )
}

/// A chain of `LEDGER` from seq 1, entry `i + 1` appended with `keys[i]`, with matching
/// claims and head.
fn keyed_chain(keys: &[Option<&str>]) -> Chain {
    let ledger_id = LedgerId::parse(LEDGER).expect("ledger id");
    let mut chain = Chain {
        stored: BTreeMap::new(),
        claims: BTreeMap::new(),
        head: None,
    };
    let mut prev_hash = Hash::GENESIS;
    for (seq, key) in (1..).zip(keys) {
        let header = EntryHeader {
            ledger_id: ledger_id.clone(),
            seq,
            prev_hash,
            timestamp: Timestamp::from_unix_micros(1_764_384_000_000_000 + seq as i64)
                .expect("a timestamp"),
            idempotency_key: key.map(|k| IdempotencyKey::parse(k).expect("a key")),
        };
        let bytes = encode(
            &header,
            &Record::parse(format!(r#"{{"n":{seq}}}"#).as_bytes()).expect("a record"),
        );
        prev_hash = Hash::of_entry(&bytes);
        chain.claims.insert(seq, claim_for(&bytes));
        chain.stored.insert(seq, bytes);
        chain.head = Some(Head {
            seq,
            last_hash: prev_hash,
        });
    }
    chain
}

fn without_claims(chain: &Chain) -> Chain {
    Chain {
        claims: BTreeMap::new(),
        ..chain.clone()
    }
}

fn rust_verify(ledger: &str, chain: &Chain) -> (bool, Failures) {
    let outcome = rust_outcome(ledger, chain);
    let failures = outcome
        .failures
        .iter()
        .map(|f| (f.seq, kind_name(f.kind)))
        .collect();
    (outcome.ok(), failures)
}

fn kind_name(kind: eleanor_ledger::chain::verify::FailureKind) -> String {
    serde_json::to_value(kind)
        .expect("kind")
        .as_str()
        .expect("kind")
        .to_owned()
}

fn rust_outcome(ledger: &str, chain: &Chain) -> Outcome {
    let id = LedgerId::parse(ledger).expect("ledger id");
    let last = [
        chain.stored.keys().last(),
        chain.claims.keys().last(),
        chain.head.as_ref().map(|h| &h.seq),
    ]
    .into_iter()
    .flatten()
    .copied()
    .max()
    .unwrap_or(0);
    let mut verifier = ChainVerifier::new(1, Some(Hash::GENESIS), 10_000);
    // As the service walks: a run of seqs with nothing stored or claimed is skipped in one step.
    let known: BTreeSet<u64> = chain
        .stored
        .keys()
        .chain(chain.claims.keys())
        .copied()
        .collect();
    for &seq in &known {
        verifier.skip_missing(seq - 1);
        let evidence = check_entry(&id, seq, chain.stored.get(&seq).map(Vec::as_slice));
        verifier.push(evidence, chain.claims.get(&seq));
    }
    verifier.skip_missing(last);
    verifier.finish(chain.head)
}

/// The Python interpreter, resolved once: `python3` on PATH may be a slow wrapper script
/// (pyenv), and these tests start it well over a hundred times.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let found = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output();
        match found {
            Ok(out) if out.status.success() && !out.stdout.trim_ascii().is_empty() => {
                PathBuf::from(String::from_utf8_lossy(out.stdout.trim_ascii()).into_owned())
            }
            _ => panic!(
                "python3 is required to run scripts/verify_chain.py but was not found on PATH"
            ),
        }
    })
}

fn run_python(args: &[&str]) -> std::process::Output {
    Command::new(python())
        .arg(root().join("scripts/verify_chain.py"))
        .args(args)
        .output()
        .expect("run python3 scripts/verify_chain.py")
}

fn python_verify(ledger: &str, chain: &Chain, mode: Mode) -> Report {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = match mode {
        Mode::Dir => {
            assert!(
                chain.claims.is_empty(),
                "the directory input carries no index"
            );
            for (seq, bytes) in &chain.stored {
                std::fs::write(dir.path().join(format!("{seq:018}.json")), bytes)
                    .expect("write entry");
            }
            vec!["--dir".to_owned(), dir.path().display().to_string()]
        }
        Mode::Jsonl => {
            let path = dir.path().join("chain.jsonl");
            std::fs::write(&path, jsonl(chain)).expect("write jsonl");
            // Hand-made lines without an export's end line: the chain rules are what is
            // compared here (the end line's rules: the tests at the end of this file).
            vec![
                "--jsonl".to_owned(),
                path.display().to_string(),
                "--allow-unattested-end".to_owned(),
            ]
        }
    };
    let mut args: Vec<String> = vec!["--json".into(), "--ledger".into(), ledger.into()];
    args.extend(input);
    if let Some(head) = chain.head {
        args.extend([
            "--head-seq".into(),
            head.seq.to_string(),
            "--head-hash".into(),
            head.last_hash.to_hex(),
        ]);
    }
    let out = run_python(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "verify_chain.py printed no JSON report ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Report {
        exit_code: out.status.code().expect("an exit code"),
        ok: report["ok"].as_bool().expect("ok"),
        verified: report["verified"].as_u64().expect("verified"),
        last_hash: report["last_hash"].as_str().map(str::to_owned),
        failures: report["failures"]
            .as_array()
            .expect("failures")
            .iter()
            .map(|f| {
                (
                    f["seq"].as_u64().expect("seq"),
                    f["kind"].as_str().expect("kind").to_owned(),
                )
            })
            .collect(),
        details: report["failures"]
            .as_array()
            .expect("failures")
            .iter()
            .map(|f| {
                (
                    (
                        f["seq"].as_u64().expect("seq"),
                        f["kind"].as_str().expect("kind").to_owned(),
                    ),
                    f["detail"].as_str().expect("detail").to_owned(),
                )
            })
            .collect(),
    }
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Dir,
    Jsonl,
}

fn jsonl(chain: &Chain) -> String {
    let seqs: BTreeSet<u64> = chain
        .stored
        .keys()
        .chain(chain.claims.keys())
        .copied()
        .collect();
    let mut out = String::new();
    for seq in seqs {
        let mut line = serde_json::Map::new();
        line.insert("seq".into(), seq.into());
        if let Some(bytes) = chain.stored.get(&seq) {
            line.insert("stored".into(), base64(bytes).into());
        }
        if let Some(c) = chain.claims.get(&seq) {
            line.insert("entry_hash".into(), c.entry_hash.to_hex().into());
            line.insert("prev_hash".into(), c.prev_hash.to_hex().into());
            line.insert("timestamp".into(), c.timestamp.to_string().into());
        }
        out.push_str(&Value::Object(line).to_string());
        out.push('\n');
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Runs both verifiers over `chain` in the given mode and asserts they agree; returns the
/// failures they both found.
fn both_agree(ledger: &str, chain: &Chain, mode: Mode, what: &str) -> Failures {
    let (rust_ok, rust_failures) = rust_verify(ledger, chain);
    let py = python_verify(ledger, chain, mode);
    assert_eq!(
        py.ok, rust_ok,
        "{what} ({mode:?}): ok differs; python {:?}, rust {:?}",
        py.failures, rust_failures
    );
    assert_eq!(
        py.failures, rust_failures,
        "{what} ({mode:?}): failures differ"
    );
    assert_eq!(
        py.exit_code,
        if rust_ok { 0 } else { 1 },
        "{what} ({mode:?}): exit code"
    );
    rust_failures
}

#[test]
fn both_verifiers_accept_the_vectors_chain() {
    let chain = vectors_chain();
    let head = chain.head.expect("a head");
    for (mode, chain) in [
        (Mode::Jsonl, chain.clone()),
        (Mode::Dir, without_claims(&chain)),
    ] {
        assert!(both_agree(LEDGER, &chain, mode, "the vectors chain").is_empty());
        let py = python_verify(LEDGER, &chain, mode);
        assert_eq!(py.verified, chain.stored.len() as u64);
        assert_eq!(py.last_hash, Some(head.last_hash.to_hex()));
    }
}

#[test]
fn the_committed_chain_files_verify_as_they_are() {
    let v = vectors();
    let head_seq = v["chain"]["head_seq"].to_string();
    let head_hash = v["chain"]["head_hash"].as_str().expect("head hash");
    let data = root().join("tests/data/vectors");
    // chain.jsonl is an export as written before end lines existed (export.jsonl: the tests
    // below).
    for input in [
        vec!["--dir", &data.join("chain").display().to_string()],
        vec![
            "--jsonl",
            &data.join("chain.jsonl").display().to_string(),
            "--allow-unattested-end",
        ],
    ] {
        let out = run_python(
            &[
                &input[..],
                &[
                    "--ledger",
                    LEDGER,
                    "--head-seq",
                    &head_seq,
                    "--head-hash",
                    head_hash,
                ],
            ]
            .concat(),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{input:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.starts_with(&format!(
                "OK: ledger audit-demo: {head_seq} entries verified"
            )),
            "{stdout}"
        );
    }
}

/// Byte positions worth flipping in an entry: its first and last bytes, one inside each header
/// field (a key's escapes included), and some inside the record.
fn positions(bytes: &[u8]) -> Vec<usize> {
    let text = String::from_utf8_lossy(bytes);
    let at = |needle: &str, offset: usize| {
        text.find(needle).expect("a header field") + needle.len() + offset
    };
    let record = at("\"record\":", 0);
    let mut p = vec![
        0,
        at("\"v\":", 0),
        at("\"ledger_id\":\"", 2),
        at("\"seq\":", 0),
        at("\"prev_hash\":\"", 10),
        at("\"timestamp\":\"", 3),
        at("\"timestamp\":\"", 24),
        record,
        record + 2,
        (record + bytes.len()) / 2,
        bytes.len() - 3,
        bytes.len() - 1,
    ];
    // In a key: its first character, and the escape of its first quote or backslash.
    if let Some(key) = text.find("\"idempotency_key\":\"") {
        let key = key + "\"idempotency_key\":\"".len();
        p.push(key);
        if let Some(escape) = text[key..].find('\\') {
            p.extend([key + escape, key + escape + 1]);
        }
    }
    p.sort_unstable();
    p.dedup();
    p
}

#[test]
fn a_flipped_byte_makes_both_verifiers_fail_and_name_its_seq() {
    let chain = vectors_chain();
    let head = chain.head.expect("a head");
    // One thread per entry: each case starts python, so this is bound by process start-up.
    let runs: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (1..=head.seq)
            .map(|k| {
                let chain = &chain;
                scope.spawn(move || tamper_entry(chain, k))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a tampering worker panicked"))
            .sum()
    });
    assert!(runs >= 40, "only {runs} tampered copies were tried");
}

/// Flips one byte of entry `k` at each of [`positions`], checking both verifiers each time;
/// returns how many tampered copies were tried.
fn tamper_entry(chain: &Chain, k: u64) -> usize {
    let mut runs = 0;
    for (n, pos) in positions(&chain.stored[&k]).into_iter().enumerate() {
        let mut tampered = chain.clone();
        // Vary the bit so both letters and digits turn into other bytes, some of them invalid.
        tampered.stored.get_mut(&k).expect("entry")[pos] ^= [0x01, 0x20, 0x80, 0x04][n % 4];
        let what = format!("entry {k} byte {pos} flipped");

        // With the index's entry hashes, the entry itself is named.
        let failures = both_agree(LEDGER, &tampered, Mode::Jsonl, &what);
        assert!(
            failures.iter().any(|(s, _)| *s == k),
            "{what}: seq {k} not named: {failures:?}"
        );

        // From the entry files alone: named at k (malformed, or the head for the last entry)
        // or at k + 1 (the link from the next entry breaks).
        let failures = both_agree(LEDGER, &without_claims(&tampered), Mode::Dir, &what);
        assert!(
            failures.iter().any(|(s, _)| *s == k || *s == k + 1),
            "{what}: neither seq {k} nor {} named: {failures:?}",
            k + 1
        );
        runs += 1;
    }
    runs
}

#[test]
fn a_missing_entry_is_reported_at_its_seq_by_both() {
    let mut chain = vectors_chain();
    chain.stored.remove(&3);
    let failures = both_agree(LEDGER, &chain, Mode::Jsonl, "entry 3 removed");
    assert_eq!(failures, BTreeSet::from([(3, "missing_entry".to_owned())]));
    let failures = both_agree(
        LEDGER,
        &without_claims(&chain),
        Mode::Dir,
        "entry 3 removed",
    );
    assert_eq!(failures, BTreeSet::from([(3, "missing_entry".to_owned())]));
}

#[test]
fn a_stray_entry_far_past_the_end_is_one_missing_run_for_both_not_a_walk_to_it() {
    const FAR: u64 = 1_000_000_000_000;
    let mut chain = vectors_chain();
    let end = last_seq(&chain);
    let last = chain.stored[&end].clone();
    chain.stored.insert(FAR, last);
    chain.stored.remove(&3);
    for (mode, chain) in [
        (Mode::Jsonl, chain.clone()),
        (Mode::Dir, without_claims(&chain)),
    ] {
        let failures = both_agree(LEDGER, &chain, mode, "a stray entry at 10^12");
        let expected = BTreeSet::from([
            (3, "missing_entry".to_owned()),
            (end, "head_mismatch".to_owned()),
            (end + 1, "missing_entry".to_owned()),
            (FAR, "malformed_entry".to_owned()),
        ]);
        assert_eq!(failures, expected, "{mode:?}");
    }
    let beyond = Chain {
        head: Some(Head {
            seq: end + 4,
            last_hash: Hash::GENESIS,
        }),
        ..without_claims(&vectors_chain())
    };
    assert_eq!(
        both_agree(
            LEDGER,
            &beyond,
            Mode::Dir,
            "a head four past the last entry"
        ),
        BTreeSet::from([(end + 1, "missing_entry".to_owned())]),
        "one run for the four seqs after the last entry"
    );
}

#[test]
fn swapped_entries_are_reported_at_both_seqs_by_both() {
    let mut chain = vectors_chain();
    let (two, three) = (chain.stored[&2].clone(), chain.stored[&3].clone());
    chain.stored.insert(2, three);
    chain.stored.insert(3, two);
    for (mode, chain) in [
        (Mode::Jsonl, chain.clone()),
        (Mode::Dir, without_claims(&chain)),
    ] {
        let failures = both_agree(LEDGER, &chain, mode, "entries 2 and 3 swapped");
        for seq in [2, 3] {
            assert!(
                failures.contains(&(seq, "malformed_entry".to_owned())),
                "{mode:?}: {failures:?}"
            );
        }
    }
}

#[test]
fn a_head_that_is_not_the_chain_end_is_a_head_mismatch_for_both() {
    let chain = without_claims(&vectors_chain());
    let head = chain.head.expect("a head");
    let end = head.seq;
    let wrong_hash = Chain {
        head: Some(Head {
            seq: end,
            last_hash: Hash::GENESIS,
        }),
        ..chain.clone()
    };
    assert_eq!(
        both_agree(LEDGER, &wrong_hash, Mode::Dir, "head with a wrong hash"),
        BTreeSet::from([(end, "head_mismatch".to_owned())])
    );
    let short = Chain {
        head: Some(Head {
            seq: end - 1,
            last_hash: head.last_hash,
        }),
        ..chain.clone()
    };
    assert_eq!(
        both_agree(LEDGER, &short, Mode::Dir, "head below the last entry"),
        BTreeSet::from([(end - 1, "head_mismatch".to_owned())])
    );
    let beyond = Chain {
        head: Some(Head {
            seq: end + 1,
            last_hash: head.last_hash,
        }),
        ..chain
    };
    assert_eq!(
        both_agree(LEDGER, &beyond, Mode::Dir, "head above the last entry"),
        BTreeSet::from([(end + 1, "missing_entry".to_owned())])
    );
}

#[test]
fn entries_of_another_ledger_are_malformed_for_both() {
    let chain = without_claims(&vectors_chain());
    let failures = both_agree(
        "other-ledger",
        &chain,
        Mode::Dir,
        "verified as another ledger",
    );
    assert_eq!(
        failures.len(),
        chain.stored.len(),
        "each entry is malformed: {failures:?}"
    );
}

#[test]
fn every_rejected_entry_vector_is_malformed_for_both() {
    for r in vectors()["rejected_entries"]
        .as_array()
        .expect("rejected_entries")
    {
        let stored = hex::decode(r["stored_hex"].as_str().expect("hex")).expect("hex");
        let chain = Chain {
            stored: BTreeMap::from([(1, stored)]),
            claims: BTreeMap::new(),
            head: None,
        };
        let failures = both_agree(LEDGER, &chain, Mode::Dir, r["name"].as_str().expect("name"));
        assert_eq!(
            failures,
            BTreeSet::from([(1, "malformed_entry".to_owned())]),
            "{}",
            r["name"]
        );
    }
}

/// Runs both verifiers (index and directory input) over `chain`, asserts they name exactly
/// `expected` and give the same detail for each `duplicate_idempotency_key`; returns the
/// details by seq.
fn both_name_duplicates(chain: &Chain, expected: &Failures, what: &str) -> BTreeMap<u64, String> {
    let rust: BTreeMap<u64, String> = rust_outcome(LEDGER, chain)
        .failures
        .into_iter()
        .filter(|f| kind_name(f.kind) == "duplicate_idempotency_key")
        .map(|f| (f.seq, f.detail))
        .collect();
    for (mode, chain) in [
        (Mode::Jsonl, chain.clone()),
        (Mode::Dir, without_claims(chain)),
    ] {
        assert_eq!(
            &both_agree(LEDGER, &chain, mode, what),
            expected,
            "{what} ({mode:?})"
        );
        let py = python_verify(LEDGER, &chain, mode);
        for (seq, detail) in &rust {
            let key = (*seq, "duplicate_idempotency_key".to_owned());
            assert_eq!(
                py.details.get(&key),
                Some(detail),
                "{what} ({mode:?}): detail"
            );
        }
    }
    rust
}

#[test]
fn a_key_planted_again_in_the_vectors_chain_is_named_by_both_at_the_later_seq() {
    let mut chain = vectors_chain();
    let end = last_seq(&chain);
    let (first, key) = chain
        .stored
        .iter()
        .find_map(|(seq, b)| Some((*seq, decode(b).ok()?.header.idempotency_key?)))
        .expect("a keyed entry");
    // The last entry re-written with that key: still linked, so only the key gives it away.
    let planted = with_key(&chain.stored[&end], Some(key.as_str()));
    chain.claims.insert(end, claim_for(&planted));
    chain.head = Some(Head {
        seq: end,
        last_hash: Hash::of_entry(&planted),
    });
    chain.stored.insert(end, planted);
    let expected = BTreeSet::from([(end, "duplicate_idempotency_key".to_owned())]);
    let details = both_name_duplicates(&chain, &expected, "a key planted in the last entry");
    assert_eq!(
        details[&end],
        format!(
            "idempotency key {:?} is also the key of seq {first}",
            key.as_str()
        )
    );
}

#[test]
fn every_later_use_of_a_key_is_named_by_both_and_distinct_keys_pass() {
    let k = r#"order "42" \ retry"#;
    let chain = keyed_chain(&[Some(k), None, Some("other"), Some(k), Some("K"), Some(k)]);
    let expected = BTreeSet::from([
        (4, "duplicate_idempotency_key".to_owned()),
        (6, "duplicate_idempotency_key".to_owned()),
    ]);
    let details = both_name_duplicates(&chain, &expected, "a key at seqs 1, 4 and 6");
    assert!(
        details.values().all(|d| d.ends_with("of seq 1")),
        "{details:?}"
    );
    let distinct = keyed_chain(&[
        Some("a"),
        Some("A"),
        None,
        Some("a "),
        Some("\""),
        Some("\\"),
    ]);
    both_name_duplicates(&distinct, &BTreeSet::new(), "distinct keys");
}

#[test]
fn a_key_is_not_compared_with_a_malformed_entrys_key_by_either() {
    // Seq 1's bytes hold seq 2's entry (so seq 1 is malformed): its key counts for nothing.
    let mut chain = keyed_chain(&[Some("k"), Some("k"), Some("k")]);
    let two = chain.stored[&2].clone();
    chain.stored.insert(1, two);
    let expected = BTreeSet::from([
        (1, "malformed_entry".to_owned()),
        (3, "duplicate_idempotency_key".to_owned()),
    ]);
    let failures = both_agree(
        LEDGER,
        &without_claims(&chain),
        Mode::Dir,
        "seq 1 malformed",
    );
    assert!(
        expected.is_subset(&failures)
            && !failures.contains(&(2, "duplicate_idempotency_key".into())),
        "{failures:?}"
    );
}

#[test]
fn an_empty_directory_is_an_empty_intact_chain() {
    let chain = Chain {
        stored: BTreeMap::new(),
        claims: BTreeMap::new(),
        head: None,
    };
    assert!(both_agree(LEDGER, &chain, Mode::Dir, "no entries").is_empty());
}

#[test]
fn usage_errors_exit_with_status_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let chain_dir = root()
        .join("tests/data/vectors/chain")
        .display()
        .to_string();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let bad_base64 = write("b64.jsonl", "{\"seq\":1,\"stored\":\"not base64!\"}\n");
    let twice = write(
        "twice.jsonl",
        "{\"seq\":1,\"stored\":\"e30=\"}\n{\"seq\":1,\"stored\":\"e30=\"}\n",
    );
    let unknown = write(
        "unknown.jsonl",
        "{\"seq\":1,\"stored\":\"e30=\",\"entry-hash\":\"x\"}\n",
    );
    let missing = dir.path().join("absent").display().to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["--dir", &chain_dir],
        vec!["--ledger", LEDGER],
        vec!["--ledger", "../x", "--dir", &chain_dir],
        vec!["--ledger", LEDGER, "--dir", &chain_dir, "--head-seq", "5"],
        vec![
            "--ledger",
            LEDGER,
            "--dir",
            &chain_dir,
            "--head-seq",
            "5",
            "--head-hash",
            "ABC",
        ],
        vec!["--ledger", LEDGER, "--dir", &missing],
        vec!["--ledger", LEDGER, "--jsonl", &missing],
        vec!["--ledger", LEDGER, "--jsonl", &bad_base64],
        vec!["--ledger", LEDGER, "--jsonl", &twice],
        vec!["--ledger", LEDGER, "--jsonl", &unknown],
    ];
    for args in cases {
        let out = run_python(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{args:?}: no message on stderr");
    }
    assert!(Path::new(&chain_dir).is_dir());
}

/// `ledger-verify --bundle FILE --json` and `verify_chain.py --jsonl FILE --json`, with the same
/// extra flags: each one's exit code, (seq, kind) failures and report or error.
fn both_on_bundle(
    file: &Path,
    ledger: &str,
    extra: &[&str],
) -> [(i32, Failures, Value, String); 2] {
    let rust = Command::new(env!("CARGO_BIN_EXE_ledger-verify"))
        .args([
            "--bundle",
            file.to_str().unwrap(),
            "--json",
            "--ledger",
            ledger,
        ])
        .args(extra)
        .output()
        .expect("run ledger-verify");
    let mut args = vec![
        "--jsonl",
        file.to_str().unwrap(),
        "--json",
        "--ledger",
        ledger,
    ];
    args.extend_from_slice(extra);
    let python = run_python(&args);
    [rust, python].map(|out| {
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
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
        (
            out.status.code().unwrap_or(-1),
            failures,
            report,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
}

const EXPORT_PUBLIC_KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

fn python_has_cryptography() -> bool {
    Command::new(python())
        .args(["-c", "import cryptography"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn both_verifiers_check_the_committed_export_and_the_export_from_before_end_lines_only_with_a_flag()
{
    let export = root().join("tests/data/vectors/export.jsonl");
    let mut extra = vec![];
    if python_has_cryptography() {
        extra = vec!["--public-key", EXPORT_PUBLIC_KEY];
    }
    for (code, failures, report, stderr) in both_on_bundle(&export, LEDGER, &extra) {
        assert_eq!((code, failures), (0, Failures::new()), "{report} {stderr}");
        assert_eq!(report["end_attested"], true, "{report}");
        assert_eq!(report["head"]["seq"], 8, "{report}");
    }
    // The same chain as exports were written before end lines existed.
    let old = root().join("tests/data/vectors/chain.jsonl");
    for (code, failures, report, stderr) in both_on_bundle(&old, LEDGER, &[]) {
        assert_eq!(code, 1, "{report} {stderr}");
        assert_eq!(
            failures,
            [(9, "end_mismatch".to_owned())].into(),
            "{report}"
        );
    }
    for (code, failures, report, stderr) in
        both_on_bundle(&old, LEDGER, &["--allow-unattested-end"])
    {
        assert_eq!((code, failures), (0, Failures::new()), "{report} {stderr}");
        assert_eq!(report["end_attested"], false, "{report}");
    }
    // A forged end line (another last hash, signature kept) is a bad signature for both.
    if python_has_cryptography() {
        let text = std::fs::read_to_string(&export).unwrap();
        let head = "60e5fcb1d31469e874dfa1c7743f12f314b681b874bed5676c7308ae4bfc0cca";
        let last = text.lines().last().unwrap();
        let forged_end = last.replacen(
            &format!(r#""head_hash":"{head}""#),
            &format!(r#""head_hash":"{}""#, "0".repeat(64)),
            1,
        );
        assert_ne!(forged_end, last);
        let dir = tempfile::tempdir().unwrap();
        let forged = dir.path().join("forged.jsonl");
        std::fs::write(&forged, text.replace(last, &forged_end)).unwrap();
        for (code, failures, report, _) in both_on_bundle(&forged, LEDGER, &extra) {
            assert_eq!(code, 1, "{report}");
            assert_eq!(
                failures,
                [(8, "bad_signature".to_owned())].into(),
                "{report}"
            );
        }
    }
}

#[test]
fn both_verifiers_refuse_another_ledger_an_api_error_body_and_an_empty_bundle_alike() {
    let export = root().join("tests/data/vectors/export.jsonl");
    for (code, _, report, stderr) in both_on_bundle(&export, "someone-else", &[]) {
        assert_eq!(code, 2, "{report} {stderr}");
        assert_eq!(report["error"]["code"], "usage_error", "{report}");
        let message = report["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("does not match") && message.contains("audit-demo"),
            "{message}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let error = dir.path().join("error.json");
    std::fs::write(
        &error,
        "{\"error\":{\"code\":\"unauthenticated\",\"message\":\"Give a bearer token.\"}}\n",
    )
    .unwrap();
    for (code, _, report, stderr) in both_on_bundle(&error, LEDGER, &[]) {
        assert_eq!(code, 2, "{report} {stderr}");
        let message = report["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("is an error answer of the API")
                && message.contains("unauthenticated"),
            "{message}"
        );
    }
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    for (code, failures, report, _) in both_on_bundle(&empty, LEDGER, &["--allow-unattested-end"]) {
        assert_eq!(code, 1, "{report}");
        assert_eq!(
            failures,
            [(1, "missing_entry".to_owned())].into(),
            "{report}"
        );
    }
    for (code, failures, report, _) in
        both_on_bundle(&empty, LEDGER, &["--allow-unattested-end", "--allow-empty"])
    {
        assert_eq!((code, failures), (0, Failures::new()), "{report}");
    }
}
