//! Command-line parsing and dispatch. Every command is a thin adapter over
//! the `stowage` library.

mod archive;
mod commands;
mod login;
mod output;
mod peer;
mod progress;
mod push;
mod serve;
mod settle;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use stowage::config::{Config, DEFAULT_CONFIG};

#[derive(Parser)]
#[command(
    name = "stowage",
    version,
    about = "A container image store that keeps what it must and rebuilds the rest"
)]
pub struct Cli {
    /// Store root (default /var/lib/stowage as root, $XDG_DATA_HOME/stowage otherwise).
    #[arg(long, global = true, env = "STOWAGE_ROOT")]
    pub root: Option<PathBuf>,
    /// stowage.toml to read (default /etc/stowage/stowage.toml when it exists).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Read settings from a containerd config.toml instead.
    #[arg(long, global = true)]
    pub containerd_config: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace); STOWAGE_LOG overrides.
    #[arg(long, global = true, default_value = "warn")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Pull an image from a registry into the store.
    Pull {
        reference: String,
        /// Platform to pull from a multi-platform image (os/arch[/variant]); default the host.
        #[arg(long, conflicts_with = "all_platforms")]
        platform: Option<String>,
        /// Keep every platform's content of a multi-platform image.
        #[arg(long)]
        all_platforms: bool,
        /// Which forms of each layer to keep: keep, recipe, discard, compressed.
        #[arg(long)]
        policy: Option<String>,
        /// Talk plain HTTP to the registry (a local registry).
        #[arg(long)]
        plain_http: bool,
        /// Registry credentials as USER:PASS.
        #[arg(long)]
        creds: Option<String>,
        /// Layers downloaded at once (default 3, or max_concurrent_downloads).
        #[arg(long)]
        max_concurrent: Option<usize>,
        /// Under policy recipe, when blobs become recipes: background (a detached
        /// `stowage settle` after the pull returns), now (before it returns), later.
        #[arg(long, value_enum, default_value_t)]
        settle: settle::SettleMode,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Finish the recipe policy's work: analyse each kept blob of images under
    /// `recipe`, prove snapshot + recipe rebuild it exactly, then drop it. Waits
    /// for a settle already running.
    Settle {
        /// Only these images (default: every image under policy recipe).
        references: Vec<String>,
        /// Also retry layers whose earlier attempt recorded why the blob stays.
        #[arg(long)]
        retry: bool,
        /// As started after a pull: return at once when another settle already waits.
        #[arg(long, hide = true)]
        background: bool,
        /// Keep a blob whose recipe is larger than this share of it (default recipe_max_ratio).
        #[arg(long)]
        max_ratio: Option<f64>,
        /// Layers analysed at once (default: one per CPU).
        #[arg(long)]
        jobs: Option<usize>,
        #[arg(long, short)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List images.
    Images {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Only print names.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Show an image's manifest, config, layers and the forms each layer keeps.
    Inspect {
        reference: String,
        #[arg(long)]
        platform: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Remove image names (content is reclaimed by `gc`).
    #[command(alias = "rmi")]
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Write an image's flattened root filesystem into DIR (for runc/crun).
    Unpack {
        reference: String,
        dir: PathBuf,
        #[arg(long)]
        platform: Option<String>,
    },
    /// Write images to one archive (OCI layout + docker manifest.json) with their original digests.
    #[command(alias = "save")]
    Export {
        /// Output file, or - for stdout.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        #[arg(required = true)]
        references: Vec<String>,
        #[arg(long, conflicts_with = "all_platforms")]
        platform: Option<String>,
        #[arg(long)]
        all_platforms: bool,
        /// Never re-fetch dropped blobs from the origin registry (air-gapped).
        #[arg(long)]
        no_fetch: bool,
        /// Rebuild dropped blobs from snapshots as new gzip blobs (changes digests; reported).
        #[arg(long)]
        recompress: bool,
        /// Write only the OCI layout, no docker manifest.json.
        #[arg(long)]
        skip_manifest_json: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Push an image to a registry with its original digests, rebuilding or
    /// re-fetching dropped blobs (checked before anything is uploaded).
    Push {
        /// The image in the store.
        reference: String,
        /// Where to push (default: the image's own name).
        destination: Option<String>,
        #[arg(long, conflicts_with = "all_platforms")]
        platform: Option<String>,
        #[arg(long)]
        all_platforms: bool,
        /// Never re-fetch dropped blobs from the image's origin registry.
        #[arg(long)]
        no_fetch: bool,
        /// Talk plain HTTP to the destination registry.
        #[arg(long)]
        plain_http: bool,
        /// Destination credentials as USER:PASS.
        #[arg(long)]
        creds: Option<String>,
        #[arg(long, short)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Import images from an OCI layout tar or a docker-archive tar (- for stdin).
    #[command(alias = "load")]
    Import {
        file: PathBuf,
        /// Name for the imported image (overrides the archive's names).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        policy: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Can an image be exported or pushed with its exact digests? Per blob, without doing it.
    Check {
        references: Vec<String>,
        #[arg(long)]
        platform: Option<String>,
        #[arg(long)]
        all_platforms: bool,
        #[arg(long)]
        no_fetch: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove blobs, snapshots and recipes no image or lease uses.
    Gc {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Bytes in blobs, snapshots and recipes, per image and in total.
    Du {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Mount an image's layers read-only on DIR (overlayfs); `umount DIR` releases it.
    Mount {
        reference: String,
        dir: PathBuf,
        #[arg(long)]
        platform: Option<String>,
    },
    /// Log in to a registry: check the credentials, store them in docker's config.json.
    Login {
        registry: String,
        #[arg(short = 'u', long)]
        username: Option<String>,
        /// Read the password from stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a registry's credentials from docker's config.json.
    Logout { registry: String },
    /// Serve the Kubernetes CRI ImageService (crictl, kubelet) on a unix socket.
    Serve {
        /// Socket path (default: cri.socket from the config, /run/stowage/stowage.sock).
        #[arg(long)]
        cri_socket: Option<PathBuf>,
        /// Registry (HOST or HOST:PORT) to pull from in plain HTTP; loopback registries always are. Repeatable.
        #[arg(long = "plain-http-registry", value_name = "HOST[:PORT]")]
        plain_http_registry: Vec<String>,
        /// Also serve the store to peers as a read-only OCI registry on this address
        /// (name it as a mirror in their hosts.toml). Plain HTTP, no auth: a trusted network.
        #[arg(long, value_name = "IP:PORT")]
        registry_addr: Option<std::net::SocketAddr>,
        /// On the registry endpoint, pull an image the store lacks from the registry
        /// the client names (`?ns=`), then serve it.
        #[arg(long, requires = "registry_addr")]
        pull_through: bool,
    },
}

pub fn run() -> Result<(), String> {
    let cli = Cli::parse();
    let filter = std::env::var("STOWAGE_LOG").unwrap_or_else(|_| cli.log_level.clone());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut config = match &cli.config {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None if std::path::Path::new(DEFAULT_CONFIG).is_file() => {
            Config::load(std::path::Path::new(DEFAULT_CONFIG)).map_err(|e| e.to_string())?
        }
        None => Config::default(),
    };
    if let Some(p) = &cli.containerd_config {
        config.apply_containerd(p).map_err(|e| e.to_string())?;
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let root = cli
        .root
        .clone()
        .or_else(|| config.root.clone())
        .unwrap_or_else(stowage_store::default_root);
    commands::dispatch(cli.command, &root, &config)
}
