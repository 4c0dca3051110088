//! Rebuild: plaintext + recipe → the exact gzip bytes.

use std::io::{Read, Write};

use crate::bits::BitWriter;
use crate::diff::{DiffDecoder, Step};
use crate::error::{RecipeError, Result};
use crate::hdrpred::{self, Freqs};
use crate::huffman::{check_lengths, CL_ORDER};
use crate::model::Model;
use crate::pages::Pages;
use crate::recipe::{self, Recipe, BF_BYTES, BF_EXPLICIT, BF_LAST, BF_TYPE_SHIFT};
use crate::tokens::{BlockHead, BlockKind, DynHeader, Token};
use crate::varint::ByteReader;
use crate::writer::{write_block, write_stored};

/// Produces the actual tokens of one member.
struct Tokens<'a, 'p, R: Read, T: Read> {
    plain: Pages<'p, R>,
    model: Box<dyn Model>,
    dec: DiffDecoder,
    tokr: &'a mut ByteReader<T>,
    /// Plaintext offset of the next token.
    pa: u64,
    /// Plaintext offset the model has seen.
    pm: u64,
    scratch: Vec<Token>,
}

impl<R: Read, T: Read> Tokens<'_, '_, R, T> {
    /// Append the next `n` tokens to `out`.
    fn take(&mut self, n: u64, out: &mut Vec<Token>) -> Result<()> {
        let mut left = n as usize;
        while left > 0 {
            let before = out.len();
            let span = self.dec.take_run(left, out);
            if out.len() > before {
                left -= out.len() - before;
                self.pa += span;
                if self.pa > self.plain.end {
                    return Err(RecipeError::mismatch("tokens run past the plaintext"));
                }
                continue;
            }
            out.push(self.next()?);
            left -= 1;
        }
        Ok(())
    }

    /// Append tokens covering exactly `bytes` plaintext bytes to `out`.
    fn take_bytes(&mut self, bytes: u64, out: &mut Vec<Token>) -> Result<()> {
        let mut left = bytes;
        while left > 0 {
            let span = self.dec.take_span(left, out);
            if span > 0 {
                left -= span;
                self.pa += span;
                if self.pa > self.plain.end {
                    return Err(RecipeError::mismatch("tokens run past the plaintext"));
                }
                continue;
            }
            let t = self.next()?;
            if t.span() as u64 > left {
                return Err(RecipeError::recipe("token crosses a block boundary"));
            }
            left -= t.span() as u64;
            out.push(t);
        }
        Ok(())
    }

    fn next(&mut self) -> Result<Token> {
        loop {
            match self.dec.next(self.tokr)? {
                Step::Token(mut t, explicit) => {
                    let end = self.pa + t.span() as u64;
                    if end > self.plain.end {
                        return Err(RecipeError::mismatch("tokens run past the plaintext"));
                    }
                    if explicit && t.is_lit() {
                        self.plain.ensure(self.pa + 1)?;
                        t = Token::lit(self.plain.byte(self.pa));
                    } else if explicit {
                        self.check_match(t, end)?;
                    }
                    self.pa = end;
                    return Ok(t);
                }
                Step::NeedPrediction => self.predict_more()?,
            }
        }
    }

    /// An explicit match must copy what the plaintext has at its place:
    /// the wrong plaintext (or a corrupted recipe) is reported here instead
    /// of yielding a stream of other content. (Predicted matches need no
    /// check: the models only predict matches they found in the plaintext.)
    fn check_match(&mut self, t: Token, end: u64) -> Result<()> {
        let dist = t.dist() as u64;
        if dist > self.pa {
            return Err(RecipeError::mismatch(format!(
                "a match at plaintext offset {} reaches before the start",
                self.pa
            )));
        }
        self.plain.ensure(end)?;
        if !self.plain.same(self.pa, self.pa - dist, end - self.pa) {
            return Err(RecipeError::mismatch(format!(
                "the plaintext at offset {} does not repeat the bytes {dist} back as the recipe says",
                self.pa
            )));
        }
        Ok(())
    }

    /// Run the model over the next chunk (or finish it at the end).
    fn predict_more(&mut self) -> Result<()> {
        self.scratch.clear();
        if self.pm == self.plain.end {
            if self.dec.pred_exhausted {
                return Err(RecipeError::mismatch(
                    "recipe needs more tokens than the plaintext has",
                ));
            }
            self.dec.pred_exhausted = true;
            self.model.finish(&mut self.scratch);
            self.dec.predicted(&self.scratch);
            return Ok(());
        }
        let n = (self.model.next_chunk() as u64).min(self.plain.end - self.pm);
        self.plain.ensure(self.pm + n)?;
        if let Some((page, range)) = self.plain.within(self.pm, self.pm + n) {
            self.model.predict_page(page, range, &mut self.scratch);
        } else {
            let chunk = self.plain.slice(self.pm, self.pm + n);
            self.model.predict(chunk, &mut self.scratch);
        }
        self.dec.predicted(&self.scratch);
        self.pm += n;
        // Keep a window for the explicit-match check.
        self.plain
            .trim(self.pa.min(self.pm).saturating_sub(1 << 15));
        Ok(())
    }

    /// A stored block of `n` bytes: predictions skipped, its bytes returned.
    fn stored(&mut self, n: u64) -> Result<&[u8]> {
        // Checked before any plaintext is read for it: a bad recipe must
        // not make the rebuild buffer a whole member first.
        if n > 0xffff {
            return Err(RecipeError::recipe(format!(
                "stored block of {n} bytes (at most 65535 fit one)"
            )));
        }
        if self.pa + n > self.plain.end {
            return Err(RecipeError::mismatch(
                "stored block runs past the plaintext",
            ));
        }
        while !self.dec.skip(n)? {
            self.predict_more()?;
        }
        self.plain.ensure(self.pa + n)?;
        self.pa += n;
        Ok(self.plain.slice(self.pa - n, self.pa))
    }
}

/// Tokens of the block prefix a predicted header was built from: `k` = 0
/// for the whole block, odd = (bytes << 1 | 1), even = (tokens << 1).
fn prefix_tokens(block: &[Token], k: u64) -> Result<usize> {
    let bad = || RecipeError::recipe("header prefix does not fit the block");
    if k == 0 {
        return Ok(block.len());
    }
    let v = k >> 1;
    if k & 1 == 0 {
        return if v as usize <= block.len() {
            Ok(v as usize)
        } else {
            Err(bad())
        };
    }
    let mut covered = 0u64;
    for (i, t) in block.iter().enumerate() {
        if covered == v {
            return Ok(i);
        }
        covered += t.span() as u64;
    }
    if covered == v {
        Ok(block.len())
    } else {
        Err(bad())
    }
}

fn read_header<T: Read>(m: &mut ByteReader<T>) -> Result<DynHeader> {
    let hlit = m.u8()? as u16 + 257;
    let hdist = m.u8()? as u16 + 1;
    let hclen = m.u8()? as u16 + 4;
    if hlit > 288 || hdist > 32 || hclen > 19 {
        return Err(RecipeError::recipe("bad dynamic header counts"));
    }
    let (hdist, hclen) = (hdist as u8, hclen as u8);
    let mut cl_lens = [0u8; 19];
    for &s in CL_ORDER.iter().take(hclen as usize) {
        cl_lens[s] = m.u8()?;
        if cl_lens[s] > 7 {
            return Err(RecipeError::recipe("bad code-length code length"));
        }
    }
    if check_lengths(&cl_lens, false).is_err() {
        return Err(RecipeError::recipe("invalid code-length code"));
    }
    let n = m.var()?;
    let mut rle = Vec::with_capacity(n.min(320) as usize);
    let mut filled = 0usize;
    for _ in 0..n {
        let sym = m.u8()?;
        let (extra, count) = match sym {
            0..=15 => (0, 1),
            16 if filled > 0 => {
                let e = m.u8()?;
                (e, 3 + e as usize)
            }
            17 => {
                let e = m.u8()?;
                (e, 3 + e as usize)
            }
            18 => {
                let e = m.u8()?;
                (e, 11 + e as usize)
            }
            _ => return Err(RecipeError::recipe("bad code-length symbol")),
        };
        if extra > 127 || (sym == 16 && extra > 3) || (sym == 17 && extra > 7) {
            return Err(RecipeError::recipe("bad code-length repeat"));
        }
        filled += count;
        rle.push((sym, extra));
    }
    if filled != hlit as usize + hdist as usize {
        return Err(RecipeError::recipe("code lengths do not fill the header"));
    }
    Ok(DynHeader {
        hlit,
        hdist,
        hclen,
        cl_lens,
        rle,
    })
}

/// Rebuild the gzip stream described by `recipe` from `plain`.
pub fn rebuild<R: Read, W: Write>(mut plain: R, recipe: &Recipe, gz_out: W) -> Result<()> {
    let mut meta = ByteReader::new(recipe::unpack(&recipe.meta)?);
    let mut tokr = ByteReader::new(recipe::unpack(&recipe.toks)?);
    let mut bw = BitWriter::new(gz_out);
    let mut member = 0usize;
    let mut block: Vec<Token> = Vec::new();
    let mut freqs = Freqs::default();
    loop {
        match meta.u8()? {
            recipe::TAG_END => break,
            recipe::TAG_GARBAGE => {
                let n = meta.var()? as usize;
                bw.bytes(&meta.bytes(n)?)?;
            }
            recipe::TAG_MEMBER => {
                let n = meta.var()? as usize;
                bw.bytes(&meta.bytes(n)?)?;
                let Some(&len) = recipe.members.get(member) else {
                    return Err(RecipeError::recipe("more members than lengths"));
                };
                member += 1;
                // Where a failure happened: block number in the member and
                // the plaintext offset the block starts at.
                let mut at = (0usize, 0u64);
                let res = (|| -> Result<()> {
                    let mut toks = Tokens {
                        plain: Pages::new(&mut plain, len),
                        model: recipe.model.build_threads(crate::threads()),
                        dec: DiffDecoder::default(),
                        tokr: &mut tokr,
                        pa: 0,
                        pm: 0,
                        scratch: Vec::new(),
                    };
                    loop {
                        at = (at.0 + 1, toks.pa);
                        let flags = meta.u8()?;
                        let last = flags & BF_LAST != 0;
                        let size = meta.var()?;
                        let by_bytes = flags & BF_BYTES != 0;
                        if size > len + 1 {
                            return Err(RecipeError::recipe("block larger than the member"));
                        }
                        block.clear();
                        let take = |toks: &mut Tokens<'_, '_, R, Box<dyn Read + '_>>,
                                    block: &mut Vec<Token>| {
                            if by_bytes {
                                toks.take_bytes(size, block)
                            } else {
                                toks.take(size, block)
                            }
                        };
                        let kind = match (flags >> BF_TYPE_SHIFT) & 3 {
                            0 => {
                                let pad = meta.u8()?;
                                write_stored(&mut bw, last, pad, toks.stored(size)?)?;
                                if last {
                                    break;
                                }
                                continue;
                            }
                            1 => {
                                take(&mut toks, &mut block)?;
                                BlockKind::Fixed
                            }
                            2 => {
                                let explicit = if flags & BF_EXPLICIT != 0 {
                                    Some(read_header(&mut meta)?)
                                } else {
                                    None
                                };
                                let (id, k) = if explicit.is_none() {
                                    (meta.u8()?, meta.var()?)
                                } else {
                                    (0, 0)
                                };
                                take(&mut toks, &mut block)?;
                                let h = match explicit {
                                    Some(h) => h,
                                    None => {
                                        freqs.clear();
                                        freqs.add(&block[..prefix_tokens(&block, k)?]);
                                        hdrpred::build(id, &freqs).ok_or_else(|| {
                                            RecipeError::recipe(format!(
                                                "unknown header builder {id}"
                                            ))
                                        })?
                                    }
                                };
                                BlockKind::Dynamic(Box::new(h))
                            }
                            _ => return Err(RecipeError::recipe("bad block type")),
                        };
                        write_block(&mut bw, &BlockHead { last, kind }, &block)?;
                        if last {
                            break;
                        }
                    }
                    if toks.pa != len {
                        return Err(RecipeError::mismatch(
                            "blocks end before the member's plaintext",
                        ));
                    }
                    toks.plain.ensure(len)?;
                    let crc = toks.plain.crc.finalize();
                    bw.align(meta.u8()? as u32);
                    match meta.u8()? {
                        0 => {
                            bw.bytes(&crc.to_le_bytes())?;
                            bw.bytes(&(len as u32).to_le_bytes())?;
                        }
                        1 => bw.bytes(&meta.bytes(8)?)?,
                        _ => return Err(RecipeError::recipe("bad trailer record")),
                    }
                    Ok(())
                })();
                res.map_err(|e| {
                    e.context(|| {
                        format!(
                            "gzip member {member} of {}, block {} (from plaintext offset {})",
                            recipe.members.len(),
                            at.0,
                            at.1
                        )
                    })
                })?;
            }
            t => return Err(RecipeError::recipe(format!("unknown meta record {t}"))),
        }
    }
    if member != recipe.members.len() {
        return Err(RecipeError::recipe("fewer members than lengths"));
    }
    let mut extra = [0u8; 1];
    if plain.read(&mut extra)? != 0 {
        return Err(RecipeError::mismatch(
            "plaintext longer than the recipe says",
        ));
    }
    bw.finish()?;
    Ok(())
}
