//! Verifying a signed snapshot before anything in it is trusted: size, encoding, key,
//! signature, version order and required capabilities, in that order.

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use omnirelay_proto::{signed_message, v1};
use prost::Message as _;
use sha2::{Digest as _, Sha256};

/// Features this data plane implements; a snapshot requiring anything else is rejected.
pub const CAPABILITIES: &[&str] = omnirelay_proto::capability::ALL;

/// Largest signed snapshot accepted (bytes).
pub const MAX_SNAPSHOT_BYTES: usize = 64 << 20;

/// Why a snapshot was rejected. The last good snapshot keeps serving in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// The bytes do not decode (truncated or corrupted).
    #[error("snapshot does not decode: {0}")]
    Malformed(String),
    /// Larger than [`MAX_SNAPSHOT_BYTES`].
    #[error("snapshot is {0} bytes, over the {MAX_SNAPSHOT_BYTES}-byte limit")]
    TooLarge(usize),
    /// Signed by a key other than the configured one.
    #[error("snapshot signed by key {got:?}, expected {expected:?}")]
    UnknownKey {
        /// The key id in the snapshot.
        got: String,
        /// Ours.
        expected: String,
    },
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// Not newer than what runs.
    #[error("version {got} is not newer than the running version {current}")]
    Stale {
        /// The snapshot's version.
        got: u64,
        /// The running version.
        current: u64,
    },
    /// The envelope's version differs from the signed payload's.
    #[error("envelope says version {envelope}, signed payload says {payload}")]
    VersionMismatch {
        /// Unsigned copy.
        envelope: u64,
        /// Signed value.
        payload: u64,
    },
    /// Requires a feature this binary lacks.
    #[error("snapshot requires capability {0:?}, which this data plane does not have")]
    MissingCapability(String),
    /// Contents are inconsistent (bad address, index out of range, ...).
    #[error("snapshot content is invalid: {0}")]
    Invalid(String),
}

impl RejectReason {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RejectReason::Malformed(_) => "malformed",
            RejectReason::TooLarge(_) => "too_large",
            RejectReason::UnknownKey { .. } => "unknown_key",
            RejectReason::BadSignature => "bad_signature",
            RejectReason::Stale { .. } => "stale",
            RejectReason::VersionMismatch { .. } => "version_mismatch",
            RejectReason::MissingCapability(_) => "missing_capability",
            RejectReason::Invalid(_) => "invalid",
        }
    }

    /// Every label, for pre-registering metric series.
    pub const LABELS: [&'static str; 8] = [
        "malformed",
        "too_large",
        "unknown_key",
        "bad_signature",
        "stale",
        "version_mismatch",
        "missing_capability",
        "invalid",
    ];
}

/// Checks snapshots against the control plane's public key.
#[derive(Debug, Clone)]
pub struct SnapshotVerifier {
    key: VerifyingKey,
    key_id: String,
}

impl SnapshotVerifier {
    /// A verifier for `key`.
    pub fn new(key: VerifyingKey) -> Self {
        let key_id = hex::encode(&Sha256::digest(key.as_bytes())[..8]);
        SnapshotVerifier { key, key_id }
    }

    /// Parses a hex public key (the control daemon's `snapshot-signing.pub`).
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("expected 64 hex characters (an Ed25519 public key)")?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self::new)
            .map_err(|e| format!("not a valid Ed25519 public key: {e}"))
    }

    /// Decodes the envelope bytes, then [`Self::verify`].
    pub fn verify_bytes(&self, bytes: &[u8], current: u64) -> Result<v1::Snapshot, RejectReason> {
        if bytes.len() > MAX_SNAPSHOT_BYTES {
            return Err(RejectReason::TooLarge(bytes.len()));
        }
        let signed = v1::SignedSnapshot::decode(bytes)
            .map_err(|e| RejectReason::Malformed(e.to_string()))?;
        self.verify(&signed, current)
    }

    /// Verifies `signed` and returns its payload if it may replace version `current`.
    pub fn verify(
        &self,
        signed: &v1::SignedSnapshot,
        current: u64,
    ) -> Result<v1::Snapshot, RejectReason> {
        if signed.payload.len() > MAX_SNAPSHOT_BYTES {
            return Err(RejectReason::TooLarge(signed.payload.len()));
        }
        // Cheap rejection of replays before the signature check.
        if signed.version <= current {
            return Err(RejectReason::Stale {
                got: signed.version,
                current,
            });
        }
        if signed.key_id != self.key_id {
            return Err(RejectReason::UnknownKey {
                got: signed.key_id.clone(),
                expected: self.key_id.clone(),
            });
        }
        let signature =
            Signature::from_slice(&signed.signature).map_err(|_| RejectReason::BadSignature)?;
        self.key
            .verify(&signed_message(&signed.payload), &signature)
            .map_err(|_| RejectReason::BadSignature)?;
        let snapshot = v1::Snapshot::decode(signed.payload.as_slice())
            .map_err(|e| RejectReason::Malformed(e.to_string()))?;
        if snapshot.version != signed.version {
            return Err(RejectReason::VersionMismatch {
                envelope: signed.version,
                payload: snapshot.version,
            });
        }
        if snapshot.version <= current {
            return Err(RejectReason::Stale {
                got: snapshot.version,
                current,
            });
        }
        if let Some(missing) = snapshot
            .required_capabilities
            .iter()
            .find(|c| !CAPABILITIES.contains(&c.as_str()))
        {
            return Err(RejectReason::MissingCapability(missing.clone()));
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use ed25519_dalek::{Signer as _, SigningKey};

    use super::*;

    pub(crate) fn sign(key: &SigningKey, snap: &v1::Snapshot) -> v1::SignedSnapshot {
        let payload = snap.encode_to_vec();
        v1::SignedSnapshot {
            signature: key.sign(&signed_message(&payload)).to_bytes().to_vec(),
            key_id: hex::encode(&Sha256::digest(key.verifying_key().as_bytes())[..8]),
            version: snap.version,
            payload,
        }
    }

    pub(crate) fn snap(version: u64) -> v1::Snapshot {
        v1::Snapshot {
            version,
            required_capabilities: vec!["http1".into()],
            ..Default::default()
        }
    }

    pub(crate) fn setup() -> (SigningKey, SnapshotVerifier) {
        let key = SigningKey::from_bytes(&[9; 32]);
        let v = SnapshotVerifier::new(key.verifying_key());
        (key, v)
    }

    #[test]
    fn a_good_snapshot_verifies() {
        let (key, v) = setup();
        let bytes = sign(&key, &snap(5)).encode_to_vec();
        assert_eq!(v.verify_bytes(&bytes, 4).unwrap().version, 5);
    }

    #[test]
    fn a_flipped_payload_bit_fails_the_signature() {
        let (key, v) = setup();
        let mut s = sign(&key, &snap(5));
        s.payload[1] ^= 1;
        assert_eq!(v.verify(&s, 0), Err(RejectReason::BadSignature));
    }

    #[test]
    fn another_key_is_rejected_by_id_and_by_signature() {
        let (_, v) = setup();
        let other = SigningKey::from_bytes(&[1; 32]);
        let s = sign(&other, &snap(5));
        assert!(matches!(
            v.verify(&s, 0),
            Err(RejectReason::UnknownKey { .. })
        ));
        let mut forged = s;
        forged.key_id = v.key_id.clone();
        assert_eq!(v.verify(&forged, 0), Err(RejectReason::BadSignature));
    }

    #[test]
    fn older_or_equal_versions_are_stale() {
        let (key, v) = setup();
        let s = sign(&key, &snap(5));
        assert_eq!(
            v.verify(&s, 5),
            Err(RejectReason::Stale { got: 5, current: 5 })
        );
        assert_eq!(
            v.verify(&s, 9),
            Err(RejectReason::Stale { got: 5, current: 9 })
        );
    }

    #[test]
    fn a_lying_envelope_version_is_caught() {
        let (key, v) = setup();
        let mut s = sign(&key, &snap(5));
        s.version = 50;
        assert_eq!(
            v.verify(&s, 10),
            Err(RejectReason::VersionMismatch {
                envelope: 50,
                payload: 5
            })
        );
    }

    #[test]
    fn truncated_bytes_are_malformed() {
        let (key, v) = setup();
        let bytes = sign(&key, &snap(5)).encode_to_vec();
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            let r = v.verify_bytes(&bytes[..cut], 0);
            assert!(
                matches!(
                    r,
                    Err(RejectReason::Malformed(_) | RejectReason::BadSignature)
                ),
                "cut at {cut}: {r:?}"
            );
        }
    }

    #[test]
    fn unknown_capabilities_are_refused() {
        let (key, v) = setup();
        let mut s = snap(5);
        s.required_capabilities.push("http3".into());
        assert_eq!(
            v.verify(&sign(&key, &s), 0),
            Err(RejectReason::MissingCapability("http3".into()))
        );
    }

    #[test]
    fn public_key_hex_is_parsed_or_explained() {
        let (key, _) = setup();
        let v = SnapshotVerifier::from_hex(&hex::encode(key.verifying_key().as_bytes())).unwrap();
        assert_eq!(v.key, key.verifying_key());
        assert!(
            SnapshotVerifier::from_hex("abc")
                .unwrap_err()
                .contains("64 hex")
        );
    }
}
