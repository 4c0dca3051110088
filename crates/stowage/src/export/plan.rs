//! Deciding, before anything is written, where every blob of an export
//! comes from.

use super::{ExportError, ExportOptions};
use crate::image::{find_image, LayerInfo};
use serde::Serialize;
use stowage_layer::Recipe;
use stowage_oci::{parse_config, parse_manifest, Digest, Manifest, Platform};
use stowage_remote::{ClientOptions, RegistryClient};
use stowage_store::{ImageRecord, Store};

/// Where one blob's bytes will come from.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case", tag = "source")]
pub enum BlobSource {
    /// In the content store.
    Present,
    /// Rebuilt exactly from the snapshot and its recipe.
    Rebuild,
    /// Fetched again from the image's origin registry.
    Fetch,
    /// Rebuilt from the snapshot as a new gzip blob: new digest.
    Recompress,
    /// No way to produce it.
    Missing { reason: String },
}

#[derive(Clone, Debug, Serialize)]
pub struct BlobPlan {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    /// "index", "manifest", "config" or "layer".
    pub kind: &'static str,
    #[serde(flatten)]
    pub source: BlobSource,
    /// Only if the blob could be re-fetched, for `check` (not used to export).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetchable: Option<bool>,
    #[serde(skip)]
    pub layer: Option<LayerInfo>,
    #[serde(skip)]
    pub recipe: Option<Recipe>,
}

/// One platform manifest of an image.
#[derive(Clone, Debug)]
pub struct ManifestPlan {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub config: BlobPlan,
    pub layers: Vec<BlobPlan>,
}

#[derive(Clone, Debug)]
pub struct ImagePlan {
    pub record: ImageRecord,
    /// The index as pulled, when the image is one.
    pub index: Option<(Digest, Vec<u8>)>,
    pub manifests: Vec<ManifestPlan>,
}

impl ImagePlan {
    pub fn blobs(&self) -> Vec<&BlobPlan> {
        self.manifests
            .iter()
            .flat_map(|m| std::iter::once(&m.config).chain(m.layers.iter()))
            .collect()
    }
}

pub struct ExportPlan {
    pub images: Vec<ImagePlan>,
    pub(crate) clients: Vec<Option<RegistryClient>>,
}

fn origin_client(store: &Store, rec: &ImageRecord) -> Option<RegistryClient> {
    let _ = store;
    let registry = rec.origin_registry.as_ref()?;
    let opts = ClientOptions {
        plain_http: rec.origin_plain_http,
        ..Default::default()
    };
    RegistryClient::new(registry, &opts).ok()
}

/// Resolve every blob of `names` without writing anything. With `strict`
/// (an export), a blob that cannot be produced is an error listing all of
/// them; without (`check`), it is reported in the plan.
pub fn plan_export(
    store: &Store,
    names: &[String],
    opts: &ExportOptions,
    strict: bool,
) -> Result<ExportPlan, ExportError> {
    let mut images = Vec::new();
    let mut clients = Vec::new();
    for name in names {
        let rec = find_image(store, name)?;
        let client = if opts.no_fetch {
            None
        } else {
            origin_client(store, &rec)
        };
        let plan = plan_image(store, rec, opts, client.as_ref())?;
        if strict {
            let missing: Vec<String> = plan
                .blobs()
                .iter()
                .filter_map(|b| match &b.source {
                    BlobSource::Missing { reason } => Some(format!(
                        "  {} {} ({} bytes): {reason}",
                        b.kind, b.digest, b.size
                    )),
                    _ => None,
                })
                .collect();
            if !missing.is_empty() {
                return Err(ExportError::Missing {
                    image: plan.record.name.clone(),
                    missing,
                });
            }
        }
        images.push(plan);
        clients.push(client);
    }
    Ok(ExportPlan { images, clients })
}

fn plan_image(
    store: &Store,
    rec: ImageRecord,
    opts: &ExportOptions,
    client: Option<&RegistryClient>,
) -> Result<ImagePlan, ExportError> {
    let fail = |detail: String| ExportError::Failed {
        image: rec.name.clone(),
        detail,
    };
    let top = store
        .content
        .read(&rec.digest)
        .map_err(|e| fail(format!("top manifest: {e}")))?;
    let mut manifests = Vec::new();
    let mut index = None;
    match parse_manifest(&top, Some(&rec.media_type))
        .map_err(|e| fail(format!("manifest {}: {e}", rec.digest)))?
    {
        Manifest::Image(_) => {
            manifests.push((rec.digest.clone(), rec.media_type.clone(), top.clone()))
        }
        Manifest::Index(idx) => {
            let want = opts.platform.clone().unwrap_or_else(Platform::host);
            let mut chosen = false;
            for d in idx.manifests() {
                let digest = Digest::try_from(d.digest()).map_err(|e| fail(e.to_string()))?;
                let (os, arch, var) = stowage_oci::descriptor_platform(d);
                let take =
                    opts.all_platforms || (!chosen && want.matches(&os, &arch, var.as_deref()));
                if !take {
                    continue;
                }
                chosen = true;
                let bytes = match store.content.read(&digest) {
                    Ok(b) => b,
                    Err(_) => fetch_manifest(client, &rec, &digest).map_err(fail)?,
                };
                manifests.push((digest, d.media_type().to_string(), bytes));
            }
            if manifests.is_empty() {
                return Err(fail(format!(
                    "no manifest for platform {want} in the index"
                )));
            }
            index = Some((rec.digest.clone(), top.clone()));
        }
    }
    let mut out = Vec::new();
    for (digest, media_type, bytes) in manifests {
        let m = match parse_manifest(&bytes, Some(&media_type))
            .map_err(|e| fail(format!("manifest {digest}: {e}")))?
        {
            Manifest::Image(m) => m,
            Manifest::Index(_) => return Err(fail(format!("manifest {digest}: nested index"))),
        };
        let cd = Digest::try_from(m.config().digest()).map_err(|e| fail(e.to_string()))?;
        let config = blob_plan(
            store,
            client,
            &rec,
            &cd,
            m.config().size(),
            m.config().media_type().to_string(),
            "config",
            None,
            opts,
        );
        let layer_infos = layer_infos(store, &m, &cd).map_err(fail)?;
        let mut layers = Vec::new();
        for li in layer_infos {
            let p = blob_plan(
                store,
                client,
                &rec,
                &li.digest,
                li.size,
                li.media_type.clone(),
                "layer",
                Some(li.clone()),
                opts,
            );
            layers.push(p);
        }
        out.push(ManifestPlan {
            digest,
            media_type,
            bytes,
            config,
            layers,
        });
    }
    Ok(ImagePlan {
        record: rec,
        index,
        manifests: out,
    })
}

fn fetch_manifest(
    client: Option<&RegistryClient>,
    rec: &ImageRecord,
    d: &Digest,
) -> Result<Vec<u8>, String> {
    let c = client
        .ok_or_else(|| format!("manifest {d} is not in the store and fetching is not allowed"))?;
    let repo = rec.origin_repository.clone().unwrap_or_default();
    let m = c
        .fetch_manifest(&repo, &d.to_string())
        .map_err(|e| e.to_string())?;
    if Digest::of(&m.bytes) != *d {
        return Err(format!(
            "registry served a manifest that does not hash to {d}"
        ));
    }
    Ok(m.bytes)
}

fn layer_infos(
    store: &Store,
    m: &stowage_oci::spec::ImageManifest,
    cd: &Digest,
) -> Result<Vec<LayerInfo>, String> {
    let cbytes = store.content.read(cd).map_err(|e| format!("config: {e}"))?;
    let config = parse_config(&cbytes).map_err(|e| format!("config {cd}: {e}"))?;
    crate::image::layers_of(m, &config).map_err(|e| format!("config {cd}: {e}"))
}

/// The tar-split of a layer's tar, found under this layer or under any other
/// compression of the same tar (same diffID): the tar is what it rebuilds.
pub fn tar_split_for(store: &Store, l: &LayerInfo) -> Option<Recipe> {
    let mut r = layer_recipe(store, &l.digest).or_else(|| {
        let others = store.meta.layers_with_diff_id(&l.diff_id).ok()?;
        others
            .iter()
            .filter(|d| **d != l.digest)
            .find_map(|d| layer_recipe(store, d))
    })?;
    if r.layer != l.digest {
        r.layer = l.digest.clone();
        r.compression = stowage_oci::Compression::of_media_type(&l.media_type)?;
        r.codec = None;
    }
    Some(r)
}

/// The recipe stored for a layer, if any.
pub fn layer_recipe(store: &Store, layer: &Digest) -> Option<Recipe> {
    let forms = store.meta.layer_forms(layer).ok()?;
    let f = forms.iter().find(|f| f.form == "recipe")?;
    let d: Digest = f.reference.parse().ok()?;
    Recipe::from_bytes(&store.content.read(&d).ok()?).ok()
}

#[allow(clippy::too_many_arguments)]
fn blob_plan(
    store: &Store,
    client: Option<&RegistryClient>,
    rec: &ImageRecord,
    digest: &Digest,
    size: u64,
    media_type: String,
    kind: &'static str,
    layer: Option<LayerInfo>,
    opts: &ExportOptions,
) -> BlobPlan {
    let mut p = BlobPlan {
        digest: digest.clone(),
        size,
        media_type,
        kind,
        source: BlobSource::Present,
        fetchable: None,
        layer: layer.clone(),
        recipe: None,
    };
    if store.content.contains(digest) {
        return p;
    }
    let snapshot = layer
        .as_ref()
        .filter(|l| store.snapshots.exists(&l.chain_id));
    let recipe = layer.as_ref().and_then(|l| tar_split_for(store, l));
    if let (Some(_), Some(r)) = (snapshot, &recipe) {
        if r.rebuilds_blob() {
            p.source = BlobSource::Rebuild;
            p.recipe = recipe;
            return p;
        }
    }
    if let Some(c) = client {
        let repo = rec.origin_repository.clone().unwrap_or_default();
        let ok = matches!(c.head_blob(&repo, digest), Ok(Some(_)));
        p.fetchable = Some(ok);
        if ok {
            p.source = BlobSource::Fetch;
            return p;
        }
    }
    let why_dropped = store
        .meta
        .dropped_reason(digest, "blob")
        .ok()
        .flatten()
        .unwrap_or_else(|| format!("not in the store (image policy {})", rec.policy));
    if opts.recompress && snapshot.is_some() && recipe.is_some() {
        p.source = BlobSource::Recompress;
        p.recipe = recipe;
        return p;
    }
    let origin = match (&rec.origin_registry, &rec.origin_repository) {
        (Some(r), Some(p)) => format!("{r}/{p}"),
        _ => "no origin recorded".into(),
    };
    let fetch_note = if opts.no_fetch {
        "fetching was forbidden (--no-fetch)".to_string()
    } else {
        format!("the origin ({origin}) does not have it or cannot be reached")
    };
    let ways = if snapshot.is_some() && recipe.is_some() {
        "re-pull the image with --policy keep, or export with --recompress (new digests)"
    } else {
        "re-pull the image with --policy keep"
    };
    p.source = BlobSource::Missing {
        reason: format!("{why_dropped}; {fetch_note}; ways out: {ways}"),
    };
    p
}

/// A dropped layer that `--recompress` could rebuild (snapshot and tar-split kept).
pub fn has_snapshot_and_recipe(store: &Store, b: &BlobPlan) -> bool {
    match &b.layer {
        Some(l) => store.snapshots.exists(&l.chain_id) && tar_split_for(store, l).is_some(),
        None => false,
    }
}
