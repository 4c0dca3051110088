//! One layer, one pass: the registry's bytes flow through a size bound, the
//! blob hash (and the ingest file, when the blob is kept), the decompressor,
//! the diffID hash and the unpacker, in a single streaming read.

use super::PullError;
use crate::progress::Progress;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use stowage_layer::{
    apply_layer, decompress, ApplyOptions, ApplyReport, HashingReader, Recipe, TarSplitRecorder,
};
use stowage_oci::{Compression, Digest, Hasher};
use stowage_store::snapshots::TempSnapshot;
use stowage_store::{IngestWriter, Store, VerifiedBlob};

#[derive(Clone, Debug)]
pub(crate) struct LayerJob {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub diff_id: Digest,
    pub chain_id: Digest,
    pub parent: Option<Digest>,
    pub want_snapshot: bool,
    pub want_blob: bool,
}

impl LayerJob {
    /// The layers of one manifest to bring in, bottom first, each with its
    /// parent snapshot (the chain ID of the layer below).
    pub(crate) fn chain(
        layers: Vec<crate::image::LayerInfo>,
        want_snapshot: bool,
        want_blob: bool,
    ) -> Vec<LayerJob> {
        let mut parent = None;
        layers
            .into_iter()
            .map(|l| LayerJob {
                parent: parent.replace(l.chain_id.clone()),
                digest: l.digest,
                media_type: l.media_type,
                size: l.size,
                diff_id: l.diff_id,
                chain_id: l.chain_id,
                want_snapshot,
                want_blob,
            })
            .collect()
    }

    pub(crate) fn info(&self) -> crate::image::LayerInfo {
        crate::image::LayerInfo {
            digest: self.digest.clone(),
            media_type: self.media_type.clone(),
            size: self.size,
            diff_id: self.diff_id.clone(),
            chain_id: self.chain_id.clone(),
        }
    }
}

pub(crate) struct FetchedLayer {
    pub job: LayerJob,
    pub snapshot: Option<TempSnapshot>,
    pub report: Option<ApplyReport>,
    pub blob: Option<VerifiedBlob>,
    pub recipe: Option<Recipe>,
    pub bytes_fetched: u64,
}

/// The compressed side: bounds the stream to the descriptor's size, hashes
/// it, copies it to the ingest file if the blob is kept, reports progress
/// and stops when the pull is cancelled.
struct Source<'a, R> {
    inner: R,
    /// Reopens the stream at an offset after a connection drop (HTTP Range).
    reopen: &'a dyn Fn(u64) -> Result<R, String>,
    resumes: u32,
    size: u64,
    remaining: u64,
    overrun: bool,
    hasher: Hasher,
    ingest: Option<IngestWriter>,
    progress: &'a dyn Progress,
    id: &'a str,
    cancel: &'a AtomicBool,
}

impl<R: Read> Read for Source<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("pull cancelled"));
        }
        if self.remaining == 0 {
            // Anything past the declared size is an error, not more data.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? > 0 {
                self.overrun = true;
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "registry sent more bytes than the descriptor's size",
                ));
            }
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(0) if self.remaining > 0 && self.resumes < MAX_RESUMES => {}
                Ok(n) => break n,
                Err(e) if self.resumes >= MAX_RESUMES || self.cancel.load(Ordering::Relaxed) => {
                    return Err(e)
                }
                Err(e) => tracing::warn!(layer = self.id, error = %e, "download interrupted"),
            }
            // The connection dropped or ended early: go on from here. The
            // whole blob is still verified by its digest at the end.
            self.resumes += 1;
            let offset = self.size - self.remaining;
            std::thread::sleep(std::time::Duration::from_millis(200 * self.resumes as u64));
            tracing::info!(
                layer = self.id,
                offset,
                attempt = self.resumes,
                "resuming download"
            );
            match (self.reopen)(offset) {
                Ok(r) => self.inner = r,
                Err(e) if self.resumes >= MAX_RESUMES => return Err(io::Error::other(e)),
                Err(_) => {}
            }
        };
        if n == 0 {
            return Ok(0);
        }
        self.remaining -= n as u64;
        match &mut self.ingest {
            Some(w) => w.write_all(&buf[..n])?,
            None => self.hasher.update(&buf[..n]),
        }
        self.progress.advance(self.id, n as u64);
        Ok(n)
    }
}

impl<R> Source<'_, R> {
    fn digest(&self) -> (Digest, u64) {
        let h = match &self.ingest {
            Some(w) => w.hasher().clone(),
            None => self.hasher.clone(),
        };
        let len = h.len();
        (h.finish(), len)
    }
}

/// Opens the compressed stream of a layer: the registry for a pull, the
/// content store for an import.
/// Opens the compressed stream of a layer at an offset: the registry for a
/// pull (HTTP Range), the content store for an import.
pub(crate) type OpenBlob<'a> =
    dyn Fn(&LayerJob, u64) -> Result<Box<dyn Read + 'a>, PullError> + Sync + 'a;

/// Times a broken download is resumed before the pull gives up.
const MAX_RESUMES: u32 = 5;

pub(crate) fn fetch_layer(
    store: &Store,
    open: &OpenBlob<'_>,
    image: &str,
    job: LayerJob,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<FetchedLayer, PullError> {
    if let Some(done) = fetch_layer_from(store, open, image, job.clone(), progress, cancel, true)? {
        return Ok(done);
    }
    // A partial left by a crash can hold bytes that never reached the disk
    // intact; it was removed, so start over once from byte 0 (no partial
    // is read then, so this attempt always decides).
    tracing::warn!(layer = %job.digest, "a resumed partial download was wrong; fetching the layer again from the start");
    fetch_layer_from(store, open, image, job, progress, cancel, false)?.ok_or_else(|| {
        PullError::Store {
            image: image.to_string(),
            detail: "a fresh download was treated as a resumed one".into(),
        }
    })
}

/// One attempt; `Ok(None)` when a resumed partial made the blob hash
/// wrong (the partial is gone; the caller starts over without one).
fn fetch_layer_from(
    store: &Store,
    open: &OpenBlob<'_>,
    image: &str,
    job: LayerJob,
    progress: &dyn Progress,
    cancel: &AtomicBool,
    resume: bool,
) -> Result<Option<FetchedLayer>, PullError> {
    let layer_err = |detail: String| PullError::Layer {
        image: image.to_string(),
        digest: job.digest.clone(),
        detail,
    };
    let compression = Compression::of_media_type(&job.media_type);
    if job.want_snapshot && compression.is_none() {
        return Err(layer_err(format!(
            "unsupported layer media type {:?}",
            job.media_type
        )));
    }
    let id = job.digest.short().to_string();
    progress.start(&id, &format!("layer {}", job.digest.short()), job.size);
    // A partial download of this blob left by a stopped pull is read back
    // through the same pipeline (the snapshot is rebuilt from it) and only
    // the rest is fetched, with HTTP Range.
    let (ingest, partial, have) = if job.want_blob && resume {
        let (w, partial, have) = store
            .content
            .resume_writer(&job.digest, job.size)
            .map_err(|e| layer_err(e.to_string()))?;
        (Some(w), partial, have)
    } else if job.want_blob {
        let w = store
            .content
            .writer(&job.digest)
            .map_err(|e| layer_err(e.to_string()))?;
        (Some(w), None, 0)
    } else {
        (None, None, 0)
    };
    if have > 0 {
        tracing::info!(layer = %job.digest, bytes = have, "resuming a partial download");
    }
    let resp: Box<dyn Read + '_> = if have < job.size {
        match open(&job, have) {
            Ok(r) => r,
            Err(e) => {
                if let Some(w) = ingest {
                    w.keep_for_resume();
                }
                return Err(e);
            }
        }
    } else {
        Box::new(io::empty())
    };
    let resp: Box<dyn Read + '_> = match partial {
        Some(f) => Box::new(
            io::BufReader::with_capacity(1 << 20, f)
                .take(have)
                .chain(resp),
        ),
        None => resp,
    };
    let reopen = |offset: u64| open(&job, offset).map_err(|e| e.to_string());
    let mut src = Source {
        inner: resp,
        reopen: &reopen,
        resumes: 0,
        size: job.size,
        remaining: job.size,
        overrun: false,
        hasher: Hasher::new(),
        ingest,
        progress,
        id: &id,
        cancel,
    };

    let mut snapshot = None;
    let mut report = None;
    let mut apply_result: Result<Option<Digest>, String> = Ok(None);
    let mut tar_split = None;
    if job.want_snapshot {
        let tmp = store
            .snapshots
            .prepare()
            .map_err(|e| layer_err(e.to_string()))?;
        let opts = ApplyOptions::default();
        let result = (|| -> Result<(Digest, ApplyReport, Vec<u8>, u64), String> {
            let dec = decompress(compression.expect("checked"), &mut src)
                .map_err(|e| format!("decompress: {e}"))?;
            let mut tar = HashingReader::new(dec);
            // The tar-split is recorded in the same pass: it rebuilds the
            // exact tar (and so the diffID) from the snapshot later.
            let mut rec = TarSplitRecorder::new(&mut tar).map_err(|e| format!("tar-split: {e}"))?;
            let r = apply_layer(&mut rec, &tmp.fs(), &opts).map_err(|e| e.to_string())?;
            io::copy(&mut rec, &mut io::sink()).map_err(|e| format!("decompress: {e}"))?;
            let (split, tar_size) = rec.finish().map_err(|e| format!("tar-split: {e}"))?;
            let (_, h) = tar.into_inner();
            Ok((h.finish(), r, split, tar_size))
        })();
        match result {
            Ok((diff, r, split, tar_size)) => {
                apply_result = Ok(Some(diff));
                report = Some(r);
                snapshot = Some(tmp);
                tar_split = Some((split, tar_size));
            }
            Err(e) => apply_result = Err(e),
        }
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(PullError::Cancelled {
            image: image.to_string(),
        });
    }
    // Read what the decompressor left (trailing bytes), so that the blob
    // digest covers the whole stream and a corrupt blob is reported as
    // such rather than as the tar error it caused.
    let drained = io::copy(&mut src, &mut io::sink());
    let (actual, len) = src.digest();
    if src.overrun {
        return Err(layer_err(format!(
            "registry sent more than the {} bytes the manifest declares",
            job.size
        )));
    }
    let failed = match &drained {
        Err(e) if len < job.size => Some(format!(
            "download failed after {len} of {} bytes: {e}; run the pull again to resume",
            job.size
        )),
        _ if len != job.size => Some(format!(
            "truncated: got {len} of {} bytes; run the pull again to resume",
            job.size
        )),
        _ => None,
    };
    if let Some(detail) = failed {
        // What arrived is good as far as anyone can tell yet; the next
        // pull continues from it and verifies the whole.
        if let Some(w) = src.ingest.take() {
            w.keep_for_resume();
        }
        return Err(layer_err(detail));
    }
    if actual != job.digest && have > 0 {
        return Ok(None);
    }
    if actual != job.digest {
        return Err(layer_err(format!("blob bytes hash to {actual}, not to the digest the manifest names; the registry served corrupt or tampered data, nothing was stored")));
    }
    let diff = apply_result.map_err(&layer_err)?;
    if let Some(diff) = diff {
        if diff != job.diff_id {
            return Err(PullError::DiffId {
                image: image.to_string(),
                digest: job.digest.clone(),
                expected: job.diff_id.clone(),
                actual: diff,
            });
        }
    }
    let blob = match src.ingest.take() {
        Some(w) => Some(
            w.verify(Some(job.size))
                .map_err(|e| layer_err(e.to_string()))?,
        ),
        None => None,
    };
    progress.finish(&id, "done");
    let recipe = tar_split.map(|(split, tar_size)| Recipe {
        layer: job.digest.clone(),
        diff_id: job.diff_id.clone(),
        compression: compression.unwrap_or(Compression::None),
        tar_size,
        tar_split: split,
        codec: None,
    });
    Ok(Some(FetchedLayer {
        job,
        snapshot,
        report,
        blob,
        recipe,
        bytes_fetched: len - have,
    }))
}
