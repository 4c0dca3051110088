//! Image archives: the shape `ctr images export` writes, an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/…`) with a docker
//! `manifest.json` beside it, so one file is read by skopeo (`oci-archive:`
//! and `docker-archive:`), `ctr images import`, `docker load` and `podman
//! load`. Reading also accepts `docker save` archives (`manifest.json` with
//! per-layer `layer.tar` members).

mod reader;
mod writer;

pub use reader::{read_small, ArchiveReader, Member, MemberKind, ReadError, MAX_JSON};
pub use writer::{ArchiveWriter, WriteError};

/// `org.opencontainers.image.ref.name`
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// `io.containerd.image.name`
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// One entry of a docker `manifest.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DockerManifestEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// The path of a blob inside an archive.
pub fn blob_path(d: &stowage_oci::Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}
