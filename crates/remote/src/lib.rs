//! Registry client: the OCI distribution API as seen by a puller.
//! Anonymous, basic and bearer-token auth (the `WWW-Authenticate` challenge
//! flow, tokens cached per scope). Credentials never reach logs or errors.

mod auth;

use auth::{Challenge, TokenCache};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{ACCEPT, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use std::io::Read;
use std::time::Duration;
use stowage_oci::{Digest, MANIFEST_ACCEPT};

pub use auth::Credentials;

/// Manifests and indexes larger than this are refused (containerd uses 4 MiB too).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{url}: registry answered {status}{detail}")]
    Status {
        url: String,
        status: StatusCode,
        detail: String,
    },
    #[error("{url}: not found (check the repository name and tag)")]
    NotFound { url: String },
    #[error("{url}: access denied: {detail} (log in with `stowage login` or pass --creds)")]
    Unauthorized { url: String, detail: String },
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
}

#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Talk plain HTTP (a local registry); HTTPS otherwise.
    pub plain_http: bool,
    pub credentials: Option<Credentials>,
    pub user_agent: Option<String>,
}

/// A registry client for one registry host (mirrors come later, per host).
pub struct RegistryClient {
    http: Client,
    registry: String,
    base: String,
    credentials: Option<Credentials>,
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
        let host = if registry == stowage_oci::DEFAULT_REGISTRY {
            "registry-1.docker.io"
        } else {
            registry
        };
        let scheme = if opts.plain_http { "http" } else { "https" };
        let http = Client::builder()
            .user_agent(
                opts.user_agent
                    .clone()
                    .unwrap_or_else(|| format!("stowage/{}", env!("CARGO_PKG_VERSION"))),
            )
            .connect_timeout(Duration::from_secs(30))
            .timeout(None)
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(|e| RemoteError::Client(e.to_string()))?;
        Ok(RegistryClient {
            http,
            registry: registry.to_string(),
            base: format!("{scheme}://{host}/v2"),
            credentials: opts.credentials.clone(),
            tokens: TokenCache::default(),
        })
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// GET a manifest or index by tag or digest.
    pub fn fetch_manifest(
        &self,
        repository: &str,
        object: &str,
    ) -> Result<FetchedManifest, RemoteError> {
        let url = format!("{}/{}/manifests/{}", self.base, repository, object);
        let resp = self.send(repository, &url, |c| {
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
        let url = format!("{}/{}/blobs/{}", self.base, repository, digest);
        let resp = self.send(repository, &url, |c| c.get(&url))?;
        Ok(BlobReader {
            content_length: resp.content_length(),
            resp,
            url,
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
        let url = format!("{}/{}/blobs/{}", self.base, repository, digest);
        match self.send(repository, &url, |c| c.head(&url)) {
            Ok(r) => Ok(r.content_length()),
            Err(RemoteError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Send with auth: try with a cached token (or anonymously), answer one
    /// challenge, retry once.
    fn send(
        &self,
        repository: &str,
        url: &str,
        build: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<Response, RemoteError> {
        let scope = format!("repository:{repository}:pull");
        let mut req = build(&self.http);
        if let Some(auth) = self.tokens.get(&self.registry, &scope) {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        let resp = req.send().map_err(|source| RemoteError::Http {
            url: url.to_string(),
            source,
        })?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return check(resp, url);
        }
        let challenge = header(&resp, WWW_AUTHENTICATE.as_str())
            .and_then(|h| Challenge::parse(&h))
            .ok_or_else(|| RemoteError::Unauthorized {
                url: url.to_string(),
                detail: "no usable WWW-Authenticate challenge".into(),
            })?;
        let auth = challenge.authorize(&self.http, self.credentials.as_ref(), &scope)?;
        self.tokens.put(&self.registry, &scope, auth.clone());
        let resp = build(&self.http)
            .header(reqwest::header::AUTHORIZATION, auth)
            .send()
            .map_err(|source| RemoteError::Http {
                url: url.to_string(),
                source,
            })?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            let detail = if self.credentials.is_some() {
                "credentials were refused"
            } else {
                "anonymous access refused"
            };
            return Err(RemoteError::Unauthorized {
                url: url.to_string(),
                detail: detail.into(),
            });
        }
        check(resp, url)
    }
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
    if status == StatusCode::FORBIDDEN {
        return Err(RemoteError::Unauthorized {
            url: url.to_string(),
            detail: "forbidden".into(),
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
}

impl BlobReader {
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.resp.read(buf)
    }
}
