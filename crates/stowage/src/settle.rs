//! Settling: the part of the `recipe` policy that runs after a pull has
//! returned. A pull under `recipe` commits the image with its blobs, so the
//! image is usable at once; settling then analyses each kept gzip blob,
//! proves that snapshot + recipe rebuild it exactly, and only then drops it.
//!
//! Nothing marks work as pending: a layer is pending when an image under
//! the `recipe` policy still keeps its blob and no earlier attempt recorded
//! why it must stay. So a settle killed at any point simply leaves work for
//! the next one, and `stowage settle` can always be re-run.

use crate::image::LayerInfo;
use crate::recipe::{make_recipes, RecipeOutcome};
use std::collections::HashSet;
use std::path::PathBuf;
use stowage_oci::{parse_config, parse_manifest, Digest, Manifest};
use stowage_store::lock::{lock_file, FileLock};
use stowage_store::{MetaError, Policy, Store};

#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("settle lock {path:?}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Meta(#[from] MetaError),
}

#[derive(Debug, Clone)]
pub struct SettleOptions {
    /// Keep the blob when its recipe is larger than this share of it.
    pub max_ratio: f64,
    /// Layers analysed at once.
    pub jobs: usize,
    /// Also retry layers whose earlier attempt recorded why the blob stays.
    pub retry: bool,
    /// Only these layers (by compressed digest); every pending layer when `None`.
    pub only: Option<HashSet<Digest>>,
}

impl Default for SettleOptions {
    fn default() -> Self {
        SettleOptions {
            max_ratio: 0.10,
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            retry: false,
            only: None,
        }
    }
}

/// Every layer of an image, over all platforms whose manifest is stored.
pub fn image_layers(store: &Store, top: &Digest) -> Vec<LayerInfo> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![top.clone()];
    while let Some(d) = stack.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let Ok(bytes) = store.content.read(&d) else {
            continue;
        };
        match parse_manifest(&bytes, None) {
            Ok(Manifest::Index(idx)) => stack.extend(
                idx.manifests()
                    .iter()
                    .filter_map(|m| Digest::try_from(m.digest()).ok()),
            ),
            Ok(Manifest::Image(m)) => {
                let layers = Digest::try_from(m.config().digest())
                    .ok()
                    .and_then(|cd| store.content.read(&cd).ok())
                    .and_then(|c| parse_config(&c).ok())
                    .and_then(|config| crate::image::layers_of(&m, &config).ok());
                out.extend(layers.unwrap_or_default());
            }
            Err(_) => {}
        }
    }
    out
}

/// Layers waiting to be settled: used by an image under `recipe` and by no
/// image whose policy keeps blobs, blob and snapshot both present, and
/// (unless `retry`) no recorded reason why the blob must stay. A settled
/// layer has no blob, so it is never pending again.
pub fn pending(store: &Store, retry: bool) -> Result<Vec<LayerInfo>, MetaError> {
    let images = store.meta.images()?;
    let mut keep_blob = HashSet::new();
    for img in &images {
        let policy = img.policy.parse::<Policy>().unwrap_or(Policy::Keep);
        if policy != Policy::Recipe && policy.keeps_blob() {
            keep_blob.extend(
                image_layers(store, &img.digest)
                    .into_iter()
                    .map(|l| l.digest),
            );
        }
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for img in &images {
        if img.policy != Policy::Recipe.as_str() {
            continue;
        }
        for l in image_layers(store, &img.digest) {
            if keep_blob.contains(&l.digest) || !seen.insert(l.digest.clone()) {
                continue;
            }
            if !store.content.contains(&l.digest) || !store.snapshots.exists(&l.chain_id) {
                continue;
            }
            if !retry && store.meta.dropped_reason(&l.digest, "recipe")?.is_some() {
                continue;
            }
            out.push(l);
        }
    }
    Ok(out)
}

fn lock(store: &Store, name: &str, wait: bool) -> Result<Option<FileLock>, SettleError> {
    let path = store.root().join(name);
    lock_file(&path, wait).map_err(|source| SettleError::Lock { path, source })
}

/// Settle every pending layer. One settle runs at a time per root; a second
/// waits for the first and then does what is left.
pub fn settle(store: &Store, opts: &SettleOptions) -> Result<Vec<RecipeOutcome>, SettleError> {
    let _lock = lock(store, "settle.lock", true)?;
    settle_locked(store, opts)
}

/// The background form, started after each `recipe` pull: when a settle
/// already waits for its turn, it will see this pull's layers (it lists
/// pending work only once it runs), so this one has nothing to add and
/// returns at once. A node pulling twenty images starts twenty of these,
/// and at most two live: the one running and the one waiting.
pub fn settle_background(
    store: &Store,
    opts: &SettleOptions,
) -> Result<Option<Vec<RecipeOutcome>>, SettleError> {
    let Some(waiting) = lock(store, "settle.wait.lock", false)? else {
        return Ok(None);
    };
    let _lock = lock(store, "settle.lock", true)?;
    drop(waiting);
    settle_locked(store, opts).map(Some)
}

fn settle_locked(store: &Store, opts: &SettleOptions) -> Result<Vec<RecipeOutcome>, SettleError> {
    // Recipe blobs written below are young: the lease keeps a concurrent gc
    // from taking them before their rows exist.
    let _lease = store.meta.lease("settle")?;
    let mut layers = pending(store, opts.retry)?;
    if let Some(only) = &opts.only {
        layers.retain(|l| only.contains(&l.digest));
    }
    if layers.is_empty() {
        return Ok(Vec::new());
    }
    tracing::info!(layers = layers.len(), "settling recipe layers");
    Ok(make_recipes(store, &layers, opts.max_ratio, opts.jobs))
}
