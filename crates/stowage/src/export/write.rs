//! Writing a planned export: recompress what must be (into temporary files,
//! since their digests go into the manifests), then stream every blob into
//! the archive, verified on the way.

use super::plan::{BlobPlan, BlobSource, ExportPlan};
use super::{ExportError, ExportOptions};
use flate2::write::GzEncoder;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use stowage_archive::{
    blob_path, ArchiveWriter, DockerManifestEntry, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME,
};
use stowage_oci::{Digest, HashingWriter, OCI_INDEX};
use stowage_store::Store;

#[derive(Debug, Serialize)]
pub struct ExportedImage {
    pub name: String,
    pub digest: Digest,
    /// Set when `--recompress` changed the digest.
    pub original_digest: Option<Digest>,
    pub recompressed: Vec<(Digest, Digest)>,
    pub refetched: usize,
    pub rebuilt: usize,
}

#[derive(Debug, Serialize)]
pub struct ExportReport {
    pub images: Vec<ExportedImage>,
    pub blobs: usize,
}

/// A recompressed layer waiting in a temporary file.
struct Recompressed {
    path: PathBuf,
    digest: Digest,
    size: u64,
}

impl Drop for Recompressed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn recompress(store: &Store, b: &BlobPlan) -> Result<Recompressed, String> {
    let layer = b.layer.as_ref().ok_or("not a layer")?;
    let recipe = b.recipe.as_ref().ok_or("no recipe")?;
    let path = store.root().join("ingest").join(format!(
        "recompress-{}-{}",
        std::process::id(),
        layer.digest.hex()
    ));
    let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let out = HashingWriter::new(std::io::BufWriter::new(file));
    let gz = GzEncoder::new(out, flate2::Compression::default());
    let mut tar = HashingWriter::new(gz);
    recipe
        .write_tar(&store.snapshots.path(&layer.chain_id), &mut tar)
        .map_err(|e| e.to_string())?;
    let diff = tar.hasher.finish();
    if diff != layer.diff_id {
        let _ = std::fs::remove_file(&path);
        return Err(format!(
            "the tar rebuilt from the snapshot hashes to {diff}, not to diffID {}",
            layer.diff_id
        ));
    }
    let mut out = tar.inner.finish().map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    let size = out.hasher.len();
    Ok(Recompressed {
        path,
        digest: out.hasher.finish(),
        size,
    })
}

fn gzip_media_type(old: &str) -> &'static str {
    if old.starts_with("application/vnd.docker") {
        stowage_oci::DOCKER_LAYER_GZIP
    } else {
        stowage_oci::OCI_LAYER_GZIP
    }
}

/// Replace the digests in `json`'s descriptor list `key` per `changes`.
fn rewrite(
    bytes: &[u8],
    key: &str,
    changes: &HashMap<Digest, (Digest, u64, Option<&'static str>)>,
) -> Result<Vec<u8>, String> {
    let mut v: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if let Some(list) = v.get_mut(key).and_then(|l| l.as_array_mut()) {
        for d in list {
            let old = d
                .get("digest")
                .and_then(|x| x.as_str())
                .and_then(|s| s.parse::<Digest>().ok());
            if let Some((new, size, mt)) = old.and_then(|o| changes.get(&o)) {
                d["digest"] = json!(new.to_string());
                d["size"] = json!(size);
                if let Some(mt) = mt {
                    d["mediaType"] = json!(mt);
                }
            }
        }
    }
    serde_json::to_vec(&v).map_err(|e| e.to_string())
}

fn tag_of(name: &str) -> Option<String> {
    if name.contains('@') {
        return None;
    }
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    name[slash..]
        .rfind(':')
        .map(|i| name[slash + i + 1..].to_string())
}

pub fn write_archive<W: Write>(
    store: &Store,
    plan: &ExportPlan,
    opts: &ExportOptions,
    out: W,
) -> Result<(W, ExportReport), ExportError> {
    let _lease = store
        .meta
        .lease("export")
        .map_err(|e| ExportError::Io(e.to_string()))?;
    let mut aw = ArchiveWriter::new(out).map_err(|e| ExportError::Io(e.to_string()))?;
    let mut index_entries = Vec::new();
    let mut docker_entries: Vec<DockerManifestEntry> = Vec::new();
    let mut report = ExportReport {
        images: Vec::new(),
        blobs: 0,
    };
    for (img, client) in plan.images.iter().zip(plan.clients.iter()) {
        let fail = |detail: String| ExportError::Failed {
            image: img.record.name.clone(),
            detail,
        };
        let mut temps: HashMap<Digest, Recompressed> = HashMap::new();
        let mut changes: HashMap<Digest, (Digest, u64, Option<&'static str>)> = HashMap::new();
        let mut exported = ExportedImage {
            name: img.record.name.clone(),
            digest: img.record.digest.clone(),
            original_digest: None,
            recompressed: Vec::new(),
            refetched: 0,
            rebuilt: 0,
        };
        for b in img.blobs() {
            if matches!(b.source, BlobSource::Recompress) && !temps.contains_key(&b.digest) {
                let r = recompress(store, b)
                    .map_err(|e| fail(format!("recompress layer {}: {e}", b.digest)))?;
                changes.insert(
                    b.digest.clone(),
                    (
                        r.digest.clone(),
                        r.size,
                        Some(gzip_media_type(&b.media_type)),
                    ),
                );
                exported
                    .recompressed
                    .push((b.digest.clone(), r.digest.clone()));
                temps.insert(b.digest.clone(), r);
            }
        }
        let repo = img.record.origin_repository.clone().unwrap_or_default();
        let mut manifest_changes = HashMap::new();
        let mut written_manifests = Vec::new();
        for m in &img.manifests {
            for b in std::iter::once(&m.config).chain(m.layers.iter()) {
                let (digest, size) = match temps.get(&b.digest) {
                    Some(r) => (r.digest.clone(), r.size),
                    None => (b.digest.clone(), b.size),
                };
                if aw.has(&digest) {
                    continue;
                }
                let res = match &b.source {
                    BlobSource::Recompress => {
                        let f = std::fs::File::open(&temps[&b.digest].path)
                            .map_err(|e| fail(e.to_string()))?;
                        aw.blob(&digest, size, std::io::BufReader::new(f))
                    }
                    source => {
                        match source {
                            BlobSource::Fetch => exported.refetched += 1,
                            BlobSource::Rebuild => exported.rebuilt += 1,
                            _ => {}
                        }
                        let r = super::source::open_exact(store, b, client.as_ref(), &repo)
                            .map_err(|e| fail(format!("{} {}: {e}", b.kind, b.digest)))?;
                        aw.blob(&digest, size, r)
                    }
                };
                res.map_err(|e| fail(format!("{} {}: {e}", b.kind, b.digest)))?;
                report.blobs += 1;
            }
            let bytes = if changes.is_empty() {
                m.bytes.clone()
            } else {
                rewrite(&m.bytes, "layers", &changes).map_err(fail)?
            };
            let md = Digest::of(&bytes);
            if md != m.digest {
                manifest_changes.insert(m.digest.clone(), (md.clone(), bytes.len() as u64, None));
            }
            aw.blob(&md, bytes.len() as u64, &bytes[..])
                .map_err(|e| fail(e.to_string()))?;
            let config_path = blob_path(&m.config.digest);
            let layer_paths = m
                .layers
                .iter()
                .map(|l| blob_path(temps.get(&l.digest).map(|r| &r.digest).unwrap_or(&l.digest)))
                .collect();
            written_manifests.push((
                md,
                m.media_type.clone(),
                bytes.len() as u64,
                config_path,
                layer_paths,
            ));
        }
        let (top_digest, top_media, top_size) = match &img.index {
            Some((d, bytes)) => {
                let bytes = if manifest_changes.is_empty() {
                    bytes.clone()
                } else {
                    rewrite(bytes, "manifests", &manifest_changes).map_err(fail)?
                };
                let nd = Digest::of(&bytes);
                aw.blob(&nd, bytes.len() as u64, &bytes[..])
                    .map_err(|e| fail(e.to_string()))?;
                let _ = d;
                (nd, img.record.media_type.clone(), bytes.len() as u64)
            }
            None => {
                let (d, mt, size, _, _) = &written_manifests[0];
                (d.clone(), mt.clone(), *size)
            }
        };
        if top_digest != img.record.digest {
            exported.original_digest = Some(img.record.digest.clone());
            exported.digest = top_digest.clone();
        }
        let mut ann = serde_json::Map::new();
        ann.insert(ANNOTATION_IMAGE_NAME.into(), json!(img.record.name));
        if let Some(t) = tag_of(&img.record.name) {
            ann.insert(ANNOTATION_REF_NAME.into(), json!(t));
        }
        if let Some(orig) = &exported.original_digest {
            ann.insert(
                "io.stowage.recompressed-from".into(),
                json!(orig.to_string()),
            );
        }
        index_entries.push(json!({"mediaType": top_media, "digest": top_digest.to_string(), "size": top_size, "annotations": ann}));
        for (_, _, _, config, layers) in written_manifests {
            let tags = tag_of(&img.record.name).map(|_| vec![img.record.name.clone()]);
            match docker_entries
                .iter_mut()
                .find(|e| e.config == config && e.layers == layers)
            {
                Some(e) => e
                    .repo_tags
                    .get_or_insert_with(Vec::new)
                    .extend(tags.unwrap_or_default()),
                None => docker_entries.push(DockerManifestEntry {
                    config,
                    repo_tags: tags,
                    layers,
                }),
            }
        }
        report.images.push(exported);
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index_entries});
    aw.file("index.json", &serde_json::to_vec(&index).unwrap())
        .map_err(|e| ExportError::Io(e.to_string()))?;
    if !opts.skip_manifest_json {
        aw.file(
            "manifest.json",
            &serde_json::to_vec(&docker_entries).unwrap(),
        )
        .map_err(|e| ExportError::Io(e.to_string()))?;
    }
    let out = aw.finish().map_err(|e| ExportError::Io(e.to_string()))?;
    Ok((out, report))
}
