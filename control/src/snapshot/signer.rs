//! The snapshot signing key: created on first start in the state directory (mode 0600),
//! loaded afterwards. Data planes are given the public key (`snapshot-signing.pub`, hex).

use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use omnirelay_proto::{signed_message, v1};
use prost::Message as _;
use sha2::{Digest as _, Sha256};

/// File name of the private key (hex seed) in the state directory.
pub const KEY_FILE: &str = "snapshot-signing.key";
/// File name of the public key (hex) in the state directory.
pub const PUBLIC_KEY_FILE: &str = "snapshot-signing.pub";

/// Why the key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// Reading or writing a key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The private key file is readable by others.
    #[error("{path}: mode {mode:o} lets other users read the signing key; chmod 600 it")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The file does not hold a 32-byte hex seed.
    #[error("{path}: not a 64-character hex Ed25519 seed")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// The OS random source failed.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// The key id of a public key: hex of the first 8 bytes of its SHA-256.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// Signs snapshots.
#[derive(Debug)]
pub struct SnapshotSigner {
    key: SigningKey,
    key_id: String,
}

impl SnapshotSigner {
    /// Loads the key from `state_dir`, creating it (and the public key file) if absent.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, SignerError> {
        let path = state_dir.join(KEY_FILE);
        let io = |source| SignerError::Io {
            path: path.clone(),
            source,
        };
        let key = match std::fs::metadata(&path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(SignerError::Permissions { path, mode });
                }
                let text = std::fs::read_to_string(&path).map_err(io)?;
                let seed: [u8; 32] = hex::decode(text.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| SignerError::Malformed { path: path.clone() })?;
                SigningKey::from_bytes(&seed)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(|e| SignerError::Random(e.to_string()))?;
                // Written whole to a temporary file, then linked into place: a crash
                // half-way leaves no key file (the next start creates one), never an
                // empty or cut one that every later start would refuse.
                let tmp = state_dir.join(format!(".{KEY_FILE}.tmp"));
                let tmp_io = |source| SignerError::Io {
                    path: tmp.clone(),
                    source,
                };
                match std::fs::remove_file(&tmp) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(tmp_io(e)),
                    _ => {}
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(tmp_io)?;
                writeln!(file, "{}", hex::encode(seed)).map_err(tmp_io)?;
                file.sync_all().map_err(tmp_io)?;
                // A link fails if another process created the key meanwhile.
                std::fs::hard_link(&tmp, &path).map_err(io)?;
                std::fs::remove_file(&tmp).map_err(tmp_io)?;
                tracing::info!(path = %path.display(), "created a new snapshot signing key");
                SigningKey::from_bytes(&seed)
            }
            Err(e) => return Err(io(e)),
        };
        // Replaced whole (written aside, then renamed): a reader never sees half a key.
        let public = state_dir.join(PUBLIC_KEY_FILE);
        let public_tmp = state_dir.join(format!(".{PUBLIC_KEY_FILE}.tmp"));
        std::fs::write(
            &public_tmp,
            format!("{}\n", hex::encode(key.verifying_key().as_bytes())),
        )
        .and_then(|()| std::fs::rename(&public_tmp, &public))
        .map_err(|source| SignerError::Io {
            path: public,
            source,
        })?;
        Ok(Self::from_key(key))
    }

    /// A signer for an existing key (tests).
    pub fn from_key(key: SigningKey) -> Self {
        let key_id = key_id(&key.verifying_key());
        SnapshotSigner { key, key_id }
    }

    /// The public key data planes verify with.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The key id carried in every signed snapshot.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Encodes and signs `snapshot`.
    pub fn sign(&self, snapshot: &v1::Snapshot) -> v1::SignedSnapshot {
        let payload = snapshot.encode_to_vec();
        let signature = self.key.sign(&signed_message(&payload));
        v1::SignedSnapshot {
            payload,
            signature: signature.to_bytes().to_vec(),
            key_id: self.key_id.clone(),
            version: snapshot.version,
        }
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::Verifier as _;

    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("omnirelay-signer-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn key_is_created_private_and_reused() {
        let dir = temp_dir("create");
        let a = SnapshotSigner::load_or_create(&dir).unwrap();
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let b = SnapshotSigner::load_or_create(&dir).unwrap();
        assert_eq!(
            a.verifying_key(),
            b.verifying_key(),
            "second start reuses the key"
        );
        let public = std::fs::read_to_string(dir.join(PUBLIC_KEY_FILE)).unwrap();
        assert_eq!(public.trim(), hex::encode(a.verifying_key().as_bytes()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_creation_cut_short_leaves_no_key_file_and_the_next_start_makes_one() {
        let dir = temp_dir("interrupted");
        // What a crash mid-write leaves: a partial temporary file, no key file.
        std::fs::write(dir.join(format!(".{KEY_FILE}.tmp")), "3f2a").unwrap();
        let signer = SnapshotSigner::load_or_create(&dir).unwrap();
        let text = std::fs::read_to_string(dir.join(KEY_FILE)).unwrap();
        assert_eq!(text.trim().len(), 64, "a whole key: {text:?}");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.ends_with(".tmp")),
            "temporary files left: {names:?}"
        );
        let again = SnapshotSigner::load_or_create(&dir).unwrap();
        assert_eq!(signer.verifying_key(), again.verifying_key());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_world_readable_key_is_refused() {
        let dir = temp_dir("perm");
        SnapshotSigner::load_or_create(&dir).unwrap();
        let path = dir.join(KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SnapshotSigner::load_or_create(&dir).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn signature_covers_the_context_and_payload() {
        let signer = SnapshotSigner::from_key(SigningKey::from_bytes(&[7; 32]));
        let snap = v1::Snapshot {
            version: 3,
            ..Default::default()
        };
        let signed = signer.sign(&snap);
        assert_eq!(signed.version, 3);
        let sig = ed25519_dalek::Signature::from_slice(&signed.signature).unwrap();
        let key = signer.verifying_key();
        assert!(key.verify(&signed_message(&signed.payload), &sig).is_ok());
        assert!(
            key.verify(&signed.payload, &sig).is_err(),
            "context is part of the message"
        );
    }
}
