//! Metadata in SQLite (WAL mode, so the CLI and `stowage serve` can share one
//! root). The schema is versioned with `PRAGMA user_version` and migrated on
//! open; every migration runs in a transaction.

use rusqlite::{Connection, OptionalExtension, Transaction};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata database {path:?}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("metadata database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("metadata database {path:?} has schema version {found}, newer than this stowage ({supported}); upgrade stowage")]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("metadata database lock {path:?}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

/// Each entry moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the foundation.
    r#"
    CREATE TABLE blobs (
        digest     TEXT PRIMARY KEY,
        size       INTEGER NOT NULL,
        media_type TEXT NOT NULL,
        created    INTEGER NOT NULL
    );
    CREATE TABLE images (
        name              TEXT PRIMARY KEY,
        digest            TEXT NOT NULL,
        media_type        TEXT NOT NULL,
        size              INTEGER NOT NULL,
        origin_registry   TEXT,
        origin_repository TEXT,
        policy            TEXT NOT NULL,
        created           INTEGER NOT NULL,
        updated           INTEGER NOT NULL
    );
    -- One row per compressed layer digest.
    CREATE TABLE layers (
        digest     TEXT PRIMARY KEY,
        diff_id    TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size       INTEGER NOT NULL
    );
    CREATE TABLE snapshots (
        id       TEXT PRIMARY KEY,   -- chain ID
        parent   TEXT,               -- chain ID of the layer below
        diff_id  TEXT NOT NULL,
        size     INTEGER NOT NULL,
        inodes   INTEGER NOT NULL,
        created  INTEGER NOT NULL
    );
    -- The forms a layer is kept in: 'blob' (ref = layer digest),
    -- 'snapshot' (ref = chain ID) or 'recipe' (ref = recipe blob digest).
    CREATE TABLE layer_forms (
        layer   TEXT NOT NULL,
        form    TEXT NOT NULL CHECK (form IN ('blob', 'snapshot', 'recipe')),
        ref     TEXT NOT NULL,
        size    INTEGER NOT NULL,
        created INTEGER NOT NULL,
        PRIMARY KEY (layer, form, ref)
    );
    -- Why a form was dropped (policy, failed proof), for `check` and errors.
    CREATE TABLE dropped_forms (
        layer  TEXT NOT NULL,
        form   TEXT NOT NULL,
        reason TEXT NOT NULL,
        at     INTEGER NOT NULL,
        PRIMARY KEY (layer, form)
    );
    CREATE TABLE labels (
        target TEXT NOT NULL,
        key    TEXT NOT NULL,
        value  TEXT NOT NULL,
        PRIMARY KEY (target, key)
    );
    CREATE TABLE leases (
        id      TEXT PRIMARY KEY,
        pid     INTEGER,
        created INTEGER NOT NULL,
        expires INTEGER
    );
    CREATE TABLE lease_resources (
        lease TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,
        kind  TEXT NOT NULL,
        ref   TEXT NOT NULL,
        PRIMARY KEY (lease, kind, ref)
    );
    "#,
    // 2: how the origin was reached, so a dropped blob can be fetched again.
    r#"
    ALTER TABLE images ADD COLUMN origin_plain_http INTEGER NOT NULL DEFAULT 0;
    "#,
];

pub struct Meta {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl Meta {
    pub fn open(path: &Path) -> Result<Meta, MetaError> {
        let open_err = |source| MetaError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(60))
            .map_err(open_err)?;
        // Switching to WAL and migrating take the database exclusively, and
        // SQLite answers a second process doing the same with SQLITE_BUSY at
        // once instead of waiting (two pulls started together on a fresh
        // root). A file lock beside the database makes set-up one at a time.
        let _setup = setup_lock(path)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "metadata database is not in WAL mode");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        migrate(&mut conn, path)?;
        Ok(Meta {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for one short operation. Keep transactions short:
    /// other processes wait on the same database.
    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` in an immediate (write-locking) transaction.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&Transaction) -> Result<T, MetaError>,
    ) -> Result<T, MetaError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    pub fn schema_version(&self) -> Result<i64, MetaError> {
        Ok(self
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }
}

/// Held while a connection sets the journal mode and migrates; released
/// when dropped. The lock file stays (it is empty and shared by all opens).
fn setup_lock(db: &Path) -> Result<crate::lock::FileLock, MetaError> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    crate::lock::lock_file(&path, true)
        .and_then(|l| l.ok_or_else(|| std::io::Error::other("lock not taken")))
        .map_err(|source| MetaError::Lock { path, source })
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), MetaError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(MetaError::TooNew {
            path: path.to_path_buf(),
            found: version,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tracing::info!(from = i, to = i + 1, "migrating metadata schema");
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}

/// Small helper: one optional row.
pub(crate) fn optional<T>(r: rusqlite::Result<T>) -> Result<Option<T>, MetaError> {
    Ok(r.optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("meta.db");
        let m = Meta::open(&p).unwrap();
        assert_eq!(m.schema_version().unwrap(), MIGRATIONS.len() as i64);
        drop(m);
        Meta::open(&p).unwrap();
        Connection::open(&p)
            .unwrap()
            .pragma_update(None, "user_version", 999)
            .unwrap();
        assert!(matches!(Meta::open(&p), Err(MetaError::TooNew { .. })));
    }
}

#[cfg(test)]
mod open_race {
    use super::*;

    /// Two `stowage pull`s started at once on a fresh root both create the
    /// database; neither may fail with "database is locked".
    #[test]
    fn many_openers_of_a_fresh_database_all_succeed() {
        for round in 0..30 {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("meta.db");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
            let threads: Vec<_> = (0..6)
                .map(|_| {
                    let p = p.clone();
                    let b = barrier.clone();
                    std::thread::spawn(move || {
                        b.wait();
                        Meta::open(&p).map(|m| m.schema_version().unwrap())
                    })
                })
                .collect();
            for t in threads {
                let v = t.join().unwrap();
                assert_eq!(
                    v.unwrap_or_else(|e| panic!("round {round}: {e}")),
                    MIGRATIONS.len() as i64
                );
            }
        }
    }
}
