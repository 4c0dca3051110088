//! Layer tars for stowage: applying them safely into overlay-style
//! snapshots, resolving hard links across layers, and flattening a stack of
//! snapshots into one root filesystem.
//!
//! Layer tars come from untrusted registries. [`apply_layer`] therefore
//! treats every name as hostile: `..` is refused, absolute names land inside
//! the root, nothing is ever created through a symlink, and the sizes of
//! names and PAX records are bounded before they are read into memory.
//!
//! A pull wires the pieces like this:
//! ```no_run
//! # use std::path::Path;
//! # use stowage_layer::*;
//! # fn pull(blob: std::fs::File, lowers: &[&Path]) -> Result<(), Box<dyn std::error::Error>> {
//! let compressed = HashingReader::new(blob);
//! let mut tar = HashingReader::new(decompress(stowage_oci::Compression::Gzip, compressed)?);
//! let opts = ApplyOptions::default();
//! let report = apply_layer(&mut tar, Path::new("/snapshots/1.tmp/fs"), &opts)?;
//! resolve_deferred_links(Path::new("/snapshots/1.tmp/fs"), lowers, &report.deferred_links, &opts)?;
//! let diff_id = tar.digest();
//! # Ok(()) }
//! ```

mod apply;
mod error;
mod flatten;
mod links;
mod node;
mod paths;
mod pax;
mod recipe;
mod stream;
mod tarsplit;
mod tree;

pub use apply::{apply_layer, ApplyOptions, ApplyReport, DeferredLink};
pub use error::ApplyError;
pub use flatten::{flatten, FlattenReport};
pub use links::resolve_deferred_links;
pub use node::OPAQUE_XATTR;
pub use paths::MAX_PATH_LEN;
pub use pax::MAX_PAX_LEN;
pub use recipe::{Recipe, RecipeError, RECIPE_MEDIA_TYPE};
pub use stream::{decompress, HashingReader};
pub use tarsplit::{replay_tar, TarSplitRecorder};
