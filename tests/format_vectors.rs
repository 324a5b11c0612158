//! Golden vectors for the entry format of `docs/FORMAT.md`, kept in `tests/data/vectors/`.
//!
//! The committed files are static data. Two kinds of test hold them to the code:
//!
//! - the vectors are re-derived from their own inputs (the fields and the record text as a
//!   client sent it) with `eleanor_ledger::chain`, and must match byte for byte;
//! - the files must be exactly what the case list below generates, so the list is the one place
//!   to change them. After editing the cases, rewrite the files with
//!   `ELEANOR_LEDGER_BLESS_VECTORS=1 cargo nextest run --test format_vectors` and review the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use eleanor_ledger::chain::checkpoint::{CheckpointBody, ExportEndBody, PublicKey, Signer};
use eleanor_ledger::chain::entry::{
    EntryHeader, IdempotencyKey, InvalidRecord, LedgerId, MAX_SEQ, Record, Timestamp, decode,
    encode,
};
use eleanor_ledger::chain::hash::{ENTRY_HASH_DOMAIN, Hash};
use eleanor_ledger::chain::keys::entry_key;
use eleanor_ledger::chain::verify::{ChainVerifier, Evidence, Head, IndexClaim, check_entry};
use eleanor_ledger::ledger::{ExportCheckpointLine, ExportEndLine, ExportEntryLine, ExportLine};
use serde::{Deserialize, Serialize};

/// The ledger whose entries form the committed chain (`chain.jsonl` and `chain/`).
const CHAIN_LEDGER: &str = "audit-demo";

/// RFC 8032 test 1's seed: signs the checkpoint and end line of `export.jsonl`.
const EXPORT_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
/// Its public key, as docs/FORMAT.md gives it.
const EXPORT_PUBLIC_KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
/// The seq of `export.jsonl`'s checkpoint line.
const EXPORT_CHECKPOINT_SEQ: u64 = 6;

fn export_signer() -> Signer {
    Signer::from_key_file_bytes(EXPORT_SEED.as_bytes()).expect("the RFC 8032 test seed")
}

/// How an entry's `prev_hash` is chosen.
enum Prev {
    Genesis,
    /// The entry hash of the named earlier case.
    HashOf(&'static str),
}

struct Case {
    name: &'static str,
    about: &'static str,
    ledger_id: &'static str,
    seq: u64,
    prev: Prev,
    timestamp: &'static str,
    /// The `Idempotency-Key` it was appended with.
    idempotency_key: Option<String>,
    record_input: &'static str,
}

/// The key of the `keyed_entry` vector, and of the `key_*` rejected entries.
const KEY: &str = r#"tenant/7 "retry" C:\jobs"#;

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "first_entry",
            about: "Seq 1 of a ledger: prev_hash is the genesis value. The record's whitespace is removed.",
            ledger_id: CHAIN_LEDGER,
            seq: 1,
            prev: Prev::Genesis,
            timestamp: "2025-11-29T02:40:00.123456Z",
            idempotency_key: None,
            record_input: "{ \"action\": \"login\", \"actor\": \"alice\", \"ip\": \"192.0.2.7\" }\n",
        },
        Case {
            name: "second_entry",
            about: "Seq 2, chained on first_entry: its prev_hash is first_entry's entry_hash.",
            ledger_id: CHAIN_LEDGER,
            seq: 2,
            prev: Prev::HashOf("first_entry"),
            timestamp: "2025-11-29T02:40:00.130001Z",
            idempotency_key: None,
            record_input: "{\r\n  \"action\" : \"read\",\r\n  \"actor\" : \"alice\",\r\n  \"resource\" : \"invoices/2025-11\"\r\n}\r\n",
        },
        Case {
            name: "non_ascii_text",
            about: "Raw UTF-8 stays raw UTF-8; \\u escapes (a surrogate pair included) and other escapes stay exactly as sent; spaces inside strings stay.",
            ledger_id: CHAIN_LEDGER,
            seq: 3,
            prev: Prev::HashOf("second_entry"),
            timestamp: "2025-11-29T02:40:01.000000Z",
            idempotency_key: None,
            record_input: r#"{ "actor": "Zoë Ångström", "city": "東京", "crab": "🦀",
  "escaped": "Zo\u00eb \u6771\u4EAC \ud83e\udd80",
  "specials": "tab\t quote\" backslash\\ slash\/ nul\u0000  two  spaces  " }"#,
        },
        Case {
            name: "nested_json",
            about: "Nested objects and arrays, empty containers, literals; key order kept (not sorted); the same key in different objects is allowed.",
            ledger_id: CHAIN_LEDGER,
            seq: 4,
            prev: Prev::HashOf("non_ascii_text"),
            timestamp: "2025-11-29T02:40:01.000001Z",
            idempotency_key: None,
            record_input: "{\"z\": {\"y\": [1, {\"x\": [], \"w\": {}}, [true, false, null]], \"a\": \" inner  spaces \"},\n \"a\": [ {\"k\": 1}, {\"k\": 2} ],\t\"empty\": {} }",
        },
        Case {
            name: "numbers",
            about: "Numbers keep their exact text: integers beyond 64 bits, trailing zeros, exponents in either case, -0, digits beyond double precision, and magnitudes up to the largest double.",
            ledger_id: CHAIN_LEDGER,
            seq: 5,
            prev: Prev::HashOf("nested_json"),
            timestamp: "2025-11-29T02:40:59.999999Z",
            idempotency_key: None,
            record_input: "{ \"big_int\": 123456789012345678901234567890, \"u64_max_plus_1\": 18446744073709551616,\n  \"i64_min_minus_1\": -9223372036854775809, \"fraction\": 1.50, \"small\": 2.5e-3,\n  \"exponent\": 1E300, \"signed_exponent\": -6.02214076E+23, \"negative_zero\": -0,\n  \"long_fraction\": 3.14159265358979323846264338327950288,\n  \"largest_double\": 1.7976931348623157e308, \"underflows_to_zero\": 1e-400 }",
        },
        Case {
            name: "max_seq_latest_timestamp",
            about: "The largest seq (18 digits, so its key has no padding) and the latest timestamp; a one-character ledger id; an empty record.",
            ledger_id: "L",
            seq: MAX_SEQ,
            prev: Prev::HashOf("first_entry"),
            timestamp: "9999-12-31T23:59:59.999999Z",
            idempotency_key: None,
            record_input: "{}",
        },
        Case {
            name: "longest_ledger_id_earliest_timestamp",
            about: "A 64-character ledger id using every kind of allowed character, and the earliest timestamp.",
            ledger_id: "A-z_9A-z_9A-z_9A-z_9A-z_9A-z_9A-z_9A-z_9A-z_9A-z_9A-z_9A-z_90123",
            seq: 10,
            prev: Prev::HashOf("second_entry"),
            timestamp: "0001-01-01T00:00:00.000000Z",
            idempotency_key: None,
            record_input: " {\"ok\":true} ",
        },
        Case {
            name: "keyed_entry",
            about: "Appended with an Idempotency-Key: the key is a field between timestamp and record, with only \\\" and \\\\ escaped (the / stays as it is).",
            ledger_id: CHAIN_LEDGER,
            seq: 6,
            prev: Prev::HashOf("numbers"),
            timestamp: "2025-11-29T02:41:00.000000Z",
            idempotency_key: Some(KEY.into()),
            record_input: "{ \"action\": \"export\", \"actor\": \"bob\", \"format\": \"csv\" }",
        },
        Case {
            name: "key_every_printable_character",
            about: "A key of every printable ASCII character, space to ~, in order: only the quote and the backslash are escaped.",
            ledger_id: CHAIN_LEDGER,
            seq: 7,
            prev: Prev::HashOf("keyed_entry"),
            timestamp: "2025-11-29T02:41:00.000001Z",
            idempotency_key: Some((0x20..=0x7e_u8).map(char::from).collect()),
            record_input: "{\"n\":7}",
        },
        Case {
            name: "unkeyed_after_keyed",
            about: "An entry without a key after keyed ones: the six-field form, chained as any other.",
            ledger_id: CHAIN_LEDGER,
            seq: 8,
            prev: Prev::HashOf("key_every_printable_character"),
            timestamp: "2025-11-29T02:42:00.000000Z",
            idempotency_key: None,
            record_input: "{\"action\":\"logout\",\"actor\":\"alice\"}",
        },
        Case {
            name: "longest_key_every_character_escaped",
            about: "The longest key, 255 characters, each a quote or a backslash: 510 bytes between the key's quotes.",
            ledger_id: "K",
            seq: 1,
            prev: Prev::Genesis,
            timestamp: "2025-11-29T02:43:00.000000Z",
            idempotency_key: Some("\"\\".repeat(128)[..IdempotencyKey::MAX_LEN].into()),
            record_input: "{}",
        },
    ]
}

/// Record bodies the format refuses (an append gets `invalid_record`; a stored entry holding
/// one is malformed).
fn rejected_record_inputs() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        (
            "not_an_object",
            "a record is a JSON object",
            b"[1,2]".to_vec(),
        ),
        ("two_values", "exactly one JSON value", b"{} {}".to_vec()),
        (
            "duplicate_key_nested",
            "no key twice in one object, at any depth",
            br#"{"a":{"k":1,"k":2}}"#.to_vec(),
        ),
        (
            "duplicate_key_after_unescaping",
            "keys are compared after decoding escapes",
            br#"{"a":1,"\u0061":2}"#.to_vec(),
        ),
        (
            "number_too_large",
            "numbers must be finite as IEEE doubles",
            br#"{"n":1e400}"#.to_vec(),
        ),
        (
            "integer_too_large",
            "numbers must be finite as IEEE doubles",
            format!("{{\"n\":-{}}}", "9".repeat(400)).into_bytes(),
        ),
        (
            "nan_literal",
            "NaN and Infinity are not JSON",
            br#"{"n":NaN}"#.to_vec(),
        ),
        (
            "lone_surrogate_escape",
            "a \\u escape may not encode half a surrogate pair",
            br#"{"s":"\ud800"}"#.to_vec(),
        ),
        (
            "invalid_utf8",
            "the text is UTF-8",
            b"{\"s\":\"\xff\"}".to_vec(),
        ),
        (
            "raw_control_character",
            "control characters in strings must be escaped",
            b"{\"s\":\"a\tb\"}".to_vec(),
        ),
        (
            "nested_too_deep",
            "at most 127 nested objects/arrays, the record itself counting as one",
            format!("{{\"a\":{}1{}}}", "[".repeat(127), "]".repeat(127)).into_bytes(),
        ),
    ]
}

/// Stored byte strings that are not entries: each is first_entry's bytes with one change.
fn rejected_entries(first: &str, second_prev: &str) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let zeros = "0".repeat(64);
    let sub = |from: &str, to: &str| {
        assert!(first.contains(from), "{from}");
        first.replacen(from, to, 1).into_bytes()
    };
    let record_start = first.find("\"record\":").expect("a record field") + "\"record\":".len();
    let with_record = |record: &str| format!("{}{record}}}", &first[..record_start]).into_bytes();
    let mut trailing_newline = first.as_bytes().to_vec();
    trailing_newline.push(b'\n');
    vec![
        (
            "space_after_colon",
            "no whitespace outside strings",
            sub("\"seq\":1", "\"seq\": 1"),
        ),
        (
            "space_in_record",
            "the record is stored compact",
            sub("{\"action\"", "{ \"action\""),
        ),
        (
            "trailing_newline",
            "nothing after the closing brace",
            trailing_newline,
        ),
        (
            "fields_reordered",
            "fields in the one fixed order",
            sub(
                "\"v\":1,\"ledger_id\":\"audit-demo\"",
                "\"ledger_id\":\"audit-demo\",\"v\":1",
            ),
        ),
        (
            "extra_field",
            "exactly the six fields",
            sub("\"v\":1,", "\"v\":1,\"extra\":0,"),
        ),
        ("version_2", "v is 1", sub("\"v\":1,", "\"v\":2,")),
        (
            "escaped_ledger_id",
            "header strings are written without escapes",
            sub("audit-demo", "audit\\u002ddemo"),
        ),
        (
            "ledger_id_outside_alphabet",
            "ledger ids are [A-Za-z0-9_-]{1,64}",
            sub("audit-demo", "audit.demo"),
        ),
        (
            "seq_zero",
            "seq is 1 to 999999999999999999",
            sub("\"seq\":1,", "\"seq\":0,"),
        ),
        (
            "seq_leading_zero",
            "seq is written without padding",
            sub("\"seq\":1,", "\"seq\":01,"),
        ),
        (
            "seq_too_large",
            "seq is 1 to 999999999999999999",
            sub("\"seq\":1,", "\"seq\":1000000000000000000,"),
        ),
        (
            "seq_as_string",
            "seq is a JSON integer",
            sub("\"seq\":1,", "\"seq\":\"1\","),
        ),
        (
            "prev_hash_uppercase",
            "hashes are lowercase hex",
            sub(&zeros, &second_prev.to_uppercase()),
        ),
        (
            "prev_hash_short",
            "hashes are 64 hex characters",
            sub(&zeros, &"0".repeat(63)),
        ),
        (
            "timestamp_milliseconds",
            "exactly six fraction digits",
            sub("00.123456Z", "00.123Z"),
        ),
        (
            "timestamp_offset",
            "UTC written with Z",
            sub("00.123456Z", "00.123456+00:00"),
        ),
        (
            "timestamp_impossible_date",
            "a real calendar date",
            sub("2025-11-29", "2025-02-30"),
        ),
        (
            "timestamp_year_zero",
            "years 0001 to 9999",
            sub("2025-11-29", "0000-11-29"),
        ),
        (
            "record_not_object",
            "the record is a JSON object",
            with_record("[1]"),
        ),
        (
            "record_duplicate_key",
            "no key twice in one object",
            with_record(r#"{"a":1,"a":1}"#),
        ),
        (
            "record_number_too_large",
            "numbers must be finite as IEEE doubles",
            with_record(r#"{"n":1e400}"#),
        ),
        (
            "record_lone_surrogate",
            "no unpaired surrogate escapes",
            with_record(r#"{"s":"\udc00"}"#),
        ),
        (
            "invalid_utf8",
            "the bytes are UTF-8",
            sub("alice", "alic\u{e9}")
                .into_iter()
                .map(|b| if b == 0xc3 { 0xff } else { b })
                .collect(),
        ),
    ]
}

/// Stored byte strings that are not entries because of their idempotency key: each is `keyed`
/// (first_entry with the field for [`KEY`], which decodes) with one change to that field.
fn rejected_keyed_entries(first: &str, keyed: &str) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let field = r#""idempotency_key":"tenant/7 \"retry\" C:\\jobs","#;
    let record_at = first.find("\"record\":").expect("a record field");
    let with_field =
        |field: &str| format!("{}{field}{}", &first[..record_at], &first[record_at..]).into_bytes();
    assert_eq!(
        with_field(field),
        keyed.as_bytes(),
        "the field as encode writes it"
    );
    let sub = |from: &str, to: &str| {
        assert!(keyed.contains(from), "{from}");
        keyed.replacen(from, to, 1).into_bytes()
    };
    let unkeyed =
        |at: usize, field: &str| format!("{}{field}{}", &first[..at], &first[at..]).into_bytes();
    vec![
        (
            "key_escaped_slash",
            "a key escapes only \" and \\ (here / is written \\/)",
            sub("tenant/7", r"tenant\/7"),
        ),
        (
            "key_unicode_escape",
            "a key escapes only \" and \\ (here a is written \\u0061)",
            sub("tenant", r"ten\u0061nt"),
        ),
        (
            "key_quote_as_unicode_escape",
            "a quote in a key is written \\\", not \\u0022",
            sub(r#"\"retry\""#, r#"\u0022retry\""#),
        ),
        (
            "key_backslash_as_unicode_escape",
            "a backslash in a key is written \\\\, not \\u005c",
            sub(r"C:\\jobs", r"C:\u005cjobs"),
        ),
        (
            "key_escaped_tab",
            "a key is printable ASCII, and \\t is no allowed escape",
            sub("tenant/7", r"tenant\t7"),
        ),
        (
            "key_delete_character",
            "a key is printable ASCII (0x20 to 0x7e); DEL (0x7f) is not",
            sub("tenant/7", "tenant\u{7f}7"),
        ),
        (
            "key_non_ascii",
            "a key is printable ASCII; raw UTF-8 beyond it is not",
            sub("tenant", "ten\u{e4}nt"),
        ),
        (
            "key_empty",
            "a key is 1 to 255 characters",
            with_field(r#""idempotency_key":"","#),
        ),
        (
            "key_too_long",
            "a key is 1 to 255 characters",
            with_field(&format!(r#""idempotency_key":"{}","#, "k".repeat(256))),
        ),
        (
            "key_null",
            "an entry without a key has no key field, not a null one",
            with_field(r#""idempotency_key":null,"#),
        ),
        (
            "key_number",
            "a key is a JSON string",
            with_field(r#""idempotency_key":7,"#),
        ),
        (
            "key_twice",
            "the key field appears at most once",
            with_field(&field.repeat(2)),
        ),
        (
            "key_misspelled_field",
            "the field is named idempotency_key",
            sub("idempotency_key", "idempotencyKey"),
        ),
        (
            "key_space_after_colon",
            "no whitespace outside strings",
            sub(r#""idempotency_key":"#, r#""idempotency_key": "#),
        ),
        (
            "key_before_timestamp",
            "the key field comes right after timestamp, nowhere else",
            unkeyed(first.find("\"timestamp\":").expect("a timestamp"), field),
        ),
        (
            "key_after_record",
            "the key field comes right before record, nowhere else",
            unkeyed(
                first.len() - 1,
                &format!(",{}", field.trim_end_matches(',')),
            ),
        ),
    ]
}

// ---- The committed file formats ----

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct VectorFile {
    about: String,
    hash_domain_hex: String,
    genesis_prev_hash: String,
    chain: ChainInfo,
    entries: Vec<EntryVector>,
    rejected_records: Vec<RejectedRecord>,
    rejected_entries: Vec<RejectedEntry>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ChainInfo {
    about: String,
    ledger_id: String,
    head_seq: u64,
    head_hash: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct EntryVector {
    name: String,
    about: String,
    ledger_id: String,
    seq: u64,
    prev_hash: String,
    timestamp: String,
    /// The `Idempotency-Key` it was appended with; absent for entries without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<String>,
    /// The record as the client sent it (whitespace included).
    record_input: String,
    /// The record as stored: `record_input` without insignificant whitespace.
    record: String,
    stored: String,
    stored_hex: String,
    entry_hash: String,
    /// The object key with an empty prefix.
    object_key: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct RejectedRecord {
    name: String,
    reason: String,
    input: Option<String>,
    input_hex: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct RejectedEntry {
    name: String,
    reason: String,
    stored: Option<String>,
    stored_hex: String,
}

/// One line of `chain.jsonl`: the stored bytes (base64) and what an index records for them.
#[derive(Debug, Serialize)]
struct ChainLine<'a> {
    seq: u64,
    stored: String,
    entry_hash: &'a str,
    prev_hash: &'a str,
    timestamp: &'a str,
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vectors")
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Builds every committed file from the case lists: relative path -> contents.
fn generate() -> BTreeMap<String, Vec<u8>> {
    let mut hashes: BTreeMap<&str, Hash> = BTreeMap::new();
    let mut entries = Vec::new();
    let mut stored_by_name = BTreeMap::new();
    for case in cases() {
        let prev_hash = match case.prev {
            Prev::Genesis => Hash::GENESIS,
            Prev::HashOf(name) => hashes[name],
        };
        let header = EntryHeader {
            ledger_id: LedgerId::parse(case.ledger_id).expect("a valid ledger id"),
            seq: case.seq,
            prev_hash,
            timestamp: Timestamp::parse(case.timestamp).expect("a valid timestamp"),
            idempotency_key: case
                .idempotency_key
                .as_deref()
                .map(|k| IdempotencyKey::parse(k).expect("a valid key")),
        };
        let record = Record::parse(case.record_input.as_bytes()).expect("a valid record");
        let stored = encode(&header, &record);
        let hash = Hash::of_entry(&stored);
        hashes.insert(case.name, hash);
        stored_by_name.insert(case.name, stored.clone());
        entries.push(EntryVector {
            name: case.name.into(),
            about: case.about.into(),
            ledger_id: case.ledger_id.into(),
            seq: case.seq,
            prev_hash: prev_hash.to_hex(),
            timestamp: case.timestamp.into(),
            idempotency_key: case.idempotency_key.clone(),
            record_input: case.record_input.into(),
            record: record.as_str().into(),
            stored: String::from_utf8(stored.clone()).expect("entries are UTF-8"),
            stored_hex: hex::encode(&stored),
            entry_hash: hash.to_hex(),
            object_key: entry_key(&header.ledger_id, case.seq),
        });
    }

    let first = String::from_utf8(stored_by_name["first_entry"].clone()).expect("UTF-8");
    let keyed_first = {
        let mut header = decode(first.as_bytes())
            .expect("first_entry decodes")
            .header;
        header.idempotency_key = Some(IdempotencyKey::parse(KEY).expect("a valid key"));
        let record = Record::parse(cases()[0].record_input.as_bytes()).expect("a record");
        let keyed = encode(&header, &record);
        assert!(decode(&keyed).is_ok(), "first_entry with KEY decodes");
        String::from_utf8(keyed).expect("UTF-8")
    };
    let rejected_entries = rejected_entries(&first, &hashes["first_entry"].to_hex())
        .into_iter()
        .chain(rejected_keyed_entries(&first, &keyed_first))
        .map(|(name, reason, bytes)| RejectedEntry {
            name: name.into(),
            reason: reason.into(),
            stored: String::from_utf8(bytes.clone()).ok(),
            stored_hex: hex::encode(&bytes),
        })
        .collect();
    let rejected_records = rejected_record_inputs()
        .into_iter()
        .map(|(name, reason, bytes)| RejectedRecord {
            name: name.into(),
            reason: reason.into(),
            input: String::from_utf8(bytes.clone()).ok(),
            input_hex: hex::encode(&bytes),
        })
        .collect();

    let chain: Vec<&EntryVector> = entries
        .iter()
        .filter(|e| e.ledger_id == CHAIN_LEDGER)
        .collect();
    let last = chain.last().expect("a chain");
    let file = VectorFile {
        about: "Entry format v1 test vectors for docs/FORMAT.md. entry_hash = SHA-256(hash_domain || stored bytes). \
                Generated by tests/format_vectors.rs; do not edit by hand."
            .into(),
        hash_domain_hex: hex::encode(ENTRY_HASH_DOMAIN),
        genesis_prev_hash: Hash::GENESIS.to_hex(),
        chain: ChainInfo {
            about: format!(
                "The entries of ledger {CHAIN_LEDGER} form a chain 1..{}; chain.jsonl and chain/ hold it.",
                last.seq
            ),
            ledger_id: CHAIN_LEDGER.into(),
            head_seq: last.seq,
            head_hash: last.entry_hash.clone(),
        },
        entries: Vec::new(),
        rejected_records,
        rejected_entries,
    };

    let mut files = BTreeMap::new();
    let mut jsonl = String::new();
    for e in &chain {
        let stored = hex::decode(&e.stored_hex).expect("hex");
        let line = ChainLine {
            seq: e.seq,
            stored: base64(&stored),
            entry_hash: &e.entry_hash,
            prev_hash: &e.prev_hash,
            timestamp: &e.timestamp,
        };
        jsonl.push_str(&serde_json::to_string(&line).expect("serialisable"));
        jsonl.push('\n');
        files.insert(format!("chain/{:018}.json", e.seq), stored);
    }
    files.insert("chain.jsonl".into(), jsonl.into_bytes());
    files.insert("export.jsonl".into(), export_jsonl(&chain));
    let file = VectorFile { entries, ..file };
    let mut json = serde_json::to_string_pretty(&file).expect("serialisable");
    json.push('\n');
    files.insert("vectors.json".into(), json.into_bytes());
    files
}

/// The chain as the export writes it now: the checkpoint of seq 6, the entry lines and the
/// end line, signed with [`EXPORT_SEED`], serialised by the export's own line type.
fn export_jsonl(chain: &[&EntryVector]) -> Vec<u8> {
    let signer = export_signer();
    let ledger = LedgerId::parse(CHAIN_LEDGER).expect("a valid ledger id");
    let hash = |e: &EntryVector| e.entry_hash.parse::<Hash>().expect("hash");
    let at_checkpoint = chain
        .iter()
        .find(|e| e.seq == EXPORT_CHECKPOINT_SEQ)
        .expect("the chain has the checkpoint's seq");
    let last = chain.last().expect("a chain");
    let mut out = ExportLine::Checkpoint(ExportCheckpointLine {
        checkpoint: signer.sign_checkpoint(CheckpointBody {
            ledger_id: ledger.clone(),
            seq: EXPORT_CHECKPOINT_SEQ,
            last_hash: hash(at_checkpoint),
            timestamp: Timestamp::parse("2025-11-29T02:42:00.000000Z").expect("timestamp"),
        }),
    })
    .to_ndjson();
    for e in chain {
        let line = ExportEntryLine {
            seq: e.seq,
            stored: Some(base64(&hex::decode(&e.stored_hex).expect("hex"))),
            entry_hash: Some(hash(e)),
            prev_hash: Some(e.prev_hash.parse().expect("prev_hash")),
            timestamp: Some(Timestamp::parse(&e.timestamp).expect("timestamp")),
        };
        out.extend(ExportLine::Entry(line).to_ndjson());
    }
    let end = signer.sign_export_end(ExportEndBody {
        ledger_id: ledger,
        from: 1,
        to: last.seq,
        last_hash: hash(last),
        head_seq: last.seq,
        head_hash: hash(last),
        timestamp: Timestamp::parse("2025-11-29T02:43:00.000000Z").expect("timestamp"),
    });
    out.extend(ExportLine::End(ExportEndLine { end }).to_ndjson());
    out
}

#[test]
fn the_committed_export_ends_with_an_end_line_signed_by_the_documented_key() {
    let text = std::fs::read_to_string(vectors_dir().join("export.jsonl")).expect("export.jsonl");
    let lines: Vec<&str> = text.lines().collect();
    let key = PublicKey::from_hex(EXPORT_PUBLIC_KEY).expect("the documented key");
    assert_eq!(export_signer().public_key(), &key);
    let Ok(ExportLine::End(end)) = ExportLine::parse(lines[lines.len() - 1]) else {
        panic!("the last line is the end line: {}", lines[lines.len() - 1]);
    };
    end.end.check_form().expect("a well-formed end line");
    end.end
        .verify_trusted(std::slice::from_ref(&key))
        .expect("signed by the documented key");
    let info = committed().chain;
    assert_eq!((end.end.from, end.end.to), (1, info.head_seq));
    assert_eq!(end.end.last_hash.to_hex(), info.head_hash);
    let Ok(ExportLine::Checkpoint(cp)) = ExportLine::parse(lines[0]) else {
        panic!("the first line is the checkpoint line: {}", lines[0]);
    };
    cp.checkpoint
        .verify(&key)
        .expect("the checkpoint is signed by the documented key");
    // Every line between is an entry line, as chain.jsonl has them.
    let old = std::fs::read_to_string(vectors_dir().join("chain.jsonl")).expect("chain.jsonl");
    assert_eq!(lines[1..lines.len() - 1].join("\n") + "\n", old);
}

fn committed() -> VectorFile {
    let text = std::fs::read_to_string(vectors_dir().join("vectors.json"))
        .expect("tests/data/vectors/vectors.json");
    serde_json::from_str(&text).expect("vectors.json parses")
}

#[test]
fn the_committed_files_are_exactly_what_the_cases_generate() {
    let dir = vectors_dir();
    let files = generate();
    if std::env::var_os("ELEANOR_LEDGER_BLESS_VECTORS").is_some() {
        let _ = std::fs::remove_dir_all(dir.join("chain"));
        std::fs::create_dir_all(dir.join("chain")).expect("create vectors dir");
        for (path, contents) in &files {
            std::fs::write(dir.join(path), contents).expect("write vector file");
        }
    }
    for (path, contents) in &files {
        let found = std::fs::read(dir.join(path)).unwrap_or_default();
        assert!(
            found == *contents,
            "tests/data/vectors/{path} differs from what the cases generate; \
             rerun with ELEANOR_LEDGER_BLESS_VECTORS=1 if the change is intended"
        );
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(dir.join("chain"))
        .expect("tests/data/vectors/chain/")
        .map(|e| {
            format!(
                "chain/{}",
                e.expect("dir entry").file_name().to_string_lossy()
            )
        })
        .collect();
    on_disk.sort();
    let expected: Vec<&String> = files.keys().filter(|k| k.starts_with("chain/")).collect();
    assert_eq!(
        on_disk.iter().collect::<Vec<_>>(),
        expected,
        "stray files in tests/data/vectors/chain/"
    );
}

#[test]
fn every_vector_re_derives_from_its_inputs() {
    let file = committed();
    assert_eq!(
        file.hash_domain_hex,
        hex::encode(b"eleanor-ledger/entry/v1\0")
    );
    assert_eq!(file.genesis_prev_hash, "0".repeat(64));
    assert!(!file.entries.is_empty());
    for v in &file.entries {
        let header = EntryHeader {
            ledger_id: LedgerId::parse(&v.ledger_id).expect("ledger id"),
            seq: v.seq,
            prev_hash: v.prev_hash.parse().expect("prev_hash"),
            timestamp: Timestamp::parse(&v.timestamp).expect("timestamp"),
            idempotency_key: v
                .idempotency_key
                .as_deref()
                .map(|k| IdempotencyKey::parse(k).expect("idempotency_key")),
        };
        let record = Record::parse(v.record_input.as_bytes()).expect("record_input is a record");
        assert_eq!(record.as_str(), v.record, "{}: compact record", v.name);
        let stored = encode(&header, &record);
        assert_eq!(
            stored,
            v.stored.as_bytes(),
            "{}: stored bytes (text)",
            v.name
        );
        assert_eq!(
            hex::encode(&stored),
            v.stored_hex,
            "{}: stored bytes (hex)",
            v.name
        );
        assert_eq!(
            Hash::of_entry(&stored).to_hex(),
            v.entry_hash,
            "{}: entry_hash",
            v.name
        );
        assert_eq!(
            entry_key(&header.ledger_id, v.seq),
            v.object_key,
            "{}: object key",
            v.name
        );

        let decoded = decode(&stored).unwrap_or_else(|e| panic!("{}: decode refused: {e}", v.name));
        assert_eq!(decoded.header, header, "{}: decoded header", v.name);
        assert_eq!(decoded.record.get(), v.record, "{}: decoded record", v.name);
    }
}

#[test]
fn each_entry_hash_is_sha256_of_the_domain_then_the_stored_bytes() {
    // Spelled out with sha2 directly, as an auditor would, rather than through Hash::of_entry.
    use sha2::{Digest, Sha256};
    for v in &committed().entries {
        let mut input = b"eleanor-ledger/entry/v1".to_vec();
        input.push(0);
        input.extend_from_slice(&hex::decode(&v.stored_hex).expect("hex"));
        assert_eq!(
            hex::encode(Sha256::digest(&input)),
            v.entry_hash,
            "{}",
            v.name
        );
    }
}

#[test]
fn the_vectors_chain_links_each_entry_to_the_one_before() {
    let file = committed();
    let chain: Vec<&EntryVector> = file
        .entries
        .iter()
        .filter(|e| e.ledger_id == file.chain.ledger_id)
        .collect();
    let id = LedgerId::parse(&file.chain.ledger_id).expect("ledger id");
    let mut verifier = ChainVerifier::new(1, Some(Hash::GENESIS), 100);
    for (i, v) in chain.iter().enumerate() {
        assert_eq!(v.seq, i as u64 + 1, "the chain's seqs are 1..n");
        let claim = IndexClaim {
            entry_hash: v.entry_hash.parse().expect("hash"),
            prev_hash: v.prev_hash.parse().expect("hash"),
            timestamp: Timestamp::parse(&v.timestamp).expect("timestamp"),
        };
        let evidence = check_entry(&id, v.seq, Some(v.stored.as_bytes()));
        assert!(
            matches!(evidence, Evidence::Entry(_)),
            "{}: {evidence:?}",
            v.name
        );
        verifier.push(evidence, Some(&claim));
    }
    let head = Head {
        seq: file.chain.head_seq,
        last_hash: file.chain.head_hash.parse().expect("hash"),
    };
    let outcome = verifier.finish(Some(head));
    assert!(outcome.ok(), "{:?}", outcome.failures);
    assert_eq!(outcome.verified, chain.len() as u64);
}

#[test]
fn every_rejected_record_is_refused() {
    for r in &committed().rejected_records {
        let input = hex::decode(&r.input_hex).expect("hex");
        let refused: Result<Record, InvalidRecord> = Record::parse(&input);
        assert!(refused.is_err(), "{}: accepted as {:?}", r.name, refused);
    }
}

#[test]
fn every_rejected_entry_is_refused_by_decode() {
    for r in &committed().rejected_entries {
        let stored = hex::decode(&r.stored_hex).expect("hex");
        assert!(decode(&stored).is_err(), "{}: decode accepted it", r.name);
    }
}

/// The vectors that existed before idempotency keys, with their entry hashes then. Keys were
/// added without changing a byte of them (nor of the chain's first five files and lines).
const BEFORE_KEYS: [(&str, &str); 7] = [
    (
        "first_entry",
        "9cfb7e87072046945ab3b4d7b876b7ee3f542050136faafb850a6d12da6f309b",
    ),
    (
        "second_entry",
        "2e3b1ac4f5bc11c6c29444c67df0b0bdb2b8546a30b8c758b6b185f550c1af8b",
    ),
    (
        "non_ascii_text",
        "2c404e32c84b826e5ad15b9514009dc97c20a54d57a28ea44022118e45988c11",
    ),
    (
        "nested_json",
        "18da9739a98ce8941e0b20a3c25b28ad6a65c8a57758f2b6755f6fb21eba9d89",
    ),
    (
        "numbers",
        "a1e40d97e7e3307123edff35bf58c2c424bf3d2691811f5b8fcab6d113b21693",
    ),
    (
        "max_seq_latest_timestamp",
        "5ddb339888742baf74652588afe5618620c689a5c44cac9870e3d8b5b4fa4dff",
    ),
    (
        "longest_ledger_id_earliest_timestamp",
        "4c139d0356b21075c1c8aa0f354ee0cdaff3c2bc44d1190dc98be505104aa12d",
    ),
];

#[test]
fn the_vectors_from_before_keys_are_unchanged_byte_for_byte() {
    let file = committed();
    for (name, hash) in BEFORE_KEYS {
        let v = file.entries.iter().find(|e| e.name == name).expect(name);
        assert_eq!(v.idempotency_key, None, "{name}");
        assert!(!v.stored.contains("idempotency_key"), "{name}");
        assert_eq!(Hash::of_entry(v.stored.as_bytes()).to_hex(), hash, "{name}");
        assert_eq!(v.entry_hash, hash, "{name}");
    }
    let dir = vectors_dir();
    let jsonl = std::fs::read_to_string(dir.join("chain.jsonl")).expect("chain.jsonl");
    for (seq, ((_, hash), line)) in (1..).zip(BEFORE_KEYS[..5].iter().zip(jsonl.lines())) {
        let file = std::fs::read(dir.join(format!("chain/{seq:018}.json"))).expect("entry file");
        assert_eq!(Hash::of_entry(&file).to_hex(), *hash, "chain/ seq {seq}");
        let line: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(line["entry_hash"], *hash, "chain.jsonl seq {seq}");
    }
}

/// A key's spelling in an entry, written out from the rule (only `"` and `\` escaped).
fn spelled_key(key: &str) -> String {
    let escaped: String = key
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

#[test]
fn every_stored_form_is_the_documented_template() {
    // Spelled out with format!, as docs/FORMAT.md section 1 gives it, rather than by encode.
    let file = committed();
    let mut keyed = 0;
    for v in &file.entries {
        let key_field = v.idempotency_key.as_deref().map_or(String::new(), |k| {
            keyed += 1;
            format!("\"idempotency_key\":{},", spelled_key(k))
        });
        let expected = format!(
            r#"{{"v":1,"ledger_id":"{}","seq":{},"prev_hash":"{}","timestamp":"{}",{key_field}"record":{}}}"#,
            v.ledger_id, v.seq, v.prev_hash, v.timestamp, v.record
        );
        assert_eq!(v.stored, expected, "{}", v.name);
    }
    assert!(keyed >= 3, "keyed vectors: {keyed}");
    let with_both = file.entries.iter().any(|v| {
        v.idempotency_key
            .as_deref()
            .is_some_and(|k| k.contains('"') && k.contains('\\'))
    });
    assert!(with_both, "a keyed vector has a quote and a backslash");
}

#[test]
fn the_vectors_chain_holds_keyed_and_unkeyed_entries() {
    let file = committed();
    let chain: Vec<&EntryVector> = file
        .entries
        .iter()
        .filter(|e| e.ledger_id == file.chain.ledger_id)
        .collect();
    assert!(chain.iter().any(|e| e.idempotency_key.is_some()));
    assert!(chain.iter().any(|e| e.idempotency_key.is_none()));
    let last = chain.last().expect("a chain");
    assert_eq!(
        (last.seq, &last.entry_hash),
        (file.chain.head_seq, &file.chain.head_hash)
    );
}

#[test]
fn the_rejected_key_spellings_are_in_the_vectors() {
    let names: Vec<String> = committed()
        .rejected_entries
        .into_iter()
        .map(|r| r.name)
        .collect();
    for name in [
        "key_escaped_slash",
        "key_unicode_escape",
        "key_empty",
        "key_delete_character",
        "key_before_timestamp",
        "key_after_record",
    ] {
        assert!(names.iter().any(|n| n == name), "{name}");
    }
}
