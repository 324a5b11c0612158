//! The entry format: what one ledger entry's stored bytes are, byte for byte.
//!
//! An entry is stored as one line of compact JSON whose fields appear in exactly this order:
//!
//! ```text
//! {"v":1,"ledger_id":"<id>","seq":<n>,"prev_hash":"<64 hex>","timestamp":"<UTC>","record":<object>}
//! {"v":1,"ledger_id":"<id>","seq":<n>,"prev_hash":"<64 hex>","timestamp":"<UTC>","idempotency_key":"<key>","record":<object>}
//! ```
//!
//! The second form is an entry appended with an `Idempotency-Key`; entries without one have
//! the first form, byte for byte as before the key existed.
//!
//! The bytes are the object body in storage and exactly what [`Hash::of_entry`] hashes, so a
//! verifier never canonicalises JSON: it hashes what it reads. Decoding is strict: the only
//! accepted byte string for a given set of fields is the one [`encode`] produces.
//! `docs/FORMAT.md` is the auditor-facing specification of the same rules.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

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

/// A client's idempotency key (`Idempotency-Key`): 1 to 255 printable ASCII characters
/// (0x20 to 0x7E). Stored in the entry it was appended with, as a JSON string in which only
/// `"` and `\` are escaped (`\"`, `\\`), so it has one spelling.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(Box<str>);

/// A key outside 1 to 255 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an idempotency key is 1 to 255 printable ASCII characters (space to '~')")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    /// The longest key, in bytes.
    pub const MAX_LEN: usize = 255;

    pub fn parse(s: &str) -> Result<IdempotencyKey, InvalidIdempotencyKey> {
        let printable = |b: &u8| (0x20..=0x7e).contains(b);
        if (1..=Self::MAX_LEN).contains(&s.len()) && s.as_bytes().iter().all(printable) {
            Ok(IdempotencyKey(s.into()))
        } else {
            Err(InvalidIdempotencyKey)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's one spelling as a JSON string, quotes included.
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'"');
        for &b in self.0.as_bytes() {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({:?})", self.0)
    }
}

impl Serialize for IdempotencyKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for IdempotencyKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<IdempotencyKey, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        IdempotencyKey::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A UTC instant with microsecond precision, written `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Timestamp {
    unix_micros: i64,
}

/// A timestamp that is not in the entry format's one UTC form, or is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a timestamp is written YYYY-MM-DDTHH:MM:SS.ffffffZ, years 0001 to 9999")]
pub struct InvalidTimestamp;

/// The length of a timestamp's one spelling, `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub const TIMESTAMP_LEN: usize = 27;
const MICROS_PER_DAY: i64 = 86_400_000_000;

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

    /// Parses the one spelling [`Display`](fmt::Display) writes, and nothing else: fixed
    /// width, every field in range (no leap seconds), a real calendar day.
    pub fn parse(s: &str) -> Result<Timestamp, InvalidTimestamp> {
        let b: &[u8; TIMESTAMP_LEN] = s.as_bytes().try_into().map_err(|_| InvalidTimestamp)?;
        let punctuation = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
        if punctuation.iter().any(|&(i, c)| b[i] != c) || b[19] != b'.' || b[26] != b'Z' {
            return Err(InvalidTimestamp);
        }
        let number = |from: usize, to: usize| -> Result<i64, InvalidTimestamp> {
            b[from..to].iter().try_fold(0i64, |n, &d| {
                if d.is_ascii_digit() {
                    Ok(n * 10 + i64::from(d - b'0'))
                } else {
                    Err(InvalidTimestamp)
                }
            })
        };
        let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
        let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
        let micros = number(20, 26)?;
        let in_range = year >= 1
            && (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month)
            && hour < 24
            && minute < 60
            && second < 60;
        if !in_range {
            return Err(InvalidTimestamp);
        }
        let seconds = hour * 3600 + minute * 60 + second;
        let days = days_from_civil(year, month, day);
        Timestamp::from_unix_micros(days * MICROS_PER_DAY + seconds * 1_000_000 + micros)
    }

    /// The timestamp's one spelling, as ASCII bytes.
    fn spelling(&self) -> [u8; TIMESTAMP_LEN] {
        let days = self.unix_micros.div_euclid(MICROS_PER_DAY);
        let in_day = self.unix_micros.rem_euclid(MICROS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut n: i64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, in_day / 3_600_000_000);
        put(14, 2, in_day / 60_000_000 % 60);
        put(17, 2, in_day / 1_000_000 % 60);
        put(20, 6, in_day % 1_000_000);
        out
    }
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: `(year, month, day)`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spelling = self.spelling();
        f.write_str(std::str::from_utf8(&spelling).map_err(|_| fmt::Error)?)
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
        check_object(text)?;
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

/// Checks that `text` is exactly one JSON object with no key repeated in any object.
fn check_object(text: &str) -> Result<(), InvalidRecord> {
    if !text.starts_with('{') {
        // Still report a syntax error as such, not as "not an object".
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map_err(|e| InvalidRecord::NotJson(e.to_string()))?;
        return Err(InvalidRecord::NotAnObject);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let duplicate = std::cell::RefCell::new(None);
    serde::de::DeserializeSeed::deserialize(unique_keys::Checker(&duplicate), &mut de).map_err(
        |e| match duplicate.take() {
            Some(key) => InvalidRecord::DuplicateKey(key),
            None => InvalidRecord::NotJson(e.to_string()),
        },
    )?;
    de.end().map_err(|e| InvalidRecord::NotJson(e.to_string()))
}

/// Positions of the JSON whitespace bytes outside strings in valid JSON `text`. Byte-wise is
/// exact: every byte of a multi-byte UTF-8 character is >= 0x80, so it can never be taken for
/// a quote, a backslash or whitespace.
fn whitespace_outside_strings(text: &str) -> impl Iterator<Item = usize> + '_ {
    let (mut in_string, mut escaped) = (false, false);
    text.bytes().enumerate().filter_map(move |(i, b)| {
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
            return Some(i);
        }
        None
    })
}

/// Whether valid JSON `text` has no whitespace outside strings (what [`compact`] makes).
fn is_compact(text: &str) -> bool {
    whitespace_outside_strings(text).next().is_none()
}

fn is_json_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Removes JSON whitespace outside strings. `text` must be valid JSON. Runs of kept bytes are
/// copied whole; text that is already compact is copied once.
fn compact(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut run_start = 0;
    for i in whitespace_outside_strings(text) {
        out.extend_from_slice(&bytes[run_start..i]);
        run_start = i + 1;
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
            // Keys without escapes are borrowed from the input, not allocated. Audit events
            // have few keys per object: a short list is searched, a long one hashed.
            const LIST_MAX: usize = 16;
            let mut list: Vec<Cow<'de, str>> = Vec::new();
            let mut set: HashSet<Cow<'de, str>> = HashSet::new();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                let repeated = if set.is_empty() && list.len() < LIST_MAX {
                    list.contains(&key)
                } else {
                    set.extend(list.drain(..));
                    set.contains(&key)
                };
                if repeated {
                    *self.0.borrow_mut() = Some(key.into_owned());
                    return Err(A::Error::custom("duplicate key"));
                }
                if set.is_empty() {
                    list.push(key);
                } else {
                    set.insert(key);
                }
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
    /// The key the entry was appended with, if any.
    pub idempotency_key: Option<IdempotencyKey>,
}

/// The stored bytes of an entry: the object body, and the input of [`Hash::of_entry`].
pub fn encode(header: &EntryHeader, record: &Record) -> Vec<u8> {
    let key_len = header
        .idempotency_key
        .as_ref()
        .map_or(0, |k| k.as_str().len() + 24);
    let mut out = Vec::with_capacity(160 + key_len + record.as_str().len());
    write_prefix(&mut out, header);
    out.extend_from_slice(record.as_str().as_bytes());
    out.push(b'}');
    out
}

fn write_prefix(out: &mut Vec<u8>, header: &EntryHeader) {
    use std::io::Write;
    write!(
        out,
        "{{\"v\":{FORMAT_VERSION},\"ledger_id\":\"{}\",\"seq\":{},\"prev_hash\":\"{}\",\"timestamp\":\"{}\",",
        header.ledger_id, header.seq, header.prev_hash, header.timestamp
    )
    .expect("writing to a Vec cannot fail");
    if let Some(key) = &header.idempotency_key {
        out.extend_from_slice(b"\"idempotency_key\":");
        key.write_json(out);
        out.push(b',');
    }
    out.extend_from_slice(b"\"record\":");
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
    #[serde(borrow, default)]
    idempotency_key: Option<std::borrow::Cow<'a, str>>,
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
        idempotency_key: wire
            .idempotency_key
            .as_deref()
            .map(IdempotencyKey::parse)
            .transpose()
            .map_err(|e| MalformedEntry(e.to_string()))?,
    };
    // The canonical bytes are the prefix `encode` writes, the record exactly as stored (which
    // must be a compact object with unique keys) and the closing brace.
    let record = wire.record.get();
    check_object(record).map_err(|e| MalformedEntry(e.to_string()))?;
    let mut prefix = Vec::with_capacity(bytes.len() - record.len());
    write_prefix(&mut prefix, &header);
    let canonical = is_compact(record)
        && bytes.len() == prefix.len() + record.len() + 1
        && bytes.starts_with(&prefix)
        && bytes[prefix.len()..].starts_with(record.as_bytes())
        && bytes.ends_with(b"}");
    if !canonical {
        return Err(bad(
            "bytes are not in canonical form (field order, spacing or escapes differ)",
        ));
    }
    Ok(DecodedEntry {
        header,
        record: wire.record,
    })
}

/// Room for an entry's header fields beyond its record, for bounding batches by bytes. Worst
/// case: the header fields (with a 64-character ledger id and an 18-digit seq) take 242 bytes,
/// and DynamoDB adds a few per list element. A key adds [`key_overhead`].
pub const ENTRY_OVERHEAD: usize = 300;

/// Bytes an idempotency key adds to an entry at most: `"idempotency_key":"",` (21) and the
/// key with every byte escaped.
pub fn key_overhead(key: Option<&IdempotencyKey>) -> usize {
    key.map_or(0, |k| 21 + 2 * k.as_str().len())
}

/// The most [`key_overhead`] can be.
pub const MAX_KEY_OVERHEAD: usize = 21 + 2 * IdempotencyKey::MAX_LEN;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(seq: u64) -> EntryHeader {
        EntryHeader {
            ledger_id: LedgerId::parse("default").unwrap(),
            seq,
            prev_hash: Hash::GENESIS,
            timestamp: Timestamp::from_unix_micros(1_764_384_000_123_456).unwrap(),
            idempotency_key: None,
        }
    }

    fn keyed(seq: u64, key: &str) -> EntryHeader {
        EntryHeader {
            idempotency_key: Some(IdempotencyKey::parse(key).unwrap()),
            ..header(seq)
        }
    }

    #[test]
    fn ledger_ids_outside_the_alphabet_are_refused() {
        for bad in ["", "../x", "a b", "ü", &"x".repeat(65), "a/b", "a.b"] {
            assert!(LedgerId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(LedgerId::parse(&"A-z_9".repeat(12)).is_ok());
    }

    /// The `time` crate's reading of the format: the oracle for the hand-written code.
    const ORACLE_FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );

    fn oracle_text(micros: i64) -> String {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
            .unwrap()
            .format(ORACLE_FORMAT)
            .unwrap()
    }

    fn oracle_parse(s: &str) -> Option<i64> {
        let parsed = time::PrimitiveDateTime::parse(s, ORACLE_FORMAT)
            .ok()?
            .assume_utc();
        let micros = i64::try_from(parsed.unix_timestamp_nanos() / 1000).ok()?;
        (Timestamp::from_unix_micros(micros).is_ok() && oracle_text(micros) == s).then_some(micros)
    }

    proptest! {
        #[test]
        fn timestamps_spell_and_parse_as_the_time_crate_does(
            micros in -62_135_596_800_000_000i64..=253_402_300_799_999_999,
        ) {
            let ts = Timestamp::from_unix_micros(micros).unwrap();
            let text = ts.to_string();
            prop_assert_eq!(&text, &oracle_text(micros));
            prop_assert_eq!(Timestamp::parse(&text), Ok(ts));
        }

        #[test]
        fn any_edited_spelling_parses_exactly_when_the_time_crate_accepts_it(
            micros in -62_135_596_800_000_000i64..=253_402_300_799_999_999,
            at in 0usize..27,
            byte in prop::sample::select(b"0123456789-:.TZ x".to_vec()),
        ) {
            let mut text = oracle_text(micros).into_bytes();
            text[at] = byte;
            let text = String::from_utf8(text).unwrap();
            prop_assert_eq!(
                Timestamp::parse(&text).ok().map(|t| t.unix_micros()),
                oracle_parse(&text),
                "{}", text
            );
        }
    }

    #[test]
    fn calendar_edges_parse_as_the_time_crate_does() {
        for text in [
            "0001-01-01T00:00:00.000000Z",
            "9999-12-31T23:59:59.999999Z",
            "0000-12-31T23:59:59.999999Z",
            "2024-02-29T12:00:00.000000Z",
            "2023-02-29T12:00:00.000000Z",
            "2100-02-29T12:00:00.000000Z",
            "2000-02-29T12:00:00.000000Z",
            "1969-12-31T23:59:59.999999Z",
            "2025-04-31T00:00:00.000000Z",
            "2025-13-01T00:00:00.000000Z",
            "2025-00-01T00:00:00.000000Z",
            "2025-01-00T00:00:00.000000Z",
            "2025-01-01T24:00:00.000000Z",
            "2025-01-01T23:60:00.000000Z",
            "2025-06-30T23:59:60.000000Z",
            "2025-01-01T00:00:00.000000z",
            "+025-01-01T00:00:00.000000Z",
            "2025-01-01T00:00:00.000000Z ",
            "2025-01-01T00:00:00.0000000",
        ] {
            assert_eq!(
                Timestamp::parse(text).ok().map(|t| t.unix_micros()),
                oracle_parse(text),
                "{text}"
            );
        }
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
        // Long objects too (their keys are hashed, short ones searched).
        let keys = |n: usize| (0..n).map(|i| format!(r#""k{i}":{i}"#)).collect::<Vec<_>>();
        for n in [15, 16, 17, 40] {
            let unique = format!("{{{}}}", keys(n).join(","));
            assert!(Record::parse(unique.as_bytes()).is_ok(), "{n} keys");
            for repeat_at in [0, n / 2, n - 1] {
                let mut repeated = keys(n);
                repeated.push(format!(r#""k{repeat_at}":"again""#));
                let text = format!("{{{}}}", repeated.join(","));
                assert_eq!(
                    Record::parse(text.as_bytes()),
                    Err(InvalidRecord::DuplicateKey(format!("k{repeat_at}"))),
                    "{n} keys, k{repeat_at} repeated"
                );
            }
        }
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
    fn a_key_is_one_optional_field_before_the_record_and_round_trips() {
        let record = Record::parse(br#"{"a":1}"#).unwrap();
        let plain = String::from_utf8(encode(&header(3), &record)).unwrap();
        let with_key = String::from_utf8(encode(&keyed(3, r#"k "q" \ ~"#), &record)).unwrap();
        assert_eq!(
            with_key,
            plain.replace(
                r#""record":"#,
                r#""idempotency_key":"k \"q\" \\ ~","record":"#
            )
        );
        let decoded = decode(with_key.as_bytes()).unwrap();
        assert_eq!(decoded.header, keyed(3, r#"k "q" \ ~"#));
        assert_eq!(decode(plain.as_bytes()).unwrap().header, header(3));
    }

    #[test]
    fn a_key_has_one_spelling_and_one_place() {
        let record = Record::parse(br#"{"a":1}"#).unwrap();
        let good = String::from_utf8(encode(&keyed(1, "a/b"), &record)).unwrap();
        let variants = [
            good.replace(r#""a/b""#, r#""a\/b""#),
            good.replace(r#""a/b""#, r#""\u0061/b""#),
            good.replace(r#""idempotency_key":"a/b","#, "")
                .replace(r#""v":1,"#, r#""v":1,"idempotency_key":"a/b","#),
            good.replace(r#""a/b""#, r#""""#),
            good.replace(r#""a/b""#, r#""tab\there""#),
            good.replace(r#""a/b""#, "null"),
        ];
        for v in variants {
            assert!(decode(v.as_bytes()).is_err(), "{v}");
        }
    }

    #[test]
    fn keys_are_one_to_255_printable_ascii_characters() {
        for good in [" ", "~", "a", &"x".repeat(255), r#"" \"#] {
            assert!(IdempotencyKey::parse(good).is_ok(), "{good:?}");
        }
        for bad in ["", &"x".repeat(256), "tab\t", "é", "\u{7f}", "nl\n"] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
        let worst = IdempotencyKey::parse(&"\"".repeat(255)).unwrap();
        let record = Record::parse(b"{}").unwrap();
        let grown =
            encode(&keyed(1, worst.as_str()), &record).len() - encode(&header(1), &record).len();
        assert_eq!(grown, key_overhead(Some(&worst)), "the bound is tight");
    }
}
