//! The key file under the state directory, and the claim that keeps a key rotation and a
//! running server apart.
//!
//! `<state>/secrets.key` holds [`KEY_LEN`] random bytes, mode 0600, the server user's. It
//! is made on the first start (a temporary file, synced, then linked into place, so that
//! no reader ever sees half a key). A rotation writes the new key to `secrets.key.new`
//! first and renames it over `secrets.key` only once the store is re-encrypted; a start
//! that finds `secrets.key.new` left by an interrupted rotation keeps whichever key opens
//! the stored secrets.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use sqlx::{Row, SqlitePool};

use super::{KEY_LEN, Sealed, SecretError, SecretKey, WORKFLOW_YAML, job_owner, workflow_owner};

/// The key's file name under the state directory.
pub const KEY_FILE: &str = "secrets.key";
/// The file a rotation writes its new key to before the store is re-encrypted.
pub const NEW_KEY_FILE: &str = "secrets.key.new";

/// A claim on the state directory (a `flock` on it): shared by every server running on
/// it, exclusive for a key rotation. The kernel drops it when the process ends, so a
/// crashed server blocks nothing. The descriptor is close-on-exec: jobs never hold it.
pub struct StateClaim(#[allow(dead_code)] Flock<File>);

impl StateClaim {
    /// The claim of a server starting on `state`; fails while a rotation runs on it.
    pub fn server(state: &Path) -> Result<StateClaim, SecretError> {
        Self::take(state, FlockArg::LockSharedNonblock).map_err(|busy| match busy {
            true => SecretError::Key(format!(
                "a secrets key rotation is running on {}; start the server once it has ended",
                state.display()
            )),
            false => SecretError::Key(format!("cannot lock {}", state.display())),
        })
    }

    /// The claim of a key rotation on `state`; fails while a server runs on it.
    pub fn rotation(state: &Path) -> Result<StateClaim, SecretError> {
        Self::take(state, FlockArg::LockExclusiveNonblock).map_err(|busy| match busy {
            true => SecretError::Key(format!(
                "a silo server is running on {}; stop it first (the key is rotated on a stopped server only)",
                state.display()
            )),
            false => SecretError::Key(format!("cannot lock {}", state.display())),
        })
    }

    /// The lock, or whether it failed because another holds it.
    fn take(state: &Path, how: FlockArg) -> Result<StateClaim, bool> {
        let dir = File::open(state).map_err(|_| false)?;
        match Flock::lock(dir, how) {
            Ok(lock) => Ok(StateClaim(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(true),
            Err(_) => Err(false),
        }
    }
}

/// The key stored at `path`: `None` when there is no such file; an error naming the file
/// when it is not a regular file of this user's, readable by it only, of [`KEY_LEN`] bytes.
pub(super) fn read_key(path: &Path) -> Result<Option<[u8; KEY_LEN]>, SecretError> {
    let bad = |why: String| SecretError::Key(format!("the secrets key {}: {why}", path.display()));
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(format!("cannot read it: {e}"))),
    };
    if !meta.file_type().is_file() {
        return Err(bad("is not a regular file".into()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(bad(format!(
            "has mode {:04o}; a key must be readable by its owner only (chmod 600)",
            meta.mode() & 0o7777
        )));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(bad(format!(
            "is owned by uid {}, not by the server's user",
            meta.uid()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
        bad(format!(
            "is malformed: {} bytes, where a key is {KEY_LEN} random bytes",
            bytes.len()
        ))
    })?;
    Ok(Some(key))
}

/// Writes `key` to `<dir>/<name>` atomically (a synced temporary file of mode 0600 put
/// into place, then the directory synced). With `replace`, an existing file is replaced;
/// without, an existing file stays and the call fails with AlreadyExists.
pub(super) fn write_key(
    dir: &Path,
    name: &str,
    key: &[u8; KEY_LEN],
    replace: bool,
) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(key)?;
        file.sync_all()?;
        if replace {
            std::fs::rename(&tmp, dir.join(name))
        } else {
            std::fs::hard_link(&tmp, dir.join(name))
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    written?;
    sync_dir(dir)
}

/// Makes the directory's entries (a rename, a link) durable.
pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One stored secret to try a key on: the owner and the sealed value.
pub(super) async fn sample(pool: &SqlitePool) -> Result<Option<(String, Sealed)>, SecretError> {
    let row = sqlx::query(
        "SELECT 'job' AS kind, job_id AS id, name, nonce, ciphertext FROM job_secrets \
         UNION ALL SELECT 'workflow', workflow_id, ?, nonce, ciphertext FROM workflow_secrets \
         LIMIT 1",
    )
    .bind(WORKFLOW_YAML)
    .fetch_optional(pool)
    .await?;
    row.map(|row| -> Result<_, SecretError> {
        let kind: String = row.try_get("kind")?;
        let id: String = row.try_get("id")?;
        let owner = match kind.as_str() {
            "job" => job_owner(&id),
            _ => workflow_owner(&id),
        };
        Ok((
            owner,
            Sealed {
                name: row.try_get("name")?,
                nonce: row.try_get("nonce")?,
                ciphertext: row.try_get("ciphertext")?,
            },
        ))
    })
    .transpose()
}

/// The server's secrets key for the store at `pool`, under `state`: made on the first
/// start; checked against a stored secret (a key that does not open the store's secrets
/// is refused, not used); after an interrupted rotation, the one of `secrets.key` and
/// `secrets.key.new` that opens them (the other file is then dropped).
pub async fn load_key(state: &Path, pool: &SqlitePool) -> Result<SecretKey, SecretError> {
    let key_path = state.join(KEY_FILE);
    let new_path = state.join(NEW_KEY_FILE);
    let current = read_key(&key_path)?;
    let new = read_key(&new_path)?;
    let sample = sample(pool).await?;
    let opens = |bytes: &[u8; KEY_LEN]| {
        let key = SecretKey::from_bytes(bytes);
        match (&key, &sample) {
            (Some(key), Some((owner, sealed))) => key.open(owner, sealed).is_ok(),
            (Some(_), None) => true,
            (None, _) => false,
        }
    };
    let use_key = |bytes: &[u8; KEY_LEN]| {
        SecretKey::from_bytes(bytes)
            .ok_or_else(|| SecretError::Key(format!("{} is unusable", key_path.display())))
    };
    let io = |what: &str, path: &PathBuf, e: std::io::Error| {
        SecretError::Key(format!("cannot {what} {}: {e}", path.display()))
    };
    match (current, new) {
        (None, None) => {
            if sample.is_some() {
                return Err(SecretError::Key(format!(
                    "the secrets key {} is missing, but the store holds secrets sealed with it; \
                     restore the file (a new key could not open them)",
                    key_path.display()
                )));
            }
            let bytes = SecretKey::random_bytes()?;
            match write_key(state, KEY_FILE, &bytes, false) {
                Ok(()) => {
                    tracing::info!("created {}", key_path.display());
                    use_key(&bytes)
                }
                // Made by another start at the same moment: that one is the key.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    match read_key(&key_path)? {
                        Some(bytes) => use_key(&bytes),
                        None => Err(io("create", &key_path, e)),
                    }
                }
                Err(e) => Err(io("create", &key_path, e)),
            }
        }
        (Some(bytes), None) if opens(&bytes) => use_key(&bytes),
        (Some(_), None) => Err(SecretError::Key(format!(
            "the secrets key {} does not open the secrets in the store: it is not the key they were sealed with",
            key_path.display()
        ))),
        // A rotation was interrupted. It re-encrypts the whole store in one transaction
        // before it renames the new key into place, so the store is sealed with exactly
        // one of the two; with nothing stored, the current key stays.
        (current, Some(new)) => match current.filter(|c| opens(c)) {
            Some(current) => {
                std::fs::remove_file(&new_path).map_err(|e| io("remove", &new_path, e))?;
                tracing::warn!(
                    "rolled back an interrupted secrets key rotation: the store was not re-encrypted, {} stays the key",
                    key_path.display()
                );
                use_key(&current)
            }
            None if opens(&new) => {
                std::fs::rename(&new_path, &key_path)
                    .and_then(|()| sync_dir(state))
                    .map_err(|e| io("rename", &new_path, e))?;
                tracing::warn!(
                    "finished an interrupted secrets key rotation: the store was re-encrypted, {} is the key now",
                    key_path.display()
                );
                use_key(&new)
            }
            None => Err(SecretError::Key(format!(
                "neither {} nor {} opens the secrets in the store",
                key_path.display(),
                new_path.display()
            ))),
        },
    }
}
