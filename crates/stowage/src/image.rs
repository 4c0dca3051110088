//! Looking images up by the names users type, and reading what they point at.

use stowage_oci::spec::{ImageConfiguration, ImageManifest};
use stowage_oci::{parse_config, parse_manifest, Digest, Manifest, Platform, Reference};
use stowage_store::snapshots::chain_ids;
use stowage_store::{ImageRecord, Store};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {0:?} not found (see `stowage images`)")]
    NotFound(String),
    #[error("{0:?} matches several images: {1}")]
    Ambiguous(String, String),
    #[error("image {name}: {what} {digest} is missing from the store; pull the image again")]
    Missing {
        name: String,
        what: &'static str,
        digest: Digest,
    },
    #[error("image {name}: {what} {digest} is malformed: {detail}")]
    Malformed {
        name: String,
        what: &'static str,
        digest: Digest,
        detail: String,
    },
    #[error("image {name}: no manifest for platform {platform} in the store (pulled for: {have})")]
    NoPlatform {
        name: String,
        platform: Platform,
        have: String,
    },
    #[error(transparent)]
    Store(#[from] stowage_store::StoreError),
    #[error(transparent)]
    Meta(#[from] stowage_store::MetaError),
}

/// One layer of a resolved image.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerInfo {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub diff_id: Digest,
    pub chain_id: Digest,
}

/// The layers of a platform manifest with the config's diffIDs and the
/// chain IDs they make: what pull, import, export, settle and inspect all
/// need. The error says which count or digest is wrong.
pub fn layers_of(
    manifest: &ImageManifest,
    config: &ImageConfiguration,
) -> Result<Vec<LayerInfo>, String> {
    let diff_ids: Vec<Digest> = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| d.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad diff_id: {e}"))?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(format!(
            "{} diff_ids for {} layers",
            diff_ids.len(),
            manifest.layers().len()
        ));
    }
    let chains = chain_ids(&diff_ids);
    manifest
        .layers()
        .iter()
        .zip(diff_ids.into_iter().zip(chains))
        .map(|(l, (diff_id, chain_id))| {
            Ok(LayerInfo {
                digest: Digest::try_from(l.digest())
                    .map_err(|e| format!("bad layer digest: {e}"))?,
                media_type: l.media_type().to_string(),
                size: l.size(),
                diff_id,
                chain_id,
            })
        })
        .collect()
}

/// An image with its platform manifest and config read from the store.
pub struct ResolvedImage {
    pub record: ImageRecord,
    pub manifest_digest: Digest,
    pub manifest_bytes: Vec<u8>,
    pub manifest: ImageManifest,
    pub config_digest: Digest,
    pub config: ImageConfiguration,
    pub layers: Vec<LayerInfo>,
}

impl ResolvedImage {
    /// Config + layers, compressed, as `ctr images ls` counts size.
    pub fn content_size(&self) -> u64 {
        self.manifest.config().size() + self.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

/// Find the image record a user means: an exact name, a normalized
/// reference (`debian` → `docker.io/library/debian:latest`), or a unique
/// prefix of its digest (as docker accepts image ids).
pub fn find_image(store: &Store, name: &str) -> Result<ImageRecord, ImageError> {
    if let Some(r) = store.meta.image(name)? {
        return Ok(r);
    }
    if let Ok(r) = name.parse::<Reference>() {
        let mut norm = r.clone();
        if norm.tag.is_none() && norm.digest.is_none() {
            norm.tag = Some("latest".into());
        }
        if let Some(rec) = store.meta.image(&norm.to_string())? {
            return Ok(rec);
        }
    }
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let all = store.meta.images()?;
        let hits: Vec<_> = all
            .into_iter()
            .filter(|i| i.digest.hex().starts_with(hex))
            .collect();
        let mut distinct: Vec<&Digest> = hits.iter().map(|i| &i.digest).collect();
        distinct.dedup();
        match distinct.len() {
            0 => {}
            1 => return Ok(hits[0].clone()),
            _ => {
                let names: Vec<_> = hits.iter().map(|i| i.name.as_str()).collect();
                return Err(ImageError::Ambiguous(name.to_string(), names.join(", ")));
            }
        }
    }
    Err(ImageError::NotFound(name.to_string()))
}

/// Resolve `name` to its manifest for `platform` (the host when `None`).
pub fn resolve_image(
    store: &Store,
    name: &str,
    platform: Option<&Platform>,
) -> Result<ResolvedImage, ImageError> {
    let record = find_image(store, name)?;
    resolve_record(store, record, platform)
}

pub fn resolve_record(
    store: &Store,
    record: ImageRecord,
    platform: Option<&Platform>,
) -> Result<ResolvedImage, ImageError> {
    let name = record.name.clone();
    let read = |what: &'static str, d: &Digest| -> Result<Vec<u8>, ImageError> {
        store.content.read(d).map_err(|_| ImageError::Missing {
            name: name.clone(),
            what,
            digest: d.clone(),
        })
    };
    let malformed = |what: &'static str, d: &Digest, detail: String| ImageError::Malformed {
        name: name.clone(),
        what,
        digest: d.clone(),
        detail,
    };
    let mut digest = record.digest.clone();
    let mut bytes = read("manifest", &digest)?;
    let mut declared = Some(record.media_type.clone());
    let manifest = loop {
        match parse_manifest(&bytes, declared.as_deref())
            .map_err(|e| malformed("manifest", &digest, e.to_string()))?
        {
            Manifest::Image(m) => break m,
            Manifest::Index(idx) => {
                let want = platform.cloned().unwrap_or_else(Platform::host);
                let mut have = Vec::new();
                let mut chosen = None;
                for m in idx.manifests() {
                    let Ok(d) = Digest::try_from(m.digest()) else {
                        continue;
                    };
                    let (os, arch, var) = stowage_oci::descriptor_platform(m);
                    if store.content.contains(&d) {
                        have.push(format!("{os}/{arch}"));
                        if chosen.is_none() && want.matches(&os, &arch, var.as_deref()) {
                            chosen = Some((d, m.media_type().to_string()));
                        }
                    }
                }
                let Some((d, mt)) = chosen else {
                    return Err(ImageError::NoPlatform {
                        name: name.clone(),
                        platform: want,
                        have: have.join(", "),
                    });
                };
                bytes = read("manifest", &d)?;
                digest = d;
                declared = Some(mt);
            }
        }
    };
    let config_digest = Digest::try_from(manifest.config().digest())
        .map_err(|e| malformed("manifest", &digest, e.to_string()))?;
    let config_bytes = read("config", &config_digest)?;
    let config = parse_config(&config_bytes)
        .map_err(|e| malformed("config", &config_digest, e.to_string()))?;
    let layers =
        layers_of(&manifest, &config).map_err(|e| malformed("config", &config_digest, e))?;
    Ok(ResolvedImage {
        record,
        manifest_digest: digest,
        manifest_bytes: bytes,
        manifest,
        config_digest,
        config,
        layers,
    })
}
