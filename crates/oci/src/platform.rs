use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/arm64")]
    Invalid(String),
}

/// An `os/arch[/variant]` platform, normalized the way containerd does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this machine.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        let variant = (arch == "arm64").then(|| "v8".to_string());
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: arch.to_string(),
            variant,
        }
    }

    /// True when an image for `other` runs here, treating a missing variant
    /// as a wildcard (arm64 images rarely say v8).
    pub fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        if self.os != os || self.architecture != normalize_arch(arch) {
            return false;
        }
        match (&self.variant, variant) {
            (Some(a), Some(b)) => {
                a == b || (self.architecture == "arm64" && (a == "v8" || b == "v8"))
            }
            _ => true,
        }
    }
}

fn normalize_arch(a: &str) -> &str {
    match a {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(PlatformError::Invalid(s.to_string()));
        }
        Ok(Platform {
            os: parts[0].to_lowercase(),
            architecture: normalize_arch(&parts[1].to_lowercase()).to_string(),
            variant: parts.get(2).map(|v| v.to_lowercase()),
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// `(os, architecture, variant)` of an index entry; empty when it names none.
pub fn descriptor_platform(d: &oci_spec::image::Descriptor) -> (String, String, Option<String>) {
    d.platform()
        .as_ref()
        .map(|p| {
            (
                p.os().to_string(),
                p.architecture().to_string(),
                p.variant().clone(),
            )
        })
        .unwrap_or_default()
}
