//! `mount`: a read-only overlay of an image's layer snapshots. `umount DIR`
//! releases it.

use crate::unpack::{snapshot_paths, UnpackError};
use nix::mount::{mount, MsFlags};
use std::path::Path;
use stowage_oci::Platform;
use stowage_store::Store;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error("mount {name} on {dir:?}: {detail}")]
    Mount {
        name: String,
        dir: std::path::PathBuf,
        detail: String,
    },
}

/// Mount, then hold a lease on the snapshots until `dir` is unmounted, so
/// GC never takes a layer from under a mount.
pub fn mount_image(
    store: &Store,
    name: &str,
    dir: &Path,
    platform: Option<&Platform>,
) -> Result<(), MountError> {
    let (image, paths) = snapshot_paths(store, name, platform)?;
    mount_paths(&image, &paths, dir)?;
    let ids: Vec<stowage_oci::Digest> = paths
        .iter()
        .filter_map(|p| p.parent()?.file_name()?.to_str())
        .filter_map(|h| stowage_oci::Digest::from_hex(h).ok())
        .collect();
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    store
        .meta
        .mount_lease(&abs.to_string_lossy(), &ids)
        .map_err(|e| MountError::Mount {
            name: image,
            dir: dir.to_path_buf(),
            detail: format!("mounted, but recording its lease failed: {e}"),
        })
}

fn mount_paths(name: &str, paths: &[std::path::PathBuf], dir: &Path) -> Result<(), MountError> {
    let name = name.to_string();
    let err = |detail: String| MountError::Mount {
        name: name.clone(),
        dir: dir.to_path_buf(),
        detail,
    };
    if !dir.is_dir() {
        return Err(err("mount point is not a directory".into()));
    }
    if paths.len() == 1 {
        // overlayfs wants two lower layers when there is no upper one.
        mount(
            Some(&paths[0]),
            dir,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| err(e.to_string()))?;
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| err(e.to_string()))?;
        return Ok(());
    }
    let lower: Vec<String> = paths
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    for l in &lower {
        if l.contains(':') || l.contains(',') {
            return Err(err(format!(
                "snapshot path {l:?} contains ':' or ',' which overlayfs options cannot carry"
            )));
        }
    }
    let data = format!("lowerdir={}", lower.join(":"));
    if data.len() >= 4096 {
        return Err(err(format!(
            "{} layers make an overlay option longer than a page",
            paths.len()
        )));
    }
    mount(
        Some("overlay"),
        dir,
        Some("overlay"),
        MsFlags::MS_RDONLY,
        Some(data.as_str()),
    )
    .map_err(|e| err(e.to_string()))
}
