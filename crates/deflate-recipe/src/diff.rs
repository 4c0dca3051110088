//! Token corrections: the actual token stream coded against a model's
//! predicted stream as records `(n_ok, n_explicit, explicit tokens…)`.
//!
//! `n_ok` predicted tokens are taken as they are; then `n_explicit` tokens
//! are given explicitly, and the predicted stream is skipped to the plaintext
//! position they reach. Both streams cover the same plaintext, so the
//! explicit part ends where the two agree on a token boundary again.

use std::collections::VecDeque;
use std::io::Read;

use crate::error::{RecipeError, Result};
use crate::tokens::{cover, total_span, Token, IRREGULAR_258};
use crate::varint::{self, ByteReader};

/// Drop predicted tokens from the front of `pred` until they cover the
/// `d` bytes the actual stream is ahead (none when `d` ≤ 0), taking what
/// they covered off both counts.
fn drop_span(pred: &mut VecDeque<Token>, pred_span: &mut i64, d: &mut i64) {
    let need = (*d).max(0) as u64;
    let (a, b) = pred.as_slices();
    let (mut k, mut covered) = cover(a, need);
    if covered < need {
        let (kb, cb) = cover(b, need - covered);
        k += kb;
        covered += cb;
    }
    assert!(covered >= need, "span accounted");
    pred.drain(..k);
    *pred_span -= covered as i64;
    *d -= covered as i64;
}

/// Append one explicit token. Literals carry no byte: the plaintext has it.
fn put_token(out: &mut Vec<u8>, t: Token) {
    if t.is_lit() {
        out.push(0);
        return;
    }
    let l = t.raw_len();
    if l <= 256 {
        out.push((l - 2) as u8);
    } else {
        out.push(255);
        out.push((l - 257) as u8);
    }
    out.extend_from_slice(&(t.dist() - 1).to_le_bytes());
}

/// Read one explicit token; literals come back as `Token(0)` to be filled in.
fn get_token<R: Read>(r: &mut ByteReader<R>) -> Result<Token> {
    let b = r.u8()?;
    if b == 0 {
        return Ok(Token::lit(0));
    }
    let len = if b == 255 {
        let e = r.u8()? as u16;
        if e > 2 {
            return Err(RecipeError::recipe("bad match length escape"));
        }
        257 + e
    } else {
        b as u16 + 2
    };
    let lo = r.u8()?;
    let hi = r.u8()?;
    let dist = u16::from_le_bytes([lo, hi]) as u32 + 1;
    if dist > 32768 || len > IRREGULAR_258 {
        return Err(RecipeError::recipe("bad explicit match"));
    }
    Ok(Token::matched(len, dist as u16))
}

/// Analysis side: consumes actual and predicted tokens, writes records.
#[derive(Default, Clone)]
pub struct DiffEncoder {
    pred: VecDeque<Token>,
    /// Plaintext bytes covered by the predicted tokens queued in `pred`.
    pred_span: i64,
    /// Actual position minus predicted position (0 when in sync).
    d: i64,
    ok: u64,
    exp: Vec<Token>,
    /// Corrections written so far.
    pub out: Vec<u8>,
    /// Explicit tokens written so far (a cost measure).
    pub explicit: u64,
}

impl DiffEncoder {
    /// Queue predicted tokens.
    pub fn predicted(&mut self, toks: &[Token]) {
        self.pred_span += total_span(toks) as i64;
        self.pred.extend(toks.iter().copied());
    }

    /// Try to consume one actual token; false when predictions do not reach far enough yet.
    #[inline]
    pub fn actual(&mut self, a: Token) -> bool {
        let span = a.span() as i64;
        if self.d == 0 {
            let Some(&p) = self.pred.front() else {
                return false;
            };
            if p == a {
                if !self.exp.is_empty() {
                    self.close_record();
                }
                self.ok += 1;
                self.pred.pop_front();
                self.pred_span -= span;
                return true;
            }
        }
        if self.pred_span < self.d + span {
            return false;
        }
        self.exp.push(a);
        self.explicit += 1;
        self.d += span;
        while self.d > 0 {
            let p = self.pred.pop_front().expect("span accounted");
            let s = p.span() as i64;
            self.pred_span -= s;
            self.d -= s;
        }
        true
    }

    /// Plaintext of a stored block: no tokens to compare, the predictions
    /// over it are dropped. False when predictions do not reach far enough.
    pub fn skip(&mut self, n: u64) -> bool {
        let n = n as i64;
        if self.pred_span < self.d + n {
            return false;
        }
        self.d += n;
        drop_span(&mut self.pred, &mut self.pred_span, &mut self.d);
        true
    }

    fn close_record(&mut self) {
        varint::put(&mut self.out, self.ok);
        varint::put(&mut self.out, self.exp.len() as u64);
        for &t in &self.exp {
            put_token(&mut self.out, t);
        }
        self.ok = 0;
        self.exp.clear();
    }

    /// End of a deflate stream: both sides must have covered the same plaintext.
    pub fn finish_stream(&mut self) -> Result<()> {
        if self.d != 0 || !self.pred.is_empty() {
            return Err(RecipeError::mismatch(format!(
                "model and stream disagree on the plaintext length ({} predicted tokens left, offset {})",
                self.pred.len(),
                self.d
            )));
        }
        if self.ok > 0 || !self.exp.is_empty() {
            self.close_record();
        }
        Ok(())
    }
}

/// Rebuild side: turns predicted tokens plus records back into actual tokens.
#[derive(Default)]
pub struct DiffDecoder {
    /// Predicted tokens not yet used (filled by the caller).
    pub pred: VecDeque<Token>,
    /// Plaintext bytes covered by `pred`.
    pub pred_span: i64,
    /// Set once the model has seen all plaintext of the stream.
    pub pred_exhausted: bool,
    d: i64,
    ok_left: u64,
    exp_left: u64,
}

/// What the decoder needs before it can produce the next token.
pub enum Step {
    /// A token; literals from explicit records hold byte 0 and must be filled from the plaintext.
    Token(Token, bool),
    /// More predicted tokens are needed.
    NeedPrediction,
}

impl DiffDecoder {
    /// Queue predicted tokens.
    pub fn predicted(&mut self, toks: &[Token]) {
        self.pred_span += total_span(toks) as i64;
        self.pred.extend(toks.iter().copied());
    }

    /// Move up to `max` tokens of the current predicted run into `out`
    /// (fast path for long runs); returns the plaintext bytes they cover.
    pub fn take_run(&mut self, max: usize, out: &mut Vec<Token>) -> u64 {
        if self.d != 0 {
            return 0;
        }
        let n = (self.ok_left.min(max as u64) as usize).min(self.pred.len());
        // Copied slice by slice and summed where they landed (in slices
        // that vectorise): runs are most of a well-predicted stream.
        let start = out.len();
        let (a, b) = self.pred.as_slices();
        let k = n.min(a.len());
        out.extend_from_slice(&a[..k]);
        out.extend_from_slice(&b[..n - k]);
        self.pred.drain(..n);
        let span = total_span(&out[start..]);
        self.pred_span -= span as i64;
        self.ok_left -= n as u64;
        span
    }

    /// Like [`take_run`](Self::take_run) but bounded by plaintext bytes:
    /// stops before a token that would pass `max_bytes`.
    pub fn take_span(&mut self, max_bytes: u64, out: &mut Vec<Token>) -> u64 {
        if self.d != 0 {
            return 0;
        }
        let mut span = 0u64;
        let mut n = 0u64;
        while n < self.ok_left {
            let Some(&t) = self.pred.front() else { break };
            let s = t.span() as u64;
            if span + s > max_bytes {
                break;
            }
            self.pred.pop_front();
            out.push(t);
            span += s;
            n += 1;
        }
        self.pred_span -= span as i64;
        self.ok_left -= n;
        span
    }

    /// Mirror of [`DiffEncoder::skip`]; false when more predictions are needed.
    pub fn skip(&mut self, n: u64) -> Result<bool> {
        let n = n as i64;
        if self.pred_span < self.d + n {
            if self.pred_exhausted {
                return Err(RecipeError::recipe(
                    "stored block runs past the predictions",
                ));
            }
            return Ok(false);
        }
        self.d += n;
        drop_span(&mut self.pred, &mut self.pred_span, &mut self.d);
        Ok(true)
    }

    /// Next token (second field true when it came from an explicit record).
    pub fn next<R: Read>(&mut self, r: &mut ByteReader<R>) -> Result<Step> {
        loop {
            if self.ok_left > 0 {
                if self.d != 0 {
                    return Err(RecipeError::recipe("predicted run while out of sync"));
                }
                let Some(p) = self.pred.pop_front() else {
                    return Ok(Step::NeedPrediction);
                };
                self.pred_span -= p.span() as i64;
                self.ok_left -= 1;
                return Ok(Step::Token(p, false));
            }
            if self.exp_left > 0 {
                // The token's span is unknown until it is read, so make sure predictions
                // cover the longest possible match first.
                if self.pred_span < self.d + 258 && !self.pred_exhausted {
                    return Ok(Step::NeedPrediction);
                }
                let t = get_token(r)?;
                self.exp_left -= 1;
                self.d += t.span() as i64;
                while self.d > 0 {
                    let Some(p) = self.pred.pop_front() else {
                        return Err(RecipeError::recipe(
                            "explicit tokens run past the predictions",
                        ));
                    };
                    let s = p.span() as i64;
                    self.pred_span -= s;
                    self.d -= s;
                }
                return Ok(Step::Token(t, true));
            }
            self.ok_left = r.var()?;
            self.exp_left = r.var()?;
        }
    }
}
