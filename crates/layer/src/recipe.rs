//! A layer's recipe: what rebuilds its exact blob from its snapshot. It holds
//! the tar-split (which rebuilds the uncompressed tar, so the diffID) and,
//! for compressed layers, the compression reconstruction data (which
//! rebuilds the exact compressed stream from the tar), when one exists.
//!
//! Binary format, version 1: magic `stowage-recipe\n`, version byte, then
//! length-prefixed fields (u32/u64 little-endian). Older versions stay
//! readable: `from_bytes` dispatches on the version byte.

use std::io::{self, Write};
use std::path::Path;
use stowage_oci::{Compression, Digest};

const MAGIC: &[u8] = b"stowage-recipe\n";
const VERSION: u8 = 1;
pub const RECIPE_MEDIA_TYPE: &str = "application/vnd.stowage.layer.recipe.v1";

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("recipe is malformed: {0}")]
    Malformed(&'static str),
    #[error("recipe format version {0} is newer than this stowage understands")]
    Version(u8),
    #[error(
        "recipe for layer {layer}: no {what} reconstruction data; the exact blob cannot be rebuilt"
    )]
    Missing { layer: Digest, what: &'static str },
    #[error("rebuilding layer {layer}: {source}")]
    Io { layer: Digest, source: io::Error },
}

#[derive(Clone, Debug)]
pub struct Recipe {
    /// The compressed layer this rebuilds.
    pub layer: Digest,
    pub diff_id: Digest,
    pub compression: Compression,
    pub tar_size: u64,
    /// zstd-compressed tar-split stream (see `tarsplit`).
    pub tar_split: Vec<u8>,
    /// Compression reconstruction: (kind, data), e.g. ("deflate", …).
    pub codec: Option<(String, Vec<u8>)>,
}

impl Recipe {
    /// True when this recipe alone (with the snapshot) rebuilds the exact blob.
    pub fn rebuilds_blob(&self) -> bool {
        self.compression == Compression::None || self.codec.is_some()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.tar_split.len() + 256);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        put(&mut out, self.layer.to_string().as_bytes());
        put(&mut out, self.diff_id.to_string().as_bytes());
        put(&mut out, self.compression.as_str().as_bytes());
        out.extend_from_slice(&self.tar_size.to_le_bytes());
        put(&mut out, &self.tar_split);
        match &self.codec {
            Some((kind, data)) => {
                out.push(1);
                put(&mut out, kind.as_bytes());
                put(&mut out, data);
            }
            None => out.push(0),
        }
        out
    }

    pub fn from_bytes(b: &[u8]) -> Result<Recipe, RecipeError> {
        let rest = b
            .strip_prefix(MAGIC)
            .ok_or(RecipeError::Malformed("bad magic"))?;
        let (&version, mut rest) = rest
            .split_first()
            .ok_or(RecipeError::Malformed("no version"))?;
        if version != VERSION {
            return Err(RecipeError::Version(version));
        }
        let digest = |s: &[u8]| -> Result<Digest, RecipeError> {
            std::str::from_utf8(s)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(RecipeError::Malformed("bad digest"))
        };
        let layer = digest(take(&mut rest)?)?;
        let diff_id = digest(take(&mut rest)?)?;
        let compression = match take(&mut rest)? {
            b"none" => Compression::None,
            b"gzip" => Compression::Gzip,
            b"zstd" => Compression::Zstd,
            _ => return Err(RecipeError::Malformed("unknown compression")),
        };
        if rest.len() < 8 {
            return Err(RecipeError::Malformed("truncated"));
        }
        let tar_size = u64::from_le_bytes(rest[..8].try_into().unwrap());
        rest = &rest[8..];
        let tar_split = take(&mut rest)?.to_vec();
        let (&has_codec, mut rest) = rest
            .split_first()
            .ok_or(RecipeError::Malformed("truncated"))?;
        let codec = if has_codec == 1 {
            let kind = String::from_utf8(take(&mut rest)?.to_vec())
                .map_err(|_| RecipeError::Malformed("codec kind"))?;
            Some((kind, take(&mut rest)?.to_vec()))
        } else {
            None
        };
        Ok(Recipe {
            layer,
            diff_id,
            compression,
            tar_size,
            tar_split,
            codec,
        })
    }

    /// Write the uncompressed tar, rebuilt from the snapshot at `root`.
    pub fn write_tar(&self, root: &Path, out: &mut dyn Write) -> Result<u64, RecipeError> {
        crate::tarsplit::replay_tar(&self.tar_split, root, out).map_err(|source| RecipeError::Io {
            layer: self.layer.clone(),
            source,
        })
    }
}

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn take<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], RecipeError> {
    if rest.len() < 4 {
        return Err(RecipeError::Malformed("truncated"));
    }
    let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
    if rest.len() < 4 + n {
        return Err(RecipeError::Malformed("truncated"));
    }
    let v = &rest[4..4 + n];
    *rest = &rest[4 + n..];
    Ok(v)
}
