//! Model of Go's standard library compress/flate (Go 1.7 – 1.26) levels
//! 2–9: 4-byte hash chains over a 64 KiB window sliding by 32 KiB, minimum
//! match 4 (a length-4 match only within 4096 bytes), greedy search with
//! limited insertion for levels 2–3 and lazy evaluation for 4–9.
//!
//! Written from reading Go 1.19's deflate.go. Tokens do not depend on block
//! boundaries (16384-token blocks), so the model runs over the whole stream.

use super::split::{Recorder, Split};
use super::Model;
use crate::tokens::Token;

const WINDOW: usize = 1 << 15;
const MIN_MATCH: usize = 4;
const MAX_MATCH: usize = 258;
const HASH_BITS: u32 = 17;
const HASH_MASK: usize = (1 << HASH_BITS) - 1;
const HASHMUL: u32 = 0x1e35a7bd;
const SKIP_NEVER: usize = usize::MAX;

/// (good, lazy, nice, chain, fast_skip_hashing) per level 2..=9.
const LEVELS: [(usize, usize, usize, usize, usize); 10] = [
    (0, 0, 0, 0, 0),
    (0, 0, 0, 0, 0),
    (4, 0, 16, 8, 5),
    (4, 0, 32, 32, 6),
    (4, 4, 16, 16, SKIP_NEVER),
    (8, 16, 32, 32, SKIP_NEVER),
    (8, 16, 128, 128, SKIP_NEVER),
    (8, 32, 128, 256, SKIP_NEVER),
    (32, 128, 258, 1024, SKIP_NEVER),
    (32, 258, 258, 4096, SKIP_NEVER),
];

#[inline]
fn hash4(b: &[u8]) -> usize {
    (u32::from_be_bytes([b[0], b[1], b[2], b[3]]).wrapping_mul(HASHMUL) >> (32 - HASH_BITS))
        as usize
}

/// A Go model for one stream at `level` 2..=9, with chain links four deep
/// per entry at levels 6-9 (chains of 128 candidates and more), two at 5
/// (32) and one at 2-4, where the wider insert costs more than the walk
/// saves. See `GoStdModel::links`.
pub(super) fn boxed(level: u8) -> Box<dyn Model> {
    match level {
        6.. => Box::new(GoStdModel::<4>::new(level)),
        5 => Box::new(GoStdModel::<2>::new(level)),
        _ => Box::new(GoStdModel::<1>::new(level)),
    }
}

/// Go compress/flate levels 2–9 search state. `LINKS`: how many chain
/// links each position keeps (see `links`); `boxed`, which
/// [`ModelSpec`](super::ModelSpec) builds with, picks it for the level
/// (`GoStdModel::<4>::new(level)` directly).
#[derive(Clone)]
pub struct GoStdModel<const LINKS: usize = 4> {
    level: u8,
    lazy: usize,
    nice: usize,
    chain: usize,
    skip: usize,
    window: Vec<u8>,
    window_end: usize,
    index: usize,
    /// Window index + 1 ("link"; 0: none) of the latest position per hash.
    /// Go keeps absolute offsets in u32 and moves an offset instead of the
    /// entries at a slide; u16 entries moved at each slide give the same
    /// candidates in half the cache.
    head: Vec<u16>,
    /// Per link (entry 0 stands for "none" and stays zero), the links of
    /// the next `LINKS` older positions on its chain: Go's `hashPrev`
    /// and the entries it would reach from there. One load gives the
    /// next `LINKS` candidates, so the walk waits on a load once per
    /// `LINKS` candidates instead of once per candidate; an insert builds
    /// its entry from the old head's, shifted by one. An entry per window
    /// byte, not Go's 32 KiB ring, so that a step needs no mask (see the
    /// zlib model's `prev`); its entries never change while the position
    /// is in the window (each position is hashed once).
    links: Vec<[u16; LINKS]>,
    chain_head: isize,
    length: usize,
    offset: usize,
    byte_available: bool,
    /// Stream offset of window index 0 (grows by 32 KiB at every slide).
    base: u64,
    /// Plaintext bytes given to `predict` so far.
    fed: u64,
    /// The last 32 KiB of plaintext seen (for `split`), while `keep_tail`
    /// (not in a piece or piped, where it cannot be asked for).
    tail: Vec<u8>,
    keep_tail: bool,
    /// Positions before `index` still to hash once 4 bytes are there.
    pending: usize,
    /// Clean loop tops to note down (for `split`).
    rec: Option<Box<Recorder>>,
}

impl<const LINKS: usize> GoStdModel<LINKS> {
    /// New model for one stream at `level` 2..=9.
    pub fn new(level: u8) -> Self {
        let (_good, lazy, nice, chain, skip) = LEVELS[level.clamp(2, 9) as usize];
        GoStdModel {
            level: level.clamp(2, 9),
            lazy,
            nice,
            chain,
            skip,
            window: vec![0; 2 * WINDOW],
            window_end: 0,
            index: 0,
            head: super::table(HASH_MASK + 1),
            links: super::table_of(2 * WINDOW + 1, [0; LINKS]),
            chain_head: -1,
            length: MIN_MATCH - 1,
            offset: 0,
            byte_available: false,
            base: 0,
            fed: 0,
            tail: Vec::new(),
            keep_tail: true,
            pending: 0,
            rec: None,
        }
    }

    /// The state a lazy-level (4–9) model has on reaching stream offset
    /// `at` with nothing held back, for a model that did not see the
    /// stream before: every position of `prefix` (the up to 32 KiB before
    /// `at`) is hashed, as Go does at these levels. `at` must lie at least
    /// 1 KiB past a multiple of 32 KiB and 262 bytes before the next one.
    fn cold_at(level: u8, at: u64, prefix: &[u8]) -> Self {
        let mut m = Self::new(level);
        let w = WINDOW as u64;
        debug_assert!(at % w >= 1024 && at % w + 262 <= w && at >= w);
        m.base = (at / w - 1) * w;
        m.index = (at - m.base) as usize;
        let start = m.index - prefix.len();
        m.window[start..m.index].copy_from_slice(prefix);
        m.window_end = m.index;
        for p in start..m.index.saturating_sub(MIN_MATCH - 1) {
            m.insert(p);
        }
        m.pending = prefix.len().min(MIN_MATCH - 1);
        m.fed = at;
        m
    }

    /// Go's fillDeflate: slide when the index nears the end, then copy
    /// from `src`; the bytes of it taken.
    fn fill_from(&mut self, src: &[u8]) -> usize {
        if self.index >= 2 * WINDOW - (MIN_MATCH + MAX_MATCH) {
            self.window.copy_within(WINDOW..2 * WINDOW, 0);
            self.index -= WINDOW;
            self.window_end -= WINDOW;
            self.base += WINDOW as u64;
            // Entries that fall out of the window become "none" (Go's
            // would give an index below 0 and end the chain the same way).
            super::slide_down(&mut self.head, WINDOW);
            self.links.copy_within(WINDOW + 1..2 * WINDOW + 1, 1);
            super::slide_down(self.links[1..WINDOW + 1].as_flattened_mut(), WINDOW);
            self.chain_head -= WINDOW as isize;
        }
        let n = (2 * WINDOW - self.window_end).min(src.len());
        self.window[self.window_end..self.window_end + n].copy_from_slice(&src[..n]);
        self.window_end += n;
        while self.pending > 0 && self.index - self.pending + MIN_MATCH <= self.window_end {
            self.insert(self.index - self.pending);
            self.pending -= 1;
        }
        n
    }

    /// Go's findMatch. Candidates are rejected first on the four bytes at
    /// the start and the two around the length to beat (Go compares one
    /// byte there): a candidate differing in either cannot be longer, so
    /// the result is Go's.
    fn find_match(&self, pos: usize, prev_head: isize, lookahead: usize) -> Option<(usize, usize)> {
        let look = MAX_MATCH.min(lookahead);
        let win = &self.window[..pos + look];
        let nice = look.min(self.nice);
        let mut tries = self.chain;
        let mut length = MIN_MATCH - 1;
        let mut found = None;
        // Reads reach at most pos + length + 1 <= pos + look (length < nice
        // <= look while searching), and candidates lie below pos.
        assert!(look > length && pos + look <= win.len());
        let wp = win.as_ptr();
        // SAFETY: p + 2 <= pos + look (above).
        let ld16 = |p: usize| unsafe { (wp.add(p) as *const u16).read_unaligned() };
        // SAFETY: p + 4 <= pos + look: candidates are below pos, and look
        // >= MIN_MATCH (Go searches only with more lookahead than that).
        let ld32 = |p: usize| unsafe { (wp.add(p) as *const u32).read_unaligned() };
        let start = ld32(pos);
        let mut end = ld16(pos + length - 1);
        let min_index = pos as isize - WINDOW as isize;
        // The loop runs on links (index + 1, 0: none) so that no
        // subtraction sits between one entry's load and the next: the -1
        // goes into the addressing. Go stops after the candidate at
        // min_index, or at a link below the window: as a link always leads
        // to an older position, the first is the second one step later.
        // Candidates are weighed in Go's order, `tries` counted per
        // candidate, so the result is Go's however many links an entry
        // holds.
        let low = (min_index + 1).max(1) as usize;
        // Candidate `iu`: take it if longer; `break 'walk` at `nice`.
        macro_rules! check {
            ($iu:expr, $walk:lifetime) => {{
                let iu = $iu;
                if ld16(iu + length - 1) == end && ld32(iu) == start {
                    let n =
                        4 + super::zlib::common_prefix(&win[iu + 4..], &win[pos + 4..pos + look]);
                    if n > length && (n > MIN_MATCH || pos - iu <= 4096) {
                        length = n;
                        found = Some((n, pos - iu));
                        if n >= nice {
                            break $walk;
                        }
                        end = ld16(pos + n - 1);
                    }
                }
            }};
        }
        let links = &self.links[..2 * WINDOW + 1];
        let mut c = prev_head as usize + 1;
        'walk: {
            check!(c - 1, 'walk);
            loop {
                // SAFETY: links are at most 2 WINDOW (indexes below it, + 1).
                let next = unsafe { *links.get_unchecked(c) };
                for l in next {
                    tries -= 1;
                    if tries == 0 || (l as usize) < low {
                        break 'walk;
                    }
                    check!(l as usize - 1, 'walk);
                }
                c = next[LINKS - 1] as usize;
            }
        }
        found
    }

    /// Put position `at` (hash `h`) at the head of its chain; returns the
    /// old head's link.
    #[inline(always)]
    fn link(&mut self, at: usize, h: usize) -> u16 {
        let old = self.head[h];
        // SAFETY: links are at most 2 WINDOW, below `links.len()`.
        let o = unsafe { self.links.get_unchecked(old as usize) };
        self.links[at + 1] = super::chain_entry(old, o);
        self.head[h] = (at + 1) as u16;
        old
    }

    fn insert(&mut self, at: usize) {
        let h = hash4(&self.window[at..at + 4]);
        self.link(at, h);
    }

    /// Go's deflate loop; `sync` processes to the end of the input.
    fn deflate(&mut self, out: &mut Vec<Token>, sync: bool) {
        if self.window_end - self.index < MIN_MATCH + MAX_MATCH && !sync {
            return;
        }
        let max_insert = self.window_end.saturating_sub(MIN_MATCH - 1);
        let lazy_mode = self.skip == SKIP_NEVER;
        loop {
            let lookahead = self.window_end - self.index;
            if lookahead < MIN_MATCH + MAX_MATCH {
                if !sync {
                    return;
                }
                if lookahead == 0 {
                    if self.byte_available {
                        out.push(Token::lit(self.window[self.index - 1]));
                        self.byte_available = false;
                    }
                    return;
                }
            }
            if let Some(rec) = &mut self.rec {
                if !self.byte_available && self.length == MIN_MATCH - 1 {
                    rec.note(self.base + self.index as u64, self.base, out.len());
                }
            }
            if self.index < max_insert {
                let h = hash4(&self.window[self.index..self.index + 4]);
                self.chain_head = self.link(self.index, h) as isize;
                self.head[h] = (self.index + 1) as u16;
            }
            let prev_length = self.length;
            let prev_offset = self.offset;
            self.length = MIN_MATCH - 1;
            self.offset = 0;
            let min_index = self.index.saturating_sub(WINDOW) as isize;
            let cand = self.chain_head - 1;
            if cand >= min_index
                && (!lazy_mode && lookahead > MIN_MATCH - 1
                    || lazy_mode && lookahead > prev_length && prev_length < self.lazy)
            {
                if let Some((l, o)) = self.find_match(self.index, cand, lookahead) {
                    self.length = l;
                    self.offset = o;
                }
            }
            if !lazy_mode && self.length >= MIN_MATCH
                || lazy_mode && prev_length >= MIN_MATCH && self.length <= prev_length
            {
                if !lazy_mode {
                    out.push(Token::matched(self.length as u16, self.offset as u16));
                } else {
                    out.push(Token::matched(prev_length as u16, prev_offset as u16));
                }
                if self.length <= self.skip {
                    let new_index = if !lazy_mode {
                        self.index + self.length
                    } else {
                        self.index + prev_length - 1
                    };
                    let mut index = self.index + 1;
                    while index < new_index {
                        if index < max_insert {
                            self.insert(index);
                        }
                        index += 1;
                    }
                    self.index = index;
                    if lazy_mode {
                        self.byte_available = false;
                        self.length = MIN_MATCH - 1;
                    }
                } else {
                    self.index += self.length;
                }
            } else {
                if !lazy_mode || self.byte_available {
                    let i = if lazy_mode {
                        self.index - 1
                    } else {
                        self.index
                    };
                    out.push(Token::lit(self.window[i]));
                }
                self.index += 1;
                if lazy_mode {
                    self.byte_available = true;
                }
            }
        }
    }

    /// Go's write loop: search whatever the window holds past the 262
    /// bytes of lookahead a search may read, then fill and slide. Tokens do
    /// not depend on how the input arrives: a search never reads past that
    /// lookahead, and the window slides at the first loop top past
    /// `2 WINDOW - 262` however full it was before. Searching as soon as
    /// bytes are there (not once the window is full) lets a split piece
    /// stop a few KiB past its end instead of at the end of its window.
    /// `src` goes straight into the window (and all of it before this
    /// returns), as Go copies what is written.
    fn run(&mut self, src: &[u8], out: &mut Vec<Token>, finish: bool) {
        let mut used = 0;
        loop {
            used += self.fill_from(&src[used..]);
            let full = self.window_end == 2 * WINDOW;
            self.deflate(out, !full && finish);
            if !full {
                debug_assert_eq!(used, src.len());
                return;
            }
        }
    }
}

impl<const LINKS: usize> Model for GoStdModel<LINKS> {
    fn next_chunk(&self) -> usize {
        1 << 16
    }

    fn predict(&mut self, chunk: &[u8], out: &mut Vec<Token>) {
        self.fed += chunk.len() as u64;
        if self.keep_tail {
            super::klauspost::keep_tail(&mut self.tail, chunk, WINDOW);
        }
        self.run(chunk, out, false);
    }

    fn finish(&mut self, out: &mut Vec<Token>) {
        self.run(&[], out, true);
    }

    fn parallel(&mut self, threads: usize) -> Option<Box<dyn Model>> {
        if self.rec.is_some() {
            return None;
        }
        // Levels 2–3 skip hashing inside matches: their chains depend on
        // earlier tokens, so a cold piece could not rebuild them. One
        // serial search, on a thread of its own.
        if self.skip != SKIP_NEVER {
            self.keep_tail = false;
            return super::pipe::piped(self, Self::new(self.level));
        }
        Some(Box::new(super::split::Par::new(self.clone(), threads)))
    }
}

impl<const LINKS: usize> Split for GoStdModel<LINKS> {
    type Params = u8;

    fn params(&self) -> u8 {
        self.level
    }

    fn fed(&self) -> u64 {
        self.fed
    }

    fn tail(&self) -> &[u8] {
        &self.tail
    }

    fn block(_: u8) -> usize {
        0
    }

    fn cold(level: u8, at: u64, prefix: &[u8]) -> Self {
        let mut m = Self::cold_at(level, at, prefix);
        m.keep_tail = false;
        m
    }

    fn recorder(&mut self) -> &mut Option<Box<Recorder>> {
        &mut self.rec
    }
}
