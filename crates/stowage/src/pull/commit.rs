//! Bringing layers in and committing a pull or an import: snapshots
//! bottom-up, then blobs, then every row in one transaction, the image
//! records last.

use super::fetch::{FetchedLayer, LayerJob, OpenBlob};
use super::{run_jobs, PullError, PullOptions, Target};
use crate::progress::Progress;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use stowage_layer::ApplyOptions;
use stowage_oci::Digest;
use stowage_store::images::{drop_form, put_blob, put_form, put_image, put_layer, LayerRecord};
use stowage_store::snapshots::{put_snapshot, SnapshotRecord};
use stowage_store::{ImageRecord, Policy, Store};

/// Layers this process holds a lock on. Two pulls inside one process (as
/// under `serve`, which already shares identical pulls) do not wait on each
/// other: flock locks belong to open files, and a stuck, cancelled pull must
/// not hold up a fresh one.
static HELD: std::sync::Mutex<Vec<Digest>> = std::sync::Mutex::new(Vec::new());

/// An exclusive lock on `locks/<layer>` against other processes, released on
/// drop. Lock files are never removed: deleting one that another process has
/// open would split the lock. Waiting polls, so a cancelled pull stops waiting.
struct LayerLock {
    flock: Option<stowage_store::lock::FileLock>,
    digest: Digest,
}

impl Drop for LayerLock {
    fn drop(&mut self) {
        if self.flock.take().is_some() {
            HELD.lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|d| d != &self.digest);
        }
    }
}

fn lock_layer(store: &Store, d: &Digest, cancel: &AtomicBool) -> std::io::Result<LayerLock> {
    if HELD.lock().unwrap_or_else(|p| p.into_inner()).contains(d) {
        return Ok(LayerLock {
            flock: None,
            digest: d.clone(),
        });
    }
    let dir = store.root().join("locks");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(d.hex());
    loop {
        if let Some(lock) = stowage_store::lock::lock_file(&path, false)? {
            HELD.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(d.clone());
            return Ok(LayerLock {
                flock: Some(lock),
                digest: d.clone(),
            });
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(std::io::Error::other(
                "cancelled while waiting for another pull of this layer",
            ));
        }
        if HELD.lock().unwrap_or_else(|p| p.into_inner()).contains(d) {
            return Ok(LayerLock {
                flock: None,
                digest: d.clone(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

pub(crate) struct BroughtIn {
    pub fetched: usize,
    pub present: usize,
    pub bytes_fetched: u64,
}

/// Fetch (through `open`) and unpack what `targets` need and the store
/// lacks, then commit it together with `top` and the image `records`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bring_in(
    store: &Store,
    image: &str,
    targets: &[Target],
    top: &(Digest, String, Vec<u8>),
    records: &[ImageRecord],
    opts: &PullOptions,
    open: &OpenBlob<'_>,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<BroughtIn, PullError> {
    let image = image.to_string();
    let (top_digest, top_media, top_bytes) = top;
    // Another process may be bringing in the same layers: take a lock per
    // layer, all at once and in one global order (so two pulls cannot
    // deadlock), held until this commit is done; then see what is present.
    let mut wanted: Vec<&Digest> = targets
        .iter()
        .flat_map(|t| t.layers.iter().map(|l| &l.digest))
        .collect();
    wanted.sort();
    wanted.dedup();
    let mut _locks = Vec::new();
    for d in wanted {
        let lock = lock_layer(store, d, cancel).map_err(|e| {
            if cancel.load(Ordering::Relaxed) {
                PullError::Cancelled {
                    image: image.clone(),
                }
            } else {
                PullError::Store {
                    image: image.clone(),
                    detail: format!("lock for layer {d}: {e}"),
                }
            }
        })?;
        _locks.push(lock);
    }
    // 4. Layers: skip what is present, fetch the rest in parallel (bounded).
    let mut jobs: Vec<LayerJob> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut present = 0;
    for t in targets {
        for l in &t.layers {
            if !seen.insert((l.chain_id.clone(), l.digest.clone())) {
                continue;
            }
            let have_snap = !l.want_snapshot
                || (store.snapshots.exists(&l.chain_id)
                    && store.meta.snapshot(&l.chain_id).ok().flatten().is_some());
            // Under `recipe`, a proven recipe stands for the blob.
            let have_blob = !l.want_blob
                || store.content.contains(&l.digest)
                || (opts.policy == Policy::Recipe
                    && crate::export::plan::layer_recipe(store, &l.digest)
                        .is_some_and(|r| r.rebuilds_blob()));
            if have_snap && have_blob {
                present += 1;
                continue;
            }
            let mut job = l.clone();
            job.want_snapshot = !have_snap;
            job.want_blob = !have_blob;
            jobs.push(job);
        }
    }
    let fetched = run_jobs(store, open, &image, jobs, opts, progress, cancel)?;
    if cancel.load(Ordering::Relaxed) {
        return Err(PullError::Cancelled { image });
    }

    // 5. Commit: snapshots bottom-up (hard links into lower layers are
    //    resolved once the lower layer is in place), then blobs, then rows.
    let apply_opts = ApplyOptions::default();
    let mut by_key: HashMap<(Digest, Digest), FetchedLayer> = fetched
        .into_iter()
        .map(|f| ((f.job.chain_id.clone(), f.job.digest.clone()), f))
        .collect();
    let store_err = |e: &dyn std::fmt::Display| PullError::Store {
        image: image.clone(),
        detail: e.to_string(),
    };
    let mut committed: Vec<FetchedLayer> = Vec::new();
    for t in targets {
        for (i, l) in t.layers.iter().enumerate() {
            let Some(mut f) = by_key.remove(&(l.chain_id.clone(), l.digest.clone())) else {
                continue;
            };
            if let Some(tmp) = f.snapshot.take() {
                let links = f
                    .report
                    .as_ref()
                    .map(|r| r.deferred_links.as_slice())
                    .unwrap_or_default();
                if !links.is_empty() {
                    let lowers: Vec<std::path::PathBuf> = t.layers[..i]
                        .iter()
                        .rev()
                        .map(|x| store.snapshots.path(&x.chain_id))
                        .collect();
                    let lower_refs: Vec<&std::path::Path> =
                        lowers.iter().map(|p| p.as_path()).collect();
                    stowage_layer::resolve_deferred_links(
                        &tmp.fs(),
                        &lower_refs,
                        links,
                        &apply_opts,
                    )
                    .map_err(|e| PullError::Layer {
                        image: image.clone(),
                        digest: l.digest.clone(),
                        detail: e.to_string(),
                    })?;
                }
                store
                    .snapshots
                    .commit(tmp, &l.chain_id)
                    .map_err(|e| store_err(&e))?;
            }
            committed.push(f);
        }
    }
    for t in targets {
        store
            .content
            .put(&t.config_digest, &t.config_bytes)
            .map_err(|e| store_err(&e))?;
        store
            .content
            .put(&t.digest, &t.bytes)
            .map_err(|e| store_err(&e))?;
    }
    store
        .content
        .put(top_digest, top_bytes)
        .map_err(|e| store_err(&e))?;
    let mut recipes = Vec::new();
    for f in committed.iter_mut() {
        if let Some(b) = f.blob.take() {
            b.publish().map_err(|e| store_err(&e))?;
        }
        if let Some(r) = f.recipe.take() {
            let bytes = r.to_bytes();
            let d = Digest::of(&bytes);
            store.content.put(&d, &bytes).map_err(|e| store_err(&e))?;
            recipes.push((f.job.digest.clone(), d, bytes.len() as u64));
        }
    }
    let bytes_fetched = committed.iter().map(|f| f.bytes_fetched).sum();
    store
        .meta
        .write(|tx| {
            put_blob(tx, top_digest, top_bytes.len() as u64, top_media)?;
            for t in targets {
                put_blob(tx, &t.digest, t.bytes.len() as u64, &t.media_type)?;
                put_blob(
                    tx,
                    &t.config_digest,
                    t.config_bytes.len() as u64,
                    "application/vnd.oci.image.config.v1+json",
                )?;
                for l in &t.layers {
                    put_layer(
                        tx,
                        &LayerRecord {
                            digest: l.digest.clone(),
                            diff_id: l.diff_id.clone(),
                            media_type: l.media_type.clone(),
                            size: l.size,
                        },
                    )?;
                }
            }
            for f in &committed {
                let j = &f.job;
                if let Some(r) = &f.report {
                    put_snapshot(
                        tx,
                        &SnapshotRecord {
                            id: j.chain_id.clone(),
                            parent: j.parent.clone(),
                            diff_id: j.diff_id.clone(),
                            size: r.bytes,
                            inodes: r.entries,
                            created: 0,
                        },
                    )?;
                    put_form(tx, &j.digest, "snapshot", &j.chain_id.to_string(), r.bytes)?;
                }
                if j.want_blob {
                    put_blob(tx, &j.digest, j.size, &j.media_type)?;
                    put_form(tx, &j.digest, "blob", &j.digest.to_string(), j.size)?;
                } else if opts.policy == Policy::Discard && !store.content.contains(&j.digest) {
                    drop_form(
                        tx,
                        &j.digest,
                        "blob",
                        "dropped after unpacking by policy discard (discard_unpacked_layers)",
                    )?;
                }
            }
            for (layer, d, size) in &recipes {
                put_blob(tx, d, *size, stowage_layer::RECIPE_MEDIA_TYPE)?;
                put_form(tx, layer, "recipe", &d.to_string(), *size)?;
            }
            for r in records {
                put_image(tx, r)?;
            }
            Ok(())
        })
        .map_err(|e| store_err(&e))?;
    Ok(BroughtIn {
        fetched: committed.len(),
        present,
        bytes_fetched,
    })
}
