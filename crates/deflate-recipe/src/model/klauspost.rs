//! Model of klauspost/compress flate's fast encoders (levels 5 — the
//! library default — and 6 here, 1–4 in `kp_low`/`kp_mid`) and of
//! klauspost/pgzip around them.
//!
//! Written from reading the Go sources (compress v1.15.12, pgzip v1.2.5):
//! - the encoder is fed 65535-byte chunks (`maxStoreBlockSize`); a chunk
//!   without any match is stored, a final chunk under 128 bytes is written
//!   without matches;
//! - match finding keeps a byte history across chunks (`fastGen`), a
//!   4-byte-hash table with one entry and a 7-byte-hash table with two;
//! - pgzip cuts the input in independent blocks (1 MiB by default), each
//!   compressed by a fresh encoder primed with the last 16 KiB of the
//!   previous block (tokens of the priming are discarded).

use super::split::{Recorder, Split};
use super::Model;
use crate::tokens::Token;

pub(super) const MAX_STORE_BLOCK: usize = 65535;
pub(super) const MAX_MATCH_OFFSET: i32 = 1 << 15;
const TABLE_BITS: u32 = 15;
const TABLE_SIZE: usize = 1 << TABLE_BITS;
pub(super) const ALLOC_HISTORY: usize = MAX_STORE_BLOCK * 5;
pub(super) const BUFFER_RESET: i32 = i32::MAX - ALLOC_HISTORY as i32 - MAX_STORE_BLOCK as i32;
const PRIME4: u32 = 2654435761;
const PRIME7: u64 = 58295818150454627;

#[inline]
fn hash4(u: u64) -> usize {
    ((u as u32).wrapping_mul(PRIME4) >> (32 - TABLE_BITS)) as usize & (TABLE_SIZE - 1)
}

#[inline]
fn hash7(u: u64) -> usize {
    ((u << 8).wrapping_mul(PRIME7) >> (64 - TABLE_BITS)) as usize & (TABLE_SIZE - 1)
}

#[inline]
pub(super) fn load64(b: &[u8], i: i32) -> u64 {
    u64::from_le_bytes(b[i as usize..i as usize + 8].try_into().unwrap())
}

#[inline]
pub(super) fn load32(b: &[u8], i: i32) -> u32 {
    u32::from_le_bytes(b[i as usize..i as usize + 4].try_into().unwrap())
}

/// Count equal bytes of `b[s..end]` and `b[t..]`.
#[inline]
pub(super) fn match_len(b: &[u8], s: usize, t: usize, end: usize) -> i32 {
    super::zlib::common_prefix(&b[s..end], &b[t..]) as i32
}

/// One klauspost fast encoder level.
pub(super) trait FastEnc: Send {
    /// Encode `src` after the history; false when nothing was emitted
    /// (klauspost then stores the chunk).
    fn encode(&mut self, src: &[u8], dst: &mut Vec<Token>) -> bool;
}

/// A fresh encoder of `level`, as after klauspost's `Reset`.
fn new_enc(level: u8) -> Box<dyn FastEnc> {
    match level {
        1 | 2 => Box::new(super::kp_low::FastL12::new(level)),
        3 => Box::new(super::kp_mid::FastL3::new()),
        4 => Box::new(super::kp_mid::FastL4::new()),
        _ => Box::new(FastL5::new(level == 6)),
    }
}

/// The first `cur` of a fresh writer: maxStoreBlockSize, plus maxMatchOffset added by Reset.
pub(super) const FRESH_CUR: i32 = MAX_STORE_BLOCK as i32 + MAX_MATCH_OFFSET;

/// Shared history handling (`fastGen.addBlock`).
fn add_block(hist: &mut Vec<u8>, cur: &mut i32, src: &[u8]) -> i32 {
    if hist.len() + src.len() > ALLOC_HISTORY {
        let offset = hist.len() - MAX_MATCH_OFFSET as usize;
        hist.copy_within(offset.., 0);
        *cur += offset as i32;
        hist.truncate(MAX_MATCH_OFFSET as usize);
    }
    let s = hist.len() as i32;
    hist.extend_from_slice(src);
    s
}

/// Shortest chunk the fast levels search (`1 + 1 + inputMargin`): klauspost
/// writes shorter ones without matches.
const MIN_NON_LITERAL: usize = 1 + 1 + (12 - 1);

/// Start of a fast level's `encode`, after renormalising: append `src` to
/// the history; `None` if the chunk is too short to search, else where it
/// starts in the history.
#[inline]
pub(super) fn start_block(hist: &mut Vec<u8>, cur: &mut i32, src: &[u8]) -> Option<i32> {
    let s = add_block(hist, cur, src);
    (src.len() >= MIN_NON_LITERAL).then_some(s)
}

/// End of a fast level's `encode`: the bytes after the last match become
/// literals if the chunk had any match; returns whether it emitted tokens
/// (false: the caller stores the chunk).
#[inline]
pub(super) fn end_block(dst: &mut Vec<Token>, start_len: usize, b: &[u8], next_emit: i32) -> bool {
    if (next_emit as usize) < b.len() && dst.len() > start_len {
        dst.extend(b[next_emit as usize..].iter().map(|&v| Token::lit(v)));
    }
    dst.len() > start_len
}

/// Renormalise table offsets as klauspost does when `cur` grows too large.
pub(super) fn renorm(cur: &mut i32, hist_len: usize, tables: &mut [&mut [i32]]) {
    while *cur >= BUFFER_RESET {
        if hist_len == 0 {
            for t in tables.iter_mut() {
                t.fill(0);
            }
            *cur = MAX_MATCH_OFFSET;
            break;
        }
        let min_off = *cur + hist_len as i32 - MAX_MATCH_OFFSET;
        for t in tables.iter_mut() {
            for v in t.iter_mut() {
                *v = if *v <= min_off {
                    0
                } else {
                    *v - *cur + MAX_MATCH_OFFSET
                };
            }
        }
        *cur = MAX_MATCH_OFFSET;
    }
}

/// Level 5/6 fast encoder state.
struct FastL5 {
    l6: bool,
    hist: Vec<u8>,
    cur: i32,
    table: Box<[i32; TABLE_SIZE]>,
    btable: Box<[[i32; 2]; TABLE_SIZE]>,
}

impl FastEnc for FastL5 {
    fn encode(&mut self, src: &[u8], dst: &mut Vec<Token>) -> bool {
        self.encode_l56(src, dst)
    }
}

impl FastL5 {
    fn new(l6: bool) -> Self {
        FastL5 {
            l6,
            hist: Vec::with_capacity(ALLOC_HISTORY),
            cur: FRESH_CUR,
            table: super::table(TABLE_SIZE)
                .into_boxed_slice()
                .try_into()
                .expect("TABLE_SIZE entries"),
            btable: super::table(TABLE_SIZE)
                .into_boxed_slice()
                .try_into()
                .expect("TABLE_SIZE entries"),
        }
    }

    fn renormalize(&mut self) {
        while self.cur >= BUFFER_RESET {
            if self.hist.is_empty() {
                self.table.fill(0);
                self.btable.fill([0; 2]);
                self.cur = MAX_MATCH_OFFSET;
                break;
            }
            let min_off = self.cur + self.hist.len() as i32 - MAX_MATCH_OFFSET;
            let cur = self.cur;
            let fix = |v: i32| {
                if v <= min_off {
                    0
                } else {
                    v - cur + MAX_MATCH_OFFSET
                }
            };
            for v in self.table.iter_mut() {
                *v = fix(*v);
            }
            for e in self.btable.iter_mut() {
                if e[0] <= min_off {
                    *e = [0, 0];
                } else {
                    *e = [fix(e[0]), fix(e[1])];
                }
            }
            self.cur = MAX_MATCH_OFFSET;
        }
    }

    #[inline]
    fn put_long(&mut self, h: usize, v: i32) {
        let e = &mut self.btable[h];
        e[1] = e[0];
        e[0] = v;
    }

    /// Encode `src`, appending tokens; returns false if it emitted nothing
    /// (the caller then stores the chunk). `l6` selects level 6's variant:
    /// slower skipping, a repeat-offset check, two end-of-match candidates
    /// and denser indexing.
    fn encode_l56(&mut self, src: &[u8], dst: &mut Vec<Token>) -> bool {
        let l6 = self.l6;
        const INPUT_MARGIN: i32 = 12 - 1;
        self.renormalize();
        let start_len = dst.len();
        let Some(mut s) = start_block(&mut self.hist, &mut self.cur, src) else {
            // klauspost reports such a chunk as all literals.
            return false;
        };
        let skip_log = if l6 { 7 } else { 6 };
        let hist = std::mem::take(&mut self.hist);
        let b = &hist[..];
        let cur = self.cur;
        let mut next_emit = s;
        let s_limit = b.len() as i32 - INPUT_MARGIN;
        let mut cv = load64(b, s);
        let mut repeat: i32 = 1;
        let ml = |s: i32, t: i32| {
            match_len(
                b,
                s as usize + 4,
                t as usize + 4,
                (s as usize + 258).min(b.len()),
            ) + 4
        };
        'outer: loop {
            let mut next_s = s;
            let mut l: i32 = 0;
            let mut t: i32;
            loop {
                let mut nhs = hash4(cv);
                let mut nhl = hash7(cv);
                s = next_s;
                next_s = s + 1 + ((s - next_emit) >> skip_log);
                if next_s > s_limit {
                    break 'outer;
                }
                let s_cand = self.table[nhs];
                let l_cand = self.btable[nhl];
                let next = load64(b, next_s);
                let entry = s + cur;
                self.table[nhs] = entry;
                self.put_long(nhl, entry);
                nhs = hash4(next);
                nhl = hash7(next);

                t = l_cand[0] - cur;
                if s - t < MAX_MATCH_OFFSET {
                    if cv as u32 == load32(b, t) {
                        self.table[nhs] = next_s + cur;
                        self.put_long(nhl, next_s + cur);
                        let t2 = l_cand[1] - cur;
                        if s - t2 < MAX_MATCH_OFFSET && cv as u32 == load32(b, t2) {
                            l = ml(s, t);
                            let ml1 = ml(s, t2);
                            if ml1 > l {
                                t = t2;
                                l = ml1;
                            }
                        }
                        break;
                    }
                    t = l_cand[1] - cur;
                    if s - t < MAX_MATCH_OFFSET && cv as u32 == load32(b, t) {
                        self.table[nhs] = next_s + cur;
                        self.put_long(nhl, next_s + cur);
                        break;
                    }
                }

                t = s_cand - cur;
                if s - t < MAX_MATCH_OFFSET && cv as u32 == load32(b, t) {
                    l = ml(s, t);
                    let l_cand = self.btable[nhl];
                    self.table[nhs] = next_s + cur;
                    self.put_long(nhl, next_s + cur);
                    if l6 {
                        // Repeat the previous offset one byte later.
                        let t2 = s - repeat + 1;
                        if load32(b, t2) == (cv >> 8) as u32 {
                            let m = ml(s + 1, t2);
                            if m > l {
                                t = t2;
                                l = m;
                                s += 1;
                                break;
                            }
                        }
                    }
                    let mut t2 = l_cand[0] - cur;
                    if next_s - t2 < MAX_MATCH_OFFSET {
                        if load32(b, t2) == next as u32 {
                            let m = ml(next_s, t2);
                            if m > l {
                                t = t2;
                                s = next_s;
                                l = m;
                                if !l6 {
                                    break;
                                }
                            }
                        }
                        t2 = l_cand[1] - cur;
                        if next_s - t2 < MAX_MATCH_OFFSET && load32(b, t2) == next as u32 {
                            let m = ml(next_s, t2);
                            if m > l {
                                t = t2;
                                s = next_s;
                                l = m;
                                break;
                            }
                        }
                    }
                    break;
                }
                cv = next;
            }

            if l == 0 {
                l = match_len(b, s as usize + 4, t as usize + 4, b.len()) + 4;
            } else if l == 258 {
                l += match_len(b, (s + l) as usize, (t + l) as usize, b.len());
            }

            // Look for a better match ending where this one ends.
            let s_at = s + l;
            if (l6 || l < 30) && s_at < s_limit {
                let e_long = self.btable[hash7(load64(b, s_at))];
                let s2 = s + 2;
                let t2 = e_long[0] - cur - l + 2;
                let off = s2 - t2;
                if !l6 {
                    if t2 >= 0 && off < MAX_MATCH_OFFSET && off > 0 {
                        let l2 = match_len(b, s2 as usize, t2 as usize, b.len());
                        if l2 > l {
                            t = t2;
                            l = l2;
                            s = s2;
                        }
                    }
                } else if off < MAX_MATCH_OFFSET {
                    if off > 0 && t2 >= 0 {
                        let l2 = match_len(b, s2 as usize, t2 as usize, b.len());
                        if l2 > l {
                            t = t2;
                            l = l2;
                            s = s2;
                        }
                    }
                    // `l` and `s` may have moved: recomputed as klauspost does.
                    let t2 = e_long[1] - cur - l + 2;
                    let off = s2 - t2;
                    if off > 0 && off < MAX_MATCH_OFFSET && t2 >= 0 {
                        let l2 = match_len(b, s2 as usize, t2 as usize, b.len());
                        if l2 > l {
                            t = t2;
                            l = l2;
                            s = s2;
                        }
                    }
                }
            }

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
            repeat = s - t;
            s += l;
            next_emit = s;
            if next_s >= s {
                s = next_s + 1;
            }
            if s >= s_limit {
                if l6 {
                    // Index after the match end for the next chunk.
                    let mut i = next_s + 1;
                    while i < b.len() as i32 - 8 {
                        let cv = load64(b, i);
                        self.table[hash4(cv)] = i + cur;
                        self.put_long(hash7(cv), i + cur);
                        i += 2;
                    }
                }
                break 'outer;
            }

            if l6 {
                let mut i = next_s + 1;
                while i < s - 1 {
                    let cv = load64(b, i);
                    let t = i + cur;
                    let h1 = hash7(cv);
                    let h2 = hash7(cv >> 8);
                    self.table[hash4(cv)] = t;
                    self.put_long(h1, t);
                    self.put_long(h2, t + 1);
                    i += 2;
                }
                cv = load64(b, s);
                continue;
            }

            // Index some positions inside the match.
            let mut i = s - l + 1;
            if i < s - 1 {
                let mut cv = load64(b, i);
                let t = i + cur;
                self.table[hash4(cv)] = t;
                self.put_long(hash7(cv), t);
                cv >>= 8;
                self.put_long(hash7(cv), t + 1);
                cv >>= 8;
                self.table[hash4(cv)] = t + 2;
                i += 4;
                while i < s - 1 {
                    let cv = load64(b, i);
                    let t = i + cur;
                    self.put_long(hash7(cv), t);
                    self.table[hash4(cv >> 8)] = t + 1;
                    i += 3;
                }
            }

            let x = load64(b, s - 1);
            let o = cur + s - 1;
            self.table[hash4(x)] = o;
            self.put_long(hash7(x), o);
            cv = x >> 8;
        }
        let emitted = end_block(dst, start_len, b, next_emit);
        self.hist = hist;
        emitted
    }
}

/// Emit a match of any length as tokens of at most 258 bytes, leaving at
/// least 3 for the last one (as klauspost's `AddMatchLong`).
pub(super) fn add_match_long(dst: &mut Vec<Token>, mut l: i32, dist: u16) {
    while l > 0 {
        let mut xl = l;
        if xl > 258 {
            xl = if xl > 258 + 3 { 258 } else { 258 - 3 };
        }
        l -= xl;
        dst.push(Token::matched(xl as u16, dist));
    }
}

/// Token predictor for klauspost flate / pgzip.
pub struct KlauspostModel {
    level: u8,
    /// pgzip block size; 0 while unknown or for a plain flate stream.
    segment: usize,
    dict: usize,
    enc: Box<dyn FastEnc>,
    /// Bytes of the current pgzip block seen so far.
    seg_pos: usize,
    /// pgzip blocks completed.
    segments_done: u64,
    /// Tail of the current pgzip block, to prime the next one.
    tail: Vec<u8>,
    scratch: Vec<Token>,
    /// Plaintext bytes given to `predict` so far.
    fed: u64,
    /// Never set: pgzip pieces start on block boundaries (for `split`).
    rec: Option<Box<Recorder>>,
}

impl KlauspostModel {
    /// New model for one stream at level 1..=6 (others fall back to
    /// level 5's search, with more corrections).
    pub fn new(level: u8, segment: u32, dict: u32) -> Self {
        KlauspostModel {
            level,
            segment: segment as usize,
            dict: dict as usize,
            enc: new_enc(level),
            seg_pos: 0,
            segments_done: 0,
            tail: Vec::new(),
            scratch: Vec::new(),
            fed: 0,
            rec: None,
        }
    }
}

/// pgzip compresses every block with a fresh writer primed with the last
/// `dict` bytes before it: pieces start on block boundaries.
impl Split for KlauspostModel {
    /// Level, pgzip block size, dictionary bytes.
    type Params = (u8, usize, usize);

    fn params(&self) -> Self::Params {
        (self.level, self.segment, self.dict)
    }

    fn fed(&self) -> u64 {
        self.fed
    }

    fn tail(&self) -> &[u8] {
        &self.tail
    }

    fn block((_, segment, _): Self::Params) -> usize {
        segment
    }

    fn cold((level, segment, dict): Self::Params, at: u64, prefix: &[u8]) -> Self {
        let mut m = KlauspostModel::new(level, segment as u32, dict as u32);
        m.fed = at;
        if at > 0 {
            m.segments_done = 1;
            m.tail = prefix[prefix.len().saturating_sub(dict)..].to_vec();
        }
        m
    }

    fn recorder(&mut self) -> &mut Option<Box<Recorder>> {
        &mut self.rec
    }
}

/// Keep the last `dict` bytes seen in `tail`.
pub(super) fn keep_tail(tail: &mut Vec<u8>, chunk: &[u8], dict: usize) {
    if dict == 0 {
        return;
    }
    if chunk.len() >= dict {
        tail.clear();
        tail.extend_from_slice(&chunk[chunk.len() - dict..]);
    } else {
        tail.extend_from_slice(chunk);
        let excess = tail.len().saturating_sub(dict);
        tail.drain(..excess);
    }
}

impl Model for KlauspostModel {
    fn next_chunk(&self) -> usize {
        if self.segment == 0 {
            MAX_STORE_BLOCK
        } else {
            MAX_STORE_BLOCK.min(self.segment - self.seg_pos)
        }
    }

    fn parallel(&mut self, threads: usize) -> Option<Box<dyn Model>> {
        // A plain flate stream (no blocks) is one serial search: it runs
        // on a thread of its own.
        if self.segment == 0 {
            return super::pipe::piped(self, KlauspostModel::new(self.level, 0, self.dict as u32));
        }
        let spent = KlauspostModel::new(self.level, self.segment as u32, self.dict as u32);
        let me = std::mem::replace(self, spent);
        Some(Box::new(super::split::Par::new(me, threads)))
    }

    fn set_segment(&mut self, segment: usize, _out: &mut Vec<Token>) {
        if self.segment == 0 && segment >= self.seg_pos {
            self.segment = segment;
            if self.seg_pos == segment {
                self.seg_pos = 0;
                self.segments_done += 1;
            }
        }
    }

    fn predict(&mut self, chunk: &[u8], out: &mut Vec<Token>) {
        if self.seg_pos == 0 && self.segments_done > 0 {
            // pgzip: a fresh writer per block, primed with the previous tail.
            self.enc = new_enc(self.level);
            if !self.tail.is_empty() {
                let tail = std::mem::take(&mut self.tail);
                let start = tail.len().saturating_sub(MAX_MATCH_OFFSET as usize);
                self.scratch.clear();
                self.enc.encode(&tail[start..], &mut self.scratch);
            }
        }
        let full = chunk.len() == MAX_STORE_BLOCK;
        if !full && chunk.len() < 128 {
            out.extend(chunk.iter().map(|&v| Token::lit(v)));
        } else {
            let start = out.len();
            // No match at all: stored; barely any (more tokens than 15/16 of
            // the bytes): written Huffman-only. Either way: literals.
            if !self.enc.encode(chunk, out) || out.len() - start > chunk.len() - (chunk.len() >> 4)
            {
                out.truncate(start);
                out.extend(chunk.iter().map(|&v| Token::lit(v)));
            }
        }
        self.seg_pos += chunk.len();
        self.fed += chunk.len() as u64;
        keep_tail(&mut self.tail, chunk, self.dict);
        if self.segment > 0 && self.seg_pos == self.segment {
            self.seg_pos = 0;
            self.segments_done += 1;
        }
    }
}
