//! The pure core: the entry format, entry hashing and chain verification.
//!
//! Nothing here does I/O or knows about tokio, HTTP or storage: it turns fields into stored
//! bytes ([`entry::encode`]), bytes into hashes ([`hash::Hash::of_entry`]) and sequences of
//! stored bytes into verification outcomes ([`verify::ChainVerifier`]), and signs and checks
//! checkpoints and receipts ([`checkpoint`]); [`keys`] is the object key layout. `docs/FORMAT.md`
//! specifies the same rules for auditors who re-implement them.

pub mod checkpoint;
pub mod compact;
pub mod entry;
pub mod hash;
pub mod keys;
pub mod verify;
