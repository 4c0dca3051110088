//! What the registry endpoint of `stowage serve` serves to peers: a
//! manifest by tag or digest, a blob by digest, with the original bytes
//! whatever forms the store keeps (a layer kept as snapshot + recipe is
//! rebuilt as it streams; the endpoint checks the digest as it goes).

use crate::export::{plan::layer_recipe, BlobPlan, BlobSource};
use crate::image::LayerInfo;
use std::io::Read;
use stowage_oci::{parse_manifest, Digest};
use stowage_store::{ImageRecord, Store};

/// Why something cannot be served.
#[derive(Debug)]
pub enum PeerMiss {
    /// Not in the store (in no form that gives its exact bytes).
    Unknown(String),
    Failed(String),
}

/// The stored image `reference` (a tag) of `repository` means: under the
/// registry `ns` when the client names one (containerd does, to mirrors),
/// else the one image of that repository and tag whatever its registry.
pub fn find_image(
    store: &Store,
    ns: Option<&str>,
    repository: &str,
    tag: &str,
) -> Result<Option<ImageRecord>, PeerMiss> {
    let images = store
        .meta
        .images()
        .map_err(|e| PeerMiss::Failed(e.to_string()))?;
    let want = format!("{repository}:{tag}");
    let mut found: Vec<ImageRecord> = images
        .into_iter()
        .filter(|i| match ns {
            Some(ns) => i.name == format!("{ns}/{want}"),
            None => i.name.split_once('/').map(|(_, rest)| rest) == Some(want.as_str()),
        })
        .collect();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(PeerMiss::Unknown(format!(
            "{want} is stored from several registries ({}); name one with ?ns=",
            found
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A manifest or index: `(bytes, media type, digest)`.
pub fn manifest(
    store: &Store,
    ns: Option<&str>,
    repository: &str,
    reference: &str,
) -> Result<(Vec<u8>, String, Digest), PeerMiss> {
    let (digest, declared) = match reference.parse::<Digest>() {
        Ok(d) => (d, None),
        Err(_) => match find_image(store, ns, repository, reference)? {
            Some(img) => (img.digest, Some(img.media_type)),
            None => {
                return Err(PeerMiss::Unknown(format!(
                    "no image {repository}:{reference} in this store"
                )))
            }
        },
    };
    let stored = store.meta.blob_media_type(&digest).ok().flatten();
    let manifest_like = |m: &str| m.contains("manifest") || m.contains("index");
    let size = store
        .content
        .open_blob(&digest)
        .and_then(|f| {
            f.metadata().map_err(|e| stowage_store::ContentError::Io {
                path: store.content.path(&digest),
                op: "stat",
                source: e,
            })
        })
        .map(|m| m.len())
        .map_err(|_| PeerMiss::Unknown(format!("manifest {digest} is not in this store")))?;
    // Layers and configs are never served as manifests (nor read whole).
    if size > stowage_remote::MAX_MANIFEST_SIZE
        || stored.as_deref().is_some_and(|m| !manifest_like(m))
    {
        return Err(PeerMiss::Unknown(format!("{digest} is not a manifest")));
    }
    let bytes = store
        .content
        .read(&digest)
        .map_err(|_| PeerMiss::Unknown(format!("manifest {digest} is not in this store")))?;
    let media_type = declared.or(stored).unwrap_or_default();
    // Only manifests and indexes are served as manifests, never layers.
    let parsed = parse_manifest(
        &bytes,
        Some(&media_type)
            .filter(|m| !m.is_empty())
            .map(|m| m.as_str()),
    )
    .map_err(|_| PeerMiss::Unknown(format!("{digest} is not a manifest")))?;
    let media_type = if media_type.is_empty() {
        match parsed {
            stowage_oci::Manifest::Index(_) => stowage_oci::OCI_INDEX.to_string(),
            stowage_oci::Manifest::Image(_) => stowage_oci::OCI_MANIFEST.to_string(),
        }
    } else {
        media_type
    };
    Ok((bytes, media_type, digest))
}

/// A blob's exact bytes: from the content store, or rebuilt from a layer's
/// snapshot and recipe.
pub fn blob(store: &Store, digest: &Digest) -> Result<(u64, Box<dyn Read + Send>), PeerMiss> {
    if let Ok(f) = store.content.open_blob(digest) {
        let size = f
            .metadata()
            .map_err(|e| PeerMiss::Failed(e.to_string()))?
            .len();
        return Ok((
            size,
            Box::new(std::io::BufReader::with_capacity(256 * 1024, f)),
        ));
    }
    let fail = |e: stowage_store::MetaError| PeerMiss::Failed(e.to_string());
    let recipe = layer_recipe(store, digest).filter(|r| r.rebuilds_blob());
    let layer = match store.meta.layer(digest).map_err(fail)? {
        Some(rec) => store
            .meta
            .snapshots_with_diff_id(&rec.diff_id)
            .map_err(fail)?
            .into_iter()
            .find(|id| store.snapshots.exists(id))
            .map(|chain_id| LayerInfo {
                digest: rec.digest,
                media_type: rec.media_type,
                size: rec.size,
                diff_id: rec.diff_id,
                chain_id,
            }),
        None => None,
    };
    let (Some(recipe), Some(layer)) = (recipe, layer) else {
        let why = store
            .meta
            .dropped_reason(digest, "blob")
            .ok()
            .flatten()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        return Err(PeerMiss::Unknown(format!(
            "blob {digest} is not in this store in a form that gives its exact bytes{why}"
        )));
    };
    let plan = BlobPlan {
        digest: digest.clone(),
        size: layer.size,
        media_type: layer.media_type.clone(),
        kind: "layer",
        source: BlobSource::Rebuild,
        fetchable: None,
        layer: Some(layer),
        recipe: Some(recipe),
    };
    let r = crate::export::source::open_exact(store, &plan, None, "").map_err(PeerMiss::Failed)?;
    Ok((plan.size, r))
}
