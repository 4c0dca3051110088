//! Parsing of manifests, indexes and configs. The raw bytes are always kept by
//! the caller (digests are over bytes, never over a re-serialization); these
//! types are only for reading.

use crate::media;
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported manifest: schemaVersion {0} (only schema 2 is supported)")]
    Schema(u64),
    #[error("unsupported manifest media type {0:?}")]
    MediaType(String),
}

/// A manifest or an index, as found behind a reference.
// Parsed a handful of times per pull; boxing would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Manifest {
    Index(ImageIndex),
    Image(ImageManifest),
}

/// Parse `bytes` as an image manifest or index. `declared` is the media type
/// the registry or parent descriptor gave, if any; a manifest without a
/// `mediaType` field (umoci writes them) is told apart by its shape.
pub fn parse_manifest(bytes: &[u8], declared: Option<&str>) -> Result<Manifest, ManifestError> {
    let v: serde_json::Value = serde_json::from_slice(bytes)?;
    let schema = v.get("schemaVersion").and_then(|s| s.as_u64()).unwrap_or(0);
    if schema != 2 {
        return Err(ManifestError::Schema(schema));
    }
    let inner = v.get("mediaType").and_then(|m| m.as_str());
    let mt = inner.or(declared.filter(|d| media::is_index(d) || media::is_manifest(d)));
    let is_index = match mt {
        Some(m) if media::is_index(m) => true,
        Some(m) if media::is_manifest(m) => false,
        Some(m) if v.get("manifests").is_none() && v.get("layers").is_none() => {
            return Err(ManifestError::MediaType(m.to_string()))
        }
        _ => v.get("manifests").is_some(),
    };
    if is_index {
        Ok(Manifest::Index(serde_json::from_value(v)?))
    } else {
        Ok(Manifest::Image(serde_json::from_value(v)?))
    }
}

/// Parse an image configuration (OCI or Docker; they share the fields we read).
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration, ManifestError> {
    Ok(serde_json::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_without_media_type_is_a_manifest() {
        let m = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;
        assert!(matches!(
            parse_manifest(m, None).unwrap(),
            Manifest::Image(_)
        ));
        let i = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            parse_manifest(i, None).unwrap(),
            Manifest::Index(_)
        ));
        assert!(parse_manifest(b"<html>", None).is_err());
        assert!(parse_manifest(br#"{"schemaVersion":1}"#, None).is_err());
    }
}
