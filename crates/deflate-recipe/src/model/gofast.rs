//! Model of Go's compress/flate BestSpeed (Go 1.8 – 1.26, deflatefast.go):
//! a Snappy-style single-entry hash table over 65535-byte chunks that may
//! match into the previous chunk, with the Snappy skip heuristic.
//!
//! Written from reading Go 1.19's deflatefast.go and deflate.go (`encSpeed`).

use super::klauspost::{load32, load64};
use super::Model;
use crate::tokens::Token;

const MAX_STORE_BLOCK: usize = 65535;
const MAX_MATCH_OFFSET: i32 = 1 << 15;
const TABLE_BITS: u32 = 14;
const TABLE_SIZE: usize = 1 << TABLE_BITS;
const BUFFER_RESET: i32 = i32::MAX - MAX_STORE_BLOCK as i32 * 2;
const INPUT_MARGIN: i32 = 16 - 1;
const MIN_NON_LITERAL: usize = 1 + 1 + INPUT_MARGIN as usize;

#[inline]
fn hash(u: u32) -> usize {
    (u.wrapping_mul(0x1e35a7bd) >> (32 - TABLE_BITS)) as usize
}

/// BestSpeed encoder state.
pub struct GoFastModel {
    table: Vec<(u32, i32)>,
    prev: Vec<u8>,
    cur: i32,
}

impl Default for GoFastModel {
    fn default() -> Self {
        Self::new()
    }
}

impl GoFastModel {
    /// New model for one stream.
    pub fn new() -> Self {
        GoFastModel {
            table: super::table(TABLE_SIZE),
            prev: Vec::with_capacity(MAX_STORE_BLOCK),
            cur: MAX_STORE_BLOCK as i32,
        }
    }

    fn shift_offsets(&mut self) {
        if self.prev.is_empty() {
            self.table.fill((0, 0));
        } else {
            for e in self.table.iter_mut() {
                e.1 = (e.1 - self.cur + MAX_MATCH_OFFSET + 1).max(0);
            }
        }
        self.cur = MAX_MATCH_OFFSET + 1;
    }

    fn reset(&mut self) {
        self.prev.clear();
        self.cur += MAX_MATCH_OFFSET;
        if self.cur >= BUFFER_RESET {
            self.shift_offsets();
        }
    }

    /// Matching bytes from `src[s..]` against `t` (negative: in `prev`).
    fn match_len(&self, s: i32, t: i32, src: &[u8]) -> i32 {
        let s1 = (s as usize + 258 - 4).min(src.len());
        let a = &src[s as usize..s1];
        let count = |a: &[u8], b: &[u8]| super::zlib::common_prefix(a, b) as i32;
        if t >= 0 {
            return count(a, &src[t as usize..]);
        }
        let tp = self.prev.len() as i32 + t;
        if tp < 0 {
            return 0;
        }
        let b = &self.prev[tp as usize..];
        let m = b.len().min(a.len());
        let n = count(&a[..m], &b[..m]);
        if (n as usize) < m || s as usize + m == s1 {
            return n;
        }
        n + count(&src[s as usize + m..s1], src)
    }

    fn encode(&mut self, src: &[u8], dst: &mut Vec<Token>) {
        if self.cur >= BUFFER_RESET {
            self.shift_offsets();
        }
        let lits = |dst: &mut Vec<Token>, b: &[u8]| dst.extend(b.iter().map(|&v| Token::lit(v)));
        if src.len() < MIN_NON_LITERAL {
            self.cur += MAX_STORE_BLOCK as i32;
            self.prev.clear();
            lits(dst, src);
            return;
        }
        let s_limit = src.len() as i32 - INPUT_MARGIN;
        let mut next_emit = 0i32;
        let mut s = 0i32;
        let mut cv = load32(src, s);
        let mut next_hash = hash(cv);
        'outer: loop {
            let mut skip = 32i32;
            let mut next_s = s;
            let mut cand;
            loop {
                s = next_s;
                let step = skip >> 5;
                next_s = s + step;
                skip += step;
                if next_s > s_limit {
                    break 'outer;
                }
                cand = self.table[next_hash];
                let now = load32(src, next_s);
                self.table[next_hash] = (cv, s + self.cur);
                next_hash = hash(now);
                let offset = s - (cand.1 - self.cur);
                if offset > MAX_MATCH_OFFSET || cv != cand.0 {
                    cv = now;
                    continue;
                }
                break;
            }
            lits(dst, &src[next_emit as usize..s as usize]);
            loop {
                s += 4;
                let t = cand.1 - self.cur + 4;
                let l = self.match_len(s, t, src);
                dst.push(Token::matched((l + 4) as u16, (s - t) as u16));
                s += l;
                next_emit = s;
                if s >= s_limit {
                    break 'outer;
                }
                let mut x = load64(src, s - 1);
                self.table[hash(x as u32)] = (x as u32, self.cur + s - 1);
                x >>= 8;
                let h = hash(x as u32);
                cand = self.table[h];
                self.table[h] = (x as u32, self.cur + s);
                let offset = s - (cand.1 - self.cur);
                if offset > MAX_MATCH_OFFSET || x as u32 != cand.0 {
                    cv = (x >> 8) as u32;
                    next_hash = hash(cv);
                    s += 1;
                    break;
                }
            }
        }
        if (next_emit as usize) < src.len() {
            lits(dst, &src[next_emit as usize..]);
        }
        self.cur += src.len() as i32;
        self.prev.clear();
        self.prev.extend_from_slice(src);
    }
}

impl Model for GoFastModel {
    fn next_chunk(&self) -> usize {
        MAX_STORE_BLOCK
    }

    fn predict(&mut self, chunk: &[u8], out: &mut Vec<Token>) {
        if chunk.len() < MAX_STORE_BLOCK && chunk.len() < 128 {
            // Final short chunk: stored or Huffman-only, and the encoder resets.
            out.extend(chunk.iter().map(|&v| Token::lit(v)));
            self.reset();
            return;
        }
        let start = out.len();
        self.encode(chunk, out);
        // More tokens than 15/16 of the bytes: written Huffman-only (literals).
        if out.len() - start > chunk.len() - (chunk.len() >> 4) {
            out.truncate(start);
            out.extend(chunk.iter().map(|&v| Token::lit(v)));
        }
    }

    /// One serial search: it runs on a thread of its own.
    fn parallel(&mut self, _threads: usize) -> Option<Box<dyn Model>> {
        super::pipe::piped(self, GoFastModel::new())
    }
}
