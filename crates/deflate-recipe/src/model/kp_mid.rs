//! klauspost/compress flate fast levels 3 (one 2^16 table of two entries,
//! 5-byte hash) and 4 (a 4-byte and a 7-byte hash table of one entry each).
//! Written from reading level3.go/level4.go (compress v1.15.12).

use super::klauspost::{
    add_match_long, end_block, load32, load64, match_len, renorm, start_block, FastEnc, FRESH_CUR,
    MAX_MATCH_OFFSET,
};
use crate::tokens::Token;

const PRIME4: u32 = 2654435761;
const PRIME5: u64 = 889523592379;
const PRIME7: u64 = 58295818150454627;

#[inline]
fn hash5_16(u: u64) -> usize {
    ((u << 24).wrapping_mul(PRIME5) >> 48) as usize & 0xffff
}
#[inline]
fn hash4_15(u: u64) -> usize {
    ((u as u32).wrapping_mul(PRIME4) >> 17) as usize & 0x7fff
}
#[inline]
fn hash7_15(u: u64) -> usize {
    ((u << 8).wrapping_mul(PRIME7) >> 49) as usize & 0x7fff
}

fn lits(dst: &mut Vec<Token>, b: &[u8]) {
    dst.extend(b.iter().map(|&v| Token::lit(v)));
}

/// Level 3 state: `cur_t`/`prev_t` are the table's Cur and Prev entries.
pub(super) struct FastL3 {
    hist: Vec<u8>,
    cur: i32,
    cur_t: Vec<i32>,
    prev_t: Vec<i32>,
}

impl FastL3 {
    pub(super) fn new() -> Self {
        FastL3 {
            hist: Vec::with_capacity(super::klauspost::ALLOC_HISTORY),
            cur: FRESH_CUR,
            cur_t: super::table(1 << 16),
            prev_t: super::table(1 << 16),
        }
    }

    #[inline]
    fn push(&mut self, h: usize, v: i32) {
        self.prev_t[h] = self.cur_t[h];
        self.cur_t[h] = v;
    }
}

impl FastEnc for FastL3 {
    fn encode(&mut self, src: &[u8], dst: &mut Vec<Token>) -> bool {
        const INPUT_MARGIN: i32 = 12 - 1;
        renorm(
            &mut self.cur,
            self.hist.len(),
            &mut [&mut self.cur_t, &mut self.prev_t],
        );
        let start_len = dst.len();
        let Some(mut s) = start_block(&mut self.hist, &mut self.cur, src) else {
            // klauspost reports such a chunk as all literals.
            return false;
        };
        let hist = std::mem::take(&mut self.hist);
        let b = &hist[..];
        let cur = self.cur;
        let mut next_emit = s;
        let s_limit = b.len() as i32 - INPUT_MARGIN;
        let mut cv = load64(b, s);
        let common = |x: i32, y: i32| match_len(b, x as usize, y as usize, b.len());
        'outer: loop {
            let mut next_s = s;
            let mut cand: i32;
            loop {
                let h = hash5_16(cv);
                s = next_s;
                next_s = s + 1 + ((s - next_emit) >> 7);
                if next_s > s_limit {
                    break 'outer;
                }
                let (c_cur, c_prev) = (self.cur_t[h], self.prev_t[h]);
                let now = load64(b, next_s);
                let min_offset = cur + s - (MAX_MATCH_OFFSET - 4);
                self.push(h, s + cur);
                cand = c_cur;
                if cand < min_offset {
                    cv = now;
                    continue;
                }
                if cv as u32 == load32(b, cand - cur) {
                    if c_prev < min_offset || cv as u32 != load32(b, c_prev - cur) {
                        break;
                    }
                    let l1 = common(s + 4, cand - cur + 4);
                    let l2 = common(s + 4, c_prev - cur + 4);
                    if l2 > l1 {
                        cand = c_prev;
                    }
                    break;
                } else {
                    cand = c_prev;
                    if cand > min_offset && cv as u32 == load32(b, cand - cur) {
                        break;
                    }
                }
                cv = now;
            }
            loop {
                let mut t = cand - cur;
                let mut l = common(s + 4, t + 4) + 4;
                while t > 0 && s > next_emit && b[(t - 1) as usize] == b[(s - 1) as usize] {
                    s -= 1;
                    t -= 1;
                    l += 1;
                }
                lits(dst, &b[next_emit as usize..s as usize]);
                add_match_long(dst, l, (s - t) as u16);
                s += l;
                next_emit = s;
                if next_s >= s {
                    s = next_s + 1;
                }
                if s >= s_limit {
                    t += l;
                    if ((t + 8) as usize) < b.len() && t > 0 {
                        let h = hash5_16(load64(b, t));
                        self.push(h, cur + t);
                    }
                    break 'outer;
                }
                let mut i = s - l + 2;
                while i < s - 5 {
                    let h = hash5_16(load64(b, i));
                    self.push(h, cur + i);
                    i += 6;
                }
                let mut x = load64(b, s - 2);
                let h = hash5_16(x);
                self.push(h, cur + s - 2);
                x >>= 8;
                let h = hash5_16(x);
                self.push(h, cur + s - 1);
                x >>= 8;
                let h = hash5_16(x);
                let (c_cur, c_prev) = (self.cur_t[h], self.prev_t[h]);
                cv = x;
                self.push(h, s + cur);
                cand = c_cur;
                let min_offset = cur + s - (MAX_MATCH_OFFSET - 4);
                if cand > min_offset {
                    if cv as u32 == load32(b, cand - cur) {
                        continue;
                    }
                    cand = c_prev;
                    if cand > min_offset && cv as u32 == load32(b, cand - cur) {
                        continue;
                    }
                }
                cv = x >> 8;
                s += 1;
                break;
            }
        }
        let emitted = end_block(dst, start_len, b, next_emit);
        self.hist = hist;
        emitted
    }
}

/// Level 4 state.
pub(super) struct FastL4 {
    hist: Vec<u8>,
    cur: i32,
    table: Vec<i32>,
    btable: Vec<i32>,
}

impl FastL4 {
    pub(super) fn new() -> Self {
        FastL4 {
            hist: Vec::with_capacity(super::klauspost::ALLOC_HISTORY),
            cur: FRESH_CUR,
            table: super::table(1 << 15),
            btable: super::table(1 << 15),
        }
    }
}

impl FastEnc for FastL4 {
    fn encode(&mut self, src: &[u8], dst: &mut Vec<Token>) -> bool {
        const INPUT_MARGIN: i32 = 12 - 1;
        renorm(
            &mut self.cur,
            self.hist.len(),
            &mut [&mut self.table, &mut self.btable],
        );
        let start_len = dst.len();
        let Some(mut s) = start_block(&mut self.hist, &mut self.cur, src) else {
            // klauspost reports such a chunk as all literals.
            return false;
        };
        let hist = std::mem::take(&mut self.hist);
        let b = &hist[..];
        let cur = self.cur;
        let mut next_emit = s;
        let s_limit = b.len() as i32 - INPUT_MARGIN;
        let mut cv = load64(b, s);
        let common = |x: i32, y: i32| match_len(b, x as usize, y as usize, b.len());
        'outer: loop {
            let mut next_s = s;
            let mut t: i32;
            loop {
                let hs = hash4_15(cv);
                let hl = hash7_15(cv);
                s = next_s;
                next_s = s + 1 + ((s - next_emit) >> 6);
                if next_s > s_limit {
                    break 'outer;
                }
                let s_cand = self.table[hs];
                let l_cand = self.btable[hl];
                let next = load64(b, next_s);
                self.table[hs] = s + cur;
                self.btable[hl] = s + cur;
                t = l_cand - cur;
                if s - t < MAX_MATCH_OFFSET && cv as u32 == load32(b, t) {
                    break;
                }
                t = s_cand - cur;
                if s - t < MAX_MATCH_OFFSET && cv as u32 == load32(b, t) {
                    let l_cand = self.btable[hash7_15(next)];
                    let l_off = next_s - (l_cand - cur);
                    if l_off < MAX_MATCH_OFFSET && load32(b, l_cand - cur) == next as u32 {
                        let l1 = common(s + 4, t + 4);
                        let l2 = common(next_s + 4, next_s - l_off + 4);
                        if l2 > l1 {
                            s = next_s;
                            t = l_cand - cur;
                        }
                    }
                    break;
                }
                cv = next;
            }
            let mut l = common(s + 4, t + 4) + 4;
            while t > 0 && s > next_emit && b[(t - 1) as usize] == b[(s - 1) as usize] {
                s -= 1;
                t -= 1;
                l += 1;
            }
            lits(dst, &b[next_emit as usize..s as usize]);
            add_match_long(dst, l, (s - t) as u16);
            s += l;
            next_emit = s;
            if next_s >= s {
                s = next_s + 1;
            }
            if s >= s_limit {
                if ((s + 8) as usize) < b.len() {
                    let cv = load64(b, s);
                    self.table[hash4_15(cv)] = s + cur;
                    self.btable[hash7_15(cv)] = s + cur;
                }
                break 'outer;
            }
            let mut i = next_s;
            while i < s - 1 {
                let cv = load64(b, i);
                let t = i + cur;
                self.btable[hash7_15(cv)] = t;
                self.btable[hash7_15(cv >> 8)] = t + 1;
                self.table[hash4_15(cv >> 8)] = t + 1;
                i += 3;
            }
            let x = load64(b, s - 1);
            let o = cur + s - 1;
            self.table[hash4_15(x)] = o;
            self.btable[hash7_15(x)] = o;
            cv = x >> 8;
        }
        let emitted = end_block(dst, start_len, b, next_emit);
        self.hist = hist;
        emitted
    }
}
