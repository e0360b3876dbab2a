//! The default [`ConfigSource`]: a file on local disk.
//!
//! Changes are detected by polling: the file's metadata (modification time, size, inode)
//! every [`POLL_INTERVAL`], and a hash of its contents whenever the metadata changed and at
//! least every [`HASH_INTERVAL`], since two quick writes of the same size can share a
//! coarse timestamp and a recycled inode. Polling rather than inotify is deliberate: it sees
//! editors that replace the file by renaming, bind-mounted config maps whose symlinks are
//! swapped, and files on network filesystems, at the cost of a `stat` twenty times a
//! second and reading the file once a second.
#![forbid(unsafe_code)]

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use omnirelay_abstractions::{
    Error, ErrorCode,
    config::{ConfigDocument, ConfigSource, WatchGuard},
};

/// How often the watcher looks at the file's metadata.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How often the watcher hashes the contents when the metadata did not change.
pub const HASH_INTERVAL: Duration = Duration::from_secs(1);

/// A config file on local disk.
#[derive(Debug, Clone)]
pub struct FileConfigSource {
    path: PathBuf,
}

impl FileConfigSource {
    /// A source reading `path` (not opened until [`ConfigSource::load`]).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileConfigSource { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The file's metadata the watcher compares; `None` while the file is missing.
fn metadata(path: &Path) -> Option<(i64, i64, u64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.mtime(), m.mtime_nsec(), m.size(), m.ino()))
}

/// A hash of the contents; `None` while the file is unreadable.
fn content_hash(path: &Path) -> Option<u64> {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(path).ok()?.hash(&mut h);
    Some(h.finish())
}

impl ConfigSource for FileConfigSource {
    fn provider(&self) -> &'static str {
        "file"
    }

    fn load(&self) -> Result<ConfigDocument, Error> {
        let bytes = std::fs::read(&self.path).map_err(|e| {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => ErrorCode::NotFound,
                std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
                _ => ErrorCode::Unavailable,
            };
            Error::new(code, format!("reading {}", self.path.display()))
                .with_provider("file")
                .with_source(e)
        })?;
        Ok(ConfigDocument {
            origin: self.path.display().to_string(),
            bytes,
        })
    }

    fn watch(&self, on_change: Box<dyn Fn() + Send + Sync>) -> Result<WatchGuard, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let path = self.path.clone();
        let flag = Arc::clone(&stop);
        // Taken before returning, so a change made right after `watch` is never missed.
        let mut last_meta = metadata(&path);
        let mut last_hash = content_hash(&path);
        let mut hashed_at = std::time::Instant::now();
        let thread = std::thread::Builder::new()
            .name("config-file-watch".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    std::thread::sleep(POLL_INTERVAL);
                    let meta = metadata(&path);
                    let meta_changed = meta != last_meta;
                    if !meta_changed && hashed_at.elapsed() < HASH_INTERVAL {
                        continue;
                    }
                    last_meta = meta;
                    let hash = content_hash(&path);
                    hashed_at = std::time::Instant::now();
                    if meta_changed || hash != last_hash {
                        last_hash = hash;
                        if !flag.load(Ordering::Acquire) {
                            on_change();
                        }
                    }
                }
            })
            .map_err(|e| {
                Error::new(ErrorCode::Internal, "starting the config watch thread")
                    .with_provider("file")
                    .with_source(e)
            })?;
        Ok(WatchGuard::new(StopOnDrop {
            stop,
            thread: Some(thread),
        }))
    }
}

struct StopOnDrop {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "omnirelay-config-file-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("omnirelay.toml")
    }

    #[test]
    fn conformance_load_and_watch() {
        let path = temp_file("conf");
        let source = FileConfigSource::new(&path);
        let write = |bytes: &[u8]| {
            // Write then rename, as editors and config-map updates do.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        omnirelay_abstractions::conformance::config_source_load_and_watch(&source, &write);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn missing_file_is_not_found_and_names_the_path() {
        let source = FileConfigSource::new("/nonexistent/omnirelay.toml");
        let err = source.load().unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
        assert!(
            err.to_string().contains("/nonexistent/omnirelay.toml"),
            "{err}"
        );
    }
}
