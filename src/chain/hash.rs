//! SHA-256 digests as they appear in entries, indexes and the API.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Domain-separation prefix hashed before an entry's stored bytes (see `docs/FORMAT.md`).
pub const ENTRY_HASH_DOMAIN: &[u8] = b"eleanor-ledger/entry/v1\0";

/// A SHA-256 digest. Shown and parsed as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The `prev_hash` of every ledger's first entry: 32 zero bytes.
    pub const GENESIS: Hash = Hash([0; 32]);

    /// `SHA-256(ENTRY_HASH_DOMAIN || stored_bytes)`: the hash of one stored entry.
    pub fn of_entry(stored_bytes: &[u8]) -> Hash {
        let mut hasher = Sha256::new();
        hasher.update(ENTRY_HASH_DOMAIN);
        hasher.update(stored_bytes);
        Hash(hasher.finalize().into())
    }

    pub fn to_hex(&self) -> String {
        self.hex().to_owned()
    }

    /// The 64 lowercase hex digits, without allocating.
    fn hex(&self) -> HexDigits {
        let mut digits = [0u8; 64];
        hex::encode_to_slice(self.0, &mut digits).expect("64 digits for 32 bytes");
        HexDigits(digits)
    }
}

/// A hash's hex digits on the stack (`hex::encode` builds its `String` a char at a time, which
/// showed in the append profile: every receipt has two hashes).
struct HexDigits([u8; 64]);

impl std::ops::Deref for HexDigits {
    type Target = str;
    fn deref(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

/// A string that is not 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a hash is 64 lowercase hex characters")]
pub struct HashParseError;

impl FromStr for Hash {
    type Err = HashParseError;

    fn from_str(s: &str) -> Result<Hash, HashParseError> {
        let lowercase_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if s.len() != 64 || !s.as_bytes().iter().all(lowercase_hex) {
            return Err(HashParseError);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| HashParseError)?;
        Ok(Hash(out))
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Hash, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_uppercase_or_short_input() {
        let h = Hash::of_entry(b"x");
        assert_eq!(h.to_hex().parse::<Hash>(), Ok(h));
        assert!(h.to_hex().to_uppercase().parse::<Hash>().is_err());
        assert!("abcd".parse::<Hash>().is_err());
    }

    #[test]
    fn genesis_is_sixty_four_zeros() {
        assert_eq!(Hash::GENESIS.to_hex(), "0".repeat(64));
    }

    #[test]
    fn the_domain_prefix_is_part_of_the_hash() {
        let plain: [u8; 32] = Sha256::digest(b"x").into();
        assert_ne!(Hash::of_entry(b"x").0, plain);
    }
}
