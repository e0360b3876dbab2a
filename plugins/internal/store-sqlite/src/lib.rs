//! The default [`SnapshotStore`]: an embedded SQLite database (no server to run).
//!
//! One table, one row per published snapshot, in WAL mode so the admin API can read while
//! the publisher writes. The version check and insert run in one immediate transaction,
//! so two publishers can never store the same version.
#![forbid(unsafe_code)]

use std::{path::Path, sync::Mutex};

use omnirelay_abstractions::{
    Error, ErrorCode,
    store::{SnapshotRecord, SnapshotStore},
};
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS snapshots (
    version         INTEGER PRIMARY KEY,
    created_unix_ms INTEGER NOT NULL,
    source          TEXT NOT NULL,
    config_sha256   TEXT NOT NULL,
    signed          BLOB NOT NULL
);";

/// Snapshot history in SQLite.
#[derive(Debug)]
pub struct SqliteSnapshotStore {
    conn: Mutex<Connection>,
}

fn db_error(what: &str, e: rusqlite::Error) -> Error {
    let code = match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            ErrorCode::Unavailable
        }
        Some(rusqlite::ErrorCode::ConstraintViolation) => ErrorCode::Conflict,
        _ => ErrorCode::Internal,
    };
    Error::new(code, what.to_owned())
        .with_provider("sqlite")
        .with_source(e)
}

impl SqliteSnapshotStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let conn = Connection::open(path)
            .map_err(|e| db_error(&format!("opening {}", path.display()), e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| db_error("enabling WAL", e))?;
        conn.busy_timeout(std::time::Duration::from_secs(2))
            .map_err(|e| db_error("setting busy timeout", e))?;
        Self::init(conn)
    }

    /// A private in-memory database (tests, dry runs).
    pub fn open_in_memory() -> Result<Self, Error> {
        let conn = Connection::open_in_memory().map_err(|e| db_error("opening :memory:", e))?;
        Self::init(conn)
    }

    fn init(conn: Connection) -> Result<Self, Error> {
        conn.execute_batch(SCHEMA)
            .map_err(|e| db_error("creating schema", e))?;
        Ok(SqliteSnapshotStore {
            conn: Mutex::new(conn),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Connection) -> Result<R, Error>) -> Result<R, Error> {
        let mut conn = self.conn.lock().map_err(|_| {
            Error::new(ErrorCode::Internal, "store lock poisoned").with_provider("sqlite")
        })?;
        f(&mut conn)
    }
}

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<SnapshotRecord> {
    Ok(SnapshotRecord {
        version: row.get::<_, i64>(0)? as u64,
        created_unix_ms: row.get(1)?,
        source: row.get(2)?,
        config_sha256: row.get(3)?,
        signed: row.get(4)?,
    })
}

const COLUMNS: &str = "version, created_unix_ms, source, config_sha256, signed";

impl SnapshotStore for SqliteSnapshotStore {
    fn provider(&self) -> &'static str {
        "sqlite"
    }

    fn put(&self, record: &SnapshotRecord) -> Result<(), Error> {
        let version = i64::try_from(record.version).map_err(|_| {
            Error::new(ErrorCode::InvalidArgument, "version exceeds i64").with_provider("sqlite")
        })?;
        self.with(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| db_error("begin", e))?;
            let latest: Option<i64> = tx
                .query_row("SELECT MAX(version) FROM snapshots", [], |r| r.get(0))
                .map_err(|e| db_error("reading latest version", e))?;
            if let Some(latest) = latest
                && version <= latest
            {
                return Err(Error::new(
                    ErrorCode::Conflict,
                    format!("version {version} is not newer than stored version {latest}"),
                )
                .with_provider("sqlite"));
            }
            tx.execute(
                &format!("INSERT INTO snapshots ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                params![
                    version,
                    record.created_unix_ms,
                    record.source,
                    record.config_sha256,
                    record.signed
                ],
            )
            .map_err(|e| db_error("inserting snapshot", e))?;
            tx.commit().map_err(|e| db_error("commit", e))
        })
    }

    fn latest(&self) -> Result<Option<SnapshotRecord>, Error> {
        self.with(|conn| {
            conn.query_row(
                &format!("SELECT {COLUMNS} FROM snapshots ORDER BY version DESC LIMIT 1"),
                [],
                row_to_record,
            )
            .optional()
            .map_err(|e| db_error("reading latest snapshot", e))
        })
    }

    fn get(&self, version: u64) -> Result<Option<SnapshotRecord>, Error> {
        let Ok(version) = i64::try_from(version) else {
            return Ok(None);
        };
        self.with(|conn| {
            conn.query_row(
                &format!("SELECT {COLUMNS} FROM snapshots WHERE version = ?1"),
                [version],
                row_to_record,
            )
            .optional()
            .map_err(|e| db_error("reading snapshot", e))
        })
    }

    fn history(&self, limit: usize) -> Result<Vec<SnapshotRecord>, Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(|conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM snapshots ORDER BY version DESC LIMIT ?1"
                ))
                .map_err(|e| db_error("preparing history query", e))?;
            let rows = stmt
                .query_map([limit], row_to_record)
                .map_err(|e| db_error("reading history", e))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| db_error("reading history row", e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    omnirelay_abstractions::snapshot_store_conformance!(|| {
        SqliteSnapshotStore::open_in_memory().unwrap()
    });

    #[test]
    fn history_survives_reopening_the_file() {
        let dir = std::env::temp_dir().join(format!("omnirelay-sqlite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        let _ = std::fs::remove_file(&path);
        let rec = SnapshotRecord {
            version: 3,
            created_unix_ms: 1,
            source: "a.toml".into(),
            config_sha256: "00".into(),
            signed: vec![1, 2, 3],
        };
        SqliteSnapshotStore::open(&path).unwrap().put(&rec).unwrap();
        let reopened = SqliteSnapshotStore::open(&path).unwrap();
        assert_eq!(reopened.latest().unwrap(), Some(rec));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
