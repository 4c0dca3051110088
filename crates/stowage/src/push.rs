//! Push: upload an image to a registry with its original digests, whatever
//! forms the store keeps. Every blob is resolved first, as for an export
//! (present → rebuilt from snapshot + recipe → re-fetched from the origin);
//! a blob with no way out fails the push before anything is uploaded. Then
//! blobs the registry lacks are uploaded (it verifies each digest),
//! platform manifests by digest, and the top manifest or index under the tag.

use crate::export::{plan_export, BlobSource, ExportError, ExportOptions};
use crate::progress::Progress;
use serde::Serialize;
use std::io::Read;
use stowage_oci::{Digest, Platform, Reference};
use stowage_remote::{ClientOptions, RegistryClient, RemoteError};
use stowage_store::Store;

#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    pub platform: Option<Platform>,
    pub all_platforms: bool,
    /// Never contact the image's origin for a dropped blob.
    pub no_fetch: bool,
    /// How to reach the destination registry.
    pub client: ClientOptions,
}

#[derive(Debug, Serialize)]
pub struct PushReport {
    pub name: String,
    pub destination: String,
    pub digest: Digest,
    pub blobs_uploaded: usize,
    pub blobs_present: usize,
    pub bytes_uploaded: u64,
    pub rebuilt: usize,
    pub refetched: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Plan(#[from] ExportError),
    #[error("push {image} to {destination}: {source}")]
    Remote {
        image: String,
        destination: String,
        source: RemoteError,
    },
    #[error("push {image} to {destination}: {what} {digest}: {detail}")]
    Blob {
        image: String,
        destination: String,
        what: &'static str,
        digest: Digest,
        detail: String,
    },
    #[error("push {image}: the destination names digest {asked}, but the image is {actual}")]
    WrongDigest {
        image: String,
        asked: Digest,
        actual: Digest,
    },
}

/// Counts bytes for progress while they go to the registry.
struct Counted<'a, R> {
    inner: R,
    progress: &'a (dyn Progress + Sync),
    id: String,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(&self.id, n as u64);
        Ok(n)
    }
}

/// Push image `name` from the store to `dest`.
pub fn push(
    store: &Store,
    name: &str,
    dest: &Reference,
    opts: &PushOptions,
    progress: &(dyn Progress + Sync),
) -> Result<PushReport, PushError> {
    let export_opts = ExportOptions {
        platform: opts.platform.clone(),
        all_platforms: opts.all_platforms,
        no_fetch: opts.no_fetch,
        ..Default::default()
    };
    // Resolve everything before the first byte goes out.
    let plan = plan_export(store, &[name.to_string()], &export_opts, true)?;
    let _lease = store
        .meta
        .lease("push")
        .map_err(|e| ExportError::Io(e.to_string()))?;
    let img = &plan.images[0];
    let origin = plan.clients[0].as_ref();
    let origin_repo = img.record.origin_repository.clone().unwrap_or_default();
    let destination = dest.to_string();
    let remote = |source| PushError::Remote {
        image: img.record.name.clone(),
        destination: destination.clone(),
        source,
    };
    if let Some(d) = &dest.digest {
        if *d != img.record.digest {
            return Err(PushError::WrongDigest {
                image: img.record.name.clone(),
                asked: d.clone(),
                actual: img.record.digest.clone(),
            });
        }
    }
    let client = RegistryClient::new(&dest.registry, &opts.client).map_err(remote)?;
    let repo = &dest.repository;
    let mut report = PushReport {
        name: img.record.name.clone(),
        destination: destination.clone(),
        digest: img.record.digest.clone(),
        blobs_uploaded: 0,
        blobs_present: 0,
        bytes_uploaded: 0,
        rebuilt: 0,
        refetched: 0,
    };
    let mut done = std::collections::HashSet::new();
    for m in &img.manifests {
        for b in std::iter::once(&m.config).chain(m.layers.iter()) {
            if !done.insert(b.digest.clone()) {
                continue;
            }
            let blob_err = |detail: String| PushError::Blob {
                image: img.record.name.clone(),
                destination: destination.clone(),
                what: b.kind,
                digest: b.digest.clone(),
                detail,
            };
            if client.push_has_blob(repo, &b.digest).map_err(remote)? {
                report.blobs_present += 1;
                continue;
            }
            let r = crate::export::source::open_exact(store, b, origin, &origin_repo)
                .map_err(blob_err)?;
            match b.source {
                BlobSource::Rebuild => report.rebuilt += 1,
                BlobSource::Fetch => report.refetched += 1,
                _ => {}
            }
            let id = b.digest.short().to_string();
            progress.start(&id, &format!("{} {}", b.kind, b.digest.short()), b.size);
            let counted = Counted {
                inner: r,
                progress,
                id: id.clone(),
            };
            upload(&client, repo, &b.digest, b.size, counted)
                .map_err(|e| blob_err(e.to_string()))?;
            progress.finish(&id, "pushed");
            report.blobs_uploaded += 1;
            report.bytes_uploaded += b.size;
        }
        // Platform manifests by digest first, so the index never points at
        // something the registry lacks.
        if img.index.is_some() {
            client
                .push_manifest(repo, &m.digest.to_string(), &m.media_type, &m.bytes)
                .map_err(remote)?;
        }
    }
    let reference = dest
        .tag
        .clone()
        .unwrap_or_else(|| img.record.digest.to_string());
    let top = match &img.index {
        Some((_, bytes)) => bytes.clone(),
        None => img.manifests[0].bytes.clone(),
    };
    client
        .push_manifest(repo, &reference, &img.record.media_type, &top)
        .map_err(remote)?;
    Ok(report)
}

/// The registry client wants a `'static + Send` body; the progress counter
/// borrows. A scoped thread feeds a pipe from the borrowed reader.
fn upload<R: Read + Send>(
    client: &RegistryClient,
    repo: &str,
    digest: &Digest,
    size: u64,
    mut body: R,
) -> Result<(), String> {
    let (reader, mut writer) = std::io::pipe().map_err(|e| e.to_string())?;
    std::thread::scope(|s| {
        let feeder = s.spawn(move || std::io::copy(&mut body, &mut writer));
        let sent = client.push_blob(repo, digest, size, Box::new(reader));
        let fed = feeder
            .join()
            .map_err(|_| "reading the blob panicked".to_string())?;
        match (sent, fed) {
            (Ok(()), Ok(_)) => Ok(()),
            // A source error (a failed rebuild) explains a refused upload
            // best; a broken pipe only means the upload stopped reading.
            (_, Err(e)) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(format!("reading the blob: {e}"))
            }
            (Err(e), _) => Err(e.to_string()),
            (Ok(()), Err(e)) => Err(format!("reading the blob: {e}")),
        }
    })
}
