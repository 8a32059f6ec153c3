//! Secret environment variables (`JobSpec.secret_env`).
//!
//! A secret's value leaves the job's spec the moment the job is accepted
//! ([`Secrets::take`]): the spec that is stored, logged and returned holds only the names.
//! The value is sealed with the server's key (AES-256-GCM, a random 96-bit nonce per value,
//! the job's id and the variable's name as associated data, so that a row copied to another
//! job or name does not open) into the `job_secrets` table, which loses the job's rows with
//! the job, and in clear it goes only into the environment the job's init receives.

mod key_file;
mod rotate;

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use silo_proto::v1::JobSpec;

use crate::store::StoreError;

pub use key_file::{KEY_FILE, NEW_KEY_FILE, StateClaim, load_key};
pub use rotate::{RotateArgs, rotate};

/// What can go wrong with secrets.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key file, or the state directory's claim, is not usable; the sentence says
    /// which file and why.
    #[error("{0}")]
    Key(String),
    /// A sealed value does not open with this key (another key sealed it, or it was
    /// altered, or it was moved to another job or name).
    #[error(
        "cannot decrypt the stored secret {name} of {owner}: it was sealed with another key, or altered"
    )]
    Open {
        /// `job:<id>`.
        owner: String,
        /// The variable's name.
        name: String,
    },
    /// The system's random source failed.
    #[error("cannot encrypt a secret: the system's random source failed")]
    Random,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for SecretError {
    fn from(e: sqlx::Error) -> SecretError {
        SecretError::Store(StoreError::Db(e))
    }
}

/// Bytes in a key.
pub const KEY_LEN: usize = 32;

/// The key that seals secrets at rest. Its `Debug` shows nothing of it.
pub struct SecretKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<hidden>)")
    }
}

/// One sealed value, as stored: the variable's name, the nonce and the ciphertext with
/// its 16-byte tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The variable's name (in clear: names are not secret).
    pub name: String,
    /// The 96-bit nonce it was sealed with.
    pub nonce: Vec<u8>,
    /// The value, encrypted, with the tag appended.
    pub ciphertext: Vec<u8>,
}

impl SecretKey {
    /// The key made of `bytes`, which must be [`KEY_LEN`] long.
    pub fn from_bytes(bytes: &[u8]) -> Option<SecretKey> {
        let key = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        Some(SecretKey {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }

    /// [`KEY_LEN`] fresh random bytes for a new key.
    pub fn random_bytes() -> Result<[u8; KEY_LEN], SecretError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SecretError::Random)?;
        Ok(bytes)
    }

    /// Seals `value`, the variable `name` of `owner` (see [`job_owner`]), under a fresh
    /// random nonce.
    pub fn seal(&self, owner: &str, name: &str, value: &str) -> Result<Sealed, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SecretError::Random)?;
        let mut data = value.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data(owner, name)),
                &mut data,
            )
            .map_err(|_| SecretError::Random)?;
        Ok(Sealed {
            name: name.to_owned(),
            nonce: nonce.to_vec(),
            ciphertext: data,
        })
    }

    /// The value `sealed` holds, if this key sealed it for `owner` and its name.
    pub fn open(&self, owner: &str, sealed: &Sealed) -> Result<String, SecretError> {
        let fail = || SecretError::Open {
            owner: owner.to_owned(),
            name: sealed.name.clone(),
        };
        let nonce = Nonce::try_assume_unique_for_key(&sealed.nonce).map_err(|_| fail())?;
        let mut data = sealed.ciphertext.clone();
        let plain = self
            .key
            .open_in_place(
                nonce,
                Aad::from(associated_data(owner, &sealed.name)),
                &mut data,
            )
            .map_err(|_| fail())?;
        String::from_utf8(plain.to_vec()).map_err(|_| fail())
    }
}

/// What a sealed value is bound to: its owner and its name (and this format's version).
fn associated_data(owner: &str, name: &str) -> Vec<u8> {
    format!("silo-secret-v1\0{owner}\0{name}").into_bytes()
}

/// The owner of a job's secrets, as bound into their ciphertexts.
pub fn job_owner(job_id: &str) -> String {
    format!("job:{job_id}")
}

/// Stores `sealed` in `table` (`job_secrets`, `schedule_secrets`) for the owner `id` in
/// its `id_column`, replacing values of the same names (a scheduled job's start stores its
/// secrets again).
pub async fn store_sealed(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    table: &str,
    id_column: &str,
    id: &str,
    sealed: &[Sealed],
) -> Result<(), sqlx::Error> {
    for value in sealed {
        sqlx::query(&format!(
            "INSERT OR REPLACE INTO {table} ({id_column}, name, nonce, ciphertext) \
             VALUES (?, ?, ?, ?)"
        ))
        .bind(id)
        .bind(&value.name)
        .bind(&value.nonce)
        .bind(&value.ciphertext)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Sealed values from rows of `name`, `nonce`, `ciphertext` (job_secrets, schedule_secrets).
pub fn sealed_rows(rows: &[sqlx::sqlite::SqliteRow]) -> Result<Vec<Sealed>, sqlx::Error> {
    use sqlx::Row;
    rows.iter()
        .map(|row| {
            Ok(Sealed {
                name: row.try_get("name")?,
                nonce: row.try_get("nonce")?,
                ciphertext: row.try_get("ciphertext")?,
            })
        })
        .collect()
}

/// The owner of a cron schedule's secrets, as bound into their ciphertexts.
pub fn schedule_owner(schedule_id: &str) -> String {
    format!("schedule:{schedule_id}")
}

/// The owner of a workflow's sealed YAML, as bound into its ciphertext.
pub fn workflow_owner(workflow_id: &str) -> String {
    format!("workflow:{workflow_id}")
}

/// The name a workflow's sealed YAML is bound to.
pub const WORKFLOW_YAML: &str = "yaml";

/// What `workflows.yaml` holds for a workflow whose YAML is sealed in `workflow_secrets`.
pub const SEALED_YAML_NOTE: &str = "# This workflow's YAML holds secret_environment values: it is stored encrypted (workflow_secrets).\n";

/// A job's secret variables in clear, from RunJob to its init's environment. Its `Debug`
/// shows the names only.
#[derive(Clone, Default)]
pub struct Secrets(Vec<(String, String)>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| format!("{name}=<hidden>")))
            .finish()
    }
}

impl Secrets {
    /// Moves the secret values out of `spec`, leaving their names in
    /// `spec.secret_env_names` (whatever a client put there is replaced).
    pub fn take(spec: &mut JobSpec) -> Secrets {
        let vars = std::mem::take(&mut spec.secret_env);
        spec.secret_env_names = vars.iter().map(|v| v.name.clone()).collect();
        Secrets(vars.into_iter().map(|v| (v.name, v.value)).collect())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every value sealed for the job `job_id`.
    pub fn seal(&self, key: &SecretKey, job_id: &str) -> Result<Vec<Sealed>, SecretError> {
        self.seal_for(key, &job_owner(job_id))
    }

    /// Every value sealed for `owner` ([`job_owner`], [`schedule_owner`]).
    pub fn seal_for(&self, key: &SecretKey, owner: &str) -> Result<Vec<Sealed>, SecretError> {
        self.0
            .iter()
            .map(|(name, value)| key.seal(owner, name, value))
            .collect()
    }

    /// The variables `sealed` for `owner`, opened into a spec's `secret_env`.
    pub fn open_into(
        key: &SecretKey,
        owner: &str,
        sealed: &[Sealed],
        spec: &mut JobSpec,
    ) -> Result<(), SecretError> {
        for sealed in sealed {
            let value = key.open(owner, sealed)?;
            spec.secret_env.push(silo_proto::v1::SecretVar {
                name: sealed.name.clone(),
                value,
            });
        }
        spec.secret_env_names.clear();
        Ok(())
    }

    /// Puts the variables into `env` (a command's environment, where a later entry of a
    /// name replaces an earlier one): they replace any variable of the same name.
    pub fn add_to(&self, env: &mut Vec<(String, String)>) {
        for (name, value) in &self.0 {
            env.retain(|(k, _)| k != name);
            env.push((name.clone(), value.clone()));
        }
    }
}

/// Checks `spec.secret_env`: each name a portable variable name
/// (`[A-Za-z_][A-Za-z0-9_]*`), given once, not also in `spec.env`; no value holds NUL.
/// The message names the field and the variable, never a value.
pub fn check(spec: &JobSpec) -> Result<(), String> {
    for (i, var) in spec.secret_env.iter().enumerate() {
        let field = format!("spec.secret_env[{i}]");
        if !is_env_name(&var.name) {
            return Err(format!(
                "{field}.name {:?} is not a valid variable name (letters, digits and '_', not starting with a digit)",
                var.name
            ));
        }
        if spec.secret_env[..i].iter().any(|v| v.name == var.name) {
            return Err(format!(
                "{field}.name: the secret variable {} is given twice",
                var.name
            ));
        }
        if spec.env.iter().any(|v| v.name == var.name) {
            return Err(format!(
                "{field}.name: {} is both a plain (spec.env) and a secret variable; give it once",
                var.name
            ));
        }
        if var.value.contains('\0') {
            return Err(format!(
                "{field}.value (of {}) contains a NUL byte",
                var.name
            ));
        }
    }
    Ok(())
}

/// Whether `name` is a portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use silo_proto::v1::{EnvVar, SecretVar};

    fn key() -> SecretKey {
        SecretKey::from_bytes(&SecretKey::random_bytes().unwrap()).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_for_its_job_and_name_only() {
        let k = key();
        let sealed = k.seal(&job_owner("aa"), "TOKEN", "hunter2").unwrap();
        assert_eq!(sealed.nonce.len(), 12);
        assert!(
            !sealed
                .ciphertext
                .windows(7)
                .any(|w| w == b"hunter2".as_slice())
        );
        assert_eq!(k.open(&job_owner("aa"), &sealed).unwrap(), "hunter2");
        // Another job: the associated data differs.
        assert!(matches!(
            k.open(&job_owner("bb"), &sealed),
            Err(SecretError::Open { .. })
        ));
        // Another name.
        let renamed = Sealed {
            name: "OTHER".into(),
            ..sealed.clone()
        };
        assert!(k.open(&job_owner("aa"), &renamed).is_err());
        // Another key.
        assert!(key().open(&job_owner("aa"), &sealed).is_err());
    }

    #[test]
    fn a_tampered_ciphertext_or_nonce_does_not_open() {
        let k = key();
        let sealed = k.seal("job:x", "A", "value").unwrap();
        for i in 0..sealed.ciphertext.len() {
            let mut bad = sealed.clone();
            bad.ciphertext[i] ^= 1;
            assert!(k.open("job:x", &bad).is_err(), "byte {i}");
        }
        let mut bad = sealed.clone();
        bad.nonce[0] ^= 1;
        assert!(k.open("job:x", &bad).is_err());
        let mut short = sealed;
        short.nonce.pop();
        assert!(k.open("job:x", &short).is_err());
    }

    #[test]
    fn each_value_gets_its_own_nonce() {
        let k = key();
        let a = k.seal("job:x", "A", "same").unwrap();
        let b = k.seal("job:x", "A", "same").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn take_leaves_only_the_names_in_the_spec() {
        let mut spec = JobSpec {
            secret_env: vec![SecretVar {
                name: "TOKEN".into(),
                value: "hunter2".into(),
            }],
            secret_env_names: vec!["FORGED".into()],
            ..Default::default()
        };
        let secrets = Secrets::take(&mut spec);
        assert!(spec.secret_env.is_empty());
        assert_eq!(spec.secret_env_names, ["TOKEN"]);
        assert!(!format!("{spec:?} {secrets:?}").contains("hunter2"));
        let mut env = vec![("TOKEN".to_owned(), "runtime".to_owned())];
        secrets.add_to(&mut env);
        assert_eq!(env, [("TOKEN".to_owned(), "hunter2".to_owned())]);
    }

    #[test]
    fn bad_secret_variables_are_refused_without_their_value() {
        let secret = |name: &str, value: &str| SecretVar {
            name: name.into(),
            value: value.into(),
        };
        let cases = [
            (
                vec![secret("1A", "s3cr3t")],
                vec![],
                "not a valid variable name",
            ),
            (
                vec![secret("", "s3cr3t")],
                vec![],
                "not a valid variable name",
            ),
            (
                vec![secret("A=B", "s3cr3t")],
                vec![],
                "not a valid variable name",
            ),
            (
                vec![secret("A", "s3cr3t"), secret("A", "s3cr3t")],
                vec![],
                "given twice",
            ),
            (
                vec![secret("A", "s3cr3t")],
                vec![EnvVar {
                    name: "A".into(),
                    value: "x".into(),
                }],
                "both a plain",
            ),
            (vec![secret("A", "s3cr3t\0")], vec![], "NUL"),
        ];
        for (secret_env, env, expected) in cases {
            let spec = JobSpec {
                secret_env,
                env,
                ..Default::default()
            };
            let e = check(&spec).unwrap_err();
            assert!(e.contains(expected) && !e.contains("s3cr3t"), "{e}");
        }
        let fine = JobSpec {
            secret_env: vec![secret("_A1", ""), secret("B", "x")],
            ..Default::default()
        };
        assert_eq!(check(&fine), Ok(()));
    }
}
