//! The entry format: what one ledger entry's stored bytes are, byte for byte.
//!
//! An entry is stored as one line of compact JSON whose fields appear in exactly this order:
//!
//! ```text
//! {"v":1,"ledger_id":"<id>","seq":<n>,"prev_hash":"<64 hex>","timestamp":"<UTC>","record":<object>}
//! ```
//!
//! The bytes are the object body in storage and exactly what [`Hash::of_entry`] hashes, so a
//! verifier never canonicalises JSON: it hashes what it reads. Decoding is strict: the only
//! accepted byte string for a given set of fields is the one [`encode`] produces.
//! `docs/FORMAT.md` is the auditor-facing specification of the same rules.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

use super::hash::Hash;

/// The only format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The largest seq a ledger can reach: seqs are written as 18 zero-padded digits.
pub const MAX_SEQ: u64 = 999_999_999_999_999_999;

/// A ledger's name: 1 to 64 of `A-Z a-z 0-9 _ -`, so it is safe in keys, paths and JSON.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct LedgerId(String);

/// A ledger id outside `[A-Za-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a ledger id is 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")]
pub struct InvalidLedgerId;

impl LedgerId {
    pub fn parse(s: &str) -> Result<LedgerId, InvalidLedgerId> {
        let allowed = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-';
        if (1..=64).contains(&s.len()) && s.as_bytes().iter().all(allowed) {
            Ok(LedgerId(s.to_owned()))
        } else {
            Err(InvalidLedgerId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LedgerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LedgerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LedgerId({})", self.0)
    }
}

impl<'de> Deserialize<'de> for LedgerId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<LedgerId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        LedgerId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A UTC instant with microsecond precision, written `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Timestamp {
    unix_micros: i64,
}

const TIMESTAMP_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// A timestamp that is not in the entry format's one UTC form, or is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a timestamp is written YYYY-MM-DDTHH:MM:SS.ffffffZ, years 0001 to 9999")]
pub struct InvalidTimestamp;

impl Timestamp {
    /// Years 1 through 9999, so that the text form always has exactly 27 characters.
    pub fn from_unix_micros(unix_micros: i64) -> Result<Timestamp, InvalidTimestamp> {
        const MIN: i64 = -62_135_596_800_000_000; // 0001-01-01T00:00:00Z
        const MAX: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z
        if (MIN..=MAX).contains(&unix_micros) {
            Ok(Timestamp { unix_micros })
        } else {
            Err(InvalidTimestamp)
        }
    }

    pub fn unix_micros(&self) -> i64 {
        self.unix_micros
    }

    pub fn parse(s: &str) -> Result<Timestamp, InvalidTimestamp> {
        let parsed = time::PrimitiveDateTime::parse(s, TIMESTAMP_FORMAT)
            .map_err(|_| InvalidTimestamp)?
            .assume_utc();
        let micros =
            i64::try_from(parsed.unix_timestamp_nanos() / 1000).map_err(|_| InvalidTimestamp)?;
        let ts = Timestamp::from_unix_micros(micros)?;
        // Only the canonical spelling is accepted (the parser is lenient about nothing we
        // rely on, but this keeps "one set of fields, one byte string" true by construction).
        if ts.to_string() != s {
            return Err(InvalidTimestamp);
        }
        Ok(ts)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.unix_micros) * 1000)
            .map_err(|_| fmt::Error)?;
        let text = dt.format(TIMESTAMP_FORMAT).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A client's audit event: a JSON object, kept as the client wrote it except for
/// insignificant whitespace, which is removed. Numbers keep their exact digits, strings their
/// exact escapes, objects their key order.
#[derive(Clone, PartialEq, Eq)]
pub struct Record(Box<str>);

/// Why a body is not an acceptable record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecord {
    #[error("the record is not valid JSON: {0}")]
    NotJson(String),
    #[error("the record must be a JSON object, like {{\"action\": \"login\"}}")]
    NotAnObject,
    #[error("the record repeats the key {0:?} in one object; each key may appear once")]
    DuplicateKey(String),
}

impl Record {
    /// Accepts exactly one JSON object (UTF-8, surrounding whitespace allowed) with no key
    /// repeated within any one object, nested ones included.
    pub fn parse(body: &[u8]) -> Result<Record, InvalidRecord> {
        let text = std::str::from_utf8(body)
            .map_err(|e| InvalidRecord::NotJson(format!("not UTF-8 ({e})")))?;
        let text = text.trim_matches(is_json_whitespace);
        if !text.starts_with('{') {
            // Still report a syntax error as such, not as "not an object".
            serde_json::from_str::<serde::de::IgnoredAny>(text)
                .map_err(|e| InvalidRecord::NotJson(e.to_string()))?;
            return Err(InvalidRecord::NotAnObject);
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let duplicate = std::cell::RefCell::new(None);
        serde::de::DeserializeSeed::deserialize(unique_keys::Checker(&duplicate), &mut de)
            .map_err(|e| match duplicate.take() {
                Some(key) => InvalidRecord::DuplicateKey(key),
                None => InvalidRecord::NotJson(e.to_string()),
            })?;
        de.end()
            .map_err(|e| InvalidRecord::NotJson(e.to_string()))?;
        Ok(Record(compact(text).into_boxed_str()))
    }

    /// The compact JSON text of the record.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The record as a raw JSON value, for embedding in responses unchanged.
    pub fn to_raw_value(&self) -> Box<RawValue> {
        RawValue::from_string(self.0.to_string()).expect("a Record holds valid JSON")
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Record({})", self.0)
    }
}

fn is_json_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Removes JSON whitespace outside strings. `text` must be valid JSON.
fn compact(text: &str) -> String {
    // Byte-wise is exact: every byte of a multi-byte UTF-8 character is >= 0x80, so it can
    // never be taken for a quote, a backslash or whitespace. Runs of kept bytes are copied
    // whole; text that is already compact is copied once.
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            out.extend_from_slice(&bytes[run_start..i]);
            run_start = i + 1;
        }
    }
    out.extend_from_slice(&bytes[run_start..]);
    String::from_utf8(out).expect("removing ASCII whitespace keeps UTF-8 valid")
}

/// Rejects JSON objects that repeat a key, at any depth: two parsers may disagree about which
/// of two values such a record "says", which is no property an audit record should have.
mod unique_keys {
    use std::borrow::Cow;
    use std::cell::RefCell;
    use std::collections::HashSet;
    use std::fmt;

    use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};

    /// Walks a JSON value; on the first repeated key, stores it in the cell and fails.
    #[derive(Clone, Copy)]
    pub(super) struct Checker<'a>(pub &'a RefCell<Option<String>>);

    impl<'de> DeserializeSeed<'de> for Checker<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Checker<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(self)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = HashSet::new();
            // Keys without escapes are borrowed from the input, not allocated.
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if seen.contains(&key) {
                    *self.0.borrow_mut() = Some(key.into_owned());
                    return Err(A::Error::custom("duplicate key"));
                }
                seen.insert(key);
                map.next_value_seed(self)?;
            }
            Ok(())
        }
    }
}

/// The fields of an entry other than its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    pub ledger_id: LedgerId,
    pub seq: u64,
    pub prev_hash: Hash,
    pub timestamp: Timestamp,
}

/// The stored bytes of an entry: the object body, and the input of [`Hash::of_entry`].
pub fn encode(header: &EntryHeader, record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + record.as_str().len());
    write_prefix(&mut out, header);
    out.extend_from_slice(record.as_str().as_bytes());
    out.push(b'}');
    out
}

fn write_prefix(out: &mut Vec<u8>, header: &EntryHeader) {
    use std::io::Write;
    write!(
        out,
        "{{\"v\":{FORMAT_VERSION},\"ledger_id\":\"{}\",\"seq\":{},\"prev_hash\":\"{}\",\"timestamp\":\"{}\",\"record\":",
        header.ledger_id, header.seq, header.prev_hash, header.timestamp
    )
    .expect("writing to a Vec cannot fail");
}

/// An entry read back from its stored bytes, borrowing the record text from them.
#[derive(Debug, Clone)]
pub struct DecodedEntry<'a> {
    pub header: EntryHeader,
    pub record: &'a RawValue,
}

/// Stored bytes that are not an entry in the one form [`encode`] writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid v1 entry: {0}")]
pub struct MalformedEntry(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    v: u32,
    ledger_id: &'a str,
    seq: u64,
    prev_hash: &'a str,
    timestamp: &'a str,
    #[serde(borrow)]
    record: &'a RawValue,
}

/// Decodes stored bytes, accepting only the exact byte string [`encode`] would write for the
/// fields found: same field order, no whitespace, a compact object record with unique keys.
pub fn decode(bytes: &[u8]) -> Result<DecodedEntry<'_>, MalformedEntry> {
    let bad = |what: &str| MalformedEntry(what.to_owned());
    let wire: Wire<'_> =
        serde_json::from_slice(bytes).map_err(|e| MalformedEntry(e.to_string()))?;
    if wire.v != FORMAT_VERSION {
        return Err(MalformedEntry(format!("unknown format version {}", wire.v)));
    }
    if !(1..=MAX_SEQ).contains(&wire.seq) {
        return Err(bad("seq out of range"));
    }
    let header = EntryHeader {
        ledger_id: LedgerId::parse(wire.ledger_id).map_err(|e| MalformedEntry(e.to_string()))?,
        seq: wire.seq,
        prev_hash: wire
            .prev_hash
            .parse()
            .map_err(|e: super::hash::HashParseError| MalformedEntry(e.to_string()))?,
        timestamp: Timestamp::parse(wire.timestamp).map_err(|e| MalformedEntry(e.to_string()))?,
    };
    let record =
        Record::parse(wire.record.get().as_bytes()).map_err(|e| MalformedEntry(e.to_string()))?;
    let mut canonical = Vec::with_capacity(bytes.len());
    write_prefix(&mut canonical, &header);
    canonical.extend_from_slice(record.as_str().as_bytes());
    canonical.push(b'}');
    if canonical != bytes {
        return Err(bad(
            "bytes are not in canonical form (field order, spacing or escapes differ)",
        ));
    }
    Ok(DecodedEntry {
        header,
        record: wire.record,
    })
}

/// The object key of an entry: `{prefix}{ledger_id}/entries/{seq:018}.json`, sortable by seq.
/// The service's keys are relative to its storage root (on S3, `ELEANOR_LEDGER_S3_PREFIX`),
/// so it passes an empty `prefix`.
pub fn entry_key(prefix: &str, ledger_id: &LedgerId, seq: u64) -> String {
    format!("{}{seq:018}.json", entries_prefix(prefix, ledger_id))
}

/// The common prefix of a ledger's entry keys: `{prefix}{ledger_id}/entries/`.
pub fn entries_prefix(prefix: &str, ledger_id: &LedgerId) -> String {
    format!("{prefix}{ledger_id}/entries/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(seq: u64) -> EntryHeader {
        EntryHeader {
            ledger_id: LedgerId::parse("default").unwrap(),
            seq,
            prev_hash: Hash::GENESIS,
            timestamp: Timestamp::from_unix_micros(1_764_384_000_123_456).unwrap(),
        }
    }

    #[test]
    fn ledger_ids_outside_the_alphabet_are_refused() {
        for bad in ["", "../x", "a b", "ü", &"x".repeat(65), "a/b", "a.b"] {
            assert!(LedgerId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(LedgerId::parse(&"A-z_9".repeat(12)).is_ok());
    }

    #[test]
    fn timestamps_have_one_spelling() {
        let ts = Timestamp::from_unix_micros(1_764_384_000_123_456).unwrap();
        assert_eq!(ts.to_string(), "2025-11-29T02:40:00.123456Z");
        assert_eq!(Timestamp::parse("2025-11-29T02:40:00.123456Z"), Ok(ts));
        assert!(Timestamp::parse("2025-11-29T02:40:00.123Z").is_err());
        assert!(Timestamp::parse("2025-11-29 02:40:00.123456Z").is_err());
    }

    #[test]
    fn records_are_compacted_but_keep_numbers_escapes_and_key_order() {
        let r = Record::parse(
            b" {\"b\" : 1.50, \"a\":[ 1E300, 123456789012345678901234567890, \"x y\\u00e9\" ] }\n",
        )
        .unwrap();
        assert_eq!(
            r.as_str(),
            r#"{"b":1.50,"a":[1E300,123456789012345678901234567890,"x y\u00e9"]}"#
        );
    }

    #[test]
    fn records_that_are_not_one_json_object_are_refused() {
        assert_eq!(Record::parse(b"[1]"), Err(InvalidRecord::NotAnObject));
        assert_eq!(Record::parse(b"\"s\""), Err(InvalidRecord::NotAnObject));
        assert!(matches!(
            Record::parse(b"{"),
            Err(InvalidRecord::NotJson(_))
        ));
        assert!(matches!(
            Record::parse(b"{} {}"),
            Err(InvalidRecord::NotJson(_))
        ));
        assert!(matches!(
            Record::parse(b"\xff"),
            Err(InvalidRecord::NotJson(_))
        ));
        assert!(matches!(Record::parse(b""), Err(InvalidRecord::NotJson(_))));
    }

    #[test]
    fn a_repeated_key_at_any_depth_is_refused() {
        assert_eq!(
            Record::parse(br#"{"a":{"k":1,"k":2}}"#),
            Err(InvalidRecord::DuplicateKey("k".into()))
        );
        assert!(Record::parse(br#"{"a":[{"k":1},{"k":2}]}"#).is_ok());
    }

    #[test]
    fn encode_then_decode_gives_back_the_fields() {
        let record = Record::parse(br#"{"actor":"alice","n":12345678901234567890123}"#).unwrap();
        let bytes = encode(&header(7), &record);
        let decoded = decode(&bytes).unwrap();
        assert_eq!(decoded.header, header(7));
        assert_eq!(decoded.record.get(), record.as_str());
    }

    #[test]
    fn decode_refuses_any_other_spelling_of_the_same_fields() {
        let record = Record::parse(br#"{"a":1}"#).unwrap();
        let good = String::from_utf8(encode(&header(1), &record)).unwrap();
        let variants = [
            good.replace("\"seq\":1", "\"seq\": 1"),
            good.replace("{\"a\":1}", "{ \"a\":1}"),
            good.replace("\"v\":1,", "\"v\":1,\"extra\":0,"),
            good.replace(
                "\"ledger_id\":\"default\"",
                "\"ledger_id\":\"d\\u0065fault\"",
            ),
        ];
        for v in variants {
            assert!(decode(v.as_bytes()).is_err(), "{v}");
        }
    }

    #[test]
    fn keys_sort_by_seq() {
        let id = LedgerId::parse("l").unwrap();
        assert_eq!(
            entry_key("p/", &id, 1),
            "p/l/entries/000000000000000001.json"
        );
        assert!(entry_key("", &id, 9) < entry_key("", &id, 10));
    }
}
