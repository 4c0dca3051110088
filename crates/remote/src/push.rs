//! The pusher's side of the distribution API: does the registry have a
//! blob, upload one (a monolithic `POST` + `PUT ?digest=`, which every
//! registry implements), and put a manifest. Pushes go to the origin only;
//! mirrors serve pulls.

use super::{check, header, http_err, secret, Endpoint, RegistryClient, RemoteError};
use reqwest::blocking::Body;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::StatusCode;
use std::io::Read;
use std::time::Duration;
use stowage_oci::Digest;

const PUSH: &str = "pull,push";

impl RegistryClient {
    fn origin(&self) -> &Endpoint {
        self.endpoints.last().expect("the origin is always there")
    }

    /// Whether the registry already has `digest` in `repository`.
    pub fn push_has_blob(&self, repository: &str, digest: &Digest) -> Result<bool, RemoteError> {
        let ep = self.origin();
        let url = format!("{}/{repository}/blobs/{digest}", ep.base);
        match self.send(ep, repository, PUSH, &url, |c| c.head(&url)) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Upload `size` bytes read from `body` as blob `digest`. The registry
    /// checks the digest and refuses the upload if the bytes do not match.
    pub fn push_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        body: Box<dyn Read + Send>,
    ) -> Result<(), RemoteError> {
        let ep = self.origin();
        let start = format!("{}/{repository}/blobs/uploads/", ep.base);
        let resp = self.send(ep, repository, PUSH, &start, |c| {
            c.post(&start).header(CONTENT_LENGTH, 0)
        })?;
        let location = header(&resp, "location").ok_or_else(|| RemoteError::Status {
            url: start.clone(),
            status: resp.status(),
            detail: ": no Location for the upload".into(),
        })?;
        drop(resp);
        let mut url = reqwest::Url::parse(&ep.base)
            .and_then(|b| b.join(&location))
            .map_err(|e| RemoteError::Status {
                url: start.clone(),
                status: StatusCode::ACCEPTED,
                detail: format!(": bad upload Location {location:?}: {e}"),
            })?;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let url = url.to_string();
        // The body is a stream: it cannot be replayed after a challenge, so
        // the token the POST earned (same scope) goes with it.
        let mut req = ep
            .http
            .put(&url)
            .headers(ep.headers.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            // A whole-request bound that fits the blob (1 MB/s at worst).
            .timeout(Duration::from_secs(300 + size / 1_000_000))
            .body(Body::sized(body, size));
        let scope = format!("repository:{repository}:{PUSH}");
        if let Some(auth) = self.tokens.get(&ep.config.host, &scope) {
            req = req.header(AUTHORIZATION, secret(&auth));
        }
        let resp = req.send().map_err(|e| http_err(&url, e))?;
        check(resp, &url).map(drop)
    }

    /// Put a manifest or index under `reference` (a tag, or its digest).
    pub fn push_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), RemoteError> {
        let ep = self.origin();
        let url = format!("{}/{repository}/manifests/{reference}", ep.base);
        self.send(ep, repository, PUSH, &url, |c| {
            c.put(&url)
                .header(CONTENT_TYPE, media_type)
                .body(bytes.to_vec())
        })
        .map(drop)
    }
}
