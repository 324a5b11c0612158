//! The signing key file (`ELEANOR_LEDGER_SIGNING_KEY_FILE`): read at startup by
//! [`crate::config`], written by `ledger-init --gen-key`. File I/O stays out of the ledger,
//! which is handed the [`Signer`].

use std::path::Path;

use crate::chain::checkpoint::{PublicKey, Signer};

/// A signing key file that cannot be used, in one sentence naming the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyFileError(pub String);

/// Reads an Ed25519 seed (32 raw bytes or 64 hex characters) from `path`, refusing a file
/// that anyone but its owner may read or write (mode must be 0600 or stricter).
pub fn load_signing_key(path: &Path) -> Result<Signer, KeyFileError> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| {
        KeyFileError(format!(
            "ELEANOR_LEDGER_SIGNING_KEY_FILE {shown} cannot be read: {e}"
        ))
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError(format!(
                "ELEANOR_LEDGER_SIGNING_KEY_FILE {shown} has mode {mode:04o}; a private key file must be 0600 or stricter (chmod 600 {shown})"
            )));
        }
    }
    if !meta.is_file() {
        return Err(KeyFileError(format!(
            "ELEANOR_LEDGER_SIGNING_KEY_FILE {shown} is not a file"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        KeyFileError(format!(
            "ELEANOR_LEDGER_SIGNING_KEY_FILE {shown} cannot be read: {e}"
        ))
    })?;
    Signer::from_key_file_bytes(&bytes)
        .map_err(|e| KeyFileError(format!("ELEANOR_LEDGER_SIGNING_KEY_FILE {shown}: {e}")))
}

/// Writes a new random Ed25519 seed to `path` as 64 hex characters and a newline, creating the
/// file with mode 0600. Refuses to replace an existing file. Returns the new public key.
pub fn write_new_key(path: &Path) -> Result<PublicKey, KeyFileError> {
    use std::io::Write;
    let shown = path.display();
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| KeyFileError(format!("no randomness for a new key: {e}")))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError(format!(
                "{shown} already exists; a key file is never overwritten (remove it or choose another path)"
            ))
        } else {
            KeyFileError(format!("cannot create {shown}: {e}"))
        }
    })?;
    file.write_all(format!("{}\n", hex::encode(seed)).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| KeyFileError(format!("cannot write {shown}: {e}")))?;
    Ok(Signer::from_seed(&seed).public_key().clone())
}
