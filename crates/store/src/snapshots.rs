//! Snapshots: the unpacked files of one layer in their own directory,
//! overlay-style, named by the chain ID of the layer stack they end. A
//! snapshot is built in a temporary directory and renamed into place only
//! once its diffID has been verified, so `snapshots/<id>/fs` is always whole.

use crate::meta::{optional, Meta, MetaError};
use crate::now;
use rusqlite::{params, Transaction};
use serde::Serialize;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use stowage_oci::Digest;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path:?}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct SnapshotRecord {
    pub id: Digest,
    pub parent: Option<Digest>,
    pub diff_id: Digest,
    pub size: u64,
    pub inodes: u64,
    pub created: i64,
}

pub struct Snapshots {
    dir: PathBuf,
}

/// A snapshot under construction; removed on drop unless committed.
pub struct TempSnapshot {
    dir: PathBuf,
    committed: bool,
}

impl TempSnapshot {
    /// Where the layer's files go.
    pub fn fs(&self) -> PathBuf {
        self.dir.join("fs")
    }
}

impl Drop for TempSnapshot {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove_tree(&self.dir);
        }
    }
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Snapshots {
    pub fn open(root: &Path) -> Result<Snapshots, SnapshotError> {
        let dir = root.join("snapshots");
        fs::create_dir_all(&dir).map_err(|source| SnapshotError::Io {
            path: dir.clone(),
            op: "create",
            source,
        })?;
        Ok(Snapshots { dir })
    }

    /// The directory holding the files of snapshot `id`.
    pub fn path(&self, id: &Digest) -> PathBuf {
        self.dir.join(id.hex()).join("fs")
    }

    pub fn exists(&self, id: &Digest) -> bool {
        self.path(id).is_dir()
    }

    pub fn prepare(&self) -> Result<TempSnapshot, SnapshotError> {
        let name = format!(
            "tmp-{}-{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = self.dir.join(name);
        let fs_dir = dir.join("fs");
        fs::create_dir_all(&fs_dir).map_err(|source| SnapshotError::Io {
            path: fs_dir,
            op: "create",
            source,
        })?;
        Ok(TempSnapshot {
            dir,
            committed: false,
        })
    }

    /// Rename `tmp` into place as snapshot `id`. Returns false when another
    /// pull committed the same snapshot first (ours is then discarded).
    pub fn commit(&self, mut tmp: TempSnapshot, id: &Digest) -> Result<bool, SnapshotError> {
        let dest = self.dir.join(id.hex());
        if dest.join("fs").is_dir() {
            return Ok(false);
        }
        // A crash can leave an empty or partial final dir without fs/; clear it.
        if dest.exists() {
            remove_tree(&dest).map_err(|source| SnapshotError::Io {
                path: dest.clone(),
                op: "remove stale",
                source,
            })?;
        }
        match fs::rename(&tmp.dir, &dest) {
            Ok(()) => {
                tmp.committed = true;
                if let Ok(d) = fs::File::open(&self.dir) {
                    let _ = d.sync_all();
                }
                Ok(true)
            }
            Err(e) if dest.join("fs").is_dir() => {
                tracing::debug!(error = %e, "snapshot committed concurrently");
                Ok(false)
            }
            Err(source) => Err(SnapshotError::Io {
                path: dest,
                op: "rename into place",
                source,
            }),
        }
    }

    /// Remove snapshot `id`'s files.
    pub fn remove(&self, id: &Digest) -> Result<(), SnapshotError> {
        let dest = self.dir.join(id.hex());
        if !dest.exists() {
            return Ok(());
        }
        // Rename first so a half-deleted snapshot is never seen as whole.
        let trash = self.dir.join(format!(
            "tmp-{}-{}-rm",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::rename(&dest, &trash).map_err(|source| SnapshotError::Io {
            path: dest.clone(),
            op: "rename",
            source,
        })?;
        remove_tree(&trash).map_err(|source| SnapshotError::Io {
            path: trash,
            op: "remove",
            source,
        })
    }

    /// Remove temporary directories left by processes that no longer run.
    pub fn clean_temp(&self) -> io::Result<usize> {
        let mut n = 0;
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(rest) = name.strip_prefix("tmp-") {
                let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
                if !pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists()) {
                    remove_tree(&e.path())?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Ids of snapshot directories on disk (for repair and gc).
    pub fn list_on_disk(&self) -> io::Result<Vec<Digest>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let name = e?.file_name().to_string_lossy().to_string();
            if let Ok(d) = Digest::from_hex(&name) {
                out.push(d);
            }
        }
        Ok(out)
    }
}

/// Remove a tree, clearing immutable-ish obstacles (read-only dirs) on the way.
pub fn remove_tree(p: &Path) -> io::Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Meta {
    pub fn snapshot(&self, id: &Digest) -> Result<Option<SnapshotRecord>, MetaError> {
        optional(self.conn().query_row(
            "SELECT id, parent, diff_id, size, inodes, created FROM snapshots WHERE id = ?1",
            [id.to_string()],
            |r| {
                let parse = |i: usize, s: String| {
                    s.parse::<Digest>().map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            i,
                            rusqlite::types::Type::Text,
                            Box::new(e),
                        )
                    })
                };
                Ok(SnapshotRecord {
                    id: parse(0, r.get(0)?)?,
                    parent: r
                        .get::<_, Option<String>>(1)?
                        .map(|p| parse(1, p))
                        .transpose()?,
                    diff_id: parse(2, r.get(2)?)?,
                    size: r.get::<_, i64>(3)? as u64,
                    inodes: r.get::<_, i64>(4)? as u64,
                    created: r.get(5)?,
                })
            },
        ))
    }

    /// Snapshots that hold the tar `diff_id` (a snapshot holds one layer's
    /// own changes, so any of them replays that tar), newest first.
    pub fn snapshots_with_diff_id(&self, diff_id: &Digest) -> Result<Vec<Digest>, MetaError> {
        let conn = self.conn();
        let mut st =
            conn.prepare("SELECT id FROM snapshots WHERE diff_id = ?1 ORDER BY created DESC")?;
        let ids = st
            .query_map([diff_id.to_string()], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ids.iter().filter_map(|s| s.parse().ok()).collect())
    }
}

pub fn put_snapshot(tx: &Transaction, s: &SnapshotRecord) -> Result<(), MetaError> {
    tx.execute(
        "INSERT INTO snapshots (id, parent, diff_id, size, inodes, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(id) DO NOTHING",
        params![
            s.id.to_string(),
            s.parent.as_ref().map(|p| p.to_string()),
            s.diff_id.to_string(),
            s.size as i64,
            s.inodes as i64,
            now()
        ],
    )?;
    Ok(())
}

/// OCI chain IDs: `chain(0) = diff(0)`, `chain(n) = sha256(chain(n-1) + " " + diff(n))`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}
