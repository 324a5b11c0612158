//! The signing key file (`ELEANOR_LEDGER_SIGNING_KEY_FILE`): read at startup by
//! [`crate::config`], written by `ledger-init --gen-key`, or created in the embedded store's
//! data dir on first start ([`load_or_create`], [`DEFAULT_KEY_FILE`]). File I/O stays out of
//! the ledger, which is handed the [`Signer`].

use std::path::Path;

use crate::chain::checkpoint::{PublicKey, Signer};

/// A signing key file that cannot be used, in one sentence naming the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyFileError(pub String);

/// The key file the server keeps in the embedded backend's data dir when no
/// `ELEANOR_LEDGER_SIGNING_KEY_FILE` is configured.
pub const DEFAULT_KEY_FILE: &str = "signing.key";

/// Reads an Ed25519 seed (32 raw bytes or 64 hex characters) from `path`, refusing a file
/// that anyone but its owner may read or write (mode must be 0600 or stricter).
pub fn load_signing_key(path: &Path) -> Result<Signer, KeyFileError> {
    load(path, "ELEANOR_LEDGER_SIGNING_KEY_FILE ")
}

/// Whether [`load_or_create`] found the key file or made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Loaded,
    Created,
}

/// The signing key in `path` (under the rules of [`load_signing_key`]), created first with
/// [`write_new_key`] if there is no file there yet. For the embedded backend's default key,
/// whose data dir one process holds at a time (so no two create it at once).
pub fn load_or_create(path: &Path) -> Result<(Signer, KeySource), KeyFileError> {
    let source = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_new_key(path)?;
            KeySource::Created
        }
        _ => KeySource::Loaded,
    };
    Ok((load(path, "the signing key file ")?, source))
}

/// [`load_signing_key`], naming the file in errors as `what` then its path.
fn load(path: &Path, what: &str) -> Result<Signer, KeyFileError> {
    let shown = format!("{what}{}", path.display());
    let meta = std::fs::metadata(path)
        .map_err(|e| KeyFileError(format!("{shown} cannot be read: {e}")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError(format!(
                "{shown} has mode {mode:04o}; a private key file must be 0600 or stricter (chmod 600 {})",
                path.display()
            )));
        }
    }
    if !meta.is_file() {
        return Err(KeyFileError(format!("{shown} is not a file")));
    }
    let bytes =
        std::fs::read(path).map_err(|e| KeyFileError(format!("{shown} cannot be read: {e}")))?;
    Signer::from_key_file_bytes(&bytes).map_err(|e| KeyFileError(format!("{shown}: {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_or_create_creates_a_private_key_once_then_reuses_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEFAULT_KEY_FILE);
        let (first, source) = load_or_create(&path).unwrap();
        assert_eq!(source, KeySource::Created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, source) = load_or_create(&path).unwrap();
        assert_eq!(source, KeySource::Loaded);
        assert_eq!(
            again.public_key(),
            first.public_key(),
            "the same key on a later start"
        );
    }

    #[test]
    fn load_or_create_refuses_an_existing_key_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEFAULT_KEY_FILE);
        write_new_key(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(
            err.0.starts_with("the signing key file ") && err.0.contains("0644"),
            "{err}"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "an existing file is never replaced");
    }
}
