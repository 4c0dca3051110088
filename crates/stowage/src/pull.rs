//! Pull: resolve a reference, choose platforms, and bring every layer in with
//! one streaming pass (download → sha256 of the blob → decompress → sha256 of
//! the tar → unpack). Nothing becomes visible until everything verified: blobs
//! wait in ingest/, snapshots in temporary directories, and the image record
//! is written last, in the same transaction as every other row.

pub(crate) mod commit;
pub(crate) mod fetch;

use crate::progress::Progress;
use fetch::{fetch_layer, FetchedLayer, LayerJob, OpenBlob};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use stowage_oci::spec::ImageManifest;
use stowage_oci::{parse_config, parse_manifest, Digest, Manifest, Platform, Reference};
use stowage_remote::{ClientOptions, RegistryClient, RemoteError};
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
    /// Under `recipe`, keep the blob when its recipe is larger than this share of it.
    pub recipe_max_ratio: f64,
    /// Under `recipe`, settle this image's layers (analyse, prove, drop the
    /// blobs) before returning. When false the image is usable with its
    /// blobs and [`crate::settle::settle`] does the rest later.
    pub settle_now: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: None,
            all_platforms: false,
            policy: Policy::Keep,
            max_concurrent: 3,
            client: ClientOptions::default(),
            recipe_max_ratio: 0.10,
            settle_now: false,
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
    /// Under `recipe`: what happened to each layer's blob.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recipes: Vec<crate::recipe::RecipeOutcome>,
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
    #[error(
        "pull {image}: the image is stored with its blobs, but settling recipes failed: {source}"
    )]
    Settle {
        image: String,
        source: crate::settle::SettleError,
    },
    #[error("pull {image}: layer {digest}: the layer's tar hashes to {actual} but the config lists diffID {expected}; the image is corrupt, nothing was stored")]
    DiffId {
        image: String,
        digest: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("pull {image}: cancelled")]
    Cancelled { image: String },
    #[error("pull {image}: store: {detail}")]
    Store { image: String, detail: String },
}

/// One platform manifest to bring in.
pub(crate) struct Target {
    pub(crate) digest: Digest,
    pub(crate) media_type: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) config_digest: Digest,
    pub(crate) config_bytes: Vec<u8>,
    pub(crate) layers: Vec<LayerJob>,
}

/// Pull `reference` into `store`.
pub fn pull(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<PullReport, PullError> {
    pull_cancellable(store, reference, opts, progress, &AtomicBool::new(false))
}

/// [`pull`] that gives up with [`PullError::Cancelled`] once `cancel` is set
/// (the CRI server sets it when every caller went away or the pull made no
/// progress for too long). Layer downloads check it between reads; nothing
/// is committed after it was seen.
pub fn pull_cancellable(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<PullReport, PullError> {
    let image = reference.to_string();
    // GC leaves alone what this pull writes until it is recorded.
    let _lease = store.meta.lease("pull").map_err(|e| PullError::Store {
        image: image.clone(),
        detail: e.to_string(),
    })?;
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
                let (os, arch, var) = stowage_oci::descriptor_platform(d);
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
        let infos = crate::image::layers_of(&m, &config)
            .map_err(|e| invalid("config", &cd, format!("{e} in manifest {digest}")))?;
        let layers = LayerJob::chain(
            infos,
            opts.policy.keeps_snapshot(),
            opts.policy.keeps_blob(),
        );
        targets.push(Target {
            digest,
            media_type,
            bytes,
            config_digest: cd,
            config_bytes,
            layers,
        });
    }

    // 4. Layers: skip what is present, fetch the rest in parallel (bounded),
    //    then commit everything in one go.
    let open_remote = |job: &LayerJob, offset: u64| -> Result<Box<dyn std::io::Read>, PullError> {
        let r = client
            .fetch_blob_from(repo, &job.digest, offset)
            .map_err(|source| PullError::Remote {
                image: image.clone(),
                source,
            })?;
        // A registry that ignores Range starts over: skip what we have.
        let skip = offset - r.offset().min(offset);
        let mut r: Box<dyn std::io::Read> = Box::new(r);
        if skip > 0 {
            std::io::copy(&mut std::io::Read::take(&mut r, skip), &mut std::io::sink()).map_err(
                |e| PullError::Layer {
                    image: image.clone(),
                    digest: job.digest.clone(),
                    detail: format!("resuming: {e}"),
                },
            )?;
        }
        Ok(r)
    };
    let name = image_name(reference);
    let record = ImageRecord {
        name: name.clone(),
        digest: top_digest.clone(),
        media_type: top_media.clone(),
        size: top.bytes.len() as u64,
        origin_registry: Some(reference.registry.clone()),
        origin_repository: Some(reference.repository.clone()),
        origin_plain_http: opts.client.plain_http,
        policy: opts.policy.as_str().to_string(),
        created: 0,
        updated: 0,
    };
    let top_blob = (top_digest.clone(), top_media.clone(), top.bytes.clone());
    let done = commit::bring_in(
        store,
        &image,
        &targets,
        &top_blob,
        std::slice::from_ref(&record),
        opts,
        &open_remote,
        progress,
        cancel,
    )?;
    let recipes = if opts.policy == Policy::Recipe && opts.settle_now {
        let only = targets
            .iter()
            .flat_map(|t| t.layers.iter().map(|l| l.info().digest))
            .collect();
        let settle = crate::settle::SettleOptions {
            max_ratio: opts.recipe_max_ratio,
            retry: true,
            only: Some(only),
            ..Default::default()
        };
        crate::settle::settle(store, &settle).map_err(|e| PullError::Settle {
            image: image.clone(),
            source: e,
        })?
    } else {
        Vec::new()
    };
    Ok(PullReport {
        name,
        digest: top_digest,
        media_type: top_media,
        manifests: targets.iter().map(|t| t.digest.clone()).collect(),
        layers_fetched: done.fetched,
        layers_present: done.present,
        bytes_fetched: done.bytes_fetched,
        recipes,
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
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_jobs(
    store: &Store,
    open: &OpenBlob<'_>,
    image: &str,
    jobs: Vec<LayerJob>,
    opts: &PullOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<Vec<FetchedLayer>, PullError> {
    let queue = Mutex::new(jobs.into_iter().collect::<VecDeque<_>>());
    let results: Mutex<Vec<FetchedLayer>> = Mutex::new(Vec::new());
    let first_error: Mutex<Option<PullError>> = Mutex::new(None);
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
                match fetch_layer(store, open, image, job, progress, cancel) {
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

/// Unpack the layers of a stored image whose snapshots are missing, from
/// the blobs in the store (the `compressed` policy unpacks on demand).
pub fn snapshots_on_demand(
    store: &Store,
    img: &crate::image::ResolvedImage,
) -> Result<(), PullError> {
    let name = img.record.name.clone();
    let layers: Vec<LayerJob> = img
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| LayerJob {
            digest: l.digest.clone(),
            media_type: l.media_type.clone(),
            size: l.size,
            diff_id: l.diff_id.clone(),
            chain_id: l.chain_id.clone(),
            parent: (i > 0).then(|| img.layers[i - 1].chain_id.clone()),
            want_snapshot: true,
            want_blob: false,
        })
        .collect();
    let config_bytes = store
        .content
        .read(&img.config_digest)
        .map_err(|e| PullError::Store {
            image: name.clone(),
            detail: e.to_string(),
        })?;
    let target = Target {
        digest: img.manifest_digest.clone(),
        media_type: img
            .manifest
            .media_type()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_else(|| stowage_oci::OCI_MANIFEST.to_string()),
        bytes: img.manifest_bytes.clone(),
        config_digest: img.config_digest.clone(),
        config_bytes,
        layers,
    };
    let top = store
        .content
        .read(&img.record.digest)
        .map_err(|e| PullError::Store {
            image: name.clone(),
            detail: e.to_string(),
        })?;
    let open_local = |job: &LayerJob, offset: u64| open_stored(store, &name, job, offset);
    let _lease = store.meta.lease("unpack").map_err(|e| PullError::Store {
        image: name.clone(),
        detail: e.to_string(),
    })?;
    let opts = PullOptions {
        policy: Policy::Keep,
        ..Default::default()
    };
    let cancel = AtomicBool::new(false);
    commit::bring_in(
        store,
        &name,
        std::slice::from_ref(&target),
        &(
            img.record.digest.clone(),
            img.record.media_type.clone(),
            top,
        ),
        std::slice::from_ref(&img.record),
        &opts,
        &open_local,
        &crate::progress::Silent,
        &cancel,
    )?;
    Ok(())
}

/// Open a layer blob in the content store at `offset` (import, unpack on demand).
pub(crate) fn open_stored(
    store: &Store,
    image: &str,
    job: &LayerJob,
    offset: u64,
) -> Result<Box<dyn std::io::Read>, PullError> {
    use std::io::{Seek, SeekFrom};
    let err = |e: &dyn std::fmt::Display| PullError::Store {
        image: image.to_string(),
        detail: e.to_string(),
    };
    let mut f = store.content.open_blob(&job.digest).map_err(|e| err(&e))?;
    f.seek(SeekFrom::Start(offset)).map_err(|e| err(&e))?;
    Ok(Box::new(std::io::BufReader::with_capacity(256 * 1024, f)))
}
