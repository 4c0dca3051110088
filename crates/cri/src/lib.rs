//! The Kubernetes CRI `ImageService` (`runtime.v1`) over a stowage store,
//! served on a unix socket: what `crictl --image-endpoint` and kubelet use
//! to pull, list, inspect and remove images and to ask how much disk the
//! images take.
//!
//! This crate is the gRPC adapter. It reads and removes image names in the
//! store itself, and asks a [`Backend`] (the `stowage` binary's library: pull
//! and manifest/config resolution) for the rest, so it does not depend on
//! the `stowage` package (which depends on it for `stowage serve`).
//!
//! Semantics follow containerd's CRI plugin, which kubelet is tested with:
//! an image's id is its config digest; `repo_tags` are the tagged names and
//! `repo_digests` are `repository@manifest-digest` for every name pointing
//! at it; `ImageStatus` of an unknown image is an empty answer, not an error;
//! `RemoveImage` removes every name of the image and is idempotent.
//!
//! **Plain HTTP.** containerd decides per host from `hosts.toml`, and so
//! does stowage for a registry that has a directory under the registry
//! `config_path`. A registry without one is spoken to in plain HTTP when it
//! is on a loopback address (`localhost`, `127.0.0.0/8`, `[::1]`: a local
//! test or cache registry) or named with `stowage serve --plain-http-registry
//! HOST[:PORT]` (which also overrides `hosts.toml`); everything else is
//! HTTPS.

mod fsinfo;
mod images;
mod pulls;
mod service;
mod socket;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use stowage_oci::{Digest, Reference};
use stowage_remote::Credentials;
use stowage_store::{ImageRecord, Store};

pub use service::CriImages;
pub use socket::{bind_socket, BoundSocket};

/// The generated `runtime.v1` messages and the `ImageService` server.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("runtime.v1");
}

/// One layer as the CRI verbose status shows it.
#[derive(Clone, Debug)]
pub struct LayerView {
    pub digest: Digest,
    pub diff_id: Digest,
    pub chain_id: Digest,
    pub media_type: String,
    pub size: u64,
}

/// An image record resolved to its (host platform) manifest and config.
#[derive(Clone, Debug)]
pub struct ResolvedView {
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    /// Config + layers, compressed (what `ctr images ls` shows).
    pub size: u64,
    /// The config's `User` (`name`, `uid`, `uid:gid`, or empty).
    pub user: String,
    /// The image config, for the verbose status.
    pub config: serde_json::Value,
    pub layers: Vec<LayerView>,
}

/// What kind of failure; decides the gRPC status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    InvalidArgument,
    Unavailable,
    Unauthenticated,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    /// The registry served content that does not match its digest.
    DataLoss,
    Internal,
    Unknown,
}

#[derive(Clone, Debug)]
pub struct BackendError {
    pub kind: ErrorKind,
    pub message: String,
}

impl BackendError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> BackendError {
        BackendError {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<BackendError> for tonic::Status {
    fn from(e: BackendError) -> tonic::Status {
        use tonic::Code;
        let code = match e.kind {
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::Unauthenticated => Code::Unauthenticated,
            ErrorKind::Cancelled => Code::Cancelled,
            ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
            ErrorKind::FailedPrecondition => Code::FailedPrecondition,
            ErrorKind::DataLoss => Code::DataLoss,
            ErrorKind::Internal => Code::Internal,
            ErrorKind::Unknown => Code::Unknown,
        };
        tonic::Status::new(code, e.message)
    }
}

/// One pull, as the server asks the backend for it.
pub struct PullRequest {
    pub reference: Reference,
    pub credentials: Option<Credentials>,
    pub plain_http: bool,
    /// Set when the pull should stop (no caller left, or no progress).
    pub cancel: Arc<AtomicBool>,
    /// Call whenever the pull makes progress (bytes moved, a layer started
    /// or finished); it resets the `image_pull_progress_timeout` timer.
    pub activity: Arc<dyn Fn() + Send + Sync>,
}

/// What a finished pull reports.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// The name the image is recorded under (`registry/repo:tag`).
    pub name: String,
    pub layers_fetched: usize,
    pub bytes_fetched: u64,
}

/// The operations the CRI server needs from stowage's library.
pub trait Backend: Send + Sync + 'static {
    /// Resolve an image record to its platform manifest and config.
    fn resolve(&self, store: &Store, record: &ImageRecord) -> Result<ResolvedView, BackendError>;
    /// Pull an image into the store (blocking; runs on a blocking thread).
    fn pull(&self, store: &Store, request: &PullRequest) -> Result<Pulled, BackendError>;
}

/// How `serve` runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub socket: PathBuf,
    /// Cancel a pull that moved no bytes for this long; zero disables.
    pub pull_progress_timeout: Duration,
    /// `HOST[:PORT]` of registries spoken to in plain HTTP, besides loopback ones.
    pub plain_http_registries: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cri socket {path:?}: {detail}")]
    Socket { path: PathBuf, detail: String },
    #[error("cri server: {0}")]
    Server(String),
}

/// Serve the ImageService on `opts.socket` until SIGTERM or SIGINT, then
/// let in-flight calls finish, remove the socket and return. Blocking: runs
/// its own tokio runtime.
pub fn serve(
    store: Arc<Store>,
    backend: Arc<dyn Backend>,
    opts: ServeOptions,
) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("stowage-cri")
        .build()
        .map_err(|e| ServeError::Server(format!("cannot start the async runtime: {e}")))?;
    let bound = bind_socket(&opts.socket)?;
    let result = runtime.block_on(service::run(bound, store, backend, opts));
    // Every call was answered. What may still run is a pull nobody waits
    // for any more (cancelled, maybe stuck on a silent connection): give it
    // a moment, then leave it; a later open of the store cleans its temp files.
    runtime.shutdown_timeout(Duration::from_secs(10));
    result
}

/// Is `registry` (`host[:port]`) spoken to in plain HTTP? Loopback hosts
/// always are; others when listed in `extra` (`HOST` matches any port,
/// `HOST:PORT` only that port).
pub fn plain_http(registry: &str, extra: &[String]) -> bool {
    is_loopback(registry) || listed(registry, extra)
}

/// Is `registry` (`host[:port]`) on a loopback address?
pub fn is_loopback(registry: &str) -> bool {
    let host = split_host(registry).0;
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Is `registry` named in `list` (`HOST` matches any port, `HOST:PORT`
/// only that port)?
pub fn listed(registry: &str, list: &[String]) -> bool {
    let host = split_host(registry).0;
    list.iter().any(|e| {
        let e = e.trim();
        if e.eq_ignore_ascii_case(registry) {
            return true;
        }
        let (eh, ep) = split_host(e);
        ep.is_none() && eh.eq_ignore_ascii_case(host)
    })
}

/// `host[:port]` → (host, port); IPv6 hosts keep their brackets.
fn split_host(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(i) = rest.find(']') {
            let host = &s[..i + 2];
            let port = s[i + 2..].strip_prefix(':');
            return (host, port);
        }
        return (s, None);
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_for_loopback_and_listed_hosts() {
        assert!(plain_http("127.0.0.1:5000", &[]));
        assert!(plain_http("127.8.9.10", &[]));
        assert!(plain_http("localhost:5000", &[]));
        assert!(plain_http("[::1]:5000", &[]));
        assert!(!plain_http("docker.io", &[]));
        assert!(!plain_http("10.0.0.1:5000", &[]));
        let extra = vec!["reg.lan".to_string(), "10.0.0.1:5000".to_string()];
        assert!(plain_http("reg.lan:443", &extra));
        assert!(plain_http("reg.lan", &extra));
        assert!(plain_http("10.0.0.1:5000", &extra));
        assert!(!plain_http("10.0.0.1:5001", &extra));
        assert!(!plain_http("other.lan", &extra));
    }
}
