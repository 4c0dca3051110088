//! Opening a planned blob as a stream of its exact bytes, wherever they
//! come from (the content store, a rebuild from snapshot + recipe, or the
//! origin registry). Shared by export and push; the consumer verifies the
//! digest (the archive writer hashes, a registry checks on upload).

use super::plan::{BlobPlan, BlobSource};
use std::io::{self, Read};
use std::thread::JoinHandle;
use stowage_remote::RegistryClient;
use stowage_store::Store;

/// A rebuild running on its own thread, read through a pipe. Its error, if
/// any, surfaces at the end of the stream instead of as a silent short read.
struct Rebuilding {
    pipe: io::PipeReader,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Read for Rebuilding {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.pipe.read(buf)?;
        if n == 0 {
            if let Some(t) = self.thread.take() {
                t.join()
                    .map_err(|_| io::Error::other("rebuild panicked"))??;
            }
        }
        Ok(n)
    }
}

/// Where the bytes of `b` come from, as a stream; `Missing` and
/// `Recompress` have no exact bytes and are refused.
pub(crate) fn open_exact(
    store: &Store,
    b: &BlobPlan,
    client: Option<&RegistryClient>,
    repository: &str,
) -> Result<Box<dyn Read + Send>, String> {
    match &b.source {
        BlobSource::Present => match store.content.open_blob(&b.digest) {
            Ok(f) => Ok(Box::new(io::BufReader::with_capacity(256 * 1024, f))),
            // A settle dropped it since the plan was made (it does so only
            // after proving the recipe): rebuild instead.
            Err(e) => match (&b.layer, super::plan::layer_recipe(store, &b.digest)) {
                (Some(l), Some(r)) if r.rebuilds_blob() && store.snapshots.exists(&l.chain_id) => {
                    let mut again = b.clone();
                    again.source = BlobSource::Rebuild;
                    again.recipe = Some(r);
                    open_exact(store, &again, client, repository)
                }
                _ => Err(e.to_string()),
            },
        },
        BlobSource::Fetch => {
            let c = client.ok_or("no registry client for the image's origin")?;
            let r = c
                .fetch_blob(repository, &b.digest)
                .map_err(|e| format!("re-fetch: {e}"))?;
            Ok(Box::new(r))
        }
        BlobSource::Rebuild => {
            let (layer, recipe) = match (&b.layer, &b.recipe) {
                (Some(l), Some(r)) => (l.clone(), r.clone()),
                _ => return Err("no recipe planned for this blob".into()),
            };
            let snap = store.snapshots.path(&layer.chain_id);
            let (pipe, mut writer) = io::pipe().map_err(|e| e.to_string())?;
            let thread = std::thread::spawn(move || {
                crate::recipe::rebuild_blob(&recipe, &snap, &mut writer)
                    .map_err(|e| io::Error::other(format!("rebuild: {e}")))
            });
            Ok(Box::new(Rebuilding {
                pipe,
                thread: Some(thread),
            }))
        }
        BlobSource::Recompress => Err("only a recompressed copy (new digest) exists".into()),
        BlobSource::Missing { reason } => Err(reason.clone()),
    }
}
