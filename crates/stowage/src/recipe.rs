//! The `recipe` policy: keep the snapshot plus a small recipe that rebuilds
//! the exact compressed blob, and drop the blob, but only after a rebuild
//! from snapshot + recipe has been proven to hash to the blob's digest.
//! When the proof fails, the recipe is too large (`recipe_max_ratio`), or
//! the layer is zstd (no exact zstd reconstruction yet), the blob stays and
//! the reason is recorded.

use crate::image::LayerInfo;
use serde::Serialize;
use std::io::{self, Write};
use stowage_layer::Recipe;
use stowage_oci::{Compression, Digest, Hasher};
use stowage_store::images::{drop_form, note_missing_form, put_blob, put_form, remove_blob};
use stowage_store::Store;

#[derive(Debug, Serialize, Clone)]
pub struct RecipeOutcome {
    pub layer: Digest,
    /// True when the blob was dropped.
    pub dropped: bool,
    pub recipe_bytes: u64,
    pub blob_bytes: u64,
    pub detail: String,
}

/// Rebuild the exact blob of `recipe` from the snapshot at `snapshot`,
/// writing it to `out`. Used by the proof and by export.
pub fn rebuild_blob(
    recipe: &Recipe,
    snapshot: &std::path::Path,
    out: &mut dyn Write,
) -> Result<(), String> {
    match (&recipe.compression, &recipe.codec) {
        (Compression::None, _) => recipe
            .write_tar(snapshot, out)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        (Compression::Gzip, Some((kind, data))) if kind == "deflate" => {
            let codec = stowage_deflate_recipe::Recipe::from_bytes(data)
                .map_err(|e| format!("deflate recipe: {e}"))?;
            let (reader, mut writer) = io::pipe().map_err(|e| e.to_string())?;
            std::thread::scope(|s| {
                let t = s.spawn(move || recipe.write_tar(snapshot, &mut writer).map(|_| ()));
                let r = stowage_deflate_recipe::rebuild_gzip(reader, &codec, out)
                    .map_err(|e| format!("deflate rebuild: {e}"));
                let t = t
                    .join()
                    .map_err(|_| "tar replay panicked".to_string())?
                    .map_err(|e| e.to_string());
                r.and(t)
            })
        }
        (c, _) => Err(format!("no exact reconstruction for {} layers", c.as_str())),
    }
}

fn make_one(store: &Store, l: &LayerInfo, max_ratio: f64) -> Result<(Vec<u8>, String), String> {
    let tar_only = crate::export::plan::tar_split_for(store, l).ok_or(
        "no tar-split was recorded for this layer's tar (unpacked before recipes existed?)",
    )?;
    if !store.snapshots.exists(&l.chain_id) {
        return Err("the layer has no snapshot".into());
    }
    let blob = store
        .content
        .open_blob(&l.digest)
        .map_err(|e| e.to_string())?;
    let mut recipe = tar_only.clone();
    // Recorded fast during the pull; stored for the long run, so squeeze it,
    // but not past level 9: level 15 made a settle peak at 150 MiB instead of
    // 40 (debian-min) for recipes 2-3% smaller.
    recipe.tar_split = zstd::decode_all(&tar_only.tar_split[..])
        .and_then(|raw| zstd::encode_all(&raw[..], 9))
        .map_err(|e| format!("tar-split: {e}"))?;
    match tar_only.compression {
        Compression::Zstd => {
            return Err("zstd layers keep their blob: no exact zstd reconstruction".into())
        }
        Compression::None => {}
        Compression::Gzip => {
            let mut plain = Hasher::new();
            let codec = stowage_deflate_recipe::analyze_gzip(
                io::BufReader::with_capacity(1 << 20, blob),
                &mut plain,
            )
            .map_err(|e| format!("deflate analysis: {e}"))?;
            let diff = plain.finish();
            if diff != l.diff_id {
                return Err(format!(
                    "the blob decompresses to {diff}, not diffID {}",
                    l.diff_id
                ));
            }
            recipe.codec = Some(("deflate".into(), codec.to_bytes()));
        }
    }
    let bytes = recipe.to_bytes();
    let ratio = bytes.len() as f64 / l.size.max(1) as f64;
    if ratio > max_ratio {
        return Err(format!(
            "recipe is {} bytes, {:.2}% of the blob, above recipe_max_ratio {:.0}%",
            bytes.len(),
            ratio * 100.0,
            max_ratio * 100.0
        ));
    }
    // The proof: rebuild from the snapshot and compare digests.
    let mut sink = Hasher::new();
    rebuild_blob(&recipe, &store.snapshots.path(&l.chain_id), &mut sink)
        .map_err(|e| format!("proof rebuild failed: {e}"))?;
    let (len, got) = (sink.len(), sink.finish());
    if got != l.digest || len != l.size {
        return Err(format!(
            "proof failed: the rebuild hashes to {got} ({len} bytes)"
        ));
    }
    let codec_kind = recipe
        .codec
        .as_ref()
        .map(|(k, _)| k.as_str())
        .unwrap_or("tar-split");
    Ok((
        bytes,
        format!(
            "proven: rebuilt exactly from snapshot + {codec_kind} recipe ({:.3}% of the blob)",
            ratio * 100.0
        ),
    ))
}

/// Try to replace each layer's blob by a proven recipe, `jobs` layers at a
/// time. Each layer's analysis and proof can also split its search over the
/// cores (pgzip, zlib, pigz and Go-made layers); they share the cores with
/// the other layers still to do, so a settle of many layers keeps the
/// memory of one thread per layer and the last big layer gets them all.
pub fn make_recipes(
    store: &Store,
    layers: &[LayerInfo],
    max_ratio: f64,
    jobs: usize,
) -> Vec<RecipeOutcome> {
    let mut seen = std::collections::HashSet::new();
    let work: Vec<&LayerInfo> = layers
        .iter()
        .filter(|l| seen.insert(l.digest.clone()) && store.content.contains(&l.digest))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    let workers = jobs.clamp(1, work.len().max(1));
    // The deflate library's own count (capped, as set), not every core.
    let cores = stowage_deflate_recipe::threads();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(l) = work.get(i) else { break };
                let sharing = workers.min(work.len() - i).max(1);
                let threads = (cores / sharing).max(1);
                let outcome = stowage_deflate_recipe::with_threads(threads, || {
                    settle_one(store, l, max_ratio)
                });
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((i, outcome));
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, o)| o).collect()
}

fn settle_one(store: &Store, l: &LayerInfo, max_ratio: f64) -> RecipeOutcome {
    match make_one(store, l, max_ratio) {
        Ok((bytes, detail)) => match commit(store, l, &bytes, &detail) {
            Ok(()) => RecipeOutcome {
                layer: l.digest.clone(),
                dropped: true,
                recipe_bytes: bytes.len() as u64,
                blob_bytes: l.size,
                detail,
            },
            Err(e) => RecipeOutcome {
                layer: l.digest.clone(),
                dropped: false,
                recipe_bytes: 0,
                blob_bytes: l.size,
                detail: e,
            },
        },
        Err(why) => {
            // The blob stays; say why, for `check` and `inspect`.
            let _ = store
                .meta
                .write(|tx| note_missing_form(tx, &l.digest, "recipe", &why));
            RecipeOutcome {
                layer: l.digest.clone(),
                dropped: false,
                recipe_bytes: 0,
                blob_bytes: l.size,
                detail: format!("blob kept: {why}"),
            }
        }
    }
}

/// Record the recipe, drop the blob: rows first, then the file.
fn commit(store: &Store, l: &LayerInfo, bytes: &[u8], detail: &str) -> Result<(), String> {
    let d = Digest::of(bytes);
    store.content.put(&d, bytes).map_err(|e| e.to_string())?;
    store
        .meta
        .write(|tx| {
            put_blob(tx, &d, bytes.len() as u64, stowage_layer::RECIPE_MEDIA_TYPE)?;
            tx.execute(
                "DELETE FROM layer_forms WHERE layer = ?1 AND form = 'recipe'",
                [l.digest.to_string()],
            )?;
            put_form(tx, &l.digest, "recipe", &d.to_string(), bytes.len() as u64)?;
            remove_blob(tx, &l.digest)?;
            drop_form(
                tx,
                &l.digest,
                "blob",
                &format!("dropped by policy recipe, {detail}"),
            )
        })
        .map_err(|e| e.to_string())?;
    store.content.remove(&l.digest).map_err(|e| e.to_string())?;
    Ok(())
}
