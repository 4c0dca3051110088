//! HTTP clients per TLS setting: system roots plus the `ca` files of an
//! endpoint, `skip_verify`, and a client certificate. Endpoints with the same
//! settings share one client.

use crate::hosts::HostConfig;
use crate::RemoteError;
use reqwest::blocking::Client;
use std::path::PathBuf;
use std::time::Duration;

type Key = (bool, Vec<PathBuf>, Vec<(PathBuf, Option<PathBuf>)>);

pub(crate) struct Clients {
    user_agent: String,
    built: Vec<(Key, Client)>,
}

impl Clients {
    pub(crate) fn new(user_agent: &str) -> Clients {
        Clients {
            user_agent: user_agent.to_string(),
            built: Vec::new(),
        }
    }

    pub(crate) fn get(&mut self, h: &HostConfig) -> Result<Client, RemoteError> {
        let key: Key = (h.skip_verify, h.ca.clone(), h.client.clone());
        if let Some((_, c)) = self.built.iter().find(|(k, _)| *k == key) {
            return Ok(c.clone());
        }
        let c = build(&self.user_agent, h)?;
        self.built.push((key, c.clone()));
        Ok(c)
    }
}

/// How long a read may wait for bytes: 60 s, or `STOWAGE_STALL_TIMEOUT`
/// seconds (tests use a short one).
pub fn stall_timeout() -> Duration {
    std::env::var("STOWAGE_STALL_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(60))
}

fn build(user_agent: &str, h: &HostConfig) -> Result<Client, RemoteError> {
    let cfg = |what: &str, p: &PathBuf, e: &dyn std::fmt::Display| {
        RemoteError::Config(format!("{} for {}: {p:?}: {e}", what, h.base_url()))
    };
    let mut b = Client::builder()
        .user_agent(user_agent)
        .connect_timeout(Duration::from_secs(30))
        // In the blocking client this bounds each read, not the whole
        // download: a registry that stops sending is a stall, noticed and
        // resumed (with Range) by the puller instead of hanging forever.
        .timeout(stall_timeout())
        .redirect(reqwest::redirect::Policy::limited(10));
    for p in &h.ca {
        let pem = std::fs::read(p).map_err(|e| cfg("ca", p, &e))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| cfg("ca", p, &e))?;
        if certs.is_empty() {
            return Err(cfg("ca", p, &"no PEM certificate in the file"));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if h.skip_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    if let Some((cert, key)) = h.client.first() {
        if h.client.len() > 1 {
            tracing::warn!(
                "{}: only the first client certificate ({cert:?}) is used",
                h.base_url()
            );
        }
        let mut pem = std::fs::read(cert).map_err(|e| cfg("client certificate", cert, &e))?;
        if let Some(k) = key {
            pem.push(b'\n');
            pem.extend(std::fs::read(k).map_err(|e| cfg("client key", k, &e))?);
        }
        let id = reqwest::Identity::from_pem(&pem)
            .map_err(|e| cfg("client certificate", cert, &crate::error_chain(&e)))?;
        b = b.identity(id);
    }
    b.build()
        .map_err(|e| RemoteError::Client(crate::error_chain(&e)))
}
