//! Leases and garbage collection. GC marks from every image and every live
//! lease, then sweeps unreferenced blobs, snapshots and recipes: rows first
//! (one transaction), files after, so a crash at any point leaves either
//! rows that are still valid or files that the next GC removes.
//!
//! In-flight operations (pull, import, export, mount) hold a lease. Content
//! written after the oldest live lease began is never swept, which covers
//! blobs and snapshots a pull has published but not yet recorded. Leases of
//! processes that died are dropped; a mount's lease lasts until its
//! directory is unmounted.

use crate::meta::{Meta, MetaError};
use crate::{now, Store, StoreError};
use rusqlite::params;
use serde::Serialize;
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use stowage_oci::{parse_config, parse_manifest, Digest, Manifest};

/// Held while an operation runs; dropping it releases the lease.
pub struct Lease<'a> {
    meta: &'a Meta,
    pub id: String,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let id = self.id.clone();
        let _ = self
            .meta
            .write(|tx| Ok(tx.execute("DELETE FROM leases WHERE id = ?1", [id])?));
    }
}

impl Meta {
    /// Take a lease for this process (`what` says which operation).
    pub fn lease(&self, what: &str) -> Result<Lease<'_>, MetaError> {
        let id = format!("{what}:{}:{}", std::process::id(), now_nanos());
        self.write(|tx| {
            tx.execute(
                "INSERT INTO leases (id, pid, created) VALUES (?1, ?2, ?3)",
                params![id, std::process::id() as i64, now()],
            )?;
            Ok(())
        })?;
        Ok(Lease { meta: self, id })
    }

    /// A lease that outlives this process: a mount, released when `dir` is
    /// no longer a mount point. `snapshots` are kept while it lasts.
    pub fn mount_lease(&self, dir: &str, snapshots: &[Digest]) -> Result<(), MetaError> {
        let id = format!("mount:{dir}");
        self.write(|tx| {
            tx.execute("DELETE FROM leases WHERE id = ?1", [&id])?;
            tx.execute("INSERT INTO leases (id, pid, created) VALUES (?1, NULL, ?2)", params![id, now()])?;
            for s in snapshots {
                tx.execute(
                    "INSERT OR IGNORE INTO lease_resources (lease, kind, ref) VALUES (?1, 'snapshot', ?2)",
                    params![id, s.to_string()],
                )?;
            }
            Ok(())
        })
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn mounted(dir: &str) -> bool {
    fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(dir)))
        .unwrap_or(false)
}

#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub blobs_removed: usize,
    pub blob_bytes: u64,
    pub snapshots_removed: usize,
    pub snapshot_bytes: u64,
    pub leases_dropped: usize,
    pub temp_removed: usize,
}

/// Everything reachable from images and leases.
#[derive(Default)]
pub struct Marks {
    pub blobs: HashSet<Digest>,
    pub snapshots: HashSet<Digest>,
}

/// Mark what an image needs: its manifests, configs, layers, their recipes
/// and snapshots.
pub fn mark_image(store: &Store, top: &Digest, marks: &mut Marks) {
    let mut stack = vec![top.clone()];
    while let Some(d) = stack.pop() {
        if !marks.blobs.insert(d.clone()) {
            continue;
        }
        let Ok(bytes) = store.content.read(&d) else {
            continue;
        };
        match parse_manifest(&bytes, None) {
            Ok(Manifest::Index(idx)) => {
                for m in idx.manifests() {
                    if let Ok(c) = Digest::try_from(m.digest()) {
                        stack.push(c);
                    }
                }
            }
            Ok(Manifest::Image(m)) => {
                let Ok(cd) = Digest::try_from(m.config().digest()) else {
                    continue;
                };
                marks.blobs.insert(cd.clone());
                let diff_ids: Vec<Digest> = store
                    .content
                    .read(&cd)
                    .ok()
                    .and_then(|c| parse_config(&c).ok())
                    .map(|c| {
                        c.rootfs()
                            .diff_ids()
                            .iter()
                            .filter_map(|d| d.parse().ok())
                            .collect()
                    })
                    .unwrap_or_default();
                for s in crate::snapshots::chain_ids(&diff_ids) {
                    marks.snapshots.insert(s);
                }
                for l in m.layers() {
                    if let Ok(ld) = Digest::try_from(l.digest()) {
                        for f in store.meta.layer_forms(&ld).unwrap_or_default() {
                            if f.form == "recipe" {
                                if let Ok(r) = f.reference.parse() {
                                    marks.blobs.insert(r);
                                }
                            }
                        }
                        marks.blobs.insert(ld);
                    }
                }
            }
            Err(_) => {}
        }
    }
}

/// Collect garbage. Only one GC runs at a time per root (a file lock).
pub fn gc(store: &Store) -> Result<GcReport, StoreError> {
    let lock_path = store.root().join("gc.lock");
    let _lock = crate::lock::lock_file(&lock_path, true).map_err(|source| StoreError::Root {
        path: lock_path.clone(),
        source,
    })?;
    gc_locked(store)
}

fn gc_locked(store: &Store) -> Result<GcReport, StoreError> {
    let mut report = GcReport::default();
    // Drop leases whose process died or whose mount is gone.
    let leases: Vec<(String, Option<i64>, i64)> = {
        let conn = store.meta.conn();
        let mut st = conn
            .prepare("SELECT id, pid, created FROM leases")
            .map_err(MetaError::from)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(MetaError::from)?;
        rows.collect::<Result<_, _>>().map_err(MetaError::from)?
    };
    let mut oldest_live: Option<i64> = None;
    let mut dead = Vec::new();
    for (id, pid, created) in &leases {
        let alive = match (pid, id.strip_prefix("mount:")) {
            (_, Some(dir)) => mounted(dir),
            (Some(p), None) => std::path::Path::new(&format!("/proc/{p}")).exists(),
            (None, None) => false,
        };
        if alive {
            if pid.is_some() {
                oldest_live = Some(oldest_live.map_or(*created, |o: i64| o.min(*created)));
            }
        } else {
            dead.push(id.clone());
        }
    }
    store.meta.write(|tx| {
        for id in &dead {
            tx.execute("DELETE FROM lease_resources WHERE lease = ?1", [id])?;
            tx.execute("DELETE FROM leases WHERE id = ?1", [id])?;
        }
        Ok(())
    })?;
    report.leases_dropped = dead.len();
    report.temp_removed =
        store.content.clean_ingest().unwrap_or(0) + store.snapshots.clean_temp().unwrap_or(0);

    // Mark.
    let mut marks = Marks::default();
    for img in store.meta.images()? {
        if img.policy == "compressed" {
            // Its snapshots were made on demand; they go when nothing
            // (no mount) holds them, and are made again when needed.
            let mut own = Marks::default();
            mark_image(store, &img.digest, &mut own);
            marks.blobs.extend(own.blobs);
        } else {
            mark_image(store, &img.digest, &mut marks);
        }
    }
    {
        let conn = store.meta.conn();
        let mut st = conn
            .prepare("SELECT kind, ref FROM lease_resources")
            .map_err(MetaError::from)?;
        let rows: Vec<(String, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(MetaError::from)?
            .collect::<Result<_, _>>()
            .map_err(MetaError::from)?;
        for (kind, r) in rows {
            if let Ok(d) = r.parse::<Digest>() {
                match kind.as_str() {
                    "snapshot" => marks.snapshots.insert(d),
                    _ => marks.blobs.insert(d),
                };
            }
        }
    }
    // Content younger than the oldest live lease may belong to it.
    let protected = |mtime: i64| oldest_live.is_some_and(|o| mtime >= o - 1);

    // Sweep: decide, delete rows, then files.
    let blob_dir = store.root().join("blobs/sha256");
    let mut doomed_blobs = Vec::new();
    for e in fs::read_dir(&blob_dir)
        .map_err(|source| StoreError::Root {
            path: blob_dir.clone(),
            source,
        })?
        .flatten()
    {
        let Ok(d) = Digest::from_hex(&e.file_name().to_string_lossy()) else {
            continue;
        };
        let Ok(md) = e.metadata() else { continue };
        if !marks.blobs.contains(&d) && !protected(md.mtime()) {
            report.blob_bytes += md.len();
            doomed_blobs.push(d);
        }
    }
    let mut doomed_snaps = Vec::new();
    for id in store.snapshots.list_on_disk().unwrap_or_default() {
        let p = store.snapshots.path(&id);
        let mtime = fs::metadata(p.parent().unwrap_or(&p))
            .map(|m| m.mtime())
            .unwrap_or(0);
        if !marks.snapshots.contains(&id) && !protected(mtime) {
            if let Ok(Some(s)) = store.meta.snapshot(&id) {
                report.snapshot_bytes += s.size;
            }
            doomed_snaps.push(id);
        }
    }
    store.meta.write(|tx| {
        for d in &doomed_blobs {
            tx.execute("DELETE FROM blobs WHERE digest = ?1", [d.to_string()])?;
            tx.execute("DELETE FROM layer_forms WHERE form IN ('blob', 'recipe') AND ref = ?1", [d.to_string()])?;
        }
        for s in &doomed_snaps {
            tx.execute("DELETE FROM snapshots WHERE id = ?1", [s.to_string()])?;
            tx.execute("DELETE FROM layer_forms WHERE form = 'snapshot' AND ref = ?1", [s.to_string()])?;
        }
        // Layers no image uses any more.
        tx.execute(
            "DELETE FROM layers WHERE digest NOT IN (SELECT layer FROM layer_forms) AND digest NOT IN (SELECT digest FROM blobs)",
            [],
        )?;
        Ok(())
    })?;
    for d in &doomed_blobs {
        store.content.remove(d)?;
        report.blobs_removed += 1;
    }
    for s in &doomed_snaps {
        store.snapshots.remove(s)?;
        report.snapshots_removed += 1;
    }
    let _ = now();
    Ok(report)
}
