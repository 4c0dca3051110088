//! Image references in the docker grammar: `[registry[:port]/]repo[:tag][@digest]`.

use crate::Digest;
use std::fmt;
use std::str::FromStr;

pub const DEFAULT_REGISTRY: &str = "docker.io";

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference {0:?}: {1}")]
    Invalid(String, &'static str),
}

/// A parsed, normalized image reference. `docker.io/library/` is filled in
/// for short names, as docker and containerd do.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// `registry/repository`, the name without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag, or `latest` when neither tag nor digest was given.
    pub fn tag_or_latest(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn object(&self) -> String {
        match (&self.digest, self.tag_or_latest()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The same name with tag and digest replaced.
    pub fn with_digest(&self, d: &Digest) -> Reference {
        Reference {
            tag: None,
            digest: Some(d.clone()),
            ..self.clone()
        }
    }
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    !c.is_empty()
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && c.as_bytes()[0].is_ascii_alphanumeric()
        && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
}

fn valid_tag(t: &str) -> bool {
    // [\w][\w.-]{0,127}
    !t.is_empty()
        && t.len() <= 128
        && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || h.starts_with('[') => (host, Some(port)),
        _ => (h, None),
    };
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return false;
        }
    }
    !host.is_empty()
        && (host.starts_with('[') && host.ends_with(']')
            || host.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }))
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| ReferenceError::Invalid(s.to_string(), why);
        if s.is_empty() || s.len() > 4096 || s.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad("empty, too long, or contains whitespace"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(
                    d.parse::<Digest>()
                        .map_err(|_| bad("digest must be sha256:<64 hex>"))?,
                ),
            ),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad("tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
            }
        }
        let (registry, repo) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.starts_with('[') =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if !valid_host(&registry) {
            return Err(bad("registry host is not a valid host[:port]"));
        }
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DEFAULT_REGISTRY.to_string()
        } else {
            registry
        };
        let repository = if registry == DEFAULT_REGISTRY && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo
        };
        if repository.len() > 255 || !repository.split('/').all(valid_component) {
            return Err(bad("repository must be lowercase [a-z0-9] components separated by '/', '.', '_' or '-'"));
        }
        Ok(Reference {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let r: Reference = "debian".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/debian");
        assert_eq!(r.object(), "latest");
        let r: Reference = "127.0.0.1:5000/corpus/debian-min:zstd".parse().unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "corpus/debian-min", Some("zstd"))
        );
        let r: Reference =
            "localhost/a/b@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                .parse()
                .unwrap();
        assert!(r.tag.is_none() && r.digest.is_some());
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "UPPER/case",
            "a b",
            "repo:",
            "repo:-bad",
            "host:99999/x",
            "x@sha256:zz",
            "../etc",
        ] {
            assert!(s.parse::<Reference>().is_err(), "{s} should be rejected");
        }
    }
}
