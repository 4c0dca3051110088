//! Pull: resolve a reference, choose platforms, and bring every layer in with
//! one streaming pass (download → sha256 of the blob → decompress → sha256 of
//! the tar → unpack). Nothing becomes visible until everything verified: blobs
//! wait in ingest/, snapshots in temporary directories, and the image record
//! is written last, in the same transaction as every other row.

mod fetch;

use crate::progress::Progress;
use fetch::{fetch_layer, FetchedLayer, LayerJob};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use stowage_layer::ApplyOptions;
use stowage_oci::spec::ImageManifest;
use stowage_oci::{parse_config, parse_manifest, Digest, Manifest, Platform, Reference};
use stowage_remote::{ClientOptions, RegistryClient, RemoteError};
use stowage_store::images::{drop_form, put_blob, put_form, put_image, put_layer, LayerRecord};
use stowage_store::snapshots::{chain_ids, put_snapshot, SnapshotRecord};
use stowage_store::{ImageRecord, Policy, Store};

/// Configs larger than this are refused.
pub const MAX_CONFIG_SIZE: u64 = 64 << 20;

#[derive(Clone, Debug)]
pub struct PullOptions {
    /// The platform to pull from an index; the host when `None`.
    pub platform: Option<Platform>,
    /// Keep every platform's content of an index.
    pub all_platforms: bool,
    pub policy: Policy,
    /// Layers downloaded at once.
    pub max_concurrent: usize,
    pub client: ClientOptions,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: None,
            all_platforms: false,
            policy: Policy::Keep,
            max_concurrent: 3,
            client: ClientOptions::default(),
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct PullReport {
    pub name: String,
    pub digest: Digest,
    pub media_type: String,
    pub manifests: Vec<Digest>,
    pub layers_fetched: usize,
    pub layers_present: usize,
    pub bytes_fetched: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("pull {image}: {source}")]
    Remote { image: String, source: RemoteError },
    #[error("pull {image}: {what} {digest}: {detail}")]
    Invalid {
        image: String,
        what: &'static str,
        digest: String,
        detail: String,
    },
    #[error("pull {image}: no manifest for platform {platform} (the index has: {have}); use --platform or --all-platforms")]
    NoPlatform {
        image: String,
        platform: Platform,
        have: String,
    },
    #[error("pull {image}: layer {digest}: {detail}")]
    Layer {
        image: String,
        digest: Digest,
        detail: String,
    },
    #[error("pull {image}: layer {digest}: the layer's tar hashes to {actual} but the config lists diffID {expected}; the image is corrupt, nothing was stored")]
    DiffId {
        image: String,
        digest: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("pull {image}: policy {policy} is not available yet")]
    Policy { image: String, policy: &'static str },
    #[error("pull {image}: cancelled")]
    Cancelled { image: String },
    #[error("pull {image}: store: {detail}")]
    Store { image: String, detail: String },
}

/// One platform manifest to bring in.
struct Target {
    digest: Digest,
    media_type: String,
    bytes: Vec<u8>,
    config_digest: Digest,
    config_bytes: Vec<u8>,
    layers: Vec<LayerJob>,
}

/// Pull `reference` into `store`.
pub fn pull(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<PullReport, PullError> {
    let image = reference.to_string();
    if opts.policy == Policy::Recipe {
        return Err(PullError::Policy {
            image,
            policy: "recipe",
        });
    }
    let remote = |source| PullError::Remote {
        image: image.clone(),
        source,
    };
    let invalid =
        |what: &'static str, digest: &dyn std::fmt::Display, detail: String| PullError::Invalid {
            image: image.clone(),
            what,
            digest: digest.to_string(),
            detail,
        };
    let client = RegistryClient::new(&reference.registry, &opts.client).map_err(remote)?;
    let repo = &reference.repository;

    // 1. The top object: an index or a manifest, verified against the digest
    //    we were given or the one the registry claims.
    let top = client
        .fetch_manifest(repo, &reference.object())
        .map_err(remote)?;
    let top_digest = Digest::of(&top.bytes);
    if let Some(want) = &reference.digest {
        if *want != top_digest {
            return Err(invalid(
                "manifest",
                want,
                format!("registry served bytes hashing to {top_digest}"),
            ));
        }
    }
    if let Some(claimed) = &top.claimed_digest {
        if claimed.starts_with("sha256:") && *claimed != top_digest.to_string() {
            return Err(invalid(
                "manifest",
                claimed,
                format!("registry claims this digest but its bytes hash to {top_digest}"),
            ));
        }
    }
    let parsed = parse_manifest(&top.bytes, top.media_type.as_deref())
        .map_err(|e| invalid("manifest", &top_digest, format!("{e}")))?;
    let top_media = declared_media_type(
        &top.bytes,
        top.media_type.as_deref(),
        matches!(parsed, Manifest::Index(_)),
    );

    // 2. Platform manifests.
    let mut manifests: Vec<(Digest, String, Vec<u8>, ImageManifest)> = Vec::new();
    match parsed {
        Manifest::Image(m) => {
            manifests.push((top_digest.clone(), top_media.clone(), top.bytes.clone(), m))
        }
        Manifest::Index(idx) => {
            let want = opts.platform.clone().unwrap_or_else(Platform::host);
            let mut have = Vec::new();
            for d in idx.manifests() {
                let p = d.platform().as_ref();
                let (os, arch, var) = p
                    .map(|p| {
                        (
                            p.os().to_string(),
                            p.architecture().to_string(),
                            p.variant().clone(),
                        )
                    })
                    .unwrap_or_default();
                have.push(format!("{os}/{arch}"));
                let chosen = opts.all_platforms
                    || (manifests.is_empty() && want.matches(&os, &arch, var.as_deref()));
                if !chosen {
                    continue;
                }
                let digest = Digest::try_from(d.digest())
                    .map_err(|e| invalid("index", &top_digest, e.to_string()))?;
                let child = client
                    .fetch_manifest(repo, &digest.to_string())
                    .map_err(remote)?;
                let actual = Digest::of(&child.bytes);
                if actual != digest || child.bytes.len() as u64 != d.size() {
                    return Err(invalid(
                        "manifest",
                        &digest,
                        format!(
                            "registry served {} bytes hashing to {actual}",
                            child.bytes.len()
                        ),
                    ));
                }
                let declared = d.media_type().to_string();
                match parse_manifest(&child.bytes, Some(&declared))
                    .map_err(|e| invalid("manifest", &digest, e.to_string()))?
                {
                    Manifest::Image(m) => manifests.push((digest, declared, child.bytes, m)),
                    Manifest::Index(_) => {
                        return Err(invalid(
                            "manifest",
                            &digest,
                            "nested indexes are not supported".into(),
                        ))
                    }
                }
            }
            if manifests.is_empty() {
                return Err(PullError::NoPlatform {
                    image,
                    platform: want,
                    have: have.join(", "),
                });
            }
        }
    }

    // 3. Configs and the layer jobs they imply.
    let mut targets = Vec::new();
    for (digest, media_type, bytes, m) in manifests {
        let cd = Digest::try_from(m.config().digest())
            .map_err(|e| invalid("manifest", &digest, e.to_string()))?;
        if m.config().size() > MAX_CONFIG_SIZE {
            return Err(invalid(
                "config",
                &cd,
                format!(
                    "declares {} bytes, more than the {MAX_CONFIG_SIZE} allowed",
                    m.config().size()
                ),
            ));
        }
        let config_bytes = if store.content.contains(&cd) {
            store.content.read(&cd).map_err(|e| PullError::Store {
                image: image.clone(),
                detail: e.to_string(),
            })?
        } else {
            client
                .fetch_small_blob(repo, &cd, MAX_CONFIG_SIZE)
                .map_err(remote)?
        };
        let actual = Digest::of(&config_bytes);
        if actual != cd || config_bytes.len() as u64 != m.config().size() {
            return Err(invalid(
                "config",
                &cd,
                format!(
                    "registry served {} bytes hashing to {actual}",
                    config_bytes.len()
                ),
            ));
        }
        let config =
            parse_config(&config_bytes).map_err(|e| invalid("config", &cd, e.to_string()))?;
        let diff_ids: Vec<Digest> = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| d.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| invalid("config", &cd, format!("bad diff_id: {e}")))?;
        if diff_ids.len() != m.layers().len() {
            return Err(invalid(
                "config",
                &cd,
                format!(
                    "lists {} diff_ids for {} layers in manifest {digest}",
                    diff_ids.len(),
                    m.layers().len()
                ),
            ));
        }
        let chains = chain_ids(&diff_ids);
        let mut layers = Vec::new();
        for (i, l) in m.layers().iter().enumerate() {
            let ld = Digest::try_from(l.digest())
                .map_err(|e| invalid("manifest", &digest, e.to_string()))?;
            layers.push(LayerJob {
                digest: ld,
                media_type: l.media_type().to_string(),
                size: l.size(),
                diff_id: diff_ids[i].clone(),
                chain_id: chains[i].clone(),
                parent: (i > 0).then(|| chains[i - 1].clone()),
                want_snapshot: opts.policy.keeps_snapshot(),
                want_blob: opts.policy.keeps_blob(),
            });
        }
        targets.push(Target {
            digest,
            media_type,
            bytes,
            config_digest: cd,
            config_bytes,
            layers,
        });
    }

    // 4. Layers: skip what is present, fetch the rest in parallel (bounded).
    let mut jobs: Vec<LayerJob> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut present = 0;
    for t in &targets {
        for l in &t.layers {
            if !seen.insert((l.chain_id.clone(), l.digest.clone())) {
                continue;
            }
            let have_snap = !l.want_snapshot
                || (store.snapshots.exists(&l.chain_id)
                    && store.meta.snapshot(&l.chain_id).ok().flatten().is_some());
            let have_blob = !l.want_blob || store.content.contains(&l.digest);
            if have_snap && have_blob {
                present += 1;
                continue;
            }
            let mut job = l.clone();
            job.want_snapshot = !have_snap;
            job.want_blob = !have_blob;
            jobs.push(job);
        }
    }
    let fetched = run_jobs(store, &client, repo, &image, jobs, opts, progress)?;

    // 5. Commit: snapshots bottom-up (hard links into lower layers are
    //    resolved once the lower layer is in place), then blobs, then rows.
    let apply_opts = ApplyOptions::default();
    let mut by_key: HashMap<(Digest, Digest), FetchedLayer> = fetched
        .into_iter()
        .map(|f| ((f.job.chain_id.clone(), f.job.digest.clone()), f))
        .collect();
    let store_err = |e: &dyn std::fmt::Display| PullError::Store {
        image: image.clone(),
        detail: e.to_string(),
    };
    let mut committed: Vec<FetchedLayer> = Vec::new();
    for t in &targets {
        for (i, l) in t.layers.iter().enumerate() {
            let Some(mut f) = by_key.remove(&(l.chain_id.clone(), l.digest.clone())) else {
                continue;
            };
            if let Some(tmp) = f.snapshot.take() {
                if !f.deferred_links.is_empty() {
                    let lowers: Vec<std::path::PathBuf> = t.layers[..i]
                        .iter()
                        .rev()
                        .map(|x| store.snapshots.path(&x.chain_id))
                        .collect();
                    let lower_refs: Vec<&std::path::Path> =
                        lowers.iter().map(|p| p.as_path()).collect();
                    stowage_layer::resolve_deferred_links(
                        &tmp.fs(),
                        &lower_refs,
                        &f.deferred_links,
                        &apply_opts,
                    )
                    .map_err(|e| PullError::Layer {
                        image: image.clone(),
                        digest: l.digest.clone(),
                        detail: e.to_string(),
                    })?;
                }
                store
                    .snapshots
                    .commit(tmp, &l.chain_id)
                    .map_err(|e| store_err(&e))?;
            }
            committed.push(f);
        }
    }
    for t in &targets {
        store
            .content
            .put(&t.config_digest, &t.config_bytes)
            .map_err(|e| store_err(&e))?;
        store
            .content
            .put(&t.digest, &t.bytes)
            .map_err(|e| store_err(&e))?;
    }
    store
        .content
        .put(&top_digest, &top.bytes)
        .map_err(|e| store_err(&e))?;
    for f in committed.iter_mut() {
        if let Some(b) = f.blob.take() {
            b.publish().map_err(|e| store_err(&e))?;
        }
    }
    let name = image_name(reference);
    let record = ImageRecord {
        name: name.clone(),
        digest: top_digest.clone(),
        media_type: top_media.clone(),
        size: top.bytes.len() as u64,
        origin_registry: Some(reference.registry.clone()),
        origin_repository: Some(reference.repository.clone()),
        policy: opts.policy.as_str().to_string(),
        created: 0,
        updated: 0,
    };
    let bytes_fetched = committed.iter().map(|f| f.bytes_fetched).sum();
    store
        .meta
        .write(|tx| {
            put_blob(tx, &top_digest, top.bytes.len() as u64, &top_media)?;
            for t in &targets {
                put_blob(tx, &t.digest, t.bytes.len() as u64, &t.media_type)?;
                put_blob(
                    tx,
                    &t.config_digest,
                    t.config_bytes.len() as u64,
                    "application/vnd.oci.image.config.v1+json",
                )?;
                for l in &t.layers {
                    put_layer(
                        tx,
                        &LayerRecord {
                            digest: l.digest.clone(),
                            diff_id: l.diff_id.clone(),
                            media_type: l.media_type.clone(),
                            size: l.size,
                        },
                    )?;
                }
            }
            for f in &committed {
                let j = &f.job;
                if let Some(r) = &f.report {
                    put_snapshot(
                        tx,
                        &SnapshotRecord {
                            id: j.chain_id.clone(),
                            parent: j.parent.clone(),
                            diff_id: j.diff_id.clone(),
                            size: r.bytes,
                            inodes: r.entries,
                            created: 0,
                        },
                    )?;
                    put_form(tx, &j.digest, "snapshot", &j.chain_id.to_string(), r.bytes)?;
                }
                if j.want_blob {
                    put_blob(tx, &j.digest, j.size, &j.media_type)?;
                    put_form(tx, &j.digest, "blob", &j.digest.to_string(), j.size)?;
                } else if opts.policy == Policy::Discard && !store.content.contains(&j.digest) {
                    drop_form(
                        tx,
                        &j.digest,
                        "blob",
                        "dropped after unpacking by policy discard (discard_unpacked_layers)",
                    )?;
                }
            }
            put_image(tx, &record)
        })
        .map_err(|e| store_err(&e))?;
    Ok(PullReport {
        name,
        digest: top_digest,
        media_type: top_media,
        manifests: targets.iter().map(|t| t.digest.clone()).collect(),
        layers_fetched: committed.len(),
        layers_present: present,
        bytes_fetched,
    })
}

/// The name an image is recorded under: `registry/repo:tag` or `registry/repo@digest`.
pub fn image_name(r: &Reference) -> String {
    let mut n = r.clone();
    if n.tag.is_none() && n.digest.is_none() {
        n.tag = Some("latest".into());
    }
    n.to_string()
}

fn declared_media_type(bytes: &[u8], header: Option<&str>, is_index: bool) -> String {
    let inner = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        });
    inner
        .or_else(|| {
            header
                .filter(|h| stowage_oci::is_index(h) || stowage_oci::is_manifest(h))
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            if is_index {
                stowage_oci::OCI_INDEX
            } else {
                stowage_oci::OCI_MANIFEST
            }
            .to_string()
        })
}

/// Run layer jobs on `opts.max_concurrent` threads; the first failure stops
/// the rest and is returned, and everything fetched so far is dropped.
fn run_jobs(
    store: &Store,
    client: &RegistryClient,
    repo: &str,
    image: &str,
    jobs: Vec<LayerJob>,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Vec<FetchedLayer>, PullError> {
    let queue = Mutex::new(jobs.into_iter().collect::<VecDeque<_>>());
    let results: Mutex<Vec<FetchedLayer>> = Mutex::new(Vec::new());
    let first_error: Mutex<Option<PullError>> = Mutex::new(None);
    let cancel = AtomicBool::new(false);
    let workers = opts.max_concurrent.max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if cancel.load(Ordering::Relaxed) {
                    return;
                }
                let Some(job) = queue.lock().unwrap().pop_front() else {
                    return;
                };
                match fetch_layer(store, client, repo, image, job, progress, &cancel) {
                    Ok(f) => results.lock().unwrap().push(f),
                    Err(e) => {
                        cancel.store(true, Ordering::Relaxed);
                        let mut slot = first_error.lock().unwrap();
                        // A real cause beats the "cancelled" of the others.
                        if slot.is_none() || matches!(*slot, Some(PullError::Cancelled { .. })) {
                            *slot = Some(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(e);
    }
    Ok(results.into_inner().unwrap())
}
