//! The object key layout, the one place it is written (`docs/STORAGE.md`, "Object keys").
//!
//! Keys are relative to the storage root (on S3, `ELEANOR_LEDGER_S3_PREFIX`, which the S3
//! store prepends), and sort by seq within a ledger:
//!
//! - entries: `{ledger_id}/entries/{seq:018}.json`
//! - checkpoints: `{ledger_id}/checkpoints/{seq:018}.json`

use super::entry::LedgerId;

/// The object key of entry `seq`.
pub fn entry_key(ledger: &LedgerId, seq: u64) -> String {
    format!("{}{seq:018}.json", entries_prefix(ledger))
}

/// The common prefix of a ledger's entry keys.
pub fn entries_prefix(ledger: &LedgerId) -> String {
    format!("{ledger}/entries/")
}

/// The seq an entry key of `ledger` names, if it is one.
pub fn seq_of_entry_key(key: &str, ledger: &LedgerId) -> Option<u64> {
    seq_of_name(
        key.strip_prefix(ledger.as_str())?
            .strip_prefix("/entries/")?,
    )
}

/// The object key of a ledger's checkpoint at `seq`.
pub fn checkpoint_key(ledger: &LedgerId, seq: u64) -> String {
    format!("{}{seq:018}.json", checkpoints_prefix(ledger))
}

/// The common prefix of a ledger's checkpoint keys.
pub fn checkpoints_prefix(ledger: &LedgerId) -> String {
    format!("{ledger}/checkpoints/")
}

/// The seq a checkpoint key names, if it is one (of any ledger).
pub fn seq_of_checkpoint_key(key: &str) -> Option<u64> {
    seq_of_name(key.rsplit('/').next()?)
}

/// `{seq:018}.json` -> seq.
fn seq_of_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() != 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_seq_and_read_back() {
        let id = LedgerId::parse("l").unwrap();
        assert_eq!(entry_key(&id, 1), "l/entries/000000000000000001.json");
        assert!(entry_key(&id, 9) < entry_key(&id, 10));
        assert_eq!(seq_of_entry_key(&entry_key(&id, 42), &id), Some(42));
        assert_eq!(
            seq_of_checkpoint_key(&checkpoint_key(&id, 7)),
            Some(7),
            "{}",
            checkpoint_key(&id, 7)
        );
    }

    #[test]
    fn other_keys_name_no_seq() {
        let id = LedgerId::parse("l").unwrap();
        let other = LedgerId::parse("l2").unwrap();
        for key in [
            "l/entries/1.json",
            "l/entries/00000000000000000a.json",
            "l/entries/000000000000000001.txt",
            "l/checkpoints/000000000000000001.json",
        ] {
            assert_eq!(seq_of_entry_key(key, &id), None, "{key}");
        }
        assert_eq!(seq_of_entry_key(&entry_key(&other, 1), &id), None);
        assert_eq!(seq_of_checkpoint_key("l/checkpoints/x.json"), None);
    }
}
