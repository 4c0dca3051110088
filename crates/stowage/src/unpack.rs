//! `unpack`: the flattened root filesystem of an image, built from its layer
//! snapshots, for runc/crun.

use crate::image::{resolve_image, ImageError};
use std::path::{Path, PathBuf};
use stowage_layer::{flatten, ApplyOptions, FlattenReport};
use stowage_oci::Platform;
use stowage_store::Store;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("image {name}: layer {digest} has no snapshot in the store (policy {policy}); pull it again with --policy keep")]
    NoSnapshot {
        name: String,
        digest: String,
        policy: String,
    },
    #[error("unpack into {dir:?}: {detail}")]
    Target { dir: PathBuf, detail: String },
    #[error("unpack {name}: {detail}")]
    Apply { name: String, detail: String },
}

/// Snapshot directories of an image, bottom-most first.
pub fn snapshot_paths(
    store: &Store,
    name: &str,
    platform: Option<&Platform>,
) -> Result<(String, Vec<PathBuf>), UnpackError> {
    let img = resolve_image(store, name, platform)?;
    // `compressed` keeps blobs only: snapshots are made when first needed.
    if img
        .layers
        .iter()
        .any(|l| !store.snapshots.exists(&l.chain_id))
        && img
            .layers
            .iter()
            .all(|l| store.snapshots.exists(&l.chain_id) || store.content.contains(&l.digest))
    {
        crate::pull::snapshots_on_demand(store, &img).map_err(|e| UnpackError::Apply {
            name: img.record.name.clone(),
            detail: e.to_string(),
        })?;
    }
    let mut paths = Vec::new();
    for l in &img.layers {
        if !store.snapshots.exists(&l.chain_id) {
            return Err(UnpackError::NoSnapshot {
                name: img.record.name.clone(),
                digest: l.digest.to_string(),
                policy: img.record.policy.clone(),
            });
        }
        paths.push(store.snapshots.path(&l.chain_id));
    }
    Ok((img.record.name, paths))
}

/// Write the merged root filesystem of `name` into `dir` (created if
/// missing; it must be empty so nothing of the user's is overwritten).
pub fn unpack(
    store: &Store,
    name: &str,
    dir: &Path,
    platform: Option<&Platform>,
) -> Result<FlattenReport, UnpackError> {
    let (name, paths) = snapshot_paths(store, name, platform)?;
    let target = |detail: String| UnpackError::Target {
        dir: dir.to_path_buf(),
        detail,
    };
    match std::fs::read_dir(dir) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(target("directory is not empty".into()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| target(e.to_string()))?;
        }
        Err(e) => return Err(target(e.to_string())),
    }
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    flatten(&refs, dir, &ApplyOptions::default()).map_err(|e| UnpackError::Apply {
        name,
        detail: e.to_string(),
    })
}
