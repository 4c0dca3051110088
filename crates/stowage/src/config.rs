//! Settings from `stowage.toml` (`--config`, default `/etc/stowage/stowage.toml`
//! when present) or from a containerd `config.toml` (`--containerd-config`).
//! Unknown keys are warned about; a wrong type is an error naming the key and
//! the file.

use std::path::{Path, PathBuf};
use std::time::Duration;
use stowage_store::Policy;
use toml::Value;

pub const DEFAULT_CONFIG: &str = "/etc/stowage/stowage.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path:?}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path:?}: not valid TOML: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("config {path:?}: key {key}: {detail}")]
    Key {
        path: PathBuf,
        key: String,
        detail: String,
    },
}

#[derive(Clone, Debug)]
pub struct Config {
    pub root: Option<PathBuf>,
    pub policy: Policy,
    pub recipe_max_ratio: f64,
    pub registry_config_path: Option<PathBuf>,
    pub max_concurrent_downloads: usize,
    pub cri_socket: PathBuf,
    pub image_pull_progress_timeout: Duration,
    /// Unknown keys and other things the user should hear about.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: None,
            policy: Policy::Keep,
            recipe_max_ratio: 0.10,
            registry_config_path: None,
            max_concurrent_downloads: 3,
            cri_socket: PathBuf::from("/run/stowage/stowage.sock"),
            image_pull_progress_timeout: Duration::from_secs(300),
            warnings: Vec::new(),
        }
    }
}

fn read_toml(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

struct Keys<'a> {
    path: &'a Path,
}

impl Keys<'_> {
    fn err(&self, key: &str, detail: impl Into<String>) -> ConfigError {
        ConfigError::Key {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            detail: detail.into(),
        }
    }
    fn string(&self, key: &str, v: &Value) -> Result<String, ConfigError> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.err(key, format!("expected a string, found {}", v.type_str())))
    }
    fn int(&self, key: &str, v: &Value) -> Result<i64, ConfigError> {
        v.as_integer()
            .ok_or_else(|| self.err(key, format!("expected an integer, found {}", v.type_str())))
    }
    fn bool(&self, key: &str, v: &Value) -> Result<bool, ConfigError> {
        v.as_bool().ok_or_else(|| {
            self.err(
                key,
                format!("expected true or false, found {}", v.type_str()),
            )
        })
    }
    fn duration(&self, key: &str, v: &Value) -> Result<Duration, ConfigError> {
        let s = self.string(key, v)?;
        parse_duration(&s).ok_or_else(|| {
            self.err(
                key,
                format!("{s:?} is not a duration like \"5m\", \"30s\" or \"1h30m\""),
            )
        })
    }
}

/// Go-style durations: "5m", "1m30s", "250ms", "0" (= disabled).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(Duration::from_secs_f64(total))
}

impl Config {
    /// Read a `stowage.toml`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let t = read_toml(path)?;
        let k = Keys { path };
        let mut c = Config::default();
        for (key, v) in &t {
            match (key.as_str(), v) {
                ("root", v) => c.root = Some(PathBuf::from(k.string("root", v)?)),
                ("store", Value::Table(s)) => {
                    for (key, v) in s {
                        let full = format!("store.{key}");
                        match key.as_str() {
                            "policy" => {
                                c.policy = k
                                    .string(&full, v)?
                                    .parse()
                                    .map_err(|e: String| k.err(&full, e))?;
                            }
                            "recipe_max_ratio" => {
                                let r = v
                                    .as_float()
                                    .or_else(|| v.as_integer().map(|i| i as f64))
                                    .ok_or_else(|| k.err(&full, "expected a number"))?;
                                if !(0.0..=1.0).contains(&r) {
                                    return Err(k.err(&full, "must be between 0 and 1"));
                                }
                                c.recipe_max_ratio = r;
                            }
                            _ => c
                                .warnings
                                .push(format!("config {path:?}: unknown key {full}")),
                        }
                    }
                }
                ("registry", Value::Table(s)) => {
                    for (key, v) in s {
                        let full = format!("registry.{key}");
                        match key.as_str() {
                            "config_path" => {
                                c.registry_config_path = Some(PathBuf::from(k.string(&full, v)?))
                            }
                            "max_concurrent_downloads" => {
                                let n = k.int(&full, v)?;
                                if !(1..=64).contains(&n) {
                                    return Err(k.err(&full, "must be between 1 and 64"));
                                }
                                c.max_concurrent_downloads = n as usize;
                            }
                            _ => c
                                .warnings
                                .push(format!("config {path:?}: unknown key {full}")),
                        }
                    }
                }
                ("cri", Value::Table(s)) => {
                    for (key, v) in s {
                        let full = format!("cri.{key}");
                        match key.as_str() {
                            "socket" => c.cri_socket = PathBuf::from(k.string(&full, v)?),
                            "image_pull_progress_timeout" => {
                                c.image_pull_progress_timeout = k.duration(&full, v)?
                            }
                            _ => c
                                .warnings
                                .push(format!("config {path:?}: unknown key {full}")),
                        }
                    }
                }
                ("store" | "registry" | "cri", v) => {
                    return Err(k.err(key, format!("expected a table, found {}", v.type_str())));
                }
                _ => c
                    .warnings
                    .push(format!("config {path:?}: unknown key {key}")),
            }
        }
        Ok(c)
    }

    /// Apply the settings stowage understands from a containerd config
    /// (1.x `io.containerd.grpc.v1.cri` or 2.x `io.containerd.cri.v1.images`).
    pub fn apply_containerd(&mut self, path: &Path) -> Result<(), ConfigError> {
        let t = read_toml(path)?;
        let k = Keys { path };
        let Some(plugins) = t.get("plugins").and_then(|p| p.as_table()) else {
            self.warnings.push(format!(
                "containerd config {path:?}: no [plugins] table; nothing to read"
            ));
            return Ok(());
        };
        // 1.x
        if let Some(cri) = plugins
            .get("io.containerd.grpc.v1.cri")
            .and_then(|c| c.as_table())
        {
            let pre = "plugins.\"io.containerd.grpc.v1.cri\"";
            if let Some(v) = cri
                .get("containerd")
                .and_then(|c| c.get("discard_unpacked_layers"))
            {
                if k.bool(&format!("{pre}.containerd.discard_unpacked_layers"), v)? {
                    self.policy = Policy::Discard;
                }
            }
            if let Some(v) = cri.get("max_concurrent_downloads") {
                self.max_concurrent_downloads = k
                    .int(&format!("{pre}.max_concurrent_downloads"), v)?
                    .clamp(1, 64) as usize;
            }
            if let Some(v) = cri.get("image_pull_progress_timeout") {
                self.image_pull_progress_timeout =
                    k.duration(&format!("{pre}.image_pull_progress_timeout"), v)?;
            }
            if let Some(v) = cri.get("registry").and_then(|r| r.get("config_path")) {
                self.registry_config_path = Some(PathBuf::from(
                    k.string(&format!("{pre}.registry.config_path"), v)?,
                ));
            }
        }
        // 2.x
        if let Some(img) = plugins
            .get("io.containerd.cri.v1.images")
            .and_then(|c| c.as_table())
        {
            let pre = "plugins.\"io.containerd.cri.v1.images\"";
            if let Some(v) = img.get("discard_unpacked_layers") {
                if k.bool(&format!("{pre}.discard_unpacked_layers"), v)? {
                    self.policy = Policy::Discard;
                }
            }
            if let Some(v) = img.get("max_concurrent_downloads") {
                self.max_concurrent_downloads = k
                    .int(&format!("{pre}.max_concurrent_downloads"), v)?
                    .clamp(1, 64) as usize;
            }
            if let Some(v) = img.get("image_pull_progress_timeout") {
                self.image_pull_progress_timeout =
                    k.duration(&format!("{pre}.image_pull_progress_timeout"), v)?;
            }
            if let Some(v) = img.get("registry").and_then(|r| r.get("config_path")) {
                self.registry_config_path = Some(PathBuf::from(
                    k.string(&format!("{pre}.registry.config_path"), v)?,
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(s: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), s).unwrap();
        f
    }

    #[test]
    fn reads_stowage_toml_and_names_bad_keys() {
        let f = write("root = \"/x\"\n[store]\npolicy = \"discard\"\nbogus = 1\n[cri]\nimage_pull_progress_timeout = \"1m30s\"\n");
        let c = Config::load(f.path()).unwrap();
        assert_eq!(c.policy, Policy::Discard);
        assert_eq!(c.image_pull_progress_timeout, Duration::from_secs(90));
        assert!(c.warnings.iter().any(|w| w.contains("store.bogus")));
        let f = write("[registry]\nmax_concurrent_downloads = \"three\"\n");
        let e = Config::load(f.path()).unwrap_err().to_string();
        assert!(
            e.contains("registry.max_concurrent_downloads") && e.contains("integer"),
            "{e}"
        );
    }

    #[test]
    fn reads_containerd_1x_and_2x() {
        let f = write("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndiscard_unpacked_layers = true\n");
        let mut c = Config::default();
        c.apply_containerd(f.path()).unwrap();
        assert_eq!(c.policy, Policy::Discard);
        let f = write("version = 3\n[plugins.'io.containerd.cri.v1.images']\ndiscard_unpacked_layers = true\nmax_concurrent_downloads = 5\n[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = \"/etc/containerd/certs.d\"\n");
        let mut c = Config::default();
        c.apply_containerd(f.path()).unwrap();
        assert_eq!((c.policy, c.max_concurrent_downloads), (Policy::Discard, 5));
        assert_eq!(
            c.registry_config_path.unwrap(),
            PathBuf::from("/etc/containerd/certs.d")
        );
    }
}
