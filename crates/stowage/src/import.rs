//! Import: OCI layout tars (what `export`, `ctr images export` and skopeo's
//! `oci-archive:` write) and docker-archive tars (`docker save`, skopeo's
//! `docker-archive:`). Every blob is verified against its name or hashed
//! into one, every layer against its diffID while it unpacks, and nothing is
//! visible until the whole archive checked out. Re-importing is idempotent.

use crate::progress::Silent;
use crate::pull::commit::bring_in;
use crate::pull::fetch::LayerJob;
use crate::pull::{PullError, PullOptions, Target};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::AtomicBool;
use stowage_archive::{
    read_small, ArchiveReader, DockerManifestEntry, MemberKind, ReadError, ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
};
use stowage_oci::{
    parse_config, parse_manifest, Compression, Digest, Manifest, Platform, Reference,
};
use stowage_store::images::{drop_form, remove_blob};
use stowage_store::{ImageRecord, Policy, Store, VerifiedBlob};

/// Largest single member accepted (a layer of a sane image is far below).
pub const MAX_MEMBER: u64 = 256 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("import: {0}")]
    Archive(#[from] ReadError),
    #[error("import: {0}")]
    Invalid(String),
    #[error("import: {0}")]
    Store(String),
    #[error("import: {0}")]
    Pull(#[from] PullError),
}

#[derive(Debug, Serialize)]
pub struct ImportedImage {
    pub name: String,
    pub digest: Digest,
}

#[derive(Debug, Serialize)]
pub struct ImportReport {
    pub images: Vec<ImportedImage>,
}

/// What the archive held, once read.
#[derive(Default)]
struct Members {
    blobs: HashMap<Digest, u64>,
    files: HashMap<String, (Digest, u64)>,
    links: HashMap<String, String>,
    index: Option<Vec<u8>>,
    docker: Option<Vec<u8>>,
    pending: Vec<VerifiedBlob>,
}

fn read_members(store: &Store, r: impl Read) -> Result<Members, ImportError> {
    let mut m = Members::default();
    let mut ar = ArchiveReader::new(r);
    ar.for_each(|member, data| -> Result<(), ImportError> {
        let serr =
            |e: &dyn std::fmt::Display| ImportError::Store(format!("member {}: {e}", member.name));
        match &member.kind {
            MemberKind::IndexJson => m.index = Some(read_small(data, &member.name)?),
            MemberKind::ManifestJson => m.docker = Some(read_small(data, &member.name)?),
            MemberKind::Blob(d) => {
                if !store.content.contains(d) && !m.blobs.contains_key(d) {
                    let mut w = store.content.writer(d).map_err(|e| serr(&e))?;
                    std::io::copy(data, &mut w).map_err(|e| serr(&e))?;
                    let v = w.verify(Some(member.size)).map_err(|e| {
                        ImportError::Invalid(format!(
                            "member {}: content does not match its name: {e}",
                            member.name
                        ))
                    })?;
                    m.pending.push(v);
                }
                m.blobs.insert(d.clone(), member.size);
            }
            MemberKind::File(name)
                if name.ends_with(".tar") || name.ends_with(".json") || name.contains("blobs/") =>
            {
                let v = store
                    .content
                    .ingest_unknown(data, MAX_MEMBER)
                    .map_err(|e| serr(&e))?;
                m.files.insert(name.clone(), (v.digest.clone(), v.size));
                if !store.content.contains(&v.digest) {
                    m.pending.push(v);
                }
            }
            MemberKind::LayerLink { target } => {
                m.links.insert(member.name.clone(), target.clone());
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(m)
}

fn sniff(store: &Store, m: &Members, d: &Digest) -> Compression {
    let mut head = [0u8; 4];
    let n = m
        .pending
        .iter()
        .find(|v| &v.digest == d)
        .map(|v| v.path().to_path_buf())
        .or_else(|| Some(store.content.path(d)))
        .and_then(|p| std::fs::File::open(p).ok())
        .and_then(|mut f| f.read(&mut head).ok())
        .unwrap_or(0);
    match &head[..n] {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ => Compression::None,
    }
}

/// Import the archive read from `r`.
pub fn import(
    store: &Store,
    r: impl Read,
    name: Option<&str>,
    policy: Policy,
) -> Result<ImportReport, ImportError> {
    let _lease = store
        .meta
        .lease("import")
        .map_err(|e| ImportError::Store(e.to_string()))?;
    let m = read_members(store, r)?;
    let have = |d: &Digest| {
        m.blobs.contains_key(d)
            || store.content.contains(d)
            || m.pending.iter().any(|v| &v.digest == d)
    };
    let bytes_of = |d: &Digest| -> Result<Vec<u8>, ImportError> {
        if let Some(v) = m.pending.iter().find(|v| &v.digest == d) {
            return std::fs::read(v.path()).map_err(|e| ImportError::Store(e.to_string()));
        }
        store.content.read(d).map_err(|_| {
            ImportError::Invalid(format!(
                "the archive points at blob {d}, which it does not contain"
            ))
        })
    };
    // (top digest, media type, names) per image.
    let mut tops: Vec<(Digest, String, Vec<String>)> = Vec::new();
    let mut synthesized: Vec<(Digest, Vec<u8>)> = Vec::new();
    if let Some(index) = &m.index {
        let v: serde_json::Value = serde_json::from_slice(index)
            .map_err(|e| ImportError::Invalid(format!("index.json: {e}")))?;
        for (i, d) in v["manifests"]
            .as_array()
            .ok_or_else(|| ImportError::Invalid("index.json has no manifests".into()))?
            .iter()
            .enumerate()
        {
            let digest: Digest = d["digest"]
                .as_str()
                .unwrap_or("")
                .parse()
                .map_err(|e| ImportError::Invalid(format!("index.json entry {i}: {e}")))?;
            let mt = d["mediaType"]
                .as_str()
                .unwrap_or(stowage_oci::OCI_MANIFEST)
                .to_string();
            let ann = &d["annotations"];
            let full = ann[ANNOTATION_IMAGE_NAME].as_str().map(str::to_string);
            let refname = ann[ANNOTATION_REF_NAME].as_str().map(str::to_string);
            let n = match (name, full, refname) {
                (Some(n), _, _) => n.to_string(),
                (None, Some(f), _) => f,
                (None, None, Some(r)) if r.contains('/') => r,
                (None, None, r) => format!(
                    "localhost/import/{}:{}",
                    &digest.hex()[..12],
                    r.unwrap_or_else(|| "latest".into())
                ),
            };
            tops.push((digest, mt, vec![n]));
        }
    } else if let Some(docker) = &m.docker {
        let entries: Vec<DockerManifestEntry> = serde_json::from_slice(docker)
            .map_err(|e| ImportError::Invalid(format!("manifest.json: {e}")))?;
        for e in entries {
            let resolve = |p: &str| -> Result<(Digest, u64), ImportError> {
                let p = p.trim_start_matches("./");
                let p = m.links.get(p).map(String::as_str).unwrap_or(p);
                if let Some(hex) = p.strip_prefix("blobs/sha256/") {
                    let d =
                        Digest::from_hex(hex).map_err(|e| ImportError::Invalid(e.to_string()))?;
                    let size = *m.blobs.get(&d).ok_or_else(|| {
                        ImportError::Invalid(format!(
                            "manifest.json names {p}, which the archive does not contain"
                        ))
                    })?;
                    return Ok((d, size));
                }
                m.files.get(p).cloned().ok_or_else(|| {
                    ImportError::Invalid(format!(
                        "manifest.json names {p}, which the archive does not contain"
                    ))
                })
            };
            let (cd, csize) = resolve(&e.config)?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let (ld, lsize) = resolve(l)?;
                let mt = match sniff(store, &m, &ld) {
                    Compression::Gzip => stowage_oci::OCI_LAYER_GZIP,
                    Compression::Zstd => stowage_oci::OCI_LAYER_ZSTD,
                    Compression::None => stowage_oci::OCI_LAYER_TAR,
                };
                layers.push(
                    serde_json::json!({"mediaType": mt, "digest": ld.to_string(), "size": lsize}),
                );
            }
            // Deterministic: the same archive always yields the same manifest digest.
            let manifest = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": stowage_oci::OCI_MANIFEST,
                "config": {"mediaType": stowage_oci::OCI_CONFIG, "digest": cd.to_string(), "size": csize},
                "layers": layers,
            }))
            .expect("json");
            let md = Digest::of(&manifest);
            let names = match name {
                Some(n) => vec![n.to_string()],
                None => e.repo_tags.clone().unwrap_or_default(),
            };
            let names = if names.is_empty() {
                vec![format!("localhost/import/{}:latest", &md.hex()[..12])]
            } else {
                names
            };
            synthesized.push((md.clone(), manifest));
            tops.push((md, stowage_oci::OCI_MANIFEST.to_string(), names));
        }
    } else {
        return Err(ImportError::Invalid(
            "the archive has neither index.json nor manifest.json: not an image archive".into(),
        ));
    }

    // Validate every image before anything is published.
    let mut plans = Vec::new();
    for (digest, mt, names) in &tops {
        let top = synthesized
            .iter()
            .find(|(d, _)| d == digest)
            .map(|(_, b)| b.clone())
            .map(Ok)
            .unwrap_or_else(|| bytes_of(digest))?;
        let mut manifests = Vec::new();
        match parse_manifest(&top, Some(mt))
            .map_err(|e| ImportError::Invalid(format!("manifest {digest}: {e}")))?
        {
            Manifest::Image(_) => manifests.push((digest.clone(), mt.clone(), top.clone())),
            Manifest::Index(idx) => {
                let host = Platform::host();
                for d in idx.manifests() {
                    let cd = Digest::try_from(d.digest())
                        .map_err(|e| ImportError::Invalid(e.to_string()))?;
                    let (os, arch, var) = stowage_oci::descriptor_platform(d);
                    if have(&cd)
                        && (manifests.is_empty() && host.matches(&os, &arch, var.as_deref())
                            || idx.manifests().len() == 1)
                    {
                        manifests.push((cd.clone(), d.media_type().to_string(), bytes_of(&cd)?));
                    }
                }
                if manifests.is_empty() {
                    return Err(ImportError::Invalid(format!(
                        "index {digest}: no manifest for this platform in the archive"
                    )));
                }
            }
        }
        let mut targets = Vec::new();
        for (md, mmt, bytes) in manifests {
            let Manifest::Image(man) = parse_manifest(&bytes, Some(&mmt))
                .map_err(|e| ImportError::Invalid(format!("manifest {md}: {e}")))?
            else {
                return Err(ImportError::Invalid(format!("manifest {md}: nested index")));
            };
            let cd = Digest::try_from(man.config().digest())
                .map_err(|e| ImportError::Invalid(e.to_string()))?;
            let config_bytes = bytes_of(&cd)?;
            if Digest::of(&config_bytes) != cd || config_bytes.len() as u64 != man.config().size() {
                return Err(ImportError::Invalid(format!(
                    "config {cd}: size or digest differs from the manifest"
                )));
            }
            let config = parse_config(&config_bytes)
                .map_err(|e| ImportError::Invalid(format!("config {cd}: {e}")))?;
            let infos = crate::image::layers_of(&man, &config)
                .map_err(|e| ImportError::Invalid(format!("config {cd}: {e}")))?;
            for l in &infos {
                let ld = &l.digest;
                let actual = m
                    .blobs
                    .get(ld)
                    .copied()
                    .or_else(|| m.files.values().find(|(d, _)| d == ld).map(|(_, s)| *s))
                    .or_else(|| store.content.size(ld));
                match actual {
                    None => {
                        return Err(ImportError::Invalid(format!(
                        "manifest {md} points at layer {ld}, which the archive does not contain"
                    )))
                    }
                    Some(s) if s != l.size => {
                        return Err(ImportError::Invalid(format!(
                            "manifest {md} says layer {ld} has {} bytes; the archive holds {s}",
                            l.size
                        )))
                    }
                    _ => {}
                }
            }
            let layers = LayerJob::chain(infos, policy.keeps_snapshot(), false);
            targets.push(Target {
                digest: md,
                media_type: mmt,
                bytes,
                config_digest: cd,
                config_bytes,
                layers,
            });
        }
        plans.push((digest.clone(), mt.clone(), top, names.clone(), targets));
    }

    // Publish the verified blobs; unpack (verifying diffIDs) and commit each image.
    let mut pending = m.pending;
    for v in pending.drain(..) {
        let d = v.digest.clone();
        let size = v.size;
        if !store.content.contains(&d) {
            v.publish().map_err(|e| ImportError::Store(e.to_string()))?;
        }
        store
            .meta
            .write(|tx| stowage_store::images::put_blob(tx, &d, size, "application/octet-stream"))
            .map_err(|e| ImportError::Store(e.to_string()))?;
    }
    let mut report = ImportReport { images: Vec::new() };
    let cancel = AtomicBool::new(false);
    let opts = PullOptions {
        policy,
        ..Default::default()
    };
    for (digest, mt, top, names, targets) in plans {
        let records: Vec<ImageRecord> = names
            .iter()
            .map(|n| {
                let n = n
                    .parse::<Reference>()
                    .map(|r| crate::pull::image_name(&r))
                    .unwrap_or_else(|_| n.clone());
                ImageRecord {
                    name: n,
                    digest: digest.clone(),
                    media_type: mt.clone(),
                    size: top.len() as u64,
                    origin_registry: None,
                    origin_repository: None,
                    origin_plain_http: false,
                    policy: policy.as_str().to_string(),
                    created: 0,
                    updated: 0,
                }
            })
            .collect();
        let open_local =
            |job: &LayerJob, offset: u64| crate::pull::open_stored(store, &names[0], job, offset);
        bring_in(
            store,
            &names[0],
            &targets,
            &(digest.clone(), mt.clone(), top.clone()),
            &records,
            &opts,
            &open_local,
            &Silent,
            &cancel,
        )?;
        if policy == Policy::Discard {
            // As containerd does with discard_unpacked_layers: the layer
            // blobs go once their snapshots are committed.
            for t in &targets {
                for l in &t.layers {
                    if store.snapshots.exists(&l.chain_id) {
                        store
                            .content
                            .remove(&l.digest)
                            .map_err(|e| ImportError::Store(e.to_string()))?;
                        store
                            .meta
                            .write(|tx| {
                                remove_blob(tx, &l.digest)?;
                                drop_form(
                                    tx,
                                    &l.digest,
                                    "blob",
                                    "dropped after import by policy discard",
                                )
                            })
                            .map_err(|e| ImportError::Store(e.to_string()))?;
                    }
                }
            }
        }
        for r in records {
            report.images.push(ImportedImage {
                name: r.name,
                digest: digest.clone(),
            });
        }
    }
    Ok(report)
}
