//! gzip member header parsing (RFC 1952): the header is kept verbatim.

use std::io::Read;

use crate::bits::BitReader;
use crate::error::{RecipeError, Result};

/// Read the rest of a member header after the two magic bytes, returning all
/// header bytes including the magic.
pub fn read_header<R: Read>(br: &mut BitReader<R>) -> Result<Vec<u8>> {
    let start = br.offset().saturating_sub(2);
    let bad = |reason: &str| RecipeError::InvalidGzip {
        offset: start,
        reason: reason.to_string(),
    };
    let mut h = vec![0x1f, 0x8b];
    let mut fixed = [0u8; 8];
    if !br.bytes_exact(&mut fixed)? {
        return Err(bad("truncated header"));
    }
    h.extend_from_slice(&fixed);
    if fixed[0] != 8 {
        return Err(bad(&format!("unknown compression method {}", fixed[0])));
    }
    let flg = fixed[1];
    if flg & 0xe0 != 0 {
        return Err(bad(&format!("reserved header flags set ({flg:#04x})")));
    }
    if flg & 0x04 != 0 {
        let mut xl = [0u8; 2];
        if !br.bytes_exact(&mut xl)? {
            return Err(bad("truncated extra field"));
        }
        h.extend_from_slice(&xl);
        let mut extra = vec![0u8; u16::from_le_bytes(xl) as usize];
        if !br.bytes_exact(&mut extra)? {
            return Err(bad("truncated extra field"));
        }
        h.extend_from_slice(&extra);
    }
    for (bit, what) in [(0x08, "file name"), (0x10, "comment")] {
        if flg & bit != 0 {
            loop {
                let Some(b) = br.byte()? else {
                    return Err(bad(&format!("truncated {what}")));
                };
                h.push(b);
                if b == 0 {
                    break;
                }
            }
        }
    }
    if flg & 0x02 != 0 {
        let mut crc = [0u8; 2];
        if !br.bytes_exact(&mut crc)? {
            return Err(bad("truncated header crc"));
        }
        h.extend_from_slice(&crc);
    }
    Ok(h)
}
