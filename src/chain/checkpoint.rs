//! Signed checkpoints and signed append receipts: what is signed, byte for byte, and how a
//! signature is checked. Pure: keys come in as bytes, nothing here reads files or clocks.
//!
//! Both statements are signed with Ed25519 (RFC 8032, verified strictly) over a
//! domain-separated, fixed-order compact JSON text, so a signature over one kind of statement
//! can never be taken for the other, and a verifier in any language can rebuild the bytes from
//! the fields with string formatting alone (every field is a number, a ledger id or fixed-form
//! text that needs no escaping):
//!
//! ```text
//! checkpoint: "eleanor-ledger/checkpoint/v1" 0x00 {"ledger_id":"<id>","seq":<n>,"last_hash":"<hex>","timestamp":"<ts>"}
//! receipt:    "eleanor-ledger/receipt/v1" 0x00 {"ledger_id":"<id>","seq":<n>,"entry_hash":"<hex>","prev_hash":"<hex>","timestamp":"<ts>"}
//! export end: "eleanor-ledger/export-end/v1" 0x00 {"ledger_id":"<id>","from":<n>,"to":<n>,"last_hash":"<hex>","head_seq":<n>,"head_hash":"<hex>","timestamp":"<ts>"}
//! ```
//!
//! A stored statement's `v` is not in the signed text: it is bound by the domain prefix, which
//! names the version (`.../v1`). A verifier accepts only `v` 1 and checks with the v1 prefix,
//! so a statement whose `v` was changed is refused before its signature is looked at, and a
//! later version would have its own prefix.
//!
//! A key is named by its key id: the SHA-256 of its 32-byte public key, as 64 hex characters.
//! `docs/FORMAT.md` ("Checkpoints and receipts") is the auditor-facing copy of these rules.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::entry::{LedgerId, Timestamp};
use super::hash::Hash;

/// Prefix of the signed bytes of a checkpoint.
pub const CHECKPOINT_DOMAIN: &[u8] = b"eleanor-ledger/checkpoint/v1\0";
/// Prefix of the signed bytes of a receipt.
pub const RECEIPT_DOMAIN: &[u8] = b"eleanor-ledger/receipt/v1\0";
/// Prefix of the signed bytes of an export's end line.
pub const EXPORT_END_DOMAIN: &[u8] = b"eleanor-ledger/export-end/v1\0";
/// The `v` of a stored checkpoint.
pub const CHECKPOINT_VERSION: u32 = 1;
/// The `v` of an export's end line.
pub const EXPORT_END_VERSION: u32 = 1;

/// A key or signature that cannot be used, in one sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// The SHA-256 of a public key: how checkpoints and receipts name the key that signed them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    pub fn of(public_key: &[u8; 32]) -> KeyId {
        KeyId(Sha256::digest(public_key).into())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<KeyId, KeyError> {
        s.parse::<Hash>()
            .map(|h| KeyId(h.0))
            .map_err(|_| KeyError("a key id is 64 lowercase hex characters".into()))
    }
}

/// An Ed25519 signature, shown as 128 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignatureHex(pub [u8; 64]);

impl fmt::Display for SignatureHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SignatureHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignatureHex({self})")
    }
}

impl FromStr for SignatureHex {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<SignatureHex, KeyError> {
        let lowercase_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        let mut out = [0u8; 64];
        if s.len() != 128 || !s.as_bytes().iter().all(lowercase_hex) {
            return Err(KeyError(
                "a signature is 128 lowercase hex characters".into(),
            ));
        }
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| KeyError("a signature is 128 lowercase hex characters".into()))?;
        Ok(SignatureHex(out))
    }
}

macro_rules! hex_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
hex_serde!(KeyId);
hex_serde!(SignatureHex);

/// What a checkpoint states: the ledger's chain reached `seq`, whose entry hashes to
/// `last_hash`, as seen by the signer at `timestamp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointBody {
    pub ledger_id: LedgerId,
    pub seq: u64,
    pub last_hash: Hash,
    pub timestamp: Timestamp,
}

impl CheckpointBody {
    /// The exact bytes a checkpoint signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = CHECKPOINT_DOMAIN.to_vec();
        out.extend_from_slice(
            format!(
                r#"{{"ledger_id":"{}","seq":{},"last_hash":"{}","timestamp":"{}"}}"#,
                self.ledger_id, self.seq, self.last_hash, self.timestamp
            )
            .as_bytes(),
        );
        out
    }
}

/// A signed checkpoint, as stored (one JSON object) and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub v: u32,
    pub ledger_id: LedgerId,
    pub seq: u64,
    pub last_hash: Hash,
    pub timestamp: Timestamp,
    pub key_id: KeyId,
    pub signature: SignatureHex,
}

impl Checkpoint {
    /// The object body stored for this checkpoint: compact JSON, fields in a fixed order.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a checkpoint always serialises")
    }

    /// Parses a stored or exported checkpoint (fields only; the signature is not checked).
    pub fn from_json(bytes: &[u8]) -> Result<Checkpoint, KeyError> {
        let cp: Checkpoint = serde_json::from_slice(bytes)
            .map_err(|e| KeyError(format!("not a checkpoint: {e}")))?;
        if cp.v != CHECKPOINT_VERSION {
            return Err(KeyError(format!("unknown checkpoint version {}", cp.v)));
        }
        Ok(cp)
    }

    /// The signed fields.
    pub fn body(&self) -> CheckpointBody {
        CheckpointBody {
            ledger_id: self.ledger_id.clone(),
            seq: self.seq,
            last_hash: self.last_hash,
            timestamp: self.timestamp,
        }
    }

    /// Checks the signature with `key`, which must be the key the checkpoint names.
    pub fn verify(&self, key: &PublicKey) -> Result<(), KeyError> {
        key.verify(&self.key_id, &self.body().signed_bytes(), &self.signature)
    }

    /// Checks the signature with whichever of `trusted` the checkpoint names; an error when
    /// none does or the signature fails.
    pub fn verify_trusted(&self, trusted: &[PublicKey]) -> Result<(), KeyError> {
        let key = trusted
            .iter()
            .find(|k| k.id() == self.key_id)
            .ok_or_else(|| {
                KeyError(format!(
                    "signed with key {}, which is not a trusted key",
                    self.key_id
                ))
            })?;
        self.verify(key)
    }
}

/// The fields a receipt signature covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBody {
    pub ledger_id: LedgerId,
    pub seq: u64,
    pub entry_hash: Hash,
    pub prev_hash: Hash,
    pub timestamp: Timestamp,
}

impl ReceiptBody {
    /// The exact bytes a receipt signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = RECEIPT_DOMAIN.to_vec();
        out.extend_from_slice(
            format!(
                r#"{{"ledger_id":"{}","seq":{},"entry_hash":"{}","prev_hash":"{}","timestamp":"{}"}}"#,
                self.ledger_id, self.seq, self.entry_hash, self.prev_hash, self.timestamp
            )
            .as_bytes(),
        );
        out
    }
}

/// The signature part of a receipt (`"receipt": {"key_id", "signature"}` in an append's
/// answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptSignature {
    pub key_id: KeyId,
    pub signature: SignatureHex,
}

/// What an export's end line states: the export of ledger `ledger_id` holds the entries
/// `from..=to` (none when `to` is `from - 1`, an empty ledger), entry `to` hashes to
/// `last_hash` (the genesis value when the export is empty), and the export was cut when the
/// ledger's head was `head_seq` with `head_hash`, at the signer's time `timestamp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportEndBody {
    pub ledger_id: LedgerId,
    pub from: u64,
    pub to: u64,
    pub last_hash: Hash,
    pub head_seq: u64,
    pub head_hash: Hash,
    pub timestamp: Timestamp,
}

impl ExportEndBody {
    /// The exact bytes an end line's signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = EXPORT_END_DOMAIN.to_vec();
        out.extend_from_slice(
            format!(
                r#"{{"ledger_id":"{}","from":{},"to":{},"last_hash":"{}","head_seq":{},"head_hash":"{}","timestamp":"{}"}}"#,
                self.ledger_id,
                self.from,
                self.to,
                self.last_hash,
                self.head_seq,
                self.head_hash,
                self.timestamp
            )
            .as_bytes(),
        );
        out
    }
}

/// An export's end line's statement, signed (`key_id` and `signature`) when the service has
/// a key, as compact JSON with the fields in this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportEnd {
    pub v: u32,
    pub ledger_id: LedgerId,
    pub from: u64,
    pub to: u64,
    pub last_hash: Hash,
    pub head_seq: u64,
    pub head_hash: Hash,
    pub timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<KeyId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureHex>,
}

impl ExportEnd {
    /// The statement, unsigned.
    pub fn unsigned(body: ExportEndBody) -> ExportEnd {
        ExportEnd {
            v: EXPORT_END_VERSION,
            ledger_id: body.ledger_id,
            from: body.from,
            to: body.to,
            last_hash: body.last_hash,
            head_seq: body.head_seq,
            head_hash: body.head_hash,
            timestamp: body.timestamp,
            key_id: None,
            signature: None,
        }
    }

    /// The signed fields.
    pub fn body(&self) -> ExportEndBody {
        ExportEndBody {
            ledger_id: self.ledger_id.clone(),
            from: self.from,
            to: self.to,
            last_hash: self.last_hash,
            head_seq: self.head_seq,
            head_hash: self.head_hash,
            timestamp: self.timestamp,
        }
    }

    /// Checks the version and that the statement is self-consistent (`to` at most the head,
    /// `from` at most one past `to`, key id and signature together).
    pub fn check_form(&self) -> Result<(), KeyError> {
        if self.v != EXPORT_END_VERSION {
            return Err(KeyError(format!("unknown end line version {}", self.v)));
        }
        if self.from == 0 || self.to > self.head_seq || self.from > self.to.saturating_add(1) {
            return Err(KeyError(format!(
                "the end line's range {}..={} does not fit its head seq {}",
                self.from, self.to, self.head_seq
            )));
        }
        if self.key_id.is_some() != self.signature.is_some() {
            return Err(KeyError(
                "the end line has a key_id without a signature, or the other way round".into(),
            ));
        }
        Ok(())
    }

    /// Checks the signature with whichever of `trusted` the end line names; an error when it
    /// is unsigned, names no trusted key, or the signature fails.
    pub fn verify_trusted(&self, trusted: &[PublicKey]) -> Result<(), KeyError> {
        let (Some(key_id), Some(signature)) = (&self.key_id, &self.signature) else {
            return Err(KeyError(
                "the end line is not signed (the service had no signing key)".into(),
            ));
        };
        let key = trusted.iter().find(|k| k.id() == *key_id).ok_or_else(|| {
            KeyError(format!(
                "signed with key {key_id}, which is not a trusted key"
            ))
        })?;
        key.verify(key_id, &self.body().signed_bytes(), signature)
    }
}

/// An Ed25519 public key with its key id.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: KeyId,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl PublicKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, KeyError> {
        let key = VerifyingKey::from_bytes(bytes)
            .map_err(|_| KeyError("not a valid Ed25519 public key".into()))?;
        if key.is_weak() {
            return Err(KeyError("a weak (small-order) Ed25519 public key".into()));
        }
        Ok(PublicKey {
            key,
            id: KeyId::of(bytes),
        })
    }

    /// 64 hex characters (upper or lower case; surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<PublicKey, KeyError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes)
            .map_err(|_| KeyError("a public key is 64 hex characters".into()))?;
        PublicKey::from_bytes(&bytes)
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    /// Checks that `signature` over `message` was made by this key, which `key_id` must name.
    pub fn verify(
        &self,
        key_id: &KeyId,
        message: &[u8],
        signature: &SignatureHex,
    ) -> Result<(), KeyError> {
        if *key_id != self.id {
            return Err(KeyError(format!(
                "signed with key {key_id}, not the trusted key {}",
                self.id
            )));
        }
        self.key
            .verify_strict(message, &Signature::from_bytes(&signature.0))
            .map_err(|_| KeyError(format!("the signature does not verify with key {key_id}")))
    }
}

/// An Ed25519 signing key. Its `Debug` shows the key id only.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    public: PublicKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer(key_id {})", self.public.id)
    }
}

impl Signer {
    /// From a 32-byte Ed25519 seed (RFC 8032's private key).
    pub fn from_seed(seed: &[u8; 32]) -> Signer {
        let key = SigningKey::from_bytes(seed);
        let public = PublicKey {
            key: key.verifying_key(),
            id: KeyId::of(key.verifying_key().as_bytes()),
        };
        Signer { key, public }
    }

    /// From a key file's contents: the 32 seed bytes raw, or as 64 hex characters (surrounding
    /// whitespace, such as a final newline, ignored).
    pub fn from_key_file_bytes(bytes: &[u8]) -> Result<Signer, KeyError> {
        if let Ok(seed) = <[u8; 32]>::try_from(bytes) {
            return Ok(Signer::from_seed(&seed));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| KeyError("a key file holds 32 raw bytes or 64 hex characters".into()))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed)
            .map_err(|_| KeyError("a key file holds 32 raw bytes or 64 hex characters".into()))?;
        Ok(Signer::from_seed(&seed))
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub fn key_id(&self) -> KeyId {
        self.public.id
    }

    fn sign(&self, message: &[u8]) -> SignatureHex {
        SignatureHex(self.key.sign(message).to_bytes())
    }

    pub fn sign_checkpoint(&self, body: CheckpointBody) -> Checkpoint {
        let signature = self.sign(&body.signed_bytes());
        Checkpoint {
            v: CHECKPOINT_VERSION,
            ledger_id: body.ledger_id,
            seq: body.seq,
            last_hash: body.last_hash,
            timestamp: body.timestamp,
            key_id: self.key_id(),
            signature,
        }
    }

    pub fn sign_export_end(&self, body: ExportEndBody) -> ExportEnd {
        let signature = self.sign(&body.signed_bytes());
        ExportEnd {
            key_id: Some(self.key_id()),
            signature: Some(signature),
            ..ExportEnd::unsigned(body)
        }
    }

    pub fn sign_receipt(&self, body: &ReceiptBody) -> ReceiptSignature {
        ReceiptSignature {
            key_id: self.key_id(),
            signature: self.sign(&body.signed_bytes()),
        }
    }
}

impl ReceiptSignature {
    /// Checks this signature over `body` with `key`.
    pub fn verify(&self, body: &ReceiptBody, key: &PublicKey) -> Result<(), KeyError> {
        key.verify(&self.key_id, &body.signed_bytes(), &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> CheckpointBody {
        CheckpointBody {
            ledger_id: LedgerId::parse("audit-demo").unwrap(),
            seq: 5,
            last_hash: Hash([7; 32]),
            timestamp: Timestamp::parse("2025-11-29T02:40:00.123456Z").unwrap(),
        }
    }

    /// RFC 8032 test 1's seed, so the key below can be checked against the RFC.
    const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

    fn signer() -> Signer {
        Signer::from_key_file_bytes(SEED.as_bytes()).unwrap()
    }

    #[test]
    fn the_key_is_rfc_8032_test_1_and_its_id_is_the_sha256_of_the_public_key() {
        let s = signer();
        assert_eq!(
            s.public_key().to_hex(),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let pk = hex::decode(s.public_key().to_hex()).unwrap();
        assert_eq!(s.key_id().to_string(), hex::encode(Sha256::digest(&pk)));
    }

    #[test]
    fn checkpoint_signed_bytes_are_the_documented_text() {
        let bytes = body().signed_bytes();
        let expected = format!(
            "eleanor-ledger/checkpoint/v1\0{{\"ledger_id\":\"audit-demo\",\"seq\":5,\"last_hash\":\"{}\",\"timestamp\":\"2025-11-29T02:40:00.123456Z\"}}",
            "07".repeat(32)
        );
        assert_eq!(bytes, expected.as_bytes());
    }

    #[test]
    fn a_signed_checkpoint_round_trips_and_verifies_and_any_change_is_refused() {
        let s = signer();
        let cp = s.sign_checkpoint(body());
        let parsed = Checkpoint::from_json(&cp.to_json()).unwrap();
        assert_eq!(parsed, cp);
        parsed.verify(s.public_key()).unwrap();

        let mut forged = cp.clone();
        forged.seq = 6;
        assert!(forged.verify(s.public_key()).is_err());
        let mut forged = cp.clone();
        forged.signature.0[0] ^= 1;
        assert!(forged.verify(s.public_key()).is_err());
        let other = Signer::from_seed(&[1; 32]);
        assert!(cp.verify(other.public_key()).is_err());
    }

    #[test]
    fn the_stored_form_has_fixed_field_order() {
        let cp = signer().sign_checkpoint(body());
        let text = String::from_utf8(cp.to_json()).unwrap();
        assert!(
            text.starts_with(r#"{"v":1,"ledger_id":"audit-demo","seq":5,"last_hash":""#),
            "{text}"
        );
        assert!(text.contains(r#","key_id":""#) && text.ends_with("\"}"));
    }

    #[test]
    fn a_receipt_signature_covers_every_field() {
        let s = signer();
        let body = ReceiptBody {
            ledger_id: LedgerId::parse("l").unwrap(),
            seq: 1,
            entry_hash: Hash([1; 32]),
            prev_hash: Hash::GENESIS,
            timestamp: Timestamp::parse("2025-11-29T02:40:00.123456Z").unwrap(),
        };
        let sig = s.sign_receipt(&body);
        sig.verify(&body, s.public_key()).unwrap();
        let altered = ReceiptBody {
            entry_hash: Hash([2; 32]),
            ..body
        };
        assert!(sig.verify(&altered, s.public_key()).is_err());
        // A receipt signature is not a checkpoint signature over look-alike fields.
        assert!(
            s.public_key()
                .verify(&sig.key_id, &self::body().signed_bytes(), &sig.signature)
                .is_err()
        );
    }

    fn end_body() -> ExportEndBody {
        ExportEndBody {
            ledger_id: LedgerId::parse("audit-demo").unwrap(),
            from: 3,
            to: 5,
            last_hash: Hash([7; 32]),
            head_seq: 9,
            head_hash: Hash([8; 32]),
            timestamp: Timestamp::parse("2025-11-29T02:40:00.123456Z").unwrap(),
        }
    }

    #[test]
    fn export_end_signed_bytes_are_the_documented_text() {
        let expected = format!(
            "eleanor-ledger/export-end/v1\0{{\"ledger_id\":\"audit-demo\",\"from\":3,\"to\":5,\"last_hash\":\"{}\",\"head_seq\":9,\"head_hash\":\"{}\",\"timestamp\":\"2025-11-29T02:40:00.123456Z\"}}",
            "07".repeat(32),
            "08".repeat(32)
        );
        assert_eq!(end_body().signed_bytes(), expected.as_bytes());
    }

    #[test]
    fn a_signed_export_end_verifies_and_any_change_or_a_checkpoint_key_swap_is_refused() {
        let s = signer();
        let end = s.sign_export_end(end_body());
        end.check_form().unwrap();
        let json = serde_json::to_vec(&end).unwrap();
        assert_eq!(serde_json::from_slice::<ExportEnd>(&json).unwrap(), end);
        end.verify_trusted(&[s.public_key().clone()]).unwrap();
        for forged in [
            ExportEnd {
                to: 4,
                ..end.clone()
            },
            ExportEnd {
                from: 1,
                ..end.clone()
            },
            ExportEnd {
                head_seq: 10,
                ..end.clone()
            },
        ] {
            assert!(forged.verify_trusted(&[s.public_key().clone()]).is_err());
        }
        let unsigned = ExportEnd::unsigned(end_body());
        assert!(
            !String::from_utf8(serde_json::to_vec(&unsigned).unwrap())
                .unwrap()
                .contains("signature")
        );
        assert!(unsigned.verify_trusted(&[s.public_key().clone()]).is_err());
        // An end line's signature is no checkpoint's signature, and the other way round.
        let cp = s.sign_checkpoint(body());
        assert!(
            s.public_key()
                .verify(&cp.key_id, &end.body().signed_bytes(), &cp.signature)
                .is_err()
        );
    }

    #[test]
    fn a_checkpoint_or_end_line_of_another_version_is_refused() {
        let s = signer();
        let text = String::from_utf8(s.sign_checkpoint(body()).to_json()).unwrap();
        let v2 = text.replacen(r#"{"v":1,"#, r#"{"v":2,"#, 1);
        assert!(Checkpoint::from_json(v2.as_bytes()).is_err());
        let end = ExportEnd {
            v: 2,
            ..s.sign_export_end(end_body())
        };
        assert!(end.check_form().is_err());
    }

    #[test]
    fn key_files_may_be_raw_or_hex_and_nothing_else() {
        assert_eq!(
            Signer::from_key_file_bytes(&[9; 32]).unwrap().key_id(),
            Signer::from_seed(&[9; 32]).key_id()
        );
        assert!(Signer::from_key_file_bytes(format!("{SEED}\n").as_bytes()).is_ok());
        assert!(Signer::from_key_file_bytes(b"short").is_err());
        assert!(Signer::from_key_file_bytes(&[9; 33]).is_err());
    }
}
