//! klauspost/compress flate fast levels 1 and 2 (one table, 5-byte hash):
//! level 1 with a 2^15-entry table, level 2 with 2^17 entries and denser
//! indexing of match interiors. Written from reading level1.go/level2.go
//! (compress v1.15.12).

use super::klauspost::{
    add_match_long, end_block, load32, load64, match_len, renorm, start_block, FastEnc, FRESH_CUR,
    MAX_MATCH_OFFSET,
};
use crate::tokens::Token;

const PRIME5: u64 = 889523592379;

/// Level 1/2 encoder state.
pub(super) struct FastL12 {
    l2: bool,
    bits: u32,
    hist: Vec<u8>,
    cur: i32,
    table: Vec<i32>,
}

impl FastL12 {
    pub(super) fn new(level: u8) -> Self {
        let bits = if level == 2 { 17 } else { 15 };
        FastL12 {
            l2: level == 2,
            bits,
            hist: Vec::with_capacity(super::klauspost::ALLOC_HISTORY),
            cur: FRESH_CUR,
            table: super::table(1 << bits),
        }
    }

    #[inline]
    fn hash(&self, u: u64) -> usize {
        ((u << 24).wrapping_mul(PRIME5) >> (64 - self.bits)) as usize & (self.table.len() - 1)
    }
}

impl FastEnc for FastL12 {
    fn encode(&mut self, src: &[u8], dst: &mut Vec<Token>) -> bool {
        const INPUT_MARGIN: i32 = 12 - 1;
        renorm(&mut self.cur, self.hist.len(), &mut [&mut self.table]);
        let start_len = dst.len();
        let Some(mut s) = start_block(&mut self.hist, &mut self.cur, src) else {
            // klauspost reports such a chunk as all literals.
            return false;
        };
        let hist = std::mem::take(&mut self.hist);
        let b = &hist[..];
        let cur = self.cur;
        let l2 = self.l2;
        let mut next_emit = s;
        let s_limit = b.len() as i32 - INPUT_MARGIN;
        let mut cv = load64(b, s);
        'outer: loop {
            let mut next_s = s;
            let mut cand: i32;
            loop {
                let mut next_hash = self.hash(cv);
                if l2 {
                    s = next_s;
                }
                next_s = s + 2 + ((s - next_emit) >> 5);
                if next_s > s_limit {
                    break 'outer;
                }
                // (Level 1 reads the candidate before the limit check; nothing
                // changes the table in between, so one read serves both.)
                cand = self.table[next_hash];
                let mut now = load64(b, next_s);
                self.table[next_hash] = s + cur;
                next_hash = self.hash(now);
                let offset = s - (cand - cur);
                if offset < MAX_MATCH_OFFSET && cv as u32 == load32(b, cand - cur) {
                    self.table[next_hash] = next_s + cur;
                    break;
                }
                cv = now;
                s = next_s;
                next_s += 1;
                cand = self.table[next_hash];
                now >>= 8;
                self.table[next_hash] = s + cur;
                let offset = s - (cand - cur);
                if offset < MAX_MATCH_OFFSET && cv as u32 == load32(b, cand - cur) {
                    if !l2 {
                        self.table[next_hash] = next_s + cur;
                    }
                    break;
                }
                cv = now;
                if !l2 {
                    s = next_s;
                }
            }
            loop {
                let mut t = cand - cur;
                let mut l = match_len(b, s as usize + 4, t as usize + 4, b.len()) + 4;
                while t > 0 && s > next_emit && b[(t - 1) as usize] == b[(s - 1) as usize] {
                    s -= 1;
                    t -= 1;
                    l += 1;
                }
                dst.extend(
                    b[next_emit as usize..s as usize]
                        .iter()
                        .map(|&v| Token::lit(v)),
                );
                add_match_long(dst, l, (s - t) as u16);
                s += l;
                next_emit = s;
                if next_s >= s {
                    s = next_s + 1;
                }
                if s >= s_limit {
                    if ((s + l + 8) as usize) < b.len() {
                        let cv = load64(b, s);
                        let h = self.hash(cv);
                        self.table[h] = s + cur;
                    }
                    break 'outer;
                }
                if l2 {
                    let mut i = s - l + 2;
                    while i < s - 5 {
                        let mut x = load64(b, i);
                        for k in 0..3 {
                            let h = self.hash(x);
                            self.table[h] = cur + i + 2 * k;
                            x >>= 16;
                        }
                        i += 7;
                    }
                }
                let x = load64(b, s - 2);
                let o = cur + s - 2;
                let h = self.hash(x);
                self.table[h] = o;
                if l2 {
                    let h = self.hash(x >> 8);
                    self.table[h] = o + 1;
                }
                let x = x >> 16;
                let h = self.hash(x);
                cand = self.table[h];
                self.table[h] = o + 2;
                let offset = s - (cand - cur);
                if offset > MAX_MATCH_OFFSET || x as u32 != load32(b, cand - cur) {
                    cv = x >> 8;
                    s += 1;
                    break;
                }
            }
        }
        let emitted = end_block(dst, start_len, b, next_emit);
        self.hist = hist;
        emitted
    }
}
