//! Exact block writer: the inverse of the parser.

use std::io::Write;

use crate::bits::BitWriter;
use crate::error::{RecipeError, Result};
use crate::huffman::{
    codes, dist_code, fixed_dist_lengths, fixed_lit_lengths, CL_ORDER, DIST_BASE, DIST_EXTRA,
};
use crate::tokens::{len_symbol, BlockHead, BlockKind, DynHeader, Token, IRREGULAR_258};

/// Precomputed code tables for one block.
struct Codes {
    lit_len: Vec<u8>,
    lit_code: Vec<u16>,
    dist_len: Vec<u8>,
    dist_code: Vec<u16>,
}

impl Codes {
    fn new(lit_len: Vec<u8>, dist_len: Vec<u8>) -> Codes {
        let mut lit_code = Vec::new();
        let mut dc = Vec::new();
        codes(&lit_len, &mut lit_code);
        codes(&dist_len, &mut dc);
        Codes {
            lit_len,
            lit_code,
            dist_len,
            dist_code: dc,
        }
    }
}

/// Write one block: header, tokens (or stored bytes) and end-of-block code.
///
/// For stored blocks the tokens must be literals covering exactly `len` bytes.
pub fn write_block<W: Write>(
    bw: &mut BitWriter<W>,
    head: &BlockHead,
    tokens: &[Token],
) -> Result<()> {
    bw.put(head.last as u32, 1);
    match &head.kind {
        BlockKind::Stored { len, pad } => {
            if tokens.len() != *len as usize || tokens.iter().any(|t| !t.is_lit()) {
                return Err(RecipeError::mismatch(
                    "stored block tokens are not its bytes",
                ));
            }
            let bytes: Vec<u8> = tokens.iter().map(|t| t.raw_len() as u8).collect();
            write_stored_body(bw, *pad, &bytes)
        }
        BlockKind::Fixed => {
            bw.put(1, 2);
            let c = Codes::new(fixed_lit_lengths().to_vec(), fixed_dist_lengths().to_vec());
            write_tokens(bw, &c, tokens)
        }
        BlockKind::Dynamic(h) => {
            bw.put(2, 2);
            write_dyn_header(bw, h)?;
            let (l, d) = h.lengths();
            let c = Codes::new(l, d);
            write_tokens(bw, &c, tokens)
        }
    }
}

/// Write a stored block straight from its bytes (at most 65535: callers
/// check the recipe's length before reading them), with `pad` as the bits
/// that align its length field.
pub fn write_stored<W: Write>(
    bw: &mut BitWriter<W>,
    last: bool,
    pad: u8,
    bytes: &[u8],
) -> Result<()> {
    debug_assert!(bytes.len() <= 0xffff);
    bw.put(last as u32, 1);
    write_stored_body(bw, pad, bytes)
}

fn write_stored_body<W: Write>(bw: &mut BitWriter<W>, pad: u8, bytes: &[u8]) -> Result<()> {
    let len = bytes.len() as u32;
    bw.put(0, 2);
    bw.align(pad as u32);
    bw.put(len, 16);
    bw.put(!len & 0xffff, 16);
    bw.bytes(bytes)
}

fn write_dyn_header<W: Write>(bw: &mut BitWriter<W>, h: &DynHeader) -> Result<()> {
    bw.put(h.hlit as u32 - 257, 5);
    bw.put(h.hdist as u32 - 1, 5);
    bw.put(h.hclen as u32 - 4, 4);
    for &sym in CL_ORDER.iter().take(h.hclen as usize) {
        bw.put(h.cl_lens[sym] as u32, 3);
    }
    let mut clc = Vec::new();
    codes(&h.cl_lens, &mut clc);
    for &(sym, extra) in &h.rle {
        let l = h.cl_lens[sym as usize] as u32;
        if l == 0 {
            return Err(RecipeError::recipe("code-length symbol without a code"));
        }
        bw.put(clc[sym as usize] as u32, l);
        match sym {
            16 => bw.put(extra as u32, 2),
            17 => bw.put(extra as u32, 3),
            18 => bw.put(extra as u32, 7),
            _ => {}
        }
    }
    Ok(())
}

fn write_tokens<W: Write>(bw: &mut BitWriter<W>, c: &Codes, tokens: &[Token]) -> Result<()> {
    let missing = || RecipeError::mismatch("token has no code in the block's tables");
    // Per-block tables of (bits, bit count), count 0 = no code: literals by
    // byte, lengths by raw length with their extra bits folded in, and
    // distance codes (a match is ≤ 20 + 28 bits: one `put`).
    let mut lit = [(0u64, 0u32); 256];
    for (s, e) in lit.iter_mut().enumerate() {
        *e = (c.lit_code[s] as u64, c.lit_len[s] as u32);
    }
    let mut len = [(0u64, 0u32); IRREGULAR_258 as usize + 1];
    for (l, e) in len.iter_mut().enumerate().skip(3) {
        let (lc, extra, ebits) = len_symbol(l as u16);
        let s = 257 + lc;
        let n = *c.lit_len.get(s).unwrap_or(&0) as u32;
        if n > 0 {
            *e = ((c.lit_code[s] as u32 | extra << n) as u64, n + ebits);
        }
    }
    let mut dist = [(0u64, 0u32); 30];
    for (dc, e) in dist.iter_mut().enumerate() {
        let n = *c.dist_len.get(dc).unwrap_or(&0) as u32;
        if n > 0 {
            *e = (c.dist_code[dc] as u64, n);
        }
    }
    for part in tokens.chunks(1 << 14) {
        bw.wide(|w| {
            for &t in part {
                if t.is_lit() {
                    let (b, n) = lit[t.raw_len() as usize & 0xff];
                    if n == 0 {
                        return Err(missing());
                    }
                    w.put(b, n);
                } else {
                    let (lb, ln) = *len.get(t.raw_len() as usize).unwrap_or(&(0, 0));
                    let d = t.dist();
                    let dc = dist_code(d);
                    let (db, dn) = *dist.get(dc).unwrap_or(&(0, 0));
                    if ln == 0 || dn == 0 {
                        return Err(missing());
                    }
                    let db = db | ((d - DIST_BASE[dc]) as u64) << dn;
                    w.put(lb | db << ln, ln + dn + DIST_EXTRA[dc] as u32);
                }
            }
            Ok(())
        })?;
        bw.maybe_flush()?;
    }
    let l = c.lit_len[256] as u32;
    bw.put(c.lit_code[256] as u32, l);
    bw.maybe_flush()
}
