//! The default [`ConfigSource`]: a file on local disk.
//!
//! Changes are detected by polling every [`POLL_INTERVAL`]: the file's metadata (modification
//! time, size, inode) and a hash of its contents, since two quick writes of the same size
//! can share a coarse timestamp and a recycled inode. Polling rather than inotify is
//! deliberate: it sees editors that replace the file by renaming, bind-mounted config maps
//! whose symlinks are swapped, and files on network filesystems, at the cost of reading a
//! small file four times a second.
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

/// How often the watcher looks at the file.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

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

/// What the watcher compares between polls; `None` while the file is missing.
fn fingerprint(path: &Path) -> Option<(i64, i64, u64, u64, u64)> {
    use std::hash::{Hash as _, Hasher as _};
    let m = std::fs::metadata(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(path).ok()?.hash(&mut h);
    Some((m.mtime(), m.mtime_nsec(), m.size(), m.ino(), h.finish()))
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
        let mut last = fingerprint(&path);
        let thread = std::thread::Builder::new()
            .name("config-file-watch".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    std::thread::sleep(POLL_INTERVAL);
                    let now = fingerprint(&path);
                    if now != last {
                        last = now;
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
