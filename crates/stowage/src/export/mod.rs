//! Export: write images into one archive every tool accepts, with their
//! original digests. Before a byte is written every blob is resolved, in
//! this order: present in the store → rebuilt exactly from snapshot +
//! recipe → fetched again from the registry the image came from (checked
//! with HEAD; `--no-fetch` forbids it) → with `--recompress` only, rebuilt
//! from the snapshot as a new gzip blob under a new digest (reported). A blob
//! with no way out fails the export at once, naming the image, the blob, the
//! policy that dropped it and what to do.

pub mod plan;
pub(crate) mod source;
mod write;

pub use plan::{plan_export, BlobPlan, BlobSource, ExportPlan, ImagePlan};
pub use write::write_archive;

use stowage_oci::Platform;

#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    pub platform: Option<Platform>,
    pub all_platforms: bool,
    /// Never contact a registry (air-gapped machines).
    pub no_fetch: bool,
    /// Allow rebuilding dropped blobs under new digests.
    pub recompress: bool,
    pub skip_manifest_json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error("export {image}: cannot produce {} blob(s); nothing was written:\n{}", .missing.len(), .missing.join("\n"))]
    Missing { image: String, missing: Vec<String> },
    #[error("export {image}: {detail}")]
    Failed { image: String, detail: String },
    #[error("export: {0}")]
    Io(String),
}
