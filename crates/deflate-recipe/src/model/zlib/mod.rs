//! Model of zlib's match search (deflate_fast for levels 1–3, deflate_slow
//! with lazy evaluation for 4–9), default windowBits 15 and memLevel 8.
//!
//! Written from the description of zlib's deflate.c (see DEFLATE-NOTES §2):
//! window-relative positions in a 64 KiB buffer sliding by 32 KiB, hash of
//! three bytes, chains through `prev` (at level 1 kept four deep in the
//! hash table instead: `level1`), index 0 doubling as "no entry", and
//! the level table (good, lazy, nice, chain). Tokens do not depend on block
//! boundaries, so the model runs over the whole stream. GNU gzip shares the
//! search; its output mostly agrees.

mod level1;
mod search;
mod steps;

pub(crate) use search::common_prefix;
use search::{insert, longest_match, At, Limits};

use super::split::{Recorder, Split, W};
use super::Model;
use crate::tokens::Token;

const MIN_MATCH: usize = 3;
const MAX_MATCH: usize = 258;
const MIN_LOOKAHEAD: usize = MAX_MATCH + MIN_MATCH + 1;
const MAX_DIST: usize = W - MIN_LOOKAHEAD;
const HASH_MASK: usize = (1 << 15) - 1;
const TOO_FAR: usize = 4096;
const NIL: usize = 0;

/// (good, lazy or max_insert, nice, chain) per level.
const CONFIG: [(usize, usize, usize, usize); 10] = [
    (0, 0, 0, 0),
    (4, 4, 8, 4),
    (4, 5, 16, 8),
    (4, 6, 32, 32),
    (4, 4, 16, 16),
    (8, 16, 32, 32),
    (8, 16, 128, 128),
    (8, 32, 128, 256),
    (32, 128, 258, 1024),
    (32, 258, 258, 4096),
];

/// zlib match-search state. `LINKS`: how many chain links each position
/// keeps (see `prev`); `boxed`, which [`ModelSpec`](super::ModelSpec)
/// builds with, picks it for the level (`ZlibModel::<4>::new(level)`
/// directly).
#[derive(Clone)]
pub struct ZlibModel<const LINKS: usize = 4> {
    level: u8,
    good: usize,
    lazy: usize,
    nice: usize,
    chain: usize,
    window: Vec<u8>,
    chains: Chains<LINKS>,
    strstart: usize,
    lookahead: usize,
    /// Input not yet copied into the window.
    input: Vec<u8>,
    input_pos: usize,
    match_start: usize,
    match_length: usize,
    prev_length: usize,
    prev_match: usize,
    match_available: bool,
    /// pigz: bytes per independently compressed block (0: one zlib stream).
    block: usize,
    /// pigz: prime each block with the previous block's last 32 KiB.
    dict: bool,
    block_pos: usize,
    tail: Vec<u8>,
    /// Whether plain zlib keeps `tail` (not once piped or split).
    keep_tail: bool,
    /// Dictionary positions still to hash once input arrives (zlib's `insert`).
    insert: usize,
    /// Stream offset of window index 0 (grows by W at every slide).
    base: u64,
    /// Plaintext bytes given to `predict` so far.
    fed: u64,
    /// Loop tops to note down, for `split`.
    rec: Option<Box<Recorder>>,
    /// Which loop level 1's next steps take (see `level1`).
    pick: Pick,
}

/// The hash chains.
#[derive(Clone)]
enum Chains<const LINKS: usize> {
    /// zlib's: `head` per hash, and `prev`, the chain links of each window
    /// position: zlib's `prev` link and the `LINKS - 1` links it would
    /// reach from there, so that a search waits on one load per `LINKS`
    /// candidates (an insert builds its entry from the old head's, shifted
    /// by one; a position is hashed once, so an entry never changes while
    /// the position is in the window). zlib keeps a 32 KiB ring (`prev[p &
    /// WMASK]`); this keeps one entry per window byte and moves the upper
    /// half down at each slide, so that no mask sits on the path from link
    /// to link (a zlib -9 rebuild 18 % faster). The same links are read: a
    /// search reads the links of candidates above `strstart - MAX_DIST`
    /// only, whose ring slots no later position has reached yet.
    Links {
        head: Vec<u16>,
        prev: Vec<[u16; LINKS]>,
    },
    /// Level 1's: the four positions last hashed alike, per hash
    /// (`level1`).
    Four(Vec<level1::Four>),
}

impl<const LINKS: usize> Chains<LINKS> {
    /// Level 1's four-deep table, or zlib's `head` and `prev`.
    fn new(level: u8) -> Self {
        if level == 1 {
            Chains::Four(super::table(HASH_MASK + 1))
        } else {
            Chains::links()
        }
    }

    fn links() -> Self {
        Chains::Links {
            head: super::table(HASH_MASK + 1),
            prev: super::table_of(2 * W, [0; LINKS]),
        }
    }

    /// Hash position `p` of window `w`; returns its chain before, up to
    /// four deep (the old head alone on zlib's chains).
    #[inline]
    fn insert(&mut self, w: &[u8], p: usize) -> level1::Four {
        match self {
            Chains::Links { head, prev } => level1::only(insert(w, head, prev, p)),
            Chains::Four(four) => level1::insert(w, four, p),
        }
    }

    /// The window slid down by W: entries below W fall out and become NIL (0).
    fn slide(&mut self) {
        match self {
            Chains::Links { head, prev } => {
                super::slide_down(head, W);
                prev.copy_within(W..2 * W, 0);
                super::slide_down(prev[..W].as_flattened_mut(), W);
            }
            Chains::Four(four) => level1::slide(four),
        }
    }

    /// Every chain emptied.
    fn clear(&mut self) {
        match self {
            Chains::Links { head, prev } => {
                head.fill(0);
                prev.fill([0; LINKS]);
            }
            Chains::Four(four) => four.fill(0),
        }
    }
}

/// How a level 1 model's next steps search: the two give the same tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pick {
    /// Each search on its own (matches dense).
    Plain,
    /// The next position's chain loaded during each search (literals
    /// dense).
    Ahead,
    /// Always the one given (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Only(bool),
}

/// A zlib model for one stream at `level` (a pigz one when `block` > 0
/// or `dict`), with chain links four deep per entry where a search may
/// weigh 32 candidates or more (levels 3, 5-9) and one elsewhere (1, 2
/// and 4, which weigh 4, 8 and 16 at most: there the wider insert costs
/// more than the walk saves). See `ZlibModel::prev`.
pub(super) fn boxed(level: u8, block: usize, dict: bool) -> Box<dyn Model> {
    if CONFIG[level.clamp(1, 9) as usize].3 >= 32 {
        Box::new(ZlibModel::<4>::pigz(level, block, dict))
    } else {
        Box::new(ZlibModel::<1>::pigz(level, block, dict))
    }
}

impl<const LINKS: usize> ZlibModel<LINKS> {
    /// New model for one stream at `level` 1..=9 (see `boxed` for
    /// which `LINKS` pays).
    pub fn new(level: u8) -> Self {
        let (good, lazy, nice, chain) = CONFIG[level.clamp(1, 9) as usize];
        Self {
            level: level.clamp(1, 9),
            good,
            lazy,
            nice,
            chain,
            window: vec![0; 2 * W + level1::PAD],
            chains: Chains::new(level.clamp(1, 9)),
            strstart: 0,
            lookahead: 0,
            input: Vec::new(),
            input_pos: 0,
            match_start: 0,
            match_length: MIN_MATCH - 1,
            prev_length: MIN_MATCH - 1,
            prev_match: 0,
            match_available: false,
            block: 0,
            dict: false,
            block_pos: 0,
            tail: Vec::new(),
            keep_tail: true,
            insert: 0,
            base: 0,
            fed: 0,
            rec: None,
            pick: Pick::Plain,
        }
    }

    /// A level 1 model on zlib's own `head` and `prev` (the tests'
    /// reference for `level1`).
    #[cfg(test)]
    fn on_chains(level: u8) -> Self {
        Self {
            chains: Chains::links(),
            ..Self::new(level)
        }
    }

    /// The state a lazy-level (4–9) model would have on reaching stream
    /// offset `at` with nothing held back, for a model that did not see
    /// the stream before: `prefix` (the up to 32 KiB before `at`) is
    /// hashed as zlib hashes every position at these levels. `at` must lie
    /// at least 1 KiB past a multiple of 32 KiB and 262 bytes before the
    /// next one, where the window base is known without having run.
    pub(super) fn cold_at(level: u8, at: u64, prefix: &[u8]) -> Self {
        let mut m = Self::new(level);
        let w = W as u64;
        debug_assert!(at % w >= 1024 && at % w + MIN_LOOKAHEAD as u64 <= w && at >= w);
        m.base = (at / w - 1) * w;
        let start = (at - m.base) as usize - prefix.len();
        m.window[start..start + prefix.len()].copy_from_slice(prefix);
        for p in start..(start + prefix.len()).saturating_sub(MIN_MATCH - 1) {
            m.insert(p);
        }
        m.strstart = start + prefix.len();
        m.insert = prefix.len().min(MIN_MATCH - 1);
        m.fed = at;
        m
    }

    /// A pigz model at the start of the block at stream offset `at`, whose
    /// preceding plaintext ends with `prefix`.
    pub(super) fn pigz_at_block(
        level: u8,
        block: usize,
        dict: bool,
        at: u64,
        prefix: &[u8],
    ) -> Self {
        let mut m = Self::pigz(level, block, dict);
        m.fed = at;
        if dict {
            m.tail = prefix[prefix.len().saturating_sub(W)..].to_vec();
        }
        m.restart();
        m
    }

    /// pigz: zlib restarted every `block` bytes, primed with the previous
    /// block's last 32 KiB unless `dict` is false (`pigz -i`).
    pub fn pigz(level: u8, block: usize, dict: bool) -> Self {
        Self {
            block,
            dict,
            ..Self::new(level)
        }
    }

    /// deflateReset + deflateSetDictionary for the next pigz block.
    fn restart(&mut self) {
        self.chains.clear();
        self.strstart = 0;
        self.lookahead = 0;
        self.match_start = 0;
        self.match_length = MIN_MATCH - 1;
        self.prev_length = MIN_MATCH - 1;
        self.match_available = false;
        self.insert = 0;
        self.base = self.fed - if self.dict { self.tail.len() as u64 } else { 0 };
        if self.dict && !self.tail.is_empty() {
            let n = self.tail.len();
            self.window[..n].copy_from_slice(&self.tail);
            // Every dictionary string is hashed; the last two need the
            // block's first bytes, so zlib hashes them on the next fill.
            for p in 0..n.saturating_sub(MIN_MATCH - 1) {
                self.insert(p);
            }
            self.strstart = n;
            self.insert = n.min(MIN_MATCH - 1);
        }
    }

    /// Slide and copy input into the window, as zlib's fill_window.
    fn fill_window(&mut self) {
        let input = std::mem::take(&mut self.input);
        self.input_pos += self.fill_from(&input[self.input_pos..]);
        self.input = input;
        if self.input_pos > 1 << 16 {
            self.input.drain(..self.input_pos);
            self.input_pos = 0;
        }
    }

    /// `fill_window` from `src`: the bytes of it taken.
    fn fill_from(&mut self, src: &[u8]) -> usize {
        let mut used = 0;
        loop {
            let mut more = 2 * W - self.lookahead - self.strstart;
            if self.strstart >= W + MAX_DIST {
                self.window.copy_within(W..2 * W, 0);
                self.match_start = self.match_start.wrapping_sub(W);
                self.strstart -= W;
                self.base += W as u64;
                self.chains.slide();
                more += W;
            }
            let avail = src.len() - used;
            if avail == 0 {
                break;
            }
            let n = more.min(avail);
            let at = self.strstart + self.lookahead;
            self.window[at..at + n].copy_from_slice(&src[used..used + n]);
            used += n;
            self.lookahead += n;
            while self.insert > 0 && self.lookahead + self.insert >= MIN_MATCH {
                let p = self.strstart - self.insert;
                self.insert(p);
                self.insert -= 1;
            }
            if self.lookahead >= MIN_LOOKAHEAD {
                break;
            }
        }
        used
    }

    /// Hash position `p`; returns its chain's old head.
    #[inline]
    fn insert(&mut self, p: usize) -> usize {
        level1::lane(self.insert_chain(p), 0)
    }

    /// Hash position `p`; returns its chain before, up to four deep (the
    /// old head alone unless at level 1).
    #[inline]
    fn insert_chain(&mut self, p: usize) -> level1::Four {
        self.chains.insert(&self.window, p)
    }

    /// zlib's longest_match from the chain `chain` (its head first): the
    /// longest match strictly longer than `prev_length`, nearest first on
    /// ties, within chain and nice limits.
    fn longest_match(&mut self, chain: level1::Four) -> usize {
        let at = At {
            s: self.strstart,
            lookahead: self.lookahead,
            best: self.prev_length,
        };
        let (w, lim) = (&self.window, self.limits());
        match &self.chains {
            Chains::Links { prev, .. } => {
                let cur = level1::lane(chain, 0);
                longest_match(w, prev, lim, at, cur, &mut self.match_start)
            }
            Chains::Four(_) => level1::longest_match(w, chain, lim, at, &mut self.match_start),
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            good: self.good,
            nice: self.nice,
            chain: self.chain,
        }
    }

    fn lit(&self, out: &mut Vec<Token>, p: usize) {
        out.push(Token::lit(self.window[p]));
    }

    /// Run the search while enough lookahead is buffered (or to the end when `flush`).
    fn run(&mut self, out: &mut Vec<Token>, flush: bool) {
        if self.level <= 3 {
            self.run_fast(out, flush)
        } else {
            self.run_slow(out, flush)
        }
    }
}

impl<const LINKS: usize> Model for ZlibModel<LINKS> {
    fn next_chunk(&self) -> usize {
        if self.block == 0 {
            1 << 16
        } else {
            (1usize << 16).min(self.block - self.block_pos)
        }
    }

    fn set_segment(&mut self, segment: usize, out: &mut Vec<Token>) {
        if self.block != 0 || segment < self.block_pos {
            return;
        }
        self.block = segment;
        if self.block_pos == segment {
            self.run(out, true);
            self.block_pos = 0;
            self.restart();
        }
    }

    fn predict(&mut self, chunk: &[u8], out: &mut Vec<Token>) {
        self.fed += chunk.len() as u64;
        self.block_pos += chunk.len();
        // Plain zlib keeps the tail too, for `fork_pigz` and `Split::tail`,
        // until it runs piped or as a piece, where neither can come.
        if self.dict || self.block == 0 && self.keep_tail {
            super::klauspost::keep_tail(&mut self.tail, chunk, W);
        }
        if self.block == 0 && self.input_pos == self.input.len() {
            // Straight from the chunk into the window, as zlib's
            // fill_window reads its input: fill, search down to
            // MIN_LOOKAHEAD (`run`'s own fill finds nothing staged, and
            // slides where zlib's would), fill again. The chunk is used up
            // before `predict` returns, so nothing is ever staged here.
            let mut used = 0;
            loop {
                used += self.fill_from(&chunk[used..]);
                self.run(out, false);
                if used == chunk.len() {
                    return;
                }
            }
        }
        self.input.extend_from_slice(chunk);
        if self.block == 0 {
            self.run(out, false);
            return;
        }
        if self.block_pos < self.block {
            self.run(out, false);
            return;
        }
        // End of a pigz block: flush it, start the next one fresh.
        self.run(out, true);
        self.block_pos = 0;
        self.restart();
    }

    fn finish(&mut self, out: &mut Vec<Token>) {
        self.run(out, true);
    }

    fn parallel(&mut self, threads: usize) -> Option<Box<dyn Model>> {
        if self.rec.is_some() {
            return None;
        }
        // Levels 1–3 do not hash inside long matches: their chains depend
        // on earlier tokens, so a cold piece could not rebuild them. One
        // serial search, on a thread of its own.
        if self.level <= 3 && self.block == 0 {
            self.keep_tail = false;
            return super::pipe::piped(self, Self::new(self.level));
        }
        Some(Box::new(super::split::Par::new(self.clone(), threads)))
    }

    fn fork_pigz(&self, dict: bool) -> Option<Box<dyn Model>> {
        if self.block != 0 || self.dict {
            return None;
        }
        let mut m = self.clone();
        m.dict = dict;
        if !dict {
            m.tail = Vec::new();
        }
        Some(Box::new(m))
    }
}

impl<const LINKS: usize> Split for ZlibModel<LINKS> {
    /// Level, pigz block size, pigz dictionary flag.
    type Params = (u8, usize, bool);

    fn params(&self) -> Self::Params {
        (self.level, self.block, self.dict)
    }

    fn fed(&self) -> u64 {
        self.fed
    }

    fn tail(&self) -> &[u8] {
        &self.tail
    }

    fn block((_, block, _): Self::Params) -> usize {
        block
    }

    fn cold((level, block, dict): Self::Params, at: u64, prefix: &[u8]) -> Self {
        let mut m = if block > 0 {
            Self::pigz_at_block(level, block, dict, at, prefix)
        } else {
            Self::cold_at(level, at, prefix)
        };
        m.keep_tail = false;
        m
    }

    fn recorder(&mut self) -> &mut Option<Box<Recorder>> {
        &mut self.rec
    }
}
