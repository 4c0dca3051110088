//! klauspost/compress flate levels 7–9 (`deflateLazy`): 4-byte hash chains
//! over a 64 KiB window, lazy matching with a re-check at the match end,
//! literal runs that stop searching after `chain` misses, and (level 9) a
//! match choice weighed by the literal code lengths of the window's
//! histogram. Written from reading deflate.go (compress v1.15.12).

use super::Model;
use crate::hdrpred::go_lengths;
use crate::huffman::{dist_code, len_code, DIST_EXTRA, LEN_EXTRA};
use crate::tokens::Token;

const WINDOW: usize = 1 << 15;
const MIN_MATCH: usize = 4;
const MAX_MATCH: usize = 258;
const HASH_BITS: u32 = 17;
const PRIME4: u32 = 2654435761;

#[inline]
fn hash4(b: &[u8]) -> usize {
    (u32::from_le_bytes([b[0], b[1], b[2], b[3]]).wrapping_mul(PRIME4) >> (32 - HASH_BITS)) as usize
}

/// klauspost's `offsetCode` applied to a distance (as level 9's cost uses it).
fn offset_code_of(off: u32) -> usize {
    if off < 256 {
        dist_code(off as u16 + 1)
    } else {
        dist_code(((off >> 7) & 255) as u16 + 1) + 14
    }
}

/// Lazy levels 7..=9, optionally as pgzip blocks primed with a dictionary.
pub struct KpLazyModel {
    lazy: usize,
    nice: usize,
    chain: usize,
    segment: usize,
    dict: usize,
    seg_pos: usize,
    segments_done: u64,
    tail: Vec<u8>,
    window: Vec<u8>,
    window_end: usize,
    index: usize,
    /// Window index + 1 of the latest position per hash (0: none), and
    /// of the one before each position, moved at each slide (klauspost
    /// keeps u32 offsets and moves an offset: same candidates, twice the
    /// cache). `prev` has an entry per window byte, not a 32 KiB ring,
    /// so that a chain step needs no mask (see the zlib model's `prev`).
    head: Vec<u16>,
    prev: Vec<u16>,
    chain_head: isize,
    length: usize,
    offset: usize,
    byte_available: bool,
    ii: u16,
    lit_len: [u8; 256],
    /// Level 9: running sum of literal code lengths over the window.
    bits: Vec<u32>,
}

impl KpLazyModel {
    /// New model at `level` 7..=9; `segment` > 0 models pgzip blocks.
    pub fn new(level: u8, segment: u32, dict: u32) -> Self {
        let (lazy, nice, chain) = match level {
            7 => (12, 16, 24),
            8 => (30, 40, 64),
            _ => (258, 258, 1024),
        };
        KpLazyModel {
            lazy,
            nice,
            chain,
            segment: segment as usize,
            dict: dict as usize,
            seg_pos: 0,
            segments_done: 0,
            tail: Vec::new(),
            window: vec![0; 2 * WINDOW],
            window_end: 0,
            index: 0,
            head: super::table(1 << HASH_BITS),
            prev: super::table(2 * WINDOW),
            chain_head: -1,
            length: MIN_MATCH - 1,
            offset: 0,
            byte_available: false,
            ii: 0,
            lit_len: [0; 256],
            bits: super::table(2 * WINDOW + 1),
        }
    }

    fn reset(&mut self) {
        self.window_end = 0;
        self.index = 0;
        self.head.fill(0);
        self.prev.fill(0);
        self.chain_head = -1;
        self.length = MIN_MATCH - 1;
        self.offset = 0;
        self.byte_available = false;
        self.ii = 0;
    }

    /// Hash positions `from..to` into the chains, in order.
    #[inline]
    fn insert_run(&mut self, from: usize, to: usize) {
        if from >= to {
            return;
        }
        // Sliced to their exact lengths so the loop has no bounds checks
        // and the head loads of successive positions overlap.
        let w = &self.window[..to + MIN_MATCH - 1];
        let head = &mut self.head[..1 << HASH_BITS];
        let prev = &mut self.prev[..2 * WINDOW];
        for i in from..to {
            let h = hash4(&w[i..i + 4]);
            prev[i] = head[h];
            head[h] = (i + 1) as u16;
        }
    }

    /// `fillWindow`: the dictionary goes into the window with every position hashed.
    fn fill_dict(&mut self, dict: &[u8]) {
        let b = &dict[dict.len().saturating_sub(WINDOW)..];
        let n = b.len();
        self.window[self.window_end..self.window_end + n].copy_from_slice(b);
        self.insert_run(0, n.saturating_sub(MIN_MATCH - 1));
        self.window_end += n;
        self.index = n;
    }

    fn fill(&mut self, input: &[u8]) -> usize {
        if self.index >= 2 * WINDOW - (MIN_MATCH + MAX_MATCH) {
            self.window.copy_within(WINDOW..2 * WINDOW, 0);
            self.index -= WINDOW;
            self.window_end -= WINDOW;
            // Entries that fall out of the window become "none" (klauspost's
            // would give an index below 0 and end the chain the same way).
            super::slide_down(&mut self.head, WINDOW);
            self.prev.copy_within(WINDOW..2 * WINDOW, 0);
            super::slide_down(&mut self.prev[..WINDOW], WINDOW);
            self.chain_head -= WINDOW as isize;
        }
        let n = (2 * WINDOW - self.window_end).min(input.len());
        self.window[self.window_end..self.window_end + n].copy_from_slice(&input[..n]);
        self.window_end += n;
        n
    }

    fn find_match(&self, pos: usize, prev_head: isize, lookahead: usize) -> Option<(usize, usize)> {
        let look = MAX_MATCH.min(lookahead);
        let win = &self.window[..pos + look];
        let nice = look.min(self.nice);
        let mut tries = self.chain;
        let mut length = MIN_MATCH - 1;
        let mut w_end = win[pos + length];
        let min_index = pos.saturating_sub(WINDOW) as isize;
        let mut found = None;
        let mut gain = 0i32;
        let weighed = self.chain >= 100;
        let mut i = prev_head;
        while tries > 0 {
            let iu = i as usize;
            if w_end == win[iu + length] {
                let n = super::zlib::common_prefix(&win[iu..iu + look], &win[pos..pos + look]);
                if n > length {
                    let better = if weighed {
                        let bits = (self.bits[pos + n] - self.bits[pos]) as i32;
                        let g = bits
                            - DIST_EXTRA[offset_code_of((pos - iu) as u32)] as i32
                            - 6
                            - LEN_EXTRA[len_code(n as u16)] as i32;
                        let ok = g > gain;
                        if ok {
                            gain = g;
                        }
                        ok
                    } else {
                        true
                    };
                    if better {
                        length = n;
                        found = Some((n, pos - iu));
                        if n >= nice {
                            break;
                        }
                        w_end = win[pos + n];
                    }
                }
            }
            if i <= min_index {
                break;
            }
            i = self.prev[iu] as isize - 1;
            if i < min_index {
                break;
            }
            tries -= 1;
        }
        found
    }

    /// `deflateLazy`; `sync` runs to the end of the window.
    fn deflate(&mut self, out: &mut Vec<Token>, sync: bool) {
        if self.window_end - self.index < MIN_MATCH + MAX_MATCH && !sync {
            return;
        }
        if self.window_end != self.index && self.chain > 100 {
            let mut hist = [0u16; 256];
            for &v in &self.window[self.index..self.window_end] {
                hist[v as usize] = hist[v as usize].wrapping_add(1);
            }
            let freq: Vec<u32> = hist.iter().map(|&v| v as u32).collect();
            self.lit_len.copy_from_slice(&go_lengths(&freq, 15));
            // Prefix sums make each candidate's literal cost O(1).
            for i in self.index..self.window_end {
                self.bits[i + 1] = self.bits[i] + self.lit_len[self.window[i] as usize] as u32;
            }
        }
        let max_insert = self.window_end.saturating_sub(MIN_MATCH - 1);
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
            if self.index < max_insert {
                let h = hash4(&self.window[self.index..]);
                self.chain_head = self.head[h] as isize;
                self.prev[self.index] = self.head[h];
                self.head[h] = (self.index + 1) as u16;
            }
            let mut prev_length = self.length;
            let mut prev_offset = self.offset;
            self.length = MIN_MATCH - 1;
            self.offset = 0;
            let min_index = self.index.saturating_sub(WINDOW) as isize;
            let cand = self.chain_head - 1;
            if cand >= min_index && lookahead > prev_length && prev_length < self.lazy {
                if let Some((l, o)) = self.find_match(self.index, cand, lookahead) {
                    self.length = l;
                    self.offset = o;
                }
            }
            if prev_length >= MIN_MATCH && self.length <= prev_length {
                // Re-check for a longer match ending where this one ends.
                let prev_index = self.index - 1;
                if prev_index + prev_length + 2 < max_insert {
                    let end = prev_index + lookahead.min(MAX_MATCH);
                    let idx = prev_index + prev_length - 2;
                    let h = hash4(&self.window[idx..]);
                    let ch2 = self.head[h] as isize - 1 - prev_length as isize + 2;
                    if ch2 > min_index {
                        let c = ch2 as usize;
                        let n = super::zlib::common_prefix(
                            &self.window[c..],
                            &self.window[prev_index..end],
                        );
                        if n > prev_length {
                            prev_length = n;
                            prev_offset = prev_index - c;
                        }
                    }
                }
                out.push(Token::matched(prev_length as u16, prev_offset as u16));
                let new_index = self.index + prev_length - 1;
                let stop = new_index.min(max_insert);
                let start = (self.index + 1).min(max_insert);
                self.insert_run(start, stop);
                self.index = new_index;
                self.byte_available = false;
                self.length = MIN_MATCH - 1;
                self.ii = 0;
            } else {
                if self.length >= MIN_MATCH {
                    self.ii = 0;
                }
                if self.byte_available {
                    self.ii = self.ii.wrapping_add(1);
                    out.push(Token::lit(self.window[self.index - 1]));
                    self.index += 1;
                    let n = self.ii as isize - self.chain as isize;
                    if n > 0 {
                        // Up to `1 + (n >> 6)` steps, each a literal and its
                        // position hashed, stopping short of the window end.
                        let from = self.index;
                        let k =
                            (1 + (n >> 6) as usize).min((self.window_end - 1).saturating_sub(from));
                        out.extend(
                            self.window[from - 1..from - 1 + k]
                                .iter()
                                .map(|&b| Token::lit(b)),
                        );
                        let stop = (from + k).min(max_insert);
                        if from < stop {
                            self.insert_run(from, stop);
                            // The head the last hashed position found.
                            self.chain_head = self.prev[stop - 1] as isize;
                        }
                        self.index = from + k;
                        out.push(Token::lit(self.window[self.index - 1]));
                        self.byte_available = false;
                    }
                } else {
                    self.index += 1;
                    self.byte_available = true;
                }
            }
        }
    }

    /// Feed input through klauspost's write loop: step only on a full window.
    fn write(&mut self, mut data: &[u8], out: &mut Vec<Token>) {
        while !data.is_empty() {
            if self.window_end == self.window.len() {
                self.deflate(out, false);
            }
            let n = self.fill(data);
            data = &data[n..];
        }
    }

    fn flush(&mut self, out: &mut Vec<Token>) {
        self.deflate(out, true);
    }
}

impl Model for KpLazyModel {
    fn next_chunk(&self) -> usize {
        if self.segment == 0 {
            1 << 16
        } else {
            (1usize << 16).min(self.segment - self.seg_pos)
        }
    }

    fn set_segment(&mut self, segment: usize, out: &mut Vec<Token>) {
        if self.segment == 0 && segment >= self.seg_pos {
            self.segment = segment;
            if self.seg_pos == segment {
                self.flush(out);
                self.seg_pos = 0;
                self.segments_done += 1;
            }
        }
    }

    fn predict(&mut self, chunk: &[u8], out: &mut Vec<Token>) {
        if self.seg_pos == 0 && self.segments_done > 0 {
            self.reset();
            if !self.tail.is_empty() {
                let tail = std::mem::take(&mut self.tail);
                self.fill_dict(&tail);
            }
        }
        self.write(chunk, out);
        self.seg_pos += chunk.len();
        super::klauspost::keep_tail(&mut self.tail, chunk, self.dict);
        if self.segment > 0 && self.seg_pos == self.segment {
            self.flush(out);
            self.seg_pos = 0;
            self.segments_done += 1;
        }
    }

    fn finish(&mut self, out: &mut Vec<Token>) {
        if self.seg_pos > 0 || self.segments_done == 0 {
            self.flush(out);
        }
    }

    /// One serial search: it runs on a thread of its own.
    fn parallel(&mut self, _threads: usize) -> Option<Box<dyn Model>> {
        super::pipe::piped(self, KpLazyModel::new(7, 0, 0))
    }
}
