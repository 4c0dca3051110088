//! Registry authentication: basic and bearer-token challenges.

use crate::RemoteError;
use base64::Engine;
use reqwest::blocking::Client;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

/// A username and password (or identity token). Debug output hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials {{ username: {:?}, password: <redacted> }}",
            self.username
        )
    }
}

impl Credentials {
    /// Parse `USER:PASS` as `--creds` takes it.
    pub fn parse(s: &str) -> Option<Credentials> {
        let (u, p) = s.split_once(':')?;
        Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        })
    }

    fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[derive(Debug)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Challenge {
    pub(crate) fn parse(h: &str) -> Option<Challenge> {
        let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => {
                let params = parse_params(rest);
                Some(Challenge::Bearer {
                    realm: params.get("realm")?.clone(),
                    service: params.get("service").cloned(),
                })
            }
            _ => None,
        }
    }

    /// The `Authorization` header value answering this challenge.
    pub(crate) fn authorize(
        &self,
        http: &Client,
        creds: Option<&Credentials>,
        scope: &str,
    ) -> Result<String, RemoteError> {
        match self {
            Challenge::Basic => match creds {
                Some(c) => Ok(c.basic()),
                None => Err(RemoteError::Unauthorized {
                    url: String::new(),
                    detail: "the registry wants basic credentials".into(),
                }),
            },
            Challenge::Bearer { realm, service } => {
                let mut req = http.get(realm).query(&[("scope", scope)]);
                if let Some(s) = service {
                    req = req.query(&[("service", s)]);
                }
                if let Some(c) = creds {
                    req = req.header(reqwest::header::AUTHORIZATION, c.basic());
                }
                let resp = req.send().map_err(|e| RemoteError::Token {
                    realm: realm.clone(),
                    detail: e.to_string(),
                })?;
                if !resp.status().is_success() {
                    return Err(RemoteError::Token {
                        realm: realm.clone(),
                        detail: format!("answered {}", resp.status()),
                    });
                }
                #[derive(serde::Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let t: Token = resp.json().map_err(|e| RemoteError::Token {
                    realm: realm.clone(),
                    detail: format!("bad token response: {e}"),
                })?;
                let tok = t
                    .token
                    .or(t.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| RemoteError::Token {
                        realm: realm.clone(),
                        detail: "token response has no token".into(),
                    })?;
                Ok(format!("Bearer {tok}"))
            }
        }
    }
}

fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((k, v)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let v = v.trim_start();
        let (val, after) = if let Some(q) = v.strip_prefix('"') {
            match q.find('"') {
                Some(i) => (&q[..i], &q[i + 1..]),
                None => (q, ""),
            }
        } else {
            match v.find(',') {
                Some(i) => (&v[..i], &v[i..]),
                None => (v, ""),
            }
        };
        out.insert(k, val.to_string());
        rest = after.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// `Authorization` values per (registry, scope).
#[derive(Default)]
pub(crate) struct TokenCache {
    map: Mutex<HashMap<(String, String), String>>,
}

impl TokenCache {
    pub(crate) fn get(&self, registry: &str, scope: &str) -> Option<String> {
        self.map
            .lock()
            .ok()?
            .get(&(registry.to_string(), scope.to_string()))
            .cloned()
    }
    pub(crate) fn put(&self, registry: &str, scope: &str, value: String) {
        if let Ok(mut m) = self.map.lock() {
            m.insert((registry.to_string(), scope.to_string()), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let c = Challenge::parse(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#).unwrap();
        match c {
            Challenge::Bearer { realm, service } => {
                assert_eq!(realm, "https://auth.docker.io/token");
                assert_eq!(service.as_deref(), Some("registry.docker.io"));
            }
            _ => panic!("expected bearer"),
        }
        assert!(matches!(
            Challenge::parse("Basic realm=\"x\""),
            Some(Challenge::Basic)
        ));
        assert!(format!("{:?}", Credentials::parse("a:secret").unwrap())
            .find("secret")
            .is_none());
    }
}
