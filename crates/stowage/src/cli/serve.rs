//! `stowage serve`: the CRI ImageService (crate `stowage-cri`) over this
//! store. This file is the bridge: it gives the server stowage's pull and
//! image resolution, and maps pull failures to gRPC status kinds.
//!
//! Plain HTTP: registries named with `--plain-http-registry HOST[:PORT]`,
//! and loopback registries (`localhost`, 127.0.0.0/8, `[::1]`) that have no
//! `hosts.toml` directory under the registry `config_path`, are spoken to in
//! plain HTTP; every other registry as its `hosts.toml` says, else HTTPS.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use stowage::config::Config;
use stowage::image::resolve_record;
use stowage::progress::Progress;
use stowage::pull::{pull_cancellable, PullError, PullOptions};
use stowage::{Policy, Store};
use stowage_cri::{
    Backend, BackendError, ErrorKind, LayerView, PullRequest, Pulled, ResolvedView, ServeOptions,
};
use stowage_remote::{ClientOptions, RemoteError};
use stowage_store::ImageRecord;

struct StoreBackend {
    root: PathBuf,
    policy: Policy,
    recipe_max_ratio: f64,
    max_concurrent: usize,
    /// containerd's `hosts.toml` tree (`[registry] config_path`).
    hosts_dir: Option<PathBuf>,
    /// `--plain-http-registry` values.
    plain_http_registries: Vec<String>,
}

impl StoreBackend {
    /// Plain HTTP to the origin? The server says yes for loopback and listed
    /// registries; a loopback registry with its own `hosts.toml` directory
    /// is left to that file, as containerd would.
    fn plain_http(&self, req: &PullRequest) -> bool {
        let registry = &req.reference.registry;
        if !req.plain_http {
            return false;
        }
        let listed = stowage_cri::listed(registry, &self.plain_http_registries);
        listed
            || self
                .hosts_dir
                .as_deref()
                .and_then(|d| stowage_remote::hosts::host_dir(d, registry))
                .is_none()
    }
}

/// Every sign of life of a pull resets the progress timer.
struct Activity<'a>(&'a PullRequest);

impl Progress for Activity<'_> {
    fn start(&self, _id: &str, _label: &str, _total: u64) {
        (self.0.activity)();
    }
    fn advance(&self, _id: &str, _n: u64) {
        (self.0.activity)();
    }
    fn finish(&self, _id: &str, _status: &str) {
        (self.0.activity)();
    }
    fn message(&self, msg: &str) {
        tracing::info!("{msg}");
        (self.0.activity)();
    }
}

fn remote_kind(e: &RemoteError) -> ErrorKind {
    match e {
        RemoteError::NotFound { .. } => ErrorKind::NotFound,
        RemoteError::Unauthorized { .. } | RemoteError::Token { .. } => ErrorKind::Unauthenticated,
        RemoteError::Status { status, .. }
            if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 =>
        {
            ErrorKind::Unavailable
        }
        RemoteError::Http { .. } | RemoteError::Read { .. } => ErrorKind::Unavailable,
        _ => ErrorKind::Unknown,
    }
}

fn pull_kind(e: &PullError) -> ErrorKind {
    match e {
        PullError::Remote { source, .. } => remote_kind(source),
        PullError::Invalid { .. } | PullError::DiffId { .. } => ErrorKind::DataLoss,
        PullError::NoPlatform { .. } => ErrorKind::NotFound,
        PullError::Cancelled { .. } => ErrorKind::Cancelled,
        PullError::Store { .. } => ErrorKind::Internal,
        _ => ErrorKind::Unknown,
    }
}

impl Backend for StoreBackend {
    fn resolve(&self, store: &Store, record: &ImageRecord) -> Result<ResolvedView, BackendError> {
        let r = resolve_record(store, record.clone(), None)
            .map_err(|e| BackendError::new(ErrorKind::Internal, e.to_string()))?;
        let user = r
            .config
            .config()
            .as_ref()
            .and_then(|c| c.user().clone())
            .unwrap_or_default();
        let config = serde_json::to_value(&r.config).unwrap_or(serde_json::Value::Null);
        Ok(ResolvedView {
            size: r.content_size(),
            manifest_digest: r.manifest_digest.clone(),
            config_digest: r.config_digest.clone(),
            user,
            config,
            layers: r
                .layers
                .iter()
                .map(|l| LayerView {
                    digest: l.digest.clone(),
                    diff_id: l.diff_id.clone(),
                    chain_id: l.chain_id.clone(),
                    media_type: l.media_type.clone(),
                    size: l.size,
                })
                .collect(),
        })
    }

    fn pull(&self, store: &Store, req: &PullRequest) -> Result<Pulled, BackendError> {
        let opts = PullOptions {
            policy: self.policy,
            max_concurrent: self.max_concurrent,
            // Credentials come from the CRI call only (kubelet sends them), as
            // with containerd; docker's config.json is not read.
            client: ClientOptions {
                plain_http: self.plain_http(req),
                credentials: req.credentials.clone(),
                hosts_dir: self.hosts_dir.clone(),
                ..Default::default()
            },
            recipe_max_ratio: self.recipe_max_ratio,
            ..Default::default()
        };
        let report = pull_cancellable(store, &req.reference, &opts, &Activity(req), &req.cancel)
            .map_err(|e| {
                let kind = if req.cancel.load(Ordering::Relaxed) {
                    ErrorKind::Cancelled
                } else {
                    pull_kind(&e)
                };
                BackendError::new(kind, e.to_string())
            })?;
        if self.policy == Policy::Recipe {
            // The image is usable now; recipes are made out of the call's way.
            super::settle::spawn_background(&self.root, self.recipe_max_ratio);
        }
        Ok(Pulled {
            name: report.name,
            layers_fetched: report.layers_fetched,
            bytes_fetched: report.bytes_fetched,
        })
    }
}

pub fn run(
    root: &Path,
    config: &Config,
    cri_socket: Option<PathBuf>,
    plain_http_registry: Vec<String>,
    registry: Option<(std::net::SocketAddr, bool)>,
) -> Result<(), String> {
    let store = Arc::new(Store::open(root).map_err(|e| e.to_string())?);
    if let Some((addr, pull_through)) = registry {
        let pull_through = pull_through.then(|| PullOptions {
            policy: config.policy,
            max_concurrent: config.max_concurrent_downloads,
            recipe_max_ratio: config.recipe_max_ratio,
            // The origin itself: this node may well be named as a mirror
            // in its own hosts.toml, and must not ask itself.
            client: ClientOptions {
                docker_config: stowage_remote::dockercfg::default_path(),
                ..Default::default()
            },
            ..Default::default()
        });
        let local = super::peer::start(
            addr,
            super::peer::PeerSource {
                store: store.clone(),
                pull_through,
                plain_http_registries: plain_http_registry.clone(),
            },
        )?;
        eprintln!("stowage: registry endpoint on http://{local}");
    }
    let opts = ServeOptions {
        socket: cri_socket.unwrap_or_else(|| config.cri_socket.clone()),
        pull_progress_timeout: config.image_pull_progress_timeout,
        plain_http_registries: plain_http_registry.clone(),
    };
    let backend = StoreBackend {
        root: root.to_path_buf(),
        policy: config.policy,
        recipe_max_ratio: config.recipe_max_ratio,
        max_concurrent: config.max_concurrent_downloads,
        hosts_dir: config
            .registry_config_path
            .clone()
            .or_else(stowage_remote::hosts::default_dir),
        plain_http_registries: plain_http_registry,
    };
    stowage_cri::serve(store, Arc::new(backend), opts).map_err(|e| e.to_string())
}
