//! Registry client: the OCI distribution API as seen by a puller (and, in
//! `push.rs`, by a pusher).
//!
//! For one registry it keeps a list of endpoints from containerd's
//! `hosts.toml` tree: mirrors in file order, then the origin. Each request
//! tries them in turn (a mirror without the `resolve` capability only serves
//! by-digest requests) and falls through on connection errors, 404s, 5xx and
//! refusals; when all fail the error lists every attempt.
//!
//! Auth per endpoint: anonymous, basic, and bearer tokens (the
//! `WWW-Authenticate` challenge flow, tokens cached per scope until their
//! `expires_in`). Credentials come from [`ClientOptions::credentials`] or
//! Docker's `config.json`. They never reach logs or error messages.

mod auth;
pub mod dockercfg;
pub mod hosts;
mod push;
mod tls;

use auth::{Challenge, TokenCache};
use hosts::HostConfig;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use std::io::Read;
use std::path::PathBuf;
use stowage_oci::{Digest, MANIFEST_ACCEPT};

pub use auth::Credentials;

/// Manifests and indexes larger than this are refused (containerd uses 4 MiB too).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{url}: {}", http_detail(.source))]
    Http { url: String, source: reqwest::Error },
    #[error("{url}: registry answered {status}{detail}")]
    Status {
        url: String,
        status: StatusCode,
        detail: String,
    },
    #[error("{url}: not found (check the repository name and tag)")]
    NotFound { url: String },
    /// The registry (or its token service) refused us, after fresh credentials.
    #[error("unauthorized: {registry}: access denied{}: {detail}", .repository.as_ref().map(|r| format!(" to repository {r}")).unwrap_or_default())]
    Unauthorized {
        registry: String,
        repository: Option<String>,
        detail: String,
    },
    #[error("{url}: {what} is larger than {limit} bytes")]
    TooLarge {
        url: String,
        what: &'static str,
        limit: u64,
    },
    #[error("{url}: reading body: {source}")]
    Read { url: String, source: std::io::Error },
    #[error("token endpoint {realm}: {detail}")]
    Token { realm: String, detail: String },
    #[error("cannot build the http client: {0}")]
    Client(String),
    #[error("registry configuration: {0}")]
    Config(String),
    #[error("{registry}: no endpoint in hosts.toml may {what} (check `capabilities`)")]
    NoEndpoint {
        registry: String,
        what: &'static str,
    },
    /// Every endpoint was tried and failed; one line per attempt.
    #[error("{what}: every endpoint failed:{}", .attempts.iter().map(|(ep, e)| format!("\n  {ep}: {e}")).collect::<String>())]
    AllEndpoints {
        what: String,
        attempts: Vec<(String, RemoteError)>,
    },
}

impl RemoteError {
    /// The content is not there (at any endpoint tried).
    pub fn is_not_found(&self) -> bool {
        match self {
            RemoteError::NotFound { .. } => true,
            RemoteError::AllEndpoints { attempts, .. } => {
                attempts.iter().all(|(_, e)| e.is_not_found())
            }
            _ => false,
        }
    }
}

/// An error and its causes on one line ("a: b: c"), without repeats.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = s.source();
    }
    parts.join(": ")
}

fn http_detail(e: &reqwest::Error) -> String {
    let chain = error_chain(e);
    let lower = chain.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") {
        format!(
            "{chain} (TLS certificate verification failed: add the registry's CA with `ca = \"…\"` \
             in its hosts.toml under the registry config_path, or set `skip_verify = true`)"
        )
    } else if lower.contains("invalidcontenttype") || lower.contains("corrupt message") {
        // What a TLS client sees when the server answers in plain HTTP.
        format!(
            "{chain} (the registry answered in plain HTTP: use --plain-http, or `server = \"http://…\"` \
             in its hosts.toml)"
        )
    } else {
        chain
    }
}

#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Talk plain HTTP to the origin (a local registry); HTTPS otherwise.
    pub plain_http: bool,
    /// Explicit credentials (`--creds`), used for every endpoint; when
    /// `None`, `docker_config` is consulted per endpoint host.
    pub credentials: Option<Credentials>,
    pub user_agent: Option<String>,
    /// containerd's `hosts.toml` tree (`[registry] config_path`).
    pub hosts_dir: Option<PathBuf>,
    /// Docker's `config.json` to take credentials from (see
    /// [`dockercfg::default_path`]); not read when `None`.
    pub docker_config: Option<PathBuf>,
}

/// One endpoint of a registry, ready to talk to.
struct Endpoint {
    config: HostConfig,
    base: String,
    http: Client,
    headers: HeaderMap,
    credentials: Option<Credentials>,
}

impl Endpoint {
    fn label(&self) -> String {
        let kind = if self.config.mirror {
            "mirror"
        } else {
            "origin"
        };
        format!("{kind} {}", self.base)
    }
}

#[derive(Clone, Copy)]
enum Need {
    Resolve,
    Pull,
}

/// A registry client for one registry: its mirrors, then its origin.
pub struct RegistryClient {
    registry: String,
    endpoints: Vec<Endpoint>,
    tokens: TokenCache,
}

/// A manifest or index as the registry served it.
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: Option<String>,
    /// `Docker-Content-Digest` as the registry claimed it (never trusted alone).
    pub claimed_digest: Option<String>,
}

impl RegistryClient {
    pub fn new(registry: &str, opts: &ClientOptions) -> Result<RegistryClient, RemoteError> {
        let (configs, warnings) =
            hosts::endpoints(opts.hosts_dir.as_deref(), registry, opts.plain_http)
                .map_err(|e| RemoteError::Config(e.to_string()))?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        let docker = match (&opts.credentials, &opts.docker_config) {
            (None, Some(p)) => match dockercfg::DockerConfig::load(p) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!("ignoring docker config: {e}");
                    None
                }
            },
            _ => None,
        };
        let user_agent = opts
            .user_agent
            .clone()
            .unwrap_or_else(|| format!("stowage/{}", env!("CARGO_PKG_VERSION")));
        let mut clients = tls::Clients::new(&user_agent);
        let mut endpoints = Vec::new();
        let mut warned: Vec<String> = Vec::new();
        for config in configs {
            let http = clients.get(&config)?;
            let mut headers = HeaderMap::new();
            for (k, v) in &config.headers {
                let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| RemoteError::Config(format!("bad header name {k:?}")))?;
                let value = reqwest::header::HeaderValue::from_str(v)
                    .map_err(|_| RemoteError::Config(format!("bad value for header {k:?}")))?;
                headers.append(name, value);
            }
            let credentials = match &opts.credentials {
                Some(c) => Some(c.clone()),
                None => docker.as_ref().and_then(|d| {
                    let names: &[&str] = if config.mirror {
                        &[&config.host]
                    } else {
                        &[registry, &config.host]
                    };
                    names.iter().find_map(|n| {
                        if let Some(w) = d.helper_warning(n) {
                            if !warned.contains(&w) {
                                tracing::warn!("{w}");
                                warned.push(w);
                            }
                        }
                        d.lookup(n).unwrap_or_else(|e| {
                            tracing::warn!("{e}");
                            None
                        })
                    })
                }),
            };
            endpoints.push(Endpoint {
                base: config.base_url(),
                config,
                http,
                headers,
                credentials,
            });
        }
        Ok(RegistryClient {
            registry: registry.to_string(),
            endpoints,
            tokens: TokenCache::default(),
        })
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The endpoints in the order they are tried (`mirror URL` / `origin URL`).
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.iter().map(Endpoint::label).collect()
    }

    /// Check that the origin accepts our credentials (`GET /v2/` with the
    /// challenge flow), as `docker login` does.
    pub fn check_login(&self) -> Result<(), RemoteError> {
        let ep = self.endpoints.last().expect("the origin is always there");
        let url = format!("{}/", ep.base);
        let get = || {
            ep.http
                .get(&url)
                .headers(ep.headers.clone())
                .send()
                .map_err(|e| http_err(&url, e))
        };
        let resp = get()?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return check(resp, &url).map(drop);
        }
        let challenge = challenge_of(&resp, &ep.config.host, None)?;
        let auth = challenge.authorize(&ep.http, &ep.config.host, ep.credentials.as_ref(), None)?;
        let resp = ep
            .http
            .get(&url)
            .headers(ep.headers.clone())
            .header(AUTHORIZATION, secret(&auth.value))
            .send()
            .map_err(|e| http_err(&url, e))?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(RemoteError::Unauthorized {
                registry: ep.config.host.clone(),
                repository: None,
                detail: format!("the credentials were refused ({})", resp.status()),
            });
        }
        check(resp, &url).map(drop)
    }

    /// GET a manifest or index by tag or digest.
    pub fn fetch_manifest(
        &self,
        repository: &str,
        object: &str,
    ) -> Result<FetchedManifest, RemoteError> {
        let need = if object.contains(':') {
            Need::Pull
        } else {
            Need::Resolve
        };
        let what = format!("manifest {repository}:{object}");
        self.each(&what, need, |ep| {
            self.fetch_manifest_at(ep, repository, object)
        })
    }

    fn fetch_manifest_at(
        &self,
        ep: &Endpoint,
        repository: &str,
        object: &str,
    ) -> Result<FetchedManifest, RemoteError> {
        let url = self.url(ep, repository, "manifests", object);
        let resp = self.send(ep, repository, "pull", &url, |c| {
            c.get(&url).header(ACCEPT, MANIFEST_ACCEPT.join(", "))
        })?;
        if let Some(len) = resp.content_length() {
            if len > MAX_MANIFEST_SIZE {
                return Err(RemoteError::TooLarge {
                    url,
                    what: "manifest",
                    limit: MAX_MANIFEST_SIZE,
                });
            }
        }
        let media_type = header(&resp, CONTENT_TYPE.as_str())
            .map(|m| m.split(';').next().unwrap_or("").trim().to_string());
        let claimed_digest = header(&resp, "docker-content-digest");
        let mut bytes = Vec::new();
        resp.take(MAX_MANIFEST_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| RemoteError::Read {
                url: url.clone(),
                source,
            })?;
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(RemoteError::TooLarge {
                url,
                what: "manifest",
                limit: MAX_MANIFEST_SIZE,
            });
        }
        Ok(FetchedManifest {
            bytes,
            media_type,
            claimed_digest,
        })
    }

    /// GET a blob; the caller hashes and bounds what it reads.
    pub fn fetch_blob(&self, repository: &str, digest: &Digest) -> Result<BlobReader, RemoteError> {
        self.fetch_blob_from(repository, digest, 0)
    }

    /// GET a blob from byte `offset` on (HTTP Range). The reader's
    /// [`BlobReader::offset`] says where its bytes really start: 0 when the
    /// registry ignored the range and sent the whole blob.
    pub fn fetch_blob_from(
        &self,
        repository: &str,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobReader, RemoteError> {
        let what = format!("blob {digest}");
        self.each(&what, Need::Pull, |ep| {
            let url = self.url(ep, repository, "blobs", &digest.to_string());
            let resp = self.send(ep, repository, "pull", &url, |c| {
                let r = c.get(&url);
                if offset > 0 {
                    r.header(reqwest::header::RANGE, format!("bytes={offset}-"))
                } else {
                    r
                }
            })?;
            let start = if offset > 0 && resp.status() == StatusCode::PARTIAL_CONTENT {
                offset
            } else {
                0
            };
            Ok(BlobReader {
                content_length: resp.content_length(),
                resp,
                url,
                offset: start,
            })
        })
    }

    /// Fetch a small blob (config) whole, bounded by `limit`.
    pub fn fetch_small_blob(
        &self,
        repository: &str,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>, RemoteError> {
        let r = self.fetch_blob(repository, digest)?;
        let url = r.url.clone();
        let mut bytes = Vec::new();
        r.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| RemoteError::Read {
                url: url.clone(),
                source,
            })?;
        if bytes.len() as u64 > limit {
            return Err(RemoteError::TooLarge {
                url,
                what: "blob",
                limit,
            });
        }
        Ok(bytes)
    }

    /// HEAD a blob: `Some(size)` when the registry has it.
    pub fn head_blob(&self, repository: &str, digest: &Digest) -> Result<Option<u64>, RemoteError> {
        let what = format!("blob {digest}");
        match self.each(&what, Need::Pull, |ep| {
            let url = self.url(ep, repository, "blobs", &digest.to_string());
            self.send(ep, repository, "pull", &url, |c| c.head(&url))
        }) {
            Ok(r) => Ok(r.content_length()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `BASE/REPO/KIND/OBJECT`; mirrors also get `?ns=REGISTRY`, as
    /// containerd sends it, so a mirror serving several registries knows which.
    fn url(&self, ep: &Endpoint, repository: &str, kind: &str, object: &str) -> String {
        let mut url = format!("{}/{repository}/{kind}/{object}", ep.base);
        if ep.config.mirror {
            url.push_str("?ns=");
            url.push_str(&self.registry);
        }
        url
    }

    /// Run `f` against each endpoint allowed to serve `need`, in order, until
    /// one succeeds.
    fn each<T>(
        &self,
        what: &str,
        need: Need,
        f: impl Fn(&Endpoint) -> Result<T, RemoteError>,
    ) -> Result<T, RemoteError> {
        let eps: Vec<&Endpoint> = self
            .endpoints
            .iter()
            .filter(|e| match need {
                Need::Resolve => e.config.capabilities.resolve,
                Need::Pull => e.config.capabilities.pull,
            })
            .collect();
        if eps.is_empty() {
            return Err(RemoteError::NoEndpoint {
                registry: self.registry.clone(),
                what: match need {
                    Need::Resolve => "resolve tags",
                    Need::Pull => "pull",
                },
            });
        }
        let mut attempts = Vec::new();
        for ep in &eps {
            match f(ep) {
                Ok(v) => {
                    if !attempts.is_empty() {
                        tracing::info!("{what}: served by {}", ep.label());
                    }
                    return Ok(v);
                }
                Err(e) => {
                    if eps.len() > 1 {
                        tracing::info!("{what}: {}: {e}", ep.label());
                    }
                    attempts.push((ep.label(), e));
                }
            }
        }
        if attempts.len() == 1 {
            return Err(attempts.pop().expect("one").1);
        }
        Err(RemoteError::AllEndpoints {
            what: what.to_string(),
            attempts,
        })
    }

    /// Send with auth: try with a cached token (or anonymously), answer one
    /// challenge with a fresh token, retry once.
    fn send(
        &self,
        ep: &Endpoint,
        repository: &str,
        actions: &str,
        url: &str,
        build: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<Response, RemoteError> {
        let scope = format!("repository:{repository}:{actions}");
        let host = &ep.config.host;
        let mut req = build(&ep.http).headers(ep.headers.clone());
        let cached = self.tokens.get(host, &scope);
        if let Some(auth) = &cached {
            req = req.header(AUTHORIZATION, secret(auth));
        }
        let resp = req.send().map_err(|e| http_err(url, e))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return check(resp, url);
        }
        if cached.is_some() {
            // Expired or revoked on the server's side: start over.
            self.tokens.forget(host, &scope);
        }
        let challenge = challenge_of(&resp, host, Some(repository))?;
        drop(resp);
        let auth = challenge.authorize(&ep.http, host, ep.credentials.as_ref(), Some(&scope))?;
        let value = auth.value.clone();
        self.tokens.put(host, &scope, auth);
        let resp = build(&ep.http)
            .headers(ep.headers.clone())
            .header(AUTHORIZATION, secret(&value))
            .send()
            .map_err(|e| http_err(url, e))?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            self.tokens.forget(host, &scope);
            let detail = match &ep.credentials {
                Some(c) if c.is_identity_token() => "the identity token was refused".to_string(),
                Some(c) => format!("the credentials of user {:?} were refused", c.username),
                None => format!(
                    "anonymous access refused; log in with `stowage login {}` or pass --creds",
                    self.registry
                ),
            };
            return Err(RemoteError::Unauthorized {
                registry: host.clone(),
                repository: Some(repository.to_string()),
                detail,
            });
        }
        check(resp, url)
    }
}

/// An `Authorization` value marked sensitive, so no debug output shows it.
pub(crate) fn secret(value: &str) -> reqwest::header::HeaderValue {
    let mut v = reqwest::header::HeaderValue::from_str(value)
        .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("invalid"));
    v.set_sensitive(true);
    v
}

fn http_err(url: &str, e: reqwest::Error) -> RemoteError {
    RemoteError::Http {
        url: url.to_string(),
        source: e.without_url(),
    }
}

fn challenge_of(
    resp: &Response,
    registry: &str,
    repository: Option<&str>,
) -> Result<Challenge, RemoteError> {
    header(resp, WWW_AUTHENTICATE.as_str())
        .and_then(|h| Challenge::parse(&h))
        .ok_or_else(|| RemoteError::Unauthorized {
            registry: registry.to_string(),
            repository: repository.map(str::to_string),
            detail: "401 without a usable WWW-Authenticate challenge".into(),
        })
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn check(resp: Response, url: &str) -> Result<Response, RemoteError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    if status == StatusCode::NOT_FOUND {
        return Err(RemoteError::NotFound {
            url: url.to_string(),
        });
    }
    let mut body = String::new();
    let _ = resp.take(512).read_to_string(&mut body);
    let detail = if body.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", body.trim())
    };
    Err(RemoteError::Status {
        url: url.to_string(),
        status,
        detail,
    })
}

/// A blob body being streamed.
pub struct BlobReader {
    resp: Response,
    url: String,
    content_length: Option<u64>,
    offset: u64,
}

impl BlobReader {
    /// Length of this body (from `offset` on).
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }
    pub fn url(&self) -> &str {
        &self.url
    }
    /// Where in the blob this body starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.resp.read(buf)
    }
}
