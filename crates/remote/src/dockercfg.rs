//! Docker's `config.json` (`$DOCKER_CONFIG/config.json`, default
//! `~/.docker/config.json`): the `auths` map, read and written as docker does.
//! Credential helpers (`credsStore`, `credHelpers`) are not supported: we say
//! so and use the `auths` entries.

use crate::Credentials;
use base64::Engine;
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The key docker uses for Docker Hub.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    #[error("{path:?}: {detail}")]
    Io { path: PathBuf, detail: String },
    #[error("{path:?}: not valid JSON: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{path:?}: auths entry {key:?}: {detail}")]
    Entry {
        path: PathBuf,
        key: String,
        detail: String,
    },
}

/// `$DOCKER_CONFIG`, else `$HOME/.docker`.
pub fn default_dir() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".docker")),
    }
}

/// `default_dir()/config.json`.
pub fn default_path() -> Option<PathBuf> {
    default_dir().map(|d| d.join("config.json"))
}

/// The host part of a registry name or an `auths` key:
/// `https://host:port/v1/` → `host:port`; Docker Hub's names → `docker.io`.
pub fn normalize(name: &str) -> String {
    let s = name
        .strip_prefix("https://")
        .or_else(|| name.strip_prefix("http://"))
        .unwrap_or(name);
    let host = s.split('/').next().unwrap_or("").to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        _ => host,
    }
}

/// The `auths` key `docker login REGISTRY` writes.
pub fn config_key(registry: &str) -> String {
    let host = normalize(registry);
    if host == "docker.io" {
        DOCKER_HUB_KEY.to_string()
    } else {
        host
    }
}

/// A loaded (or new, empty) config.json. Unknown keys are kept as they are.
pub struct DockerConfig {
    path: PathBuf,
    doc: Map<String, Value>,
}

impl DockerConfig {
    /// Load `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<DockerConfig, DockerConfigError> {
        let doc = match std::fs::read(path) {
            Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(b) => match serde_json::from_slice::<Value>(&b) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    return Err(DockerConfigError::Parse {
                        path: path.into(),
                        detail: "not a JSON object".into(),
                    })
                }
                Err(e) => {
                    return Err(DockerConfigError::Parse {
                        path: path.into(),
                        // Line and column only: the text may hold secrets.
                        detail: format!("line {} column {}", e.line(), e.column()),
                    });
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => {
                return Err(DockerConfigError::Io {
                    path: path.into(),
                    detail: e.to_string(),
                })
            }
        };
        Ok(DockerConfig {
            path: path.to_path_buf(),
            doc,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why credential helpers configured here will not be used for `host`.
    pub fn helper_warning(&self, host: &str) -> Option<String> {
        let host = normalize(host);
        let helper = self
            .doc
            .get("credHelpers")
            .and_then(Value::as_object)
            .and_then(|m| m.iter().find(|(k, _)| normalize(k) == host))
            .and_then(|(_, v)| v.as_str().map(str::to_string))
            .or_else(|| {
                self.doc
                    .get("credsStore")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            })?;
        Some(format!(
            "{}: credential helper {helper:?} is not supported; using the \"auths\" entries only",
            self.path.display()
        ))
    }

    /// The credentials stored for registry `host` (`host[:port]`).
    pub fn lookup(&self, host: &str) -> Result<Option<Credentials>, DockerConfigError> {
        let want = normalize(host);
        let Some(auths) = self.doc.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        // An exact key first, then any key naming the same host.
        let entry = auths.get(host).map(|v| (host.to_string(), v)).or_else(|| {
            auths
                .iter()
                .find(|(k, _)| normalize(k) == want)
                .map(|(k, v)| (k.clone(), v))
        });
        let Some((key, v)) = entry else {
            return Ok(None);
        };
        let bad = |detail: &str| DockerConfigError::Entry {
            path: self.path.clone(),
            key: key.clone(),
            detail: detail.to_string(),
        };
        let get = |name: &str| {
            v.get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        if let Some(token) = get("identitytoken") {
            // containerd's convention: no username, the secret is a refresh token.
            return Ok(Some(Credentials {
                username: String::new(),
                password: token,
            }));
        }
        if let Some(auth) = get("auth") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad("\"auth\" is not valid base64"))?;
            let raw = String::from_utf8(raw).map_err(|_| bad("\"auth\" is not UTF-8"))?;
            let (u, p) = raw
                .split_once(':')
                .ok_or_else(|| bad("\"auth\" is not base64 of USER:PASSWORD"))?;
            return Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
        match (get("username"), get("password")) {
            (Some(username), Some(password)) => Ok(Some(Credentials { username, password })),
            _ => Ok(None),
        }
    }

    /// Store credentials for `registry` as `docker login` does.
    pub fn set(&mut self, registry: &str, creds: &Credentials) {
        let key = config_key(registry);
        let auths = self
            .doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        let auths = auths.as_object_mut().expect("object");
        // Drop other spellings of the same host so the new entry is the one used.
        let host = normalize(registry);
        auths.retain(|k, _| normalize(k) != host);
        let raw = format!("{}:{}", creds.username, creds.password);
        let mut entry = Map::new();
        entry.insert(
            "auth".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
        );
        auths.insert(key, Value::Object(entry));
    }

    /// Remove every entry for `registry`; false when there was none.
    pub fn remove(&mut self, registry: &str) -> bool {
        let host = normalize(registry);
        let Some(auths) = self.doc.get_mut("auths").and_then(Value::as_object_mut) else {
            return false;
        };
        let before = auths.len();
        auths.retain(|k, _| normalize(k) != host);
        auths.len() != before
    }

    /// Write the file atomically (temp file, fsync, rename), mode 0600.
    pub fn save(&self) -> Result<(), DockerConfigError> {
        let io = |e: std::io::Error| DockerConfigError::Io {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let mut text = serde_json::to_vec_pretty(&Value::Object(self.doc.clone()))
            .map_err(|e| io(std::io::Error::other(e)))?;
        text.push(b'\n');
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "config.json".into());
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> (tempfile::TempDir, DockerConfig) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        std::fs::write(&p, text).unwrap();
        let c = DockerConfig::load(&p).unwrap();
        (d, c)
    }

    #[test]
    fn lookup_spellings() {
        // alice:secret, bob:hunter2
        let (_d, c) = cfg(r#"{"auths": {
            "https://reg.example:5000/v1/": {"auth": "YWxpY2U6c2VjcmV0"},
            "https://index.docker.io/v1/": {"username": "bob", "password": "hunter2"},
            "tok.example": {"identitytoken": "refresh-me"}
        }, "credsStore": "desktop"}"#);
        let a = c.lookup("reg.example:5000").unwrap().unwrap();
        assert_eq!(
            (a.username.as_str(), a.password.as_str()),
            ("alice", "secret")
        );
        let b = c.lookup("docker.io").unwrap().unwrap();
        assert_eq!(b.username, "bob");
        assert!(c.lookup("registry-1.docker.io").unwrap().is_some());
        let t = c.lookup("tok.example").unwrap().unwrap();
        assert_eq!(
            (t.username.as_str(), t.password.as_str()),
            ("", "refresh-me")
        );
        assert!(c.lookup("reg.example").unwrap().is_none());
        assert!(c
            .helper_warning("reg.example:5000")
            .unwrap()
            .contains("desktop"));
    }

    #[test]
    fn bad_entry_does_not_leak() {
        let (_d, c) = cfg(r#"{"auths": {"r": {"auth": "bm9jb2xvbg=="}}}"#);
        let e = c.lookup("r").unwrap_err().to_string();
        assert!(e.contains("USER:PASSWORD") && !e.contains("nocolon"), "{e}");
    }

    #[test]
    fn set_remove_save_keep_other_keys() {
        let (d, mut c) = cfg(
            r#"{"auths": {"https://r:1": {"auth": "eDp5"}, "o": {"auth": "eDp5"}}, "psFormat": "x"}"#,
        );
        c.set(
            "r:1",
            &Credentials {
                username: "u".into(),
                password: "p".into(),
            },
        );
        c.save().unwrap();
        let p = d.path().join("config.json");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "x");
        assert_eq!(v["auths"]["r:1"]["auth"], "dTpw");
        assert!(v["auths"].get("https://r:1").is_none());
        assert!(v["auths"].get("o").is_some());
        let mut c = DockerConfig::load(&p).unwrap();
        assert!(c.remove("r:1"));
        assert!(!c.remove("r:1"));
        c.set(
            "docker.io",
            &Credentials {
                username: "u".into(),
                password: "p".into(),
            },
        );
        c.save().unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert!(v["auths"].get(DOCKER_HUB_KEY).is_some());
        assert_eq!(v["auths"].as_object().unwrap().len(), 2);
    }
}
