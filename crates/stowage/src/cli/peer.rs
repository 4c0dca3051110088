//! The registry endpoint of `stowage serve` (crate `stowage-registry`)
//! over this store: the bridge, as `serve.rs` is for the CRI. With
//! `--pull-through`, a manifest asked for under a registry (`?ns=`, as
//! containerd sends to mirrors) that the store lacks is pulled first.

use std::net::SocketAddr;
use std::sync::Arc;
use stowage::peer::{self, PeerMiss};
use stowage::pull::{pull, PullOptions};
use stowage::Store;
use stowage_oci::{Digest, Reference};
use stowage_registry::{Blob, Manifest, Source, SourceError};

pub struct PeerSource {
    pub store: Arc<Store>,
    /// Pull misses from the origin, with these options (plain HTTP decided per registry).
    pub pull_through: Option<PullOptions>,
    pub plain_http_registries: Vec<String>,
}

fn miss(e: PeerMiss) -> SourceError {
    match e {
        PeerMiss::Unknown(m) => SourceError::Unknown(m),
        PeerMiss::Failed(m) => SourceError::Failed(m),
    }
}

impl PeerSource {
    fn pull_through(&self, ns: &str, repository: &str, reference: &str) -> Result<(), SourceError> {
        let Some(opts) = &self.pull_through else {
            return Ok(());
        };
        let sep = if reference.parse::<Digest>().is_ok() {
            '@'
        } else {
            ':'
        };
        let r: Reference = format!("{ns}/{repository}{sep}{reference}")
            .parse()
            .map_err(|e: stowage_oci::ReferenceError| SourceError::Invalid(e.to_string()))?;
        let mut opts = opts.clone();
        opts.client.plain_http = stowage_cri::plain_http(ns, &self.plain_http_registries);
        tracing::info!(image = %r, "registry endpoint: pulling through");
        pull(&self.store, &r, &opts, &stowage::progress::Silent)
            .map_err(|e| SourceError::Unknown(format!("pull-through: {e}")))?;
        if opts.policy == stowage::Policy::Recipe {
            super::settle::spawn_background(self.store.root(), opts.recipe_max_ratio);
        }
        Ok(())
    }
}

impl Source for PeerSource {
    fn manifest(
        &self,
        ns: Option<&str>,
        repository: &str,
        reference: &str,
    ) -> Result<Manifest, SourceError> {
        let found = match peer::manifest(&self.store, ns, repository, reference) {
            Err(PeerMiss::Unknown(why)) => match ns {
                Some(ns) if self.pull_through.is_some() => {
                    self.pull_through(ns, repository, reference)?;
                    peer::manifest(&self.store, Some(ns), repository, reference)
                }
                _ => Err(PeerMiss::Unknown(why)),
            },
            r => r,
        };
        let (bytes, media_type, digest) = found.map_err(miss)?;
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    fn blob(
        &self,
        _ns: Option<&str>,
        _repository: &str,
        digest: &Digest,
    ) -> Result<Blob, SourceError> {
        let (size, reader) = peer::blob(&self.store, digest).map_err(miss)?;
        Ok(Blob { size, reader })
    }
}

/// Bind `addr` and serve on a thread of its own until the process exits.
pub fn start(addr: SocketAddr, source: PeerSource) -> Result<SocketAddr, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("stowage-registry")
        .build()
        .map_err(|e| format!("registry endpoint: cannot start the async runtime: {e}"))?;
    let (local, server) = runtime
        .block_on(stowage_registry::bind(addr, Arc::new(source)))
        .map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("stowage-registry".into())
        .spawn(move || {
            if let Err(e) = runtime.block_on(server) {
                tracing::error!("registry endpoint stopped: {e}");
            }
        })
        .map_err(|e| e.to_string())?;
    tracing::info!(addr = %local, "registry endpoint listening");
    Ok(local)
}
