//! `silo server rotate-secrets-key`: a new key, every stored secret re-encrypted with it.
//!
//! The steps, each safe to be interrupted after:
//! 1. the new key is written to `secrets.key.new` (the old key stays in `secrets.key`);
//! 2. every secret is opened with the old key and sealed with the new one, in one
//!    transaction: the store holds either only old-key or only new-key ciphertexts;
//! 3. `secrets.key.new` is renamed over `secrets.key`.
//!
//! A start (server or rotation) that finds `secrets.key.new` keeps whichever key opens
//! the store ([`super::load_key`]), so no interruption loses a secret.

use std::path::{Path, PathBuf};

use sqlx::Row;

use super::key_file::{StateClaim, load_key, sync_dir, write_key};
use super::{
    KEY_FILE, NEW_KEY_FILE, Sealed, SecretError, SecretKey, WORKFLOW_YAML, job_owner,
    schedule_owner, workflow_owner,
};
use crate::store::Store;

/// `silo server rotate-secrets-key` options.
#[derive(Debug, Clone, clap::Args)]
pub struct RotateArgs {
    /// The state directory of the server whose key to rotate. The server must be stopped:
    /// the rotation refuses to run while a server holds the directory (and a server does
    /// not start during a rotation).
    #[arg(long, default_value = "/var/lib/silo")]
    pub state_dir: PathBuf,
}

/// Rotates the secrets key of the stopped server at `args.state_dir`; answers how many
/// stored secrets were re-encrypted.
pub async fn rotate(args: &RotateArgs) -> Result<usize, SecretError> {
    let state = &args.state_dir;
    let db = state.join("silo.db");
    if !db.is_file() {
        return Err(SecretError::Key(format!(
            "{} holds no silo store ({} is missing)",
            state.display(),
            db.display()
        )));
    }
    let _claim = StateClaim::rotation(state)?;
    let store = Store::open(&db).await?;
    let pool = store.pool();
    let old = load_key(state, &pool).await?;
    let fresh = SecretKey::random_bytes()?;
    let new = SecretKey::from_bytes(&fresh)
        .ok_or_else(|| SecretError::Key("cannot make a new key".into()))?;
    write_key(state, NEW_KEY_FILE, &fresh, true).map_err(|e| {
        SecretError::Key(format!(
            "cannot write {}: {e}",
            state.join(NEW_KEY_FILE).display()
        ))
    })?;
    let count = match reseal(&pool, &old, &new).await {
        Ok(count) => count,
        Err(e) => {
            // Nothing was committed: the old key stays the key.
            let _ = std::fs::remove_file(state.join(NEW_KEY_FILE));
            return Err(e);
        }
    };
    pool.close().await;
    put_in_place(state)?;
    Ok(count)
}

/// Re-encrypts every stored secret from `old` to `new` in one transaction.
async fn reseal(
    pool: &sqlx::SqlitePool,
    old: &SecretKey,
    new: &SecretKey,
) -> Result<usize, SecretError> {
    // The write lock from the start: a transaction that reads and then writes would fail
    // (SQLITE_BUSY_SNAPSHOT) if another connection wrote in between, as the store's own
    // checkpoint task may (it restarts the WAL).
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let jobs = reseal_named(&mut tx, "job_secrets", "job_id", job_owner, old, new).await?;
    let schedules = reseal_named(
        &mut tx,
        "schedule_secrets",
        "schedule_id",
        schedule_owner,
        old,
        new,
    )
    .await?;
    let workflows = sqlx::query("SELECT workflow_id, nonce, ciphertext FROM workflow_secrets")
        .fetch_all(&mut *tx)
        .await?;
    for row in &workflows {
        let id: String = row.try_get("workflow_id")?;
        let owner = workflow_owner(&id);
        let sealed = Sealed {
            name: WORKFLOW_YAML.to_owned(),
            nonce: row.try_get("nonce")?,
            ciphertext: row.try_get("ciphertext")?,
        };
        let yaml = old.open(&owner, &sealed)?;
        let resealed = new.seal(&owner, WORKFLOW_YAML, &yaml)?;
        sqlx::query("UPDATE workflow_secrets SET nonce = ?, ciphertext = ? WHERE workflow_id = ?")
            .bind(&resealed.nonce)
            .bind(&resealed.ciphertext)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(jobs + schedules + workflows.len())
}

/// Re-encrypts every named secret of `table` (`job_secrets`, `schedule_secrets`: an owner
/// id column, `name`, `nonce`, `ciphertext`), bound to `owner(id)`; returns how many.
async fn reseal_named(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    table: &str,
    id_column: &str,
    owner: fn(&str) -> String,
    old: &SecretKey,
    new: &SecretKey,
) -> Result<usize, SecretError> {
    let rows = sqlx::query(&format!(
        "SELECT {id_column} AS id, name, nonce, ciphertext FROM {table}"
    ))
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        let id: String = row.try_get("id")?;
        let bound = owner(&id);
        let sealed = Sealed {
            name: row.try_get("name")?,
            nonce: row.try_get("nonce")?,
            ciphertext: row.try_get("ciphertext")?,
        };
        let value = old.open(&bound, &sealed)?;
        let resealed = new.seal(&bound, &sealed.name, &value)?;
        sqlx::query(&format!(
            "UPDATE {table} SET nonce = ?, ciphertext = ? WHERE {id_column} = ? AND name = ?"
        ))
        .bind(&resealed.nonce)
        .bind(&resealed.ciphertext)
        .bind(&id)
        .bind(&sealed.name)
        .execute(&mut **tx)
        .await?;
    }
    Ok(rows.len())
}

/// Step 3: the new key replaces the old one.
fn put_in_place(state: &Path) -> Result<(), SecretError> {
    std::fs::rename(state.join(NEW_KEY_FILE), state.join(KEY_FILE))
        .and_then(|()| sync_dir(state))
        .map_err(|e| {
            SecretError::Key(format!(
                "the store is re-encrypted, but {} could not replace {}: {e} \
                 (the next start finishes the rotation)",
                NEW_KEY_FILE, KEY_FILE
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::super::key_file::read_key;
    use super::*;
    use crate::store::JobRow;

    async fn store_with_secret(state: &Path) -> (Store, SecretKey) {
        let store = Store::open(&state.join("silo.db")).await.unwrap();
        let key = load_key(state, &store.pool()).await.unwrap();
        let row = JobRow {
            id: "ab".into(),
            ..Default::default()
        };
        let sealed = key.seal(&job_owner("ab"), "TOKEN", "hunter2").unwrap();
        store.insert_with_secrets(&row, &[sealed]).await.unwrap();
        (store, key)
    }

    async fn stored(store: &Store) -> Sealed {
        let mut rows = store.secrets_of("ab").await.unwrap();
        assert_eq!(rows.len(), 1);
        rows.remove(0)
    }

    #[tokio::test]
    async fn rotation_reseals_every_secret_and_replaces_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let (store, key) = store_with_secret(state).await;
        let before = stored(&store).await;
        // A cron schedule's secret too.
        let schedules = crate::schedules::store::ScheduleStore::new(store.pool());
        let schedule = crate::schedules::store::ScheduleRow {
            id: "cd".into(),
            cron: "* * * * *".into(),
            tz: "UTC".into(),
            ..Default::default()
        };
        let sealed = key.seal(&schedule_owner("cd"), "PASS", "s3cret").unwrap();
        schedules
            .insert_with_secrets(&schedule, &[sealed])
            .await
            .unwrap();
        let old_key = read_key(&state.join(KEY_FILE)).unwrap().unwrap();
        drop(store);
        let args = RotateArgs {
            state_dir: state.to_path_buf(),
        };
        assert_eq!(rotate(&args).await.unwrap(), 2);
        let new_key = read_key(&state.join(KEY_FILE)).unwrap().unwrap();
        assert_ne!(old_key, new_key);
        assert!(!state.join(NEW_KEY_FILE).exists());
        let store = Store::open(&state.join("silo.db")).await.unwrap();
        let after = stored(&store).await;
        assert_ne!(before.ciphertext, after.ciphertext);
        let key = SecretKey::from_bytes(&new_key).unwrap();
        assert_eq!(key.open(&job_owner("ab"), &after).unwrap(), "hunter2");
        let old = SecretKey::from_bytes(&old_key).unwrap();
        assert!(old.open(&job_owner("ab"), &after).is_err());
        let schedules = crate::schedules::store::ScheduleStore::new(store.pool());
        let resealed = schedules.secrets_of("cd").await.unwrap();
        assert_eq!(
            key.open(&schedule_owner("cd"), &resealed[0]).unwrap(),
            "s3cret"
        );
        assert!(old.open(&schedule_owner("cd"), &resealed[0]).is_err());
        // And the server's start accepts it.
        assert!(load_key(state, &store.pool()).await.is_ok());
    }

    #[tokio::test]
    async fn a_rotation_interrupted_before_its_commit_keeps_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let (store, key) = store_with_secret(state).await;
        // Step 1 happened, step 2 did not.
        write_key(
            state,
            NEW_KEY_FILE,
            &SecretKey::random_bytes().unwrap(),
            true,
        )
        .unwrap();
        let loaded = load_key(state, &store.pool()).await.unwrap();
        assert!(!state.join(NEW_KEY_FILE).exists());
        let sealed = stored(&store).await;
        assert_eq!(loaded.open(&job_owner("ab"), &sealed).unwrap(), "hunter2");
        assert_eq!(key.open(&job_owner("ab"), &sealed).unwrap(), "hunter2");
    }

    #[tokio::test]
    async fn a_rotation_interrupted_after_its_commit_is_finished_on_start() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let (store, old) = store_with_secret(state).await;
        // Steps 1 and 2 happened, step 3 did not.
        let fresh = SecretKey::random_bytes().unwrap();
        write_key(state, NEW_KEY_FILE, &fresh, true).unwrap();
        let new = SecretKey::from_bytes(&fresh).unwrap();
        reseal(&store.pool(), &old, &new).await.unwrap();
        let loaded = load_key(state, &store.pool()).await.unwrap();
        assert!(!state.join(NEW_KEY_FILE).exists());
        assert_eq!(read_key(&state.join(KEY_FILE)).unwrap().unwrap(), fresh);
        let sealed = stored(&store).await;
        assert_eq!(loaded.open(&job_owner("ab"), &sealed).unwrap(), "hunter2");
    }

    #[tokio::test]
    async fn a_key_that_does_not_open_the_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let (store, _) = store_with_secret(state).await;
        write_key(state, KEY_FILE, &SecretKey::random_bytes().unwrap(), true).unwrap();
        let e = load_key(state, &store.pool())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not open"), "{e}");
        std::fs::remove_file(state.join(KEY_FILE)).unwrap();
        let e = load_key(state, &store.pool())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("is missing"), "{e}");
    }

    #[tokio::test]
    async fn a_malformed_or_loose_key_file_is_refused_with_its_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let store = Store::open(&state.join("silo.db")).await.unwrap();
        load_key(state, &store.pool()).await.unwrap();
        let path = state.join(KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_key(state, &store.pool())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("secrets.key") && e.contains("0644"), "{e}");
        std::fs::remove_file(&path).unwrap();
        write_key(state, KEY_FILE, &[0; 32], true).unwrap();
        std::fs::write(&path, b"short").unwrap();
        let e = load_key(state, &store.pool())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("malformed") && e.contains("5 bytes"), "{e}");
    }

    #[tokio::test]
    async fn rotation_refuses_while_a_server_holds_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let (store, _) = store_with_secret(state).await;
        drop(store);
        let server = StateClaim::server(state).unwrap();
        let args = RotateArgs {
            state_dir: state.to_path_buf(),
        };
        let e = rotate(&args).await.unwrap_err().to_string();
        assert!(e.contains("server is running"), "{e}");
        drop(server);
        assert_eq!(rotate(&args).await.unwrap(), 1);
    }
}
