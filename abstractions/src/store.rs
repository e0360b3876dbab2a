//! `SnapshotStore`: the control plane's history of published snapshots (SQLite by
//! default; PostgreSQL or etcd for HA as providers).
//!
//! Default execution policy: 1 s timeout, 2 attempts. A store failure blocks publishing a
//! new version (versions must stay monotonic) but never withdraws the current one.

use crate::Error;

/// One published snapshot, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// The snapshot's version; strictly increasing.
    pub version: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: i64,
    /// Where the config came from.
    pub source: String,
    /// SHA-256 of the config bytes, hex.
    pub config_sha256: String,
    /// The encoded `SignedSnapshot`, exactly as published.
    pub signed: Vec<u8>,
}

/// The history of published snapshots.
pub trait SnapshotStore: Send + Sync {
    /// The provider's name (`"sqlite"`, `"memory"`, ...).
    fn provider(&self) -> &'static str;

    /// Appends a record. Fails with `ErrorCode::Conflict` unless `record.version` is
    /// greater than every stored version.
    fn put(&self, record: &SnapshotRecord) -> Result<(), Error>;

    /// The record with the highest version, if any.
    fn latest(&self) -> Result<Option<SnapshotRecord>, Error>;

    /// The record with exactly this version.
    fn get(&self, version: u64) -> Result<Option<SnapshotRecord>, Error>;

    /// The newest `limit` records, newest first.
    fn history(&self, limit: usize) -> Result<Vec<SnapshotRecord>, Error>;
}
