//! Registry authentication: basic and bearer-token challenges.

use crate::RemoteError;
use base64::Engine;
use reqwest::blocking::Client;
use reqwest::StatusCode;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

    /// An identity (OAuth2 refresh) token rather than a password: the
    /// username is empty (containerd's convention) or `<token>` (docker's).
    pub fn is_identity_token(&self) -> bool {
        (self.username.is_empty() || self.username == "<token>") && !self.password.is_empty()
    }

    pub(crate) fn basic(&self) -> String {
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

/// An `Authorization` value and when it stops being good.
#[derive(Clone, Debug)]
pub(crate) struct Authorization {
    pub(crate) value: String,
    pub(crate) expires: Option<Instant>,
    /// Basic credentials serve every scope of the host.
    pub(crate) any_scope: bool,
}

/// Docker's clients treat a shorter `expires_in` as 60 seconds.
const MIN_TOKEN_LIFETIME: u64 = 60;

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

    /// Answer this challenge for `registry`. `scope` is `None` for a bare
    /// `/v2/` check (login). Errors never carry the secret.
    pub(crate) fn authorize(
        &self,
        http: &Client,
        registry: &str,
        creds: Option<&Credentials>,
        scope: Option<&str>,
    ) -> Result<Authorization, RemoteError> {
        match self {
            Challenge::Basic => match creds {
                Some(c) => Ok(Authorization {
                    value: c.basic(),
                    expires: None,
                    any_scope: true,
                }),
                None => Err(RemoteError::Unauthorized {
                    registry: registry.to_string(),
                    repository: scope_repository(scope),
                    detail: "the registry wants a username and password".into(),
                }),
            },
            Challenge::Bearer { realm, service } => {
                let token_err = |detail: String| RemoteError::Token {
                    realm: realm.clone(),
                    detail,
                };
                let mut params: Vec<(&str, &str)> = Vec::new();
                if let Some(s) = service {
                    params.push(("service", s));
                }
                if let Some(s) = scope {
                    params.push(("scope", s));
                }
                let refresh = creds.filter(|c| c.is_identity_token());
                let req = match refresh {
                    // An identity token: OAuth2 refresh-token grant.
                    Some(c) => {
                        params.push(("grant_type", "refresh_token"));
                        params.push(("refresh_token", &c.password));
                        params.push(("client_id", "stowage"));
                        http.post(realm).form(&params)
                    }
                    None => {
                        let mut req = http.get(realm).query(&params);
                        if let Some(c) = creds {
                            req = req
                                .header(reqwest::header::AUTHORIZATION, crate::secret(&c.basic()));
                        }
                        req
                    }
                };
                let started = Instant::now();
                let resp = req.send().map_err(|e| token_err(crate::error_chain(&e)))?;
                let status = resp.status();
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    return Err(RemoteError::Unauthorized {
                        registry: registry.to_string(),
                        repository: scope_repository(scope),
                        detail: if creds.is_some() {
                            format!("the token service {realm} refused the credentials ({status})")
                        } else {
                            format!("the token service {realm} refused anonymous access ({status})")
                        },
                    });
                }
                if !status.is_success() {
                    return Err(token_err(format!("answered {status}")));
                }
                #[derive(serde::Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                    expires_in: Option<u64>,
                }
                let t: Token = resp
                    .json()
                    .map_err(|e| token_err(format!("bad token response: {e}")))?;
                let lifetime = t
                    .expires_in
                    .unwrap_or(MIN_TOKEN_LIFETIME)
                    .max(MIN_TOKEN_LIFETIME);
                let tok = t
                    .token
                    .filter(|t| !t.is_empty())
                    .or(t.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| token_err("token response has no token".into()))?;
                Ok(Authorization {
                    value: format!("Bearer {tok}"),
                    // Renew a little early so a token does not expire mid-request.
                    expires: Some(started + Duration::from_secs(lifetime - lifetime / 10)),
                    any_scope: false,
                })
            }
        }
    }
}

/// `repository:NAME:pull` → `NAME`.
fn scope_repository(scope: Option<&str>) -> Option<String> {
    let s = scope?.strip_prefix("repository:")?;
    Some(s.rsplit_once(':').map(|(n, _)| n).unwrap_or(s).to_string())
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

/// `Authorization` values per (endpoint host, scope), dropped once expired.
#[derive(Default)]
pub(crate) struct TokenCache {
    map: Mutex<HashMap<(String, String), Authorization>>,
}

impl TokenCache {
    pub(crate) fn get(&self, host: &str, scope: &str) -> Option<String> {
        self.get_at(host, scope, Instant::now())
    }

    fn get_at(&self, host: &str, scope: &str, now: Instant) -> Option<String> {
        let mut m = self.map.lock().ok()?;
        for key in [
            (host.to_string(), scope.to_string()),
            (host.to_string(), "*".to_string()),
        ] {
            if let Some(a) = m.get(&key) {
                if a.expires.is_some_and(|e| now >= e) {
                    m.remove(&key);
                    continue;
                }
                return Some(a.value.clone());
            }
        }
        None
    }

    pub(crate) fn put(&self, host: &str, scope: &str, auth: Authorization) {
        if let Ok(mut m) = self.map.lock() {
            let scope = if auth.any_scope { "*" } else { scope };
            m.insert((host.to_string(), scope.to_string()), auth);
        }
    }

    pub(crate) fn forget(&self, host: &str, scope: &str) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&(host.to_string(), scope.to_string()));
            m.remove(&(host.to_string(), "*".to_string()));
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

    #[test]
    fn token_cache_expires() {
        let c = TokenCache::default();
        let now = Instant::now();
        c.put(
            "h",
            "repository:a:pull",
            Authorization {
                value: "Bearer t".into(),
                expires: Some(now + Duration::from_secs(10)),
                any_scope: false,
            },
        );
        assert_eq!(
            c.get_at("h", "repository:a:pull", now).as_deref(),
            Some("Bearer t")
        );
        assert_eq!(c.get_at("h", "repository:b:pull", now), None);
        assert_eq!(
            c.get_at("h", "repository:a:pull", now + Duration::from_secs(11)),
            None
        );
        assert_eq!(
            c.get_at("h", "repository:a:pull", now),
            None,
            "an expired token is dropped"
        );
        c.put(
            "h",
            "repository:a:pull",
            Authorization {
                value: "Basic x".into(),
                expires: None,
                any_scope: true,
            },
        );
        assert_eq!(
            c.get_at("h", "repository:z:pull", now).as_deref(),
            Some("Basic x")
        );
        assert_eq!(
            scope_repository(Some("repository:a/b:pull,push")).as_deref(),
            Some("a/b")
        );
    }
}
