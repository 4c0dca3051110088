//! containerd's `hosts.toml` tree (`config_path`): per registry host, the
//! mirrors to try in order and then the origin (`server`), each with its own
//! capabilities, TLS settings and extra headers.
//!
//! Lookup for registry `HOST[:PORT]` under `DIR`, first directory that exists
//! wins (as containerd does): `DIR/HOST_PORT_`, `DIR/HOST:PORT`, `DIR/_default`.
//! In that directory `hosts.toml` is read; without one, Docker's `certs.d`
//! files are honoured (`*.crt` CAs, `*.cert` + `*.key` client pairs).
//!
//! ```toml
//! server = "https://registry.example:5000"      # the origin; default https://HOST
//! ca = "ca.pem"                                 # applies to the server
//! [host."https://mirror.example"]
//!   capabilities = ["pull", "resolve"]          # default pull, resolve, push
//!   skip_verify = false
//!   ca = ["/etc/certs/mirror-ca.pem"]           # relative paths: to this directory
//!   client = [["client.cert", "client.key"]]    # or "both.pem", or ["a.pem"]
//!   override_path = false                       # true: the URL path replaces /v2
//!   [host."https://mirror.example".header]
//!     x-custom = "value"                        # or ["v1", "v2"]
//! ```

use std::path::{Path, PathBuf};
use toml::Value;

/// What an endpoint may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Fetch content by digest (blobs, manifests by digest).
    pub pull: bool,
    /// Resolve a tag to a manifest.
    pub resolve: bool,
    pub push: bool,
}

impl Capabilities {
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities::ALL
    }
}

/// One place to talk to for a registry: a mirror or the origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]` of the endpoint.
    pub host: String,
    /// API root path, normally `/v2`.
    pub path: String,
    pub capabilities: Capabilities,
    pub skip_verify: bool,
    /// Extra CA bundles (PEM), on top of the system roots.
    pub ca: Vec<PathBuf>,
    /// Client certificate and key (the key may be inside the cert file).
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    pub headers: Vec<(String, String)>,
    /// A `[host."…"]` entry rather than the origin.
    pub mirror: bool,
}

impl HostConfig {
    /// `scheme://host[:port]/v2` (without a trailing slash).
    pub fn base_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.path)
    }

    fn origin(scheme: &str, host: &str) -> HostConfig {
        HostConfig {
            scheme: scheme.to_string(),
            host: host.to_string(),
            path: "/v2".to_string(),
            capabilities: Capabilities::ALL,
            skip_verify: false,
            ca: Vec::new(),
            client: Vec::new(),
            headers: Vec::new(),
            mirror: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("{path:?}: {detail}")]
    File { path: PathBuf, detail: String },
}

/// Where stowage looks for `hosts.toml` when `[registry] config_path` is unset.
pub const DEFAULT_HOSTS_DIR: &str = "/etc/stowage/certs.d";

/// [`DEFAULT_HOSTS_DIR`] when it exists.
pub fn default_dir() -> Option<PathBuf> {
    Some(PathBuf::from(DEFAULT_HOSTS_DIR)).filter(|p| p.is_dir())
}

/// Where the registry `docker.io` is really served from.
pub fn default_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        r => r,
    }
}

/// The directory holding the settings of `registry` under `root`, if any.
pub fn host_dir(root: &Path, registry: &str) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(i) = registry.rfind(':') {
        if i > 0 {
            candidates.push(root.join(format!("{}_{}_", &registry[..i], &registry[i + 1..])));
        }
    }
    candidates.push(root.join(registry));
    candidates.push(root.join("_default"));
    candidates.into_iter().find(|d| d.is_dir())
}

/// The endpoints to try for `registry`, mirrors first (in file order), the
/// origin last. `plain_http` makes the origin plain HTTP. Problems the user
/// should hear about but that do not stop a pull are returned as warnings.
pub fn endpoints(
    root: Option<&Path>,
    registry: &str,
    plain_http: bool,
) -> Result<(Vec<HostConfig>, Vec<String>), HostsError> {
    let default_scheme = if plain_http { "http" } else { "https" };
    let mut origin = HostConfig::origin(default_scheme, default_host(registry));
    let mut warnings = Vec::new();
    let Some(dir) = root.and_then(|r| host_dir(r, registry)) else {
        return Ok((vec![origin], warnings));
    };
    let file = dir.join("hosts.toml");
    if !file.is_file() {
        certs_d(&dir, &mut origin).map_err(|detail| HostsError::File {
            path: dir.clone(),
            detail,
        })?;
        return Ok((vec![origin], warnings));
    }
    let err = |detail: String| HostsError::File {
        path: file.clone(),
        detail,
    };
    let text = std::fs::read_to_string(&file).map_err(|e| err(e.to_string()))?;
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| err(format!("not valid TOML: {}", e.message())))?;
    let mut out = Vec::new();
    for (k, v) in &doc {
        match k.as_str() {
            "server" => {
                let s = v
                    .as_str()
                    .ok_or_else(|| err("key server: expected a string".into()))?;
                let (scheme, host, path) = split_url(s).map_err(|d| err(format!("server: {d}")))?;
                origin.scheme = if plain_http { "http".into() } else { scheme };
                origin.host = host;
                origin.path = path;
            }
            "host" => {
                let t = v
                    .as_table()
                    .ok_or_else(|| err("key host: expected a table".into()))?;
                for (url, entry) in t {
                    let (scheme, host, path) =
                        split_url(url).map_err(|d| err(format!("host.{url:?}: {d}")))?;
                    let mut h = HostConfig::origin(&scheme, &host);
                    h.path = path;
                    h.mirror = true;
                    let entry = entry
                        .as_table()
                        .ok_or_else(|| err(format!("host.{url:?}: expected a table")))?;
                    apply(
                        &mut h,
                        entry,
                        &dir,
                        &format!("host.{url:?}."),
                        &mut warnings,
                    )
                    .map_err(err)?;
                    out.push(h);
                }
            }
            _ => {}
        }
    }
    let top: toml::Table = doc
        .iter()
        .filter(|(k, _)| k.as_str() != "server" && k.as_str() != "host")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    apply(&mut origin, &top, &dir, "", &mut warnings).map_err(err)?;
    for w in &mut warnings {
        *w = format!("{}: {w}", file.display());
    }
    out.push(origin);
    Ok((out, warnings))
}

/// `https://host:port/path` → (scheme, host:port, API path).
fn split_url(s: &str) -> Result<(String, String, String), String> {
    let (scheme, rest) = match s.split_once("://") {
        Some((sc, rest)) => (sc.to_ascii_lowercase(), rest),
        None => ("https".to_string(), s),
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("unsupported scheme {scheme:?} (http or https)"));
    }
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    Ok((
        scheme,
        host.to_string(),
        path.trim_end_matches('/').to_string(),
    ))
}

fn apply(
    h: &mut HostConfig,
    t: &toml::Table,
    dir: &Path,
    prefix: &str,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let mut override_path = false;
    for (k, v) in t {
        let key = format!("{prefix}{k}");
        match k.as_str() {
            "capabilities" => {
                let list = strings(v).ok_or(format!("key {key}: expected a list of strings"))?;
                let mut c = Capabilities {
                    pull: false,
                    resolve: false,
                    push: false,
                };
                for s in list {
                    match s.as_str() {
                        "pull" => c.pull = true,
                        "resolve" => c.resolve = true,
                        "push" => c.push = true,
                        other => return Err(format!("key {key}: unknown capability {other:?}")),
                    }
                }
                h.capabilities = c;
            }
            "skip_verify" => {
                h.skip_verify = v
                    .as_bool()
                    .ok_or(format!("key {key}: expected a boolean"))?
            }
            "override_path" => {
                override_path = v
                    .as_bool()
                    .ok_or(format!("key {key}: expected a boolean"))?
            }
            "ca" => {
                let list =
                    strings(v).ok_or(format!("key {key}: expected a path or a list of paths"))?;
                h.ca.extend(list.iter().map(|p| resolve(dir, p)));
            }
            "client" => {
                let bad = || {
                    format!("key {key}: expected a path, a list of paths or of [cert, key] pairs")
                };
                match v {
                    Value::String(s) => h.client.push((resolve(dir, s), None)),
                    Value::Array(a) => {
                        for item in a {
                            match item {
                                Value::String(s) => h.client.push((resolve(dir, s), None)),
                                Value::Array(pair) => {
                                    let p = strings(&Value::Array(pair.clone())).ok_or_else(bad)?;
                                    match p.as_slice() {
                                        [c] => h.client.push((resolve(dir, c), None)),
                                        [c, k] => {
                                            h.client.push((resolve(dir, c), Some(resolve(dir, k))))
                                        }
                                        _ => return Err(bad()),
                                    }
                                }
                                _ => return Err(bad()),
                            }
                        }
                    }
                    _ => return Err(bad()),
                }
            }
            "header" => {
                let t = v.as_table().ok_or(format!("key {key}: expected a table"))?;
                for (name, val) in t {
                    let vals = strings(val).ok_or(format!(
                        "key {key}.{name}: expected a string or a list of strings"
                    ))?;
                    for s in vals {
                        h.headers.push((name.clone(), s));
                    }
                }
            }
            "dial_timeout" => {}
            _ => warnings.push(format!("unknown key {key} ignored")),
        }
    }
    if !override_path && !h.path.ends_with("/v2") {
        h.path.push_str("/v2");
    }
    Ok(())
}

fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
        _ => None,
    }
}

fn resolve(dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// Docker's `certs.d/HOST/` layout: `*.crt` are CAs, `X.cert` + `X.key` a client pair.
fn certs_d(dir: &Path, h: &mut HostConfig) -> Result<(), String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    for p in names {
        match p.extension().and_then(|e| e.to_str()) {
            Some("crt") => h.ca.push(p),
            Some("cert") => {
                let key = p.with_extension("key");
                if !key.is_file() {
                    return Err(format!(
                        "client certificate {p:?} has no matching .key file"
                    ));
                }
                h.client.push((p, Some(key)));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, host: &str, text: &str) {
        std::fs::create_dir_all(dir.join(host)).unwrap();
        std::fs::write(dir.join(host).join("hosts.toml"), text).unwrap();
    }

    #[test]
    fn no_config_is_the_origin() {
        let (e, _) = endpoints(None, "docker.io", false).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].base_url(), "https://registry-1.docker.io/v2");
        let (e, _) = endpoints(None, "127.0.0.1:5000", true).unwrap();
        assert_eq!(e[0].base_url(), "http://127.0.0.1:5000/v2");
    }

    #[test]
    fn mirrors_in_order_then_server() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "reg.example:5000",
            r#"
server = "https://origin.example"
ca = "origin-ca.pem"
[host."http://m2.example:8080"]
  capabilities = ["pull"]
[host."https://m1.example/prefix"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
  ca = ["a.pem", "/abs/b.pem"]
  client = [["c.cert", "c.key"], "both.pem"]
  [host."https://m1.example/prefix".header]
    x-one = "1"
    x-many = ["a", "b"]
[host."https://m3.example/custom"]
  override_path = true
"#,
        );
        let (e, w) = endpoints(Some(d.path()), "reg.example:5000", false).unwrap();
        assert!(w.is_empty(), "{w:?}");
        let urls: Vec<_> = e.iter().map(|h| h.base_url()).collect();
        assert_eq!(
            urls,
            [
                "http://m2.example:8080/v2",
                "https://m1.example/prefix/v2",
                "https://m3.example/custom",
                "https://origin.example/v2"
            ]
        );
        let dir = d.path().join("reg.example:5000");
        assert_eq!(
            e[0].capabilities,
            Capabilities {
                pull: true,
                resolve: false,
                push: false
            }
        );
        assert!(e[1].skip_verify && e[1].mirror && !e[3].mirror);
        assert_eq!(e[1].ca, [dir.join("a.pem"), PathBuf::from("/abs/b.pem")]);
        assert_eq!(
            e[1].client,
            [
                (dir.join("c.cert"), Some(dir.join("c.key"))),
                (dir.join("both.pem"), None)
            ]
        );
        assert_eq!(e[1].headers.len(), 3);
        assert_eq!(e[3].ca, [dir.join("origin-ca.pem")]);
        assert_eq!(e[3].capabilities, Capabilities::ALL);
    }

    #[test]
    fn lookup_order_and_default() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "_default", "[host.\"http://mirror:1\"]\n");
        write(d.path(), "reg_5000_", "server = \"http://reg:5000\"\n");
        let (e, _) = endpoints(Some(d.path()), "other.example", false).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].base_url(), "https://other.example/v2");
        let (e, _) = endpoints(Some(d.path()), "reg:5000", false).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].base_url(), "http://reg:5000/v2");
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "r",
            "[host.\"https://m\"]\nskip_verify = \"yes\"\nbogus = 1\n",
        );
        let e = endpoints(Some(d.path()), "r", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("hosts.toml") && e.contains("skip_verify"), "{e}");
        write(d.path(), "r", "bogus = 1\n");
        let (_, w) = endpoints(Some(d.path()), "r", false).unwrap();
        assert!(
            w[0].contains("bogus") && w[0].contains("hosts.toml"),
            "{w:?}"
        );
    }

    #[test]
    fn docker_certs_d() {
        let d = tempfile::tempdir().unwrap();
        let h = d.path().join("reg:443");
        std::fs::create_dir_all(&h).unwrap();
        std::fs::write(h.join("ca.crt"), "").unwrap();
        std::fs::write(h.join("client.cert"), "").unwrap();
        std::fs::write(h.join("client.key"), "").unwrap();
        let (e, _) = endpoints(Some(d.path()), "reg:443", false).unwrap();
        assert_eq!(e[0].ca, [h.join("ca.crt")]);
        assert_eq!(
            e[0].client,
            [(h.join("client.cert"), Some(h.join("client.key")))]
        );
    }
}
