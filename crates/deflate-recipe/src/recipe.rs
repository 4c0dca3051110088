//! The recipe container: format version, model, member lengths and the two
//! packed streams: block/framing records ("meta") and token corrections.
//!
//! Layout (version 2), integers as LEB128 varints:
//!
//! ```text
//! "SDR" | version u8 = 2 | model spec | n_members | plaintext length × n |
//! meta_len | meta | tok_len | tok
//! model spec: 0 literals | 1 level segment dict (klauspost/pgzip)
//!           | 2 level (zlib) | 3 level (Go compress/flate)
//!           | 4 level block dict (pigz)
//! packed stream: 0 raw bytes… | 1 zstd frame
//! ```
//!
//! Meta records: `1` gzip member = header length, header bytes, block
//! records up to the final one, end padding bits u8, trailer flag (0 = CRC
//! and size as computed, 1 = 8 bytes follow); `2` trailing bytes = length,
//! bytes; `0` end. A block record is a flags byte (bit 0 BFINAL, bits 1–2
//! type, bit 3 explicit header, bit 4 size in bytes) and its size (tokens,
//! or plaintext bytes; stored: length then padding bits u8); a dynamic block
//! then has either the explicit header (HLIT−257, HDIST−1, HCLEN−4, the
//! code-length-code lengths in transmission order, run count, runs as symbol
//! [+ extra]) or a builder id and the prefix its frequencies came from
//! (0 whole block, `bytes << 1 | 1`, `tokens << 1`).
//!
//! Token records (see `diff`): `n_ok, n_explicit, explicit tokens…` against
//! the model's predicted tokens; a stored block's bytes skip the
//! predictions they cover instead of being compared token by token.
//!
//! Versions: 2 is the first frozen format. 1 was written by pre-release
//! development snapshots of this crate: same layout, and the last of those
//! snapshots already had version 2's semantics, so version 1 is decoded as
//! 2 (recipes from earlier snapshots then fail the caller's digest check
//! rather than rebuild). Later versions must keep reading version 2:
//! `from_bytes` dispatches on the version byte.

use crate::error::{RecipeError, Result};
use crate::model::ModelSpec;
use crate::varint::{self, ByteReader};

const MAGIC: &[u8; 3] = b"SDR";
/// Current recipe format version.
pub const FORMAT_VERSION: u8 = 2;

/// Meta stream record tags.
pub(crate) const TAG_END: u8 = 0;
pub(crate) const TAG_MEMBER: u8 = 1;
pub(crate) const TAG_GARBAGE: u8 = 2;

/// Block record flag bits.
pub(crate) const BF_LAST: u8 = 1;
pub(crate) const BF_TYPE_SHIFT: u8 = 1;
pub(crate) const BF_EXPLICIT: u8 = 8;
/// The block size is given in plaintext bytes (else in tokens).
pub(crate) const BF_BYTES: u8 = 16;

/// Everything needed, besides the plaintext, to rebuild a gzip stream exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipe {
    pub(crate) version: u8,
    pub(crate) model: ModelSpec,
    /// Plaintext length of each gzip member.
    pub(crate) members: Vec<u64>,
    /// Packed: framing and block records.
    pub(crate) meta: Vec<u8>,
    /// Packed: token corrections against the model.
    pub(crate) toks: Vec<u8>,
}

impl Recipe {
    /// Serialize.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.meta.len() + self.toks.len() + 32);
        out.extend_from_slice(MAGIC);
        out.push(self.version);
        self.model.write(&mut out);
        varint::put(&mut out, self.members.len() as u64);
        for &m in &self.members {
            varint::put(&mut out, m);
        }
        varint::put(&mut out, self.meta.len() as u64);
        out.extend_from_slice(&self.meta);
        varint::put(&mut out, self.toks.len() as u64);
        out.extend_from_slice(&self.toks);
        out
    }

    /// Parse a serialized recipe (any version this crate can read).
    pub fn from_bytes(b: &[u8]) -> Result<Recipe> {
        if b.len() < 4 || &b[..3] != MAGIC {
            return Err(RecipeError::recipe("missing recipe magic"));
        }
        let version = b[3];
        if version != 1 && version != 2 {
            return Err(RecipeError::recipe(format!(
                "unsupported recipe format version {version}"
            )));
        }
        let mut r = ByteReader::new(&b[4..]);
        let model = ModelSpec::read(&mut r)?;
        let n = r.var()?;
        if n > b.len() as u64 {
            return Err(RecipeError::recipe("member count larger than the recipe"));
        }
        let members = (0..n).map(|_| r.var()).collect::<Result<Vec<_>>>()?;
        let ml = r.var()?;
        if ml > b.len() as u64 {
            return Err(RecipeError::recipe("meta stream longer than the recipe"));
        }
        let meta = r.bytes(ml as usize)?;
        let tl = r.var()?;
        if tl > b.len() as u64 {
            return Err(RecipeError::recipe("token stream longer than the recipe"));
        }
        let toks = r.bytes(tl as usize)?;
        if r.opt_u8()?.is_some() {
            return Err(RecipeError::recipe("trailing bytes after recipe"));
        }
        Ok(Recipe {
            version,
            model,
            members,
            meta,
            toks,
        })
    }

    /// Serialized size in bytes.
    pub fn serialized_len(&self) -> usize {
        self.to_bytes().len()
    }

    /// Compressed sizes of the (block/framing, token correction) streams,
    /// for diagnostics.
    pub fn stream_sizes(&self) -> (usize, usize) {
        (self.meta.len(), self.toks.len())
    }

    /// Model used for token prediction.
    pub fn model(&self) -> ModelSpec {
        self.model
    }
}

/// Compress a stream for the recipe.
///
/// The first byte says how: 0 = raw (tiny streams, where a zstd frame
/// would cost more than it saves), 1 = zstd.
pub(crate) fn pack(raw: &[u8]) -> Result<Vec<u8>> {
    // Small streams (the model case) get the strongest level; large ones
    // (fallback token streams) a faster one so analysis keeps its speed.
    let level = if raw.len() < 1 << 20 { 19 } else { 6 };
    let z = zstd::bulk::compress(raw, level)?;
    let mut out = Vec::with_capacity(z.len().min(raw.len()) + 1);
    if z.len() < raw.len() {
        out.push(1);
        out.extend_from_slice(&z);
    } else {
        out.push(0);
        out.extend_from_slice(raw);
    }
    Ok(out)
}

/// Raw bytes kept in memory before a stream is compressed incrementally.
const SPILL_AT: usize = 1 << 20;

/// Incremental packer: small streams are packed at the end (best ratio),
/// large ones (fallback token streams) go through a streaming zstd encoder
/// so memory holds only their compressed form.
#[derive(Default)]
pub(crate) struct Packer {
    z: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
}

impl Packer {
    /// Move `buf` into the compressor once it is large.
    pub(crate) fn absorb(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        use std::io::Write;
        if buf.len() < SPILL_AT {
            return Ok(());
        }
        if self.z.is_none() {
            self.z = Some(zstd::stream::write::Encoder::new(vec![1u8], 6)?);
        }
        self.z.as_mut().expect("encoder").write_all(buf)?;
        buf.clear();
        Ok(())
    }

    /// Pack what remains.
    pub(crate) fn finish(self, buf: &[u8]) -> Result<Vec<u8>> {
        use std::io::Write;
        match self.z {
            None => pack(buf),
            Some(mut z) => {
                z.write_all(buf)?;
                Ok(z.finish()?)
            }
        }
    }
}

/// Reader over a stream written by [`pack`].
pub(crate) fn unpack(packed: &[u8]) -> Result<Box<dyn std::io::Read + '_>> {
    match packed.split_first() {
        Some((0, raw)) => Ok(Box::new(raw)),
        Some((1, z)) => Ok(Box::new(zstd::stream::read::Decoder::new(z)?)),
        _ => Err(RecipeError::recipe("unknown stream packing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn packer_small_and_spilled() {
        for n in [0usize, 5, 1000, SPILL_AT + 12345, 3 * SPILL_AT] {
            let data: Vec<u8> = (0..n)
                .map(|i| (i * 31 % 251) as u8 ^ (i >> 13) as u8)
                .collect();
            let mut p = Packer::default();
            let mut buf = Vec::new();
            for chunk in data.chunks(100_000) {
                buf.extend_from_slice(chunk);
                p.absorb(&mut buf).unwrap();
            }
            let packed = p.finish(&buf).unwrap();
            let mut back = Vec::new();
            unpack(&packed).unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "n = {n}");
        }
    }
}
