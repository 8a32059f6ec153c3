//! Ed25519 keys that sign manifests, and signatures.
//!
//! Text forms (one line each):
//!
//! ```text
//! silo-runtime-key ed25519 <base64 of the 32-byte public key>
//! silo-runtime-signature ed25519 <base64 of the signer's public key> <base64 of the 64-byte signature>
//! ```
//!
//! The private key file is PKCS#8 in PEM (`-----BEGIN PRIVATE KEY-----`), mode 0600.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use super::{Manifest, ManifestError};

const KEY_PREFIX: &str = "silo-runtime-key";
const SIGNATURE_PREFIX: &str = "silo-runtime-signature";
const ALGORITHM: &str = "ed25519";
const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";
const PUBLIC_KEY_LEN: usize = 32;
const SIGNATURE_LEN: usize = 64;

/// Why a key or signature could not be loaded, created or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "read".
        action: &'static str,
        /// The path that failed.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// The key file is not an ed25519 PKCS#8 key in PEM.
    #[error("{} is not an ed25519 private key (PKCS#8 PEM): {reason}", path.display())]
    BadKeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The system's random number generator failed while making a key.
    #[error("cannot generate a signing key: the system random number generator failed")]
    Random,
    /// A public key's text is malformed.
    #[error(
        "invalid public key `{text}`: expected `{KEY_PREFIX} {ALGORITHM} <base64 of 32 bytes>`"
    )]
    BadPublicKey {
        /// The refused text.
        text: String,
    },
    /// A signature's text is malformed.
    #[error("invalid signature: {reason}")]
    BadSignatureText {
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A private ed25519 key that signs manifests. Its bytes are never printed.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public_key().to_text())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads the key at `path`, or creates one there if the file is absent.
    ///
    /// A new key file appears whole or not at all, mode 0600: it is written to a
    /// temporary file beside it and then linked into place, which never replaces an
    /// existing file. If two processes create at once, both end up with the one key
    /// that won. The directory must exist.
    pub fn load_or_create(path: &Path) -> Result<SigningKey, KeyError> {
        match fs::read(path) {
            Ok(bytes) => return parse_key_file(path, &bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(io_error("read", path, source)),
        }
        let document =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Random)?;
        let pem = to_pem(document.as_ref());
        match create_exclusively(path, pem.as_bytes()) {
            Ok(()) => parse_key_file(path, pem.as_bytes()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let bytes = fs::read(path).map_err(|source| io_error("read", path, source))?;
                parse_key_file(path, &bytes)
            }
            Err(source) => Err(io_error("create", path, source)),
        }
    }

    /// The public half, to give to servers that should trust this key.
    pub fn public_key(&self) -> PublicKey {
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey { bytes }
    }

    /// Signs the manifest's canonical bytes ([`Manifest::to_bytes`]).
    pub fn sign(&self, manifest: &Manifest) -> Signature {
        Signature {
            signer: self.public_key(),
            bytes: self.pair.sign(&manifest.to_bytes()).as_ref().to_vec(),
        }
    }
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> KeyError {
    KeyError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

fn to_pem(der: &[u8]) -> String {
    let encoded = BASE64.encode(der);
    let mut pem = format!("{PEM_BEGIN}\n");
    // Base64 is ASCII, so every 64-byte chunk is valid UTF-8.
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(PEM_END);
    pem.push('\n');
    pem
}

fn parse_key_file(path: &Path, bytes: &[u8]) -> Result<SigningKey, KeyError> {
    let bad = |reason: &str| KeyError::BadKeyFile {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| bad("it is not text"))?;
    let body = text
        .trim()
        .strip_prefix(PEM_BEGIN)
        .and_then(|rest| rest.strip_suffix(PEM_END))
        .ok_or_else(|| bad("no PRIVATE KEY block"))?;
    let base64: String = body.split_whitespace().collect();
    let der = BASE64
        .decode(base64)
        .map_err(|_| bad("the block is not base64"))?;
    // PKCS#8 v2 (ring's own) carries the public key and is checked against it; v1 (as
    // `openssl genpkey -algorithm ed25519` writes) does not.
    let pair = Ed25519KeyPair::from_pkcs8(&der)
        .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der))
        .map_err(|e| bad(&e.to_string()))?;
    Ok(SigningKey { pair })
}

/// Writes `bytes` to a new file at `path`, mode 0600, whole or not at all; fails with
/// `AlreadyExists` if `path` exists.
fn create_exclusively(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::hard_link(&temp, path)?;
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    let _ = fs::remove_file(&temp);
    result
}

/// A public ed25519 key: who signed a manifest, and whom a server trusts.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    bytes: [u8; PUBLIC_KEY_LEN],
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl PublicKey {
    /// Reads `silo-runtime-key ed25519 <base64>` (surrounding whitespace ignored), the
    /// form [`PublicKey::to_text`] writes.
    pub fn from_text(text: &str) -> Result<PublicKey, KeyError> {
        let bad = || KeyError::BadPublicKey {
            text: text.trim().chars().take(200).collect(),
        };
        match text.split_whitespace().collect::<Vec<_>>().as_slice() {
            [KEY_PREFIX, ALGORITHM, key] => decode_key(key).ok_or_else(bad),
            _ => Err(bad()),
        }
    }

    /// The key as one line, `silo-runtime-key ed25519 <base64>`, without a newline.
    pub fn to_text(&self) -> String {
        format!("{KEY_PREFIX} {ALGORITHM} {}", BASE64.encode(self.bytes))
    }

    /// `sha256:` and the first 16 hex digits of the SHA-256 of the key's 32 bytes: a
    /// short name for the key in messages and listings.
    pub fn fingerprint(&self) -> String {
        let digest = crate::hash::sha256(&self.bytes);
        format!("sha256:{}", &hex::encode(digest)[..16])
    }

    /// The raw 32 bytes of the key.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.bytes
    }
}

fn decode_key(text: &str) -> Option<PublicKey> {
    let bytes = BASE64.decode(text).ok()?;
    Some(PublicKey {
        bytes: bytes.try_into().ok()?,
    })
}

/// A signature over a manifest's bytes, with the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The key that signed; it must be trusted for the signature to count.
    pub signer: PublicKey,
    /// The 64-byte ed25519 signature.
    pub bytes: Vec<u8>,
}

impl Signature {
    /// The signature file's content: one line,
    /// `silo-runtime-signature ed25519 <signer base64> <signature base64>`, ending in a
    /// newline.
    pub fn to_text(&self) -> String {
        format!(
            "{SIGNATURE_PREFIX} {ALGORITHM} {} {}\n",
            BASE64.encode(self.signer.bytes),
            BASE64.encode(&self.bytes)
        )
    }

    /// Reads what [`Signature::to_text`] writes (surrounding whitespace ignored).
    pub fn from_text(text: &str) -> Result<Signature, KeyError> {
        let bad = |reason| KeyError::BadSignatureText { reason };
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [SIGNATURE_PREFIX, ALGORITHM, signer, signature] = fields.as_slice() else {
            return Err(bad(
                "expected `silo-runtime-signature ed25519 <key base64> <signature base64>`",
            ));
        };
        let signer = decode_key(signer).ok_or(bad("the signer key is not base64 of 32 bytes"))?;
        let bytes = BASE64
            .decode(signature)
            .ok()
            .filter(|b| b.len() == SIGNATURE_LEN)
            .ok_or(bad("the signature is not base64 of 64 bytes"))?;
        Ok(Signature { signer, bytes })
    }
}

/// Trusts `manifest_bytes` only if `signature` was made over exactly these bytes by a key
/// in `trusted`; then reads them strictly ([`Manifest::from_bytes`]).
///
/// An untrusted signer is refused naming its fingerprint, before the signature is even
/// checked; a signature that does not match is refused too.
pub fn verify_signature(
    manifest_bytes: &[u8],
    signature: &Signature,
    trusted: &[PublicKey],
) -> Result<Manifest, ManifestError> {
    let fingerprint = signature.signer.fingerprint();
    if !trusted.contains(&signature.signer) {
        return Err(ManifestError::UntrustedSigner { fingerprint });
    }
    UnparsedPublicKey::new(&ED25519, signature.signer.bytes)
        .verify(manifest_bytes, &signature.bytes)
        .map_err(|_| ManifestError::BadSignature { fingerprint })?;
    Manifest::from_bytes(manifest_bytes)
}
