//! OCI vocabulary shared by every stowage crate: [`Digest`], [`Reference`],
//! media types and [`Platform`] matching. Everything here is parsed and
//! validated once, at the edge, so the rest of the code can trust it.

mod digest;
mod manifest;
mod media;
mod platform;
mod reference;

pub use digest::{Digest, DigestError, Hasher, HashingWriter};
pub use manifest::{parse_config, parse_manifest, Manifest, ManifestError};
pub use media::*;
pub use platform::{descriptor_platform, Platform, PlatformError};
pub use reference::{Reference, ReferenceError, DEFAULT_REGISTRY};

/// Re-export of the oci-spec image types we build on.
pub use oci_spec::image as spec;
