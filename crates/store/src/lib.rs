//! The stowage store: one root directory holding
//!
//! ```text
//! meta.db                SQLite (WAL): images, blobs, layers, snapshots, forms, labels, leases
//! meta.db.lock           held while one opener sets the journal mode and migrates
//! gc.lock, settle.lock   one gc, one settle (and one waiting) at a time
//! locks/<hex>            one fetcher per layer across processes
//! blobs/sha256/<hex>     content store, written under ingest/ and renamed once verified
//! ingest/                partial writes
//! snapshots/<id>/fs      one unpacked layer (id = hex of its chain ID)
//! ```
//!
//! Front ends (CLI, CRI, registry server) hold no storage logic; they call
//! into [`Store`].

pub mod content;
pub mod gc;
pub mod images;
pub mod lock;
pub mod meta;
pub mod snapshots;

use std::path::{Path, PathBuf};

pub use content::{ContentError, ContentStore, IngestWriter, VerifiedBlob};
pub use images::{ImageRecord, LayerForm, LayerRecord};
pub use meta::{Meta, MetaError};
pub use snapshots::{SnapshotError, SnapshotRecord, Snapshots};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("store root {path:?}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Retention policy: which forms of a layer to keep once a pull commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Blob and snapshot.
    Keep,
    /// Snapshot and a recipe that rebuilds the blob exactly.
    Recipe,
    /// Snapshot only (containerd's `discard_unpacked_layers = true`).
    Discard,
    /// Blob only; unpack on demand.
    Compressed,
}

impl Policy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Policy::Keep => "keep",
            Policy::Recipe => "recipe",
            Policy::Discard => "discard",
            Policy::Compressed => "compressed",
        }
    }
    /// Whether a pull writes the blob. `recipe` writes it too: the blob is
    /// dropped only once a rebuild from snapshot + recipe has been proven.
    pub fn keeps_blob(&self) -> bool {
        matches!(self, Policy::Keep | Policy::Compressed | Policy::Recipe)
    }
    pub fn keeps_snapshot(&self) -> bool {
        !matches!(self, Policy::Compressed)
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "keep" => Ok(Policy::Keep),
            "recipe" => Ok(Policy::Recipe),
            "discard" => Ok(Policy::Discard),
            "compressed" => Ok(Policy::Compressed),
            _ => Err(format!(
                "unknown policy {s:?}: expected keep, recipe, discard or compressed"
            )),
        }
    }
}

/// An open store root. Cheap to share between threads.
pub struct Store {
    root: PathBuf,
    pub content: ContentStore,
    pub meta: Meta,
    pub snapshots: Snapshots,
}

impl Store {
    /// Open (creating if needed) the store at `root`. Opening also repairs
    /// what a crash can leave behind: stale ingest and temporary snapshot
    /// directories older than any live process are removed.
    pub fn open(root: impl AsRef<Path>) -> Result<Store, StoreError> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root).map_err(|source| StoreError::Root {
            path: root.clone(),
            source,
        })?;
        let content = ContentStore::open(&root)?;
        let snapshots = Snapshots::open(&root)?;
        let meta = Meta::open(&root.join("meta.db"))?;
        Ok(Store {
            root,
            content,
            meta,
            snapshots,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// The default root: `/var/lib/stowage` as root, `$XDG_DATA_HOME/stowage` otherwise.
pub fn default_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/stowage");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("stowage");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/stowage")
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
