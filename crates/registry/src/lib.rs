//! A read-only OCI distribution endpoint (the pull side of the
//! distribution spec) over a store, for peers: containerd, stowage or
//! skopeo on other nodes name it as a mirror in `hosts.toml` and pull from
//! it with the original digests, whatever forms the store keeps (a layer
//! kept as snapshot + recipe is rebuilt while it streams). A request for
//! something the store lacks can be pulled through from the origin named by
//! containerd's `?ns=` parameter.
//!
//! The store side is behind [`Source`], implemented by the `stowage` binary
//! (this crate cannot depend on it, as `crates/cri` cannot). All of its
//! methods block; they run on tokio's blocking pool.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use stowage_oci::Digest;

/// A manifest or index as stored.
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

/// A blob as a stream of its exact bytes.
pub struct Blob {
    pub size: u64,
    pub reader: Box<dyn Read + Send>,
}

/// Why a request cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Not here (and not pulled through): the client tries its next host.
    #[error("{0}")]
    Unknown(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

/// What the endpoint serves from. `ns` is the registry the client means
/// (containerd sends it to mirrors); `None` when a client names us directly.
pub trait Source: Send + Sync + 'static {
    fn manifest(
        &self,
        ns: Option<&str>,
        repository: &str,
        reference: &str,
    ) -> Result<Manifest, SourceError>;
    fn blob(
        &self,
        ns: Option<&str>,
        repository: &str,
        digest: &Digest,
    ) -> Result<Blob, SourceError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("registry endpoint {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("registry endpoint: {0}")]
    Server(String),
}

/// Bind `addr` now (so a bad address fails at start-up) and return the
/// future that serves until `shutdown` resolves.
pub async fn bind(
    addr: SocketAddr,
    source: Arc<dyn Source>,
) -> Result<
    (
        SocketAddr,
        impl std::future::Future<Output = std::io::Result<()>>,
    ),
    ServeError,
> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let app = Router::new()
        .route("/v2/", get(version))
        .route("/v2", get(version))
        .route("/v2/{*rest}", get(object).head(object).fallback(read_only))
        .with_state(source);
    Ok((local, async move { axum::serve(listener, app).await }))
}

async fn version() -> Response {
    (
        [("docker-distribution-api-version", "registry/2.0")],
        axum::Json(serde_json::json!({})),
    )
        .into_response()
}

async fn read_only() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        "this endpoint is read-only; push to a registry",
    )
}

/// The OCI error body.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
    (status, axum::Json(body)).into_response()
}

fn source_error(e: SourceError, code: &str) -> Response {
    match e {
        SourceError::Unknown(m) => error(StatusCode::NOT_FOUND, code, &m),
        SourceError::Invalid(m) => error(StatusCode::BAD_REQUEST, "NAME_INVALID", &m),
        SourceError::Failed(m) => {
            tracing::warn!("registry endpoint: {m}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &m)
        }
    }
}

/// `NAME/manifests/REF` or `NAME/blobs/DIGEST`; NAME may hold slashes.
fn split(rest: &str) -> Option<(&str, &str, &str)> {
    for kind in ["/manifests/", "/blobs/"] {
        if let Some(i) = rest.rfind(kind) {
            let (name, object) = (&rest[..i], &rest[i + kind.len()..]);
            if !name.is_empty() && !object.is_empty() && !object.contains('/') {
                return Some((name, kind.trim_matches('/'), object));
            }
        }
    }
    None
}

async fn object(
    method: Method,
    State(source): State<Arc<dyn Source>>,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some((name, kind, object)) = split(&rest) else {
        return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such route");
    };
    let (name, object) = (name.to_string(), object.to_string());
    let ns = query.get("ns").cloned();
    let head = method == Method::HEAD;
    if kind == "manifests" {
        let s = source.clone();
        let r = tokio::task::spawn_blocking(move || s.manifest(ns.as_deref(), &name, &object))
            .await
            .unwrap_or_else(|e| Err(SourceError::Failed(format!("manifest lookup: {e}"))));
        return match r {
            Ok(m) => {
                let mut h = HeaderMap::new();
                put(&mut h, header::CONTENT_TYPE, &m.media_type);
                put(&mut h, header::CONTENT_LENGTH, &m.bytes.len().to_string());
                put_digest(&mut h, &m.digest);
                let body = if head {
                    Body::empty()
                } else {
                    Body::from(m.bytes)
                };
                (StatusCode::OK, h, body).into_response()
            }
            Err(e) => source_error(e, "MANIFEST_UNKNOWN"),
        };
    }
    let digest: Digest = match object.parse() {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", &e.to_string()),
    };
    let s = source.clone();
    let d = digest.clone();
    let r = tokio::task::spawn_blocking(move || s.blob(ns.as_deref(), &name, &d))
        .await
        .unwrap_or_else(|e| Err(SourceError::Failed(format!("blob lookup: {e}"))));
    let blob = match r {
        Ok(b) => b,
        Err(e) => return source_error(e, "BLOB_UNKNOWN"),
    };
    let mut h = HeaderMap::new();
    put(&mut h, header::CONTENT_TYPE, "application/octet-stream");
    put(&mut h, header::CONTENT_LENGTH, &blob.size.to_string());
    put_digest(&mut h, &digest);
    if head {
        return (StatusCode::OK, h, Body::empty()).into_response();
    }
    (StatusCode::OK, h, stream(blob, digest)).into_response()
}

fn put(h: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn put_digest(h: &mut HeaderMap, d: &Digest) {
    if let Ok(v) = HeaderValue::from_str(&d.to_string()) {
        h.insert("docker-content-digest", v);
    }
}

/// Stream a blob from a blocking reader, hashing it on the way. The last
/// chunk is held back until the whole hashes to `digest`: bytes that do not
/// (a snapshot changed under a recipe) end the response with an error one
/// chunk short, so no client receives a complete wrong blob.
fn stream(blob: Blob, digest: Digest) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut reader = blob.reader;
        let mut hasher = stowage_oci::Hasher::new();
        let mut held: Option<Bytes> = None;
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    hasher.update(&buf);
                    if let Some(prev) = held.replace(Bytes::from(buf)) {
                        if tx.blocking_send(Ok(prev)).is_err() {
                            return; // the client went away
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(blob = %digest, "registry endpoint: {e}");
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        let size = hasher.len();
        let actual = hasher.finish();
        let last = if actual == digest && size == blob.size {
            Ok(held.unwrap_or_default())
        } else {
            let msg = format!("blob {digest}: produced {actual} ({size} bytes); not serving it");
            tracing::error!("registry endpoint: {msg}");
            Err(std::io::Error::other(msg))
        };
        let _ = tx.blocking_send(last);
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn routes_split_names_with_slashes() {
        assert_eq!(
            split("corpus/debian-min/manifests/latest"),
            Some(("corpus/debian-min", "manifests", "latest"))
        );
        assert_eq!(
            split("a/blobs/x/blobs/sha256:00"),
            Some(("a/blobs/x", "blobs", "sha256:00"))
        );
        assert_eq!(split("manifests/latest"), None);
        assert_eq!(split("a/manifests/"), None);
    }
}
