//! `ConfigSource`: where the operator's declarative config comes from (a file by default;
//! etcd, Consul KV and the like as providers).
//!
//! Default execution policy: 2 s timeout, 3 attempts; a source that fails keeps the last
//! good config in force, it never clears it.

use crate::Error;

/// One version of the config, as the source delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigDocument {
    /// Where it came from, for messages and the snapshot's `source` (a path, a key).
    pub origin: String,
    /// The raw bytes (TOML).
    pub bytes: Vec<u8>,
}

/// Stops a watch when dropped.
pub struct WatchGuard {
    _inner: Box<dyn Send>,
}

impl WatchGuard {
    /// Wraps whatever keeps a provider's watch alive (a thread handle, a stop flag, ...).
    /// The provider's `Drop` on that value must stop the watch.
    pub fn new(inner: impl Send + 'static) -> Self {
        WatchGuard {
            _inner: Box::new(inner),
        }
    }
}

impl std::fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchGuard")
    }
}

/// A source of the declarative config.
pub trait ConfigSource: Send + Sync {
    /// The provider's name (`"file"`, `"etcd"`, ...).
    fn provider(&self) -> &'static str;

    /// Reads the current document.
    fn load(&self) -> Result<ConfigDocument, Error>;

    /// Calls `on_change` (from a provider thread) whenever the document may have changed;
    /// spurious calls are allowed, missed changes are not. Stops when the guard drops.
    fn watch(&self, on_change: Box<dyn Fn() + Send + Sync>) -> Result<WatchGuard, Error>;
}
