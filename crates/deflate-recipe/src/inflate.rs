//! Deflate parser: decodes blocks into their exact description plus tokens,
//! producing plaintext with a bounded window.

use std::io::Read;

use crate::bits::BitReader;
use crate::error::{RecipeError, Result};
use crate::huffman::{
    check_lengths, fixed_dist_lengths, fixed_lit_lengths, CodeProblem, Decoder, CL_ORDER,
    DIST_BASE, DIST_EXTRA, LEN_BASE, LEN_EXTRA,
};
use crate::tokens::{BlockHead, BlockKind, DynHeader, Token, IRREGULAR_258};

/// Receives the parsed stream in order.
pub trait Sink {
    /// A block starts.
    fn block_start(&mut self, head: &BlockHead) -> Result<()>;
    /// Tokens of the current block and exactly the plaintext they cover.
    fn data(&mut self, tokens: &[Token], plain: &[u8]) -> Result<()>;
    /// The current block ended after `ntokens` tokens.
    fn block_end(&mut self, ntokens: u64) -> Result<()>;
}

const WINDOW: usize = 32 * 1024;
const FLUSH_PLAIN: usize = 64 * 1024;
const FLUSH_TOKENS: usize = 16 * 1024;

/// Parser state for one deflate stream.
pub struct Inflater {
    win: Vec<u8>,
    /// Start in `win` of plaintext not yet handed to the sink.
    pending: usize,
    tokens: Vec<Token>,
    /// Total plaintext bytes produced (for diagnostics).
    pub total_out: u64,
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

fn problem(p: CodeProblem) -> &'static str {
    match p {
        CodeProblem::OverSubscribed => "over-subscribed",
        CodeProblem::Incomplete => "incomplete",
    }
}

impl Inflater {
    /// Fresh state (empty window).
    pub fn new() -> Self {
        Inflater {
            win: Vec::with_capacity(4 * FLUSH_PLAIN),
            pending: 0,
            tokens: Vec::with_capacity(FLUSH_TOKENS + 1),
            total_out: 0,
        }
    }

    fn flush<S: Sink>(&mut self, sink: &mut S) -> Result<()> {
        sink.data(&self.tokens, &self.win[self.pending..])?;
        self.tokens.clear();
        self.total_out += (self.win.len() - self.pending) as u64;
        if self.win.len() > 3 * FLUSH_PLAIN {
            let cut = self.win.len() - WINDOW;
            self.win.drain(..cut);
        }
        self.pending = self.win.len();
        Ok(())
    }

    /// Parse the whole stream up to and including the final block.
    pub fn run<R: Read, S: Sink>(&mut self, br: &mut BitReader<R>, sink: &mut S) -> Result<()> {
        loop {
            let start = br.offset();
            let last = br.bits(1)? == 1;
            let btype = br.bits(2)?;
            match btype {
                0 => self.stored(br, sink, last)?,
                1 => {
                    sink.block_start(&BlockHead {
                        last,
                        kind: BlockKind::Fixed,
                    })?;
                    let lit = Decoder::new(&fixed_lit_lengths());
                    let dist = Decoder::new(&fixed_dist_lengths());
                    self.huffman(br, sink, &lit, &dist)?;
                }
                2 => {
                    let (hdr, lit_lens, dist_lens) = read_dyn_header(br)?;
                    sink.block_start(&BlockHead {
                        last,
                        kind: BlockKind::Dynamic(Box::new(hdr)),
                    })?;
                    let lit = Decoder::new(&lit_lens);
                    let dist = Decoder::new(&dist_lens);
                    self.huffman(br, sink, &lit, &dist)?;
                }
                _ => return Err(RecipeError::deflate(start, "invalid block type 3")),
            }
            if last {
                return Ok(());
            }
        }
    }

    fn stored<R: Read, S: Sink>(
        &mut self,
        br: &mut BitReader<R>,
        sink: &mut S,
        last: bool,
    ) -> Result<()> {
        let pad = br.align() as u8;
        let at = br.offset();
        let len = br.bits(16)? as u16;
        let nlen = br.bits(16)? as u16;
        if len != !nlen {
            return Err(RecipeError::deflate(
                at,
                format!("stored block length {len} does not match its complement {nlen}"),
            ));
        }
        sink.block_start(&BlockHead {
            last,
            kind: BlockKind::Stored { len, pad },
        })?;
        let mut left = len as usize;
        while left > 0 {
            let n = br.bytes_some(&mut self.win, left)?;
            if n == 0 {
                return Err(br.truncated());
            }
            left -= n;
        }
        let start = self.win.len() - len as usize;
        self.tokens
            .extend(self.win[start..].iter().map(|&b| Token::lit(b)));
        self.flush(sink)?;
        sink.block_end(len as u64)
    }

    fn huffman<R: Read, S: Sink>(
        &mut self,
        br: &mut BitReader<R>,
        sink: &mut S,
        lit: &Decoder,
        dist: &Decoder,
    ) -> Result<()> {
        let mut ntok: u64 = 0;
        loop {
            // Fast path: with 48 bits buffered a whole length/distance
            // pair (15 + 5 + 15 + 13 bits) decodes without a check per
            // field. Anything invalid, and the stream's last bits, go to
            // the checked path, which reports what is wrong.
            let fast = if br.ensure(48)? {
                self.fast_symbol(br.peek(), lit, dist)
            } else {
                Fast::Checked
            };
            match fast {
                Fast::Done(used) => br.consume(used),
                Fast::End(used) => {
                    br.consume(used);
                    break;
                }
                Fast::Checked => {
                    if !self.checked_symbol(br, lit, dist)? {
                        break;
                    }
                }
            }
            ntok += 1;
            if self.tokens.len() >= FLUSH_TOKENS || self.win.len() - self.pending >= FLUSH_PLAIN {
                self.flush(sink)?;
            }
        }
        self.flush(sink)?;
        sink.block_end(ntok)
    }
}

/// What the fast path made of the next symbol.
enum Fast {
    /// A literal or a match, taking this many bits.
    Done(u32),
    /// The end-of-block symbol, taking this many bits.
    End(u32),
    /// Invalid or unusual: decode it on the checked path.
    Checked,
}

/// A length symbol's match length and the length its token records:
/// 258 written with code 284 (extra 31) decodes fine and must be kept as
/// such.
fn match_length(code: usize, extra: u16) -> (usize, u16) {
    if code == 27 && extra == 31 {
        (258, IRREGULAR_258)
    } else {
        let len = LEN_BASE[code] + extra;
        (len as usize, len)
    }
}

impl Inflater {
    /// Bytes of history a distance may reach back.
    fn history(&self) -> usize {
        (self.total_out as usize + self.win.len() - self.pending).min(self.win.len())
    }

    /// Decode one symbol (and its match) with every field checked; false
    /// at the end of the block.
    fn checked_symbol<R: Read>(
        &mut self,
        br: &mut BitReader<R>,
        lit: &Decoder,
        dist: &Decoder,
    ) -> Result<bool> {
        let at = br.offset();
        let sym = decode(br, lit, "literal/length")?;
        if sym < 256 {
            self.win.push(sym as u8);
            self.tokens.push(Token::lit(sym as u8));
            return Ok(true);
        }
        if sym == 256 {
            return Ok(false);
        }
        let code = sym as usize - 257;
        if code >= 29 {
            return Err(RecipeError::deflate(
                at,
                format!("invalid literal/length symbol {sym}"),
            ));
        }
        let extra = br.bits(LEN_EXTRA[code] as u32)? as u16;
        let (len, tok_len) = match_length(code, extra);
        let dsym = decode(br, dist, "distance")? as usize;
        if dsym >= 30 {
            return Err(RecipeError::deflate(
                at,
                format!("invalid distance symbol {dsym}"),
            ));
        }
        let d = DIST_BASE[dsym] as usize + br.bits(DIST_EXTRA[dsym] as u32)? as usize;
        let have = self.history();
        if d > have {
            return Err(RecipeError::deflate(
                at,
                format!("distance {d} too far back ({have} bytes of history)"),
            ));
        }
        self.copy_match(d, len);
        self.tokens.push(Token::matched(tok_len, d as u16));
        Ok(true)
    }

    /// Decode one symbol (and its match) from `bits` (at least 48 valid
    /// bits), without consuming them; see `huffman`.
    #[inline]
    fn fast_symbol(&mut self, bits: u64, lit: &Decoder, dist: &Decoder) -> Fast {
        let (sym, n) = lit.lookup(bits);
        if n == 0 {
            return Fast::Checked;
        }
        if sym < 256 {
            self.win.push(sym as u8);
            self.tokens.push(Token::lit(sym as u8));
            return Fast::Done(n);
        }
        if sym == 256 {
            return Fast::End(n);
        }
        let code = sym as usize - 257;
        if code >= 29 {
            return Fast::Checked;
        }
        let mut used = n;
        let ex = LEN_EXTRA[code] as u32;
        let extra = ((bits >> used) & ((1u64 << ex) - 1)) as u16;
        used += ex;
        let (len, tok_len) = match_length(code, extra);
        let (dsym, dn) = dist.lookup(bits >> used);
        if dn == 0 || dsym >= 30 {
            return Fast::Checked;
        }
        used += dn;
        let dex = DIST_EXTRA[dsym as usize] as u32;
        let d = DIST_BASE[dsym as usize] as usize + ((bits >> used) & ((1u64 << dex) - 1)) as usize;
        used += dex;
        if d > self.history() {
            return Fast::Checked;
        }
        self.copy_match(d, len);
        self.tokens.push(Token::matched(tok_len, d as u16));
        Fast::Done(used)
    }

    /// Append the `len` bytes `d` back (`d` <= the window held).
    #[inline]
    fn copy_match(&mut self, d: usize, len: usize) {
        let from = self.win.len() - d;
        if d >= len {
            self.win.extend_from_within(from..from + len);
            return;
        }
        // Overlapping: the match repeats the d bytes at `from`, so every
        // byte written so far is a copy source too and chunks double.
        let mut done = 0;
        while done < len {
            let at = from + done % d;
            let n = (len - done).min(self.win.len() - at);
            self.win.extend_from_within(at..at + n);
            done += n;
        }
    }
}

#[inline]
fn decode<R: Read>(br: &mut BitReader<R>, dec: &Decoder, what: &str) -> Result<u16> {
    br.ensure(15)?;
    let (sym, len) = dec.lookup(br.peek());
    if len == 0 {
        if br.available() == 0 {
            return Err(br.truncated());
        }
        return Err(RecipeError::deflate(
            br.offset(),
            format!("invalid {what} code"),
        ));
    }
    if len > br.available() {
        return Err(br.truncated());
    }
    br.consume(len);
    Ok(sym)
}

/// Read a dynamic block header; returns it with the expanded lengths.
fn read_dyn_header<R: Read>(br: &mut BitReader<R>) -> Result<(DynHeader, Vec<u8>, Vec<u8>)> {
    let at = br.offset();
    let hlit = br.bits(5)? as u16 + 257;
    let hdist = br.bits(5)? as u8 + 1;
    let hclen = br.bits(4)? as u8 + 4;
    let mut cl_lens = [0u8; 19];
    for &sym in CL_ORDER.iter().take(hclen as usize) {
        cl_lens[sym] = br.bits(3)? as u8;
    }
    if let Err(p) = check_lengths(&cl_lens, false) {
        return Err(RecipeError::deflate(
            at,
            format!("{} code-length code", problem(p)),
        ));
    }
    let cl = Decoder::new(&cl_lens);
    let n = hlit as usize + hdist as usize;
    let mut all: Vec<u8> = Vec::with_capacity(n);
    let mut rle = Vec::new();
    while all.len() < n {
        let here = br.offset();
        let sym = decode(br, &cl, "code-length")? as u8;
        let (extra, count, val) = match sym {
            0..=15 => (0, 1, sym),
            16 => {
                let Some(&prev) = all.last() else {
                    return Err(RecipeError::deflate(
                        here,
                        "length repeat with no previous length",
                    ));
                };
                let e = br.bits(2)?;
                (e, 3 + e, prev)
            }
            17 => {
                let e = br.bits(3)?;
                (e, 3 + e, 0)
            }
            _ => {
                let e = br.bits(7)?;
                (e, 11 + e, 0)
            }
        };
        if all.len() + count as usize > n {
            return Err(RecipeError::deflate(
                here,
                "code-length repeat runs past the end",
            ));
        }
        all.extend(std::iter::repeat(val).take(count as usize));
        rle.push((sym, extra as u8));
    }
    let dist = all.split_off(hlit as usize);
    if all[256] == 0 {
        return Err(RecipeError::deflate(at, "missing end-of-block code"));
    }
    if let Err(p) = check_lengths(&all, true) {
        return Err(RecipeError::deflate(
            at,
            format!("{} literal/length code", problem(p)),
        ));
    }
    if let Err(p) = check_lengths(&dist, true) {
        return Err(RecipeError::deflate(
            at,
            format!("{} distance code", problem(p)),
        ));
    }
    Ok((
        DynHeader {
            hlit,
            hdist,
            hclen,
            cl_lens,
            rle,
        },
        all,
        dist,
    ))
}
