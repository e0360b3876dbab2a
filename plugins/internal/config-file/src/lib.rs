//! The default [`ConfigSource`]: a file on local disk.
//!
//! Changes are detected by polling: the file's metadata (modification time, size, inode)
//! every [`POLL_INTERVAL`], and a hash of its contents whenever the metadata changed and at
//! least every [`HASH_INTERVAL`], since two quick writes of the same size can share a
//! coarse timestamp and a recycled inode. Polling rather than inotify is deliberate: it sees
//! editors that replace the file by renaming, bind-mounted config maps whose symlinks are
//! swapped, and files on network filesystems, at the cost of a `stat` twenty times a
//! second and reading the file once a second.
//!
//! A file written in place (truncated, then written) could be read between two of its
//! writes, and half a TOML file often parses: [`ConfigSource::load`] therefore reads a file
//! only once it has not changed for [`SETTLE`], waiting at most [`SETTLE_LIMIT`]. A file
//! renamed into place is whole already but looks the same, so a load right after any
//! change waits out the rest of [`SETTLE`].
#![forbid(unsafe_code)]

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use omnirelay_abstractions::{
    Error, ErrorCode,
    config::{ConfigDocument, ConfigSource, WatchGuard},
};

/// How often the watcher looks at the file's metadata.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How often the watcher hashes the contents when the metadata did not change.
pub const HASH_INTERVAL: Duration = Duration::from_secs(1);

/// How long a file must have been left unchanged before it is read: a writer's next
/// write follows its last within this (a shell redirect, a script writing in pieces).
pub const SETTLE: Duration = Duration::from_millis(20);

/// The longest a load waits for the file to settle; then it reads what is there.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(1);

/// A config file on local disk.
#[derive(Debug, Clone)]
pub struct FileConfigSource {
    path: PathBuf,
    settle: Duration,
}

impl FileConfigSource {
    /// A source reading `path` (not opened until [`ConfigSource::load`]).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileConfigSource {
            path: path.into(),
            settle: SETTLE,
        }
    }

    /// The same source with another settle time (tests; see [`SETTLE`]).
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn document(&self, bytes: Vec<u8>) -> ConfigDocument {
        ConfigDocument {
            origin: self.path.display().to_string(),
            bytes,
        }
    }
}

/// What tells whether a file changed between two looks (by the watcher, and around a
/// load's read), and when it last did.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Settled {
    modified: SystemTime,
    size: u64,
    ino: u64,
}

impl Settled {
    /// Time since the last change, when the modification time can tell: not one in the
    /// future (set by hand, or from a host whose clock runs ahead), nor one without a
    /// sub-second part (a filesystem with coarse timestamps, where a write a moment ago
    /// looks up to a second or two old).
    fn age(&self) -> Option<Duration> {
        let fine = self
            .modified
            .duration_since(UNIX_EPOCH)
            .is_ok_and(|d| d.subsec_nanos() != 0);
        fine.then(|| SystemTime::now().duration_since(self.modified).ok())
            .flatten()
    }
}

fn settled_state(path: &Path) -> std::io::Result<Settled> {
    let m = std::fs::metadata(path)?;
    Ok(Settled {
        modified: m.modified()?,
        size: m.size(),
        ino: m.ino(),
    })
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
        let read_error = |e: std::io::Error| {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => ErrorCode::NotFound,
                std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
                _ => ErrorCode::Unavailable,
            };
            Error::new(code, format!("reading {}", self.path.display()))
                .with_provider("file")
                .with_source(e)
        };
        let give_up = Instant::now() + SETTLE_LIMIT;
        // The state last seen, and since when this load has seen it unchanged.
        let mut seen: Option<(Settled, Instant)> = None;
        loop {
            let before = settled_state(&self.path).map_err(read_error)?;
            let bytes = std::fs::read(&self.path).map_err(read_error)?;
            let after = settled_state(&self.path).map_err(read_error)?;
            // Unchanged while it was read and for `settle` before (by its modification
            // time, or as watched by this load when that cannot tell): whole.
            let wait = if before == after {
                let watched = match seen {
                    Some((state, since)) if state == after => since.elapsed(),
                    _ => {
                        seen = Some((after, Instant::now()));
                        Duration::ZERO
                    }
                };
                let age = after.age().map_or(watched, |a| a.max(watched));
                self.settle.saturating_sub(age)
            } else {
                seen = None;
                self.settle
            };
            if wait.is_zero() {
                return Ok(self.document(bytes));
            }
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    path = %self.path.display(),
                    "the config file kept changing for {SETTLE_LIMIT:?}; reading it as it is"
                );
                return Ok(self.document(bytes));
            }
            std::thread::sleep(wait.min(left));
        }
    }

    fn watch(&self, on_change: Box<dyn Fn() + Send + Sync>) -> Result<WatchGuard, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let path = self.path.clone();
        let flag = Arc::clone(&stop);
        // Taken before returning, so a change made right after `watch` is never missed.
        let mut last_meta = settled_state(&path).ok();
        let mut last_hash = content_hash(&path);
        let mut hashed_at = std::time::Instant::now();
        let thread = std::thread::Builder::new()
            .name("config-file-watch".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    std::thread::sleep(POLL_INTERVAL);
                    let meta = settled_state(&path).ok();
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
    fn a_file_written_in_place_is_read_whole_not_between_two_writes() {
        use std::io::Write as _;
        let path = temp_file("in-place");
        std::fs::write(&path, "old = 1\n").unwrap();
        // A long settle time keeps the test independent of scheduling delays.
        let source = FileConfigSource::new(&path).with_settle(Duration::from_millis(400));
        let whole = "[a]\nx = 1\n[b]\ny = 2\n";
        let (first, rest) = whole.split_at(whole.find("[b]").unwrap());
        // Truncated and half written, as a shell redirect or a script leaves it between
        // two writes; the rest follows 50 ms later.
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(first.as_bytes()).unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            file.write_all(rest.as_bytes()).unwrap();
        });
        let doc = source.load().unwrap();
        writer.join().unwrap();
        assert_eq!(String::from_utf8(doc.bytes).unwrap(), whole);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_file_written_long_ago_is_read_without_waiting() {
        let path = temp_file("settled");
        std::fs::write(&path, "x = 1\n").unwrap();
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
        let source = FileConfigSource::new(&path).with_settle(Duration::from_secs(30));
        let started = Instant::now();
        assert_eq!(source.load().unwrap().bytes, b"x = 1\n");
        // Had it waited, it would have for the whole SETTLE_LIMIT.
        assert!(started.elapsed() < SETTLE_LIMIT, "it waited");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_file_with_a_coarse_modification_time_is_watched_for_its_settle_time() {
        // A whole-second time (as coarse filesystems keep) cannot tell a write a moment
        // ago from one a second ago: the load watches the file itself for the settle time.
        let path = temp_file("coarse");
        std::fs::write(&path, "x = 1\n").unwrap();
        let whole_second = UNIX_EPOCH
            + Duration::from_secs(
                (SystemTime::now() - Duration::from_secs(3600))
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs(),
            );
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(whole_second)
            .unwrap();
        let settle = Duration::from_millis(300);
        let source = FileConfigSource::new(&path).with_settle(settle);
        let started = Instant::now();
        assert_eq!(source.load().unwrap().bytes, b"x = 1\n");
        assert!(started.elapsed() >= settle, "read without watching");
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
