//! The published snapshot and how it is (re)built: load → validate → compile → sign →
//! store → publish. A config that fails any step before "publish" changes nothing.

use std::{
    sync::{Arc, Mutex, atomic::Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use omnirelay_abstractions::{
    config::ConfigSource,
    store::{SnapshotRecord, SnapshotStore},
};
use omnirelay_proto::v1;
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use super::metrics::ControlMetrics;
use crate::{
    config::{self, ConfigErrors},
    snapshot::{SnapshotSigner, compile},
};

/// One published snapshot, with what the admin API shows about it.
#[derive(Debug)]
pub struct Published {
    /// Its version.
    pub version: u64,
    /// The signed snapshot as streamed.
    pub signed: v1::SignedSnapshot,
    /// `signed` encoded, as served by the HTTP pull.
    pub encoded: Vec<u8>,
    /// SHA-256 of the payload, hex.
    pub payload_sha256: String,
    /// Creation time (ms since the epoch).
    pub created_unix_ms: i64,
    /// Where the config came from.
    pub source: String,
    /// SHA-256 of the config bytes, hex.
    pub config_sha256: String,
    /// The capabilities a data plane needs to run it.
    pub required_capabilities: Vec<String>,
}

impl Published {
    fn new(
        signed: v1::SignedSnapshot,
        created_unix_ms: i64,
        source: String,
        config_sha256: String,
    ) -> Self {
        // Signed by this daemon: the payload decodes (an empty list if it ever did not,
        // which only loses the capability warning).
        let required_capabilities = v1::Snapshot::decode(signed.payload.as_slice())
            .map(|s| s.required_capabilities)
            .unwrap_or_default();
        Published {
            version: signed.version,
            required_capabilities,
            payload_sha256: hex::encode(Sha256::digest(&signed.payload)),
            encoded: signed.encode_to_vec(),
            signed,
            created_unix_ms,
            source,
            config_sha256,
        }
    }

    /// Rebuilds the published state from a stored record (daemon restart).
    pub fn from_record(record: &SnapshotRecord) -> Result<Self, prost::DecodeError> {
        let signed = v1::SignedSnapshot::decode(record.signed.as_slice())?;
        Ok(Published::new(
            signed,
            record.created_unix_ms,
            record.source.clone(),
            record.config_sha256.clone(),
        ))
    }
}

/// What a reload did.
#[derive(Clone, Debug)]
pub enum ReloadOutcome {
    /// A new version was published.
    Published(u64),
    /// The config is byte-identical to the published one.
    Unchanged(u64),
    /// The config is invalid; the published version stays.
    Invalid(ConfigErrors),
    /// Loading or storing failed; the published version stays.
    Failed(String),
}

/// Builds and publishes snapshots. Reloads are serialized by the caller (one task).
pub struct Publisher {
    source: Arc<dyn ConfigSource>,
    store: Arc<dyn SnapshotStore>,
    signer: SnapshotSigner,
    tx: watch::Sender<Option<Arc<Published>>>,
    metrics: Arc<ControlMetrics>,
    /// The config of the last load that parsed (None before one has).
    config: Mutex<Option<Arc<config::Config>>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("source", &self.source.provider())
            .field("store", &self.store.provider())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Publisher {
    /// A publisher that starts from the store's latest record, if any.
    pub fn new(
        source: Arc<dyn ConfigSource>,
        store: Arc<dyn SnapshotStore>,
        signer: SnapshotSigner,
        metrics: Arc<ControlMetrics>,
    ) -> Result<Self, String> {
        let latest = store
            .latest()
            .map_err(|e| format!("reading the snapshot store: {e}"))?;
        let current = match latest {
            Some(r) => Some(Arc::new(Published::from_record(&r).map_err(|e| {
                format!("stored snapshot {} does not decode: {e}", r.version)
            })?)),
            None => None,
        };
        if let Some(p) = &current {
            metrics.snapshot_version.store(p.version, Ordering::Relaxed);
            tracing::info!(version = p.version, "serving the last stored snapshot");
        }
        let (tx, _) = watch::channel(current);
        Ok(Publisher {
            source,
            store,
            signer,
            tx,
            metrics,
            config: Mutex::new(None),
        })
    }

    /// A receiver of every published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Published>>> {
        self.tx.subscribe()
    }

    /// The currently published snapshot.
    pub fn current(&self) -> Option<Arc<Published>> {
        self.tx.borrow().clone()
    }

    /// The config of the last load that parsed (published, found unchanged, or valid but
    /// not stored). None before any has (every load so far invalid or unreadable).
    pub fn config(&self) -> Option<Arc<config::Config>> {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The store (for the admin history endpoint).
    pub fn store(&self) -> &Arc<dyn SnapshotStore> {
        &self.store
    }

    /// Loads the config and publishes a new version if it is valid and changed.
    pub fn reload(&self) -> ReloadOutcome {
        let started = std::time::Instant::now();
        let outcome = self.try_reload();
        let took = started.elapsed();
        let m = &self.metrics;
        match &outcome {
            ReloadOutcome::Published(v) => {
                m.reloads_published.fetch_add(1, Ordering::Relaxed);
                m.snapshot_version.store(*v, Ordering::Relaxed);
                m.last_build_us
                    .store(took.as_micros() as u64, Ordering::Relaxed);
                tracing::info!(
                    version = v,
                    build_ms = took.as_secs_f64() * 1e3,
                    "published a new snapshot (load, validate, compile, sign, store)"
                );
            }
            ReloadOutcome::Unchanged(v) => {
                m.reloads_unchanged.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(version = v, "config unchanged");
            }
            ReloadOutcome::Invalid(errors) => {
                m.reloads_invalid.fetch_add(1, Ordering::Relaxed);
                m.last_config_errors
                    .store(errors.errors.len() as u64, Ordering::Relaxed);
                let keeping = self.current().map_or(0, |p| p.version);
                tracing::error!(
                    keeping_version = keeping,
                    "config rejected, the published snapshot stays:\n{errors}"
                );
            }
            ReloadOutcome::Failed(why) => {
                m.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload failed, the published snapshot stays: {why}");
            }
        }
        outcome
    }

    fn try_reload(&self) -> ReloadOutcome {
        let doc = match self.source.load() {
            Ok(d) => d,
            Err(e) => return ReloadOutcome::Failed(e.to_string()),
        };
        let config_sha256 = hex::encode(Sha256::digest(&doc.bytes));
        let current = self.current();
        // Signed with another key (the key was replaced since): data planes given the new
        // public key would refuse it, so the same config is published again, re-signed.
        let resign = current
            .as_ref()
            .is_some_and(|p| p.signed.key_id != self.signer.key_id());
        if resign && let Some(p) = &current {
            tracing::warn!(
                version = p.version,
                signed_by = %p.signed.key_id,
                key = %self.signer.key_id(),
                "the published snapshot was signed with another key; publishing it again signed with the current one"
            );
        }
        let unchanged = current
            .as_ref()
            .filter(|p| p.config_sha256 == config_sha256 && !resign)
            .map(|p| p.version);
        // The same bytes as the published snapshot's: nothing to do, unless they have not
        // been parsed yet (a snapshot restored from the store at start).
        if let Some(version) = unchanged
            && self.config().is_some()
        {
            return ReloadOutcome::Unchanged(version);
        }
        let text = match std::str::from_utf8(&doc.bytes) {
            Ok(t) => t,
            Err(e) => {
                return ReloadOutcome::Invalid(ConfigErrors {
                    origin: doc.origin,
                    errors: vec![config::ConfigError {
                        path: String::new(),
                        message: format!("not UTF-8: {e}"),
                    }],
                });
            }
        };
        let config = match config::parse(text, &doc.origin) {
            Ok(c) => Arc::new(c),
            Err(errors) => return ReloadOutcome::Invalid(errors),
        };
        // Kept once it parses, also when storing it fails below: the daemon's addresses
        // and kernel attachment come from the file, not from whether it could be stored.
        self.keep_config(Arc::clone(&config));
        // Reached with `unchanged` only on the first load after a restart: the stored
        // snapshot came from these bytes, but from the daemon that ran before. If this
        // build compiles them differently (an upgrade), data planes would keep the old
        // compilation for good; publish it again.
        if let (Some(version), Some(p)) = (unchanged, &current) {
            let again = compile(
                &config,
                version,
                p.created_unix_ms,
                &p.source,
                &config_sha256,
            );
            if again.encode_to_vec() == p.signed.payload {
                return ReloadOutcome::Unchanged(version);
            }
            tracing::warn!(
                version,
                "this daemon compiles the unchanged config differently from the stored snapshot (an upgrade?); publishing it again"
            );
        }
        let stored = match self.store.latest() {
            Ok(r) => r.map_or(0, |r| r.version),
            Err(e) => return ReloadOutcome::Failed(format!("reading the snapshot store: {e}")),
        };
        let version = stored.max(current.map_or(0, |p| p.version)) + 1;
        let created = now_ms();
        let snapshot = compile(&config, version, created, &doc.origin, &config_sha256);
        let signed = self.signer.sign(&snapshot);
        let record = SnapshotRecord {
            version,
            created_unix_ms: created,
            source: doc.origin.clone(),
            config_sha256: config_sha256.clone(),
            signed: signed.encode_to_vec(),
        };
        if let Err(e) = self.store.put(&record) {
            return ReloadOutcome::Failed(format!("storing version {version}: {e}"));
        }
        let published = Published::new(signed, created, doc.origin, config_sha256);
        self.tx.send_replace(Some(Arc::new(published)));
        ReloadOutcome::Published(version)
    }

    fn keep_config(&self, config: Arc<config::Config>) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = Some(config);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{path::Path, sync::Arc};

    use omnirelay_abstractions::store::SnapshotRecord;
    use omnirelay_plugin_config_file::FileConfigSource;
    use omnirelay_plugin_store_sqlite::SqliteSnapshotStore;
    use omnirelay_proto::v1;
    use prost::Message as _;

    use super::{Publisher, ReloadOutcome};
    use crate::{daemon::metrics::ControlMetrics, snapshot::SnapshotSigner};

    pub(crate) const CONFIG: &str = r#"
[control]
grpc_listen = "127.0.0.1:7910"
admin_listen = "127.0.0.1:7911"

[[listeners]]
name = "public"
address = "127.0.0.1:8080"

[[routes]]
name = "all"
cluster = "web"

[[clusters]]
name = "web"
endpoints = ["127.0.0.1:9003"]
"#;

    /// A publisher over `dir`'s config file and store, as the daemon builds it at start.
    pub(crate) fn start(dir: &Path) -> Publisher {
        Publisher::new(
            Arc::new(FileConfigSource::new(dir.join("omnirelay.toml"))),
            Arc::new(SqliteSnapshotStore::open(&dir.join("snapshots.db")).unwrap()),
            SnapshotSigner::load_or_create(dir).unwrap(),
            Arc::new(ControlMetrics::default()),
        )
        .unwrap()
    }

    #[test]
    fn the_parsed_config_is_kept_from_the_load_that_published_or_found_it_unchanged() {
        let dir = std::env::temp_dir().join(format!("omnirelay-publish-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("omnirelay.toml"), CONFIG).unwrap();

        let first = start(&dir);
        assert!(
            first.config().is_none(),
            "nothing parsed before the first load"
        );
        assert!(matches!(first.reload(), ReloadOutcome::Published(1)));
        let cfg = first.config().expect("kept from the published load");
        assert_eq!(cfg.control.grpc_listen.port(), 7910);
        assert_eq!(cfg.control.admin_listen.port(), 7911);
        drop(first);

        // Restart: the stored snapshot is served and the same file is unchanged, but its
        // config is still parsed once (the daemon reads its addresses from it).
        let restarted = start(&dir);
        assert_eq!(restarted.current().map(|p| p.version), Some(1));
        assert!(matches!(restarted.reload(), ReloadOutcome::Unchanged(1)));
        assert_eq!(
            restarted.config().map(|c| c.control.grpc_listen.port()),
            Some(7910)
        );
        drop(restarted);

        // Restart with a broken file: the stored snapshot stays, and no config is kept
        // (the daemon falls back to the default addresses and says so).
        std::fs::write(dir.join("omnirelay.toml"), "[control]\ngrpc_listen = 7").unwrap();
        let broken = start(&dir);
        assert!(matches!(broken.reload(), ReloadOutcome::Invalid(_)));
        assert!(broken.config().is_none());
        assert_eq!(broken.current().map(|p| p.version), Some(1));
        // A later invalid reload does not drop a config kept before.
        std::fs::write(dir.join("omnirelay.toml"), CONFIG).unwrap();
        assert!(matches!(broken.reload(), ReloadOutcome::Unchanged(1)));
        std::fs::write(dir.join("omnirelay.toml"), "not toml [").unwrap();
        assert!(matches!(broken.reload(), ReloadOutcome::Invalid(_)));
        assert_eq!(
            broken.config().map(|c| c.control.admin_listen.port()),
            Some(7911)
        );
        drop(broken);

        // The signing key replaced (old one removed): the same config is published again
        // as the next version, signed with the new key, and then found unchanged.
        std::fs::write(dir.join("omnirelay.toml"), CONFIG).unwrap();
        std::fs::remove_file(dir.join("snapshot-signing.key")).unwrap();
        let rekeyed = start(&dir);
        let old_key = rekeyed.current().map(|p| p.signed.key_id.clone());
        assert!(matches!(rekeyed.reload(), ReloadOutcome::Published(2)));
        let new_key = rekeyed.current().map(|p| p.signed.key_id.clone());
        assert_ne!(old_key, new_key);
        assert_eq!(new_key.as_deref(), Some(rekeyed.signer.key_id()));
        assert!(matches!(rekeyed.reload(), ReloadOutcome::Unchanged(2)));

        // A stored snapshot of the same config that this build compiles differently (as
        // after a daemon upgrade): the first load after a restart publishes it again.
        let stored = rekeyed.current().unwrap();
        let mut older = v1::Snapshot::decode(stored.signed.payload.as_slice()).unwrap();
        older.version = 3;
        older.listeners[0].name = "compiled-by-an-older-build".into();
        let signed = rekeyed.signer.sign(&older);
        rekeyed
            .store()
            .put(&SnapshotRecord {
                version: 3,
                created_unix_ms: stored.created_unix_ms,
                source: stored.source.clone(),
                config_sha256: stored.config_sha256.clone(),
                signed: signed.encode_to_vec(),
            })
            .unwrap();
        drop(rekeyed);
        let upgraded = start(&dir);
        assert_eq!(upgraded.current().map(|p| p.version), Some(3));
        assert!(matches!(upgraded.reload(), ReloadOutcome::Published(4)));
        let payload = &upgraded.current().unwrap().signed.payload;
        let republished = v1::Snapshot::decode(payload.as_slice()).unwrap();
        assert_eq!(republished.listeners[0].name, "public");
        assert!(matches!(upgraded.reload(), ReloadOutcome::Unchanged(4)));
        drop(upgraded);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
