//! Dynamic header prediction: rebuild the Huffman header an encoder would
//! write from the block's token frequencies. A block whose header matches a
//! builder stores only the builder id.

use crate::huffman::{dist_code, CL_ORDER, MATCH_SYMBOL};
use crate::tokens::{DynHeader, Token};

/// Symbol frequencies of one block.
#[derive(Clone)]
pub struct Freqs {
    /// Literal/length frequencies (EOB excluded).
    pub lit: [u32; 286],
    /// Distance code frequencies.
    pub dist: [u32; 30],
}

impl Default for Freqs {
    fn default() -> Self {
        Freqs {
            lit: [0; 286],
            dist: [0; 30],
        }
    }
}

impl Freqs {
    /// Reset to zero.
    pub fn clear(&mut self) {
        self.lit = [0; 286];
        self.dist = [0; 30];
    }

    /// Count tokens.
    #[inline]
    pub fn add(&mut self, tokens: &[Token]) {
        if tokens.len() < 64 {
            // A few (analysis adds its tokens one at a time): counted in place.
            for &t in tokens {
                let (l, d) = slots(t);
                if let Some(c) = self.lit.get_mut(l) {
                    *c += 1;
                }
                if let Some(c) = self.dist.get_mut(d) {
                    *c += 1;
                }
            }
            return;
        }
        // Whole blocks: counted without a branch on literal or match
        // (which alternate unpredictably), the slots for what is not
        // counted included.
        let mut lit = [0u32; 287];
        let mut dist = [0u32; 31];
        for &t in tokens {
            let (l, d) = slots(t);
            lit[l] += 1;
            dist[d] += 1;
        }
        for (a, b) in self.lit.iter_mut().zip(&lit) {
            *a += b;
        }
        for (a, b) in self.dist.iter_mut().zip(&dist) {
            *a += b;
        }
    }
}

/// The counters a token adds one to: its literal/length symbol (286, none,
/// for a length below 3) and its distance code (30, none, for a literal);
/// chosen with selects, not a branch.
#[inline(always)]
fn slots(t: Token) -> (usize, usize) {
    let raw = t.raw_len() as usize;
    let is_lit = t.is_lit();
    let m = MATCH_SYMBOL[raw.min(259)] as usize;
    let dc = dist_code(t.dist());
    (
        if is_lit { raw & 0xff } else { m },
        if is_lit { 30 } else { dc },
    )
}

/// Go (compress/flate ≤ 1.26) and klauspost: lengths trimmed to the last
/// used symbol, a dummy distance code 0 when there are no matches.
pub const GO_TRIMMED: u8 = 1;
/// klauspost for blocks not ending in a flush: 286 literal/length and 30
/// distance lengths sent whatever is used.
pub const GO_FILLED: u8 = 2;
/// Go/klauspost literal-only blocks (`writeBlockHuff`): 257 + 1 lengths.
pub const GO_HUFF: u8 = 3;

/// zlib / GNU gzip trees.c.
pub const ZLIB: u8 = 4;

/// Builder ids this crate knows, most common first.
const BUILDERS: &[u8] = &[GO_TRIMMED, ZLIB, GO_FILLED, GO_HUFF];

/// Build the header a given builder would write.
pub fn build(id: u8, f: &Freqs) -> Option<DynHeader> {
    let mut lit = [0u32; 286];
    lit.copy_from_slice(&f.lit);
    lit[256] = 1;
    match id {
        GO_TRIMMED => {
            let mut dist = f.dist;
            let nlit = lit.iter().rposition(|&v| v != 0).unwrap_or(0) + 1;
            let mut ndist = dist.iter().rposition(|&v| v != 0).map_or(0, |i| i + 1);
            if ndist == 0 {
                dist[0] = 1;
                ndist = 1;
            }
            let ll = go_lengths(&lit, 15);
            let dl = go_lengths(&dist, 15);
            Some(go_header(&ll[..nlit], &dl[..ndist]))
        }
        GO_FILLED => {
            let ll = go_lengths(&lit, 15);
            let dl = go_lengths(&f.dist, 15);
            Some(go_header(&ll, &dl))
        }
        GO_HUFF => {
            if f.dist.iter().any(|&v| v != 0) {
                return None;
            }
            let ll = go_lengths(&lit[..257], 15);
            Some(go_header(&ll, &[1]))
        }
        ZLIB => Some(crate::hdr_zlib::zlib_header(&lit, &f.dist)),
        _ => None,
    }
}

/// The first builder that reproduces `h` exactly.
pub fn find(f: &Freqs, h: &DynHeader) -> Option<u8> {
    BUILDERS
        .iter()
        .copied()
        .find(|&id| build(id, f).as_ref() == Some(h))
}

/// Go's length-limited Huffman code lengths (`huffmanEncoder.generate`):
/// at most two used symbols get one bit each; otherwise symbols sorted by
/// (frequency, symbol) go through Go's `bitCounts`, and the most frequent
/// symbols take the shortest lengths.
pub fn go_lengths(freq: &[u32], max_bits: i32) -> Vec<u8> {
    let mut lens = vec![0u8; freq.len()];
    let mut list: Vec<(u32, u16)> = freq
        .iter()
        .enumerate()
        .filter(|(_, &f)| f != 0)
        .map(|(i, &f)| (f, i as u16))
        .collect();
    if list.len() <= 2 {
        for &(_, s) in &list {
            lens[s as usize] = 1;
        }
        return lens;
    }
    list.sort_unstable();
    let counts = bit_counts(&list, max_bits);
    let mut end = list.len();
    for (bits, &n) in counts.iter().enumerate().skip(1) {
        for &(_, s) in &list[end - n as usize..end] {
            lens[s as usize] = bits as u8;
        }
        end -= n as usize;
    }
    lens
}

#[derive(Clone, Copy, Default)]
struct Level {
    last_freq: i32,
    next_char_freq: i32,
    next_pair_freq: i32,
    needed: i32,
}

/// Number of leaves per code length (index = bits), Go's `bitCounts`.
fn bit_counts(list: &[(u32, u16)], max_bits: i32) -> Vec<i32> {
    let n = list.len() as i32;
    let max_bits = max_bits.min(n - 1) as usize;
    let freq = |i: i32| -> i32 {
        if i < n {
            list[i as usize].0 as i32
        } else {
            i32::MAX
        }
    };
    let mut levels = [Level::default(); 18];
    let mut leaf = [[0i32; 17]; 17];
    let (l2f, l1f, l0f) = (freq(2), freq(1), freq(0).wrapping_add(freq(1)));
    for level in 1..=max_bits {
        levels[level] = Level {
            last_freq: l1f,
            next_char_freq: l2f,
            next_pair_freq: if level == 1 { i32::MAX } else { l0f },
            needed: 0,
        };
        leaf[level][level] = 2;
    }
    levels[max_bits].needed = 2 * n - 4;
    let mut level = max_bits;
    while level < 16 {
        let l = levels[level];
        if l.next_pair_freq == i32::MAX && l.next_char_freq == i32::MAX {
            levels[level].needed = 0;
            levels[level + 1].next_pair_freq = i32::MAX;
            level += 1;
            continue;
        }
        let prev_freq = l.last_freq;
        if l.next_char_freq < l.next_pair_freq {
            let nn = leaf[level][level] + 1;
            levels[level].last_freq = l.next_char_freq;
            leaf[level][level] = nn;
            levels[level].next_char_freq = freq(nn);
        } else {
            levels[level].last_freq = l.next_pair_freq;
            let save = leaf[level][level];
            leaf[level] = leaf[level - 1];
            leaf[level][level] = save;
            levels[level - 1].needed = 2;
        }
        levels[level].needed -= 1;
        if levels[level].needed == 0 {
            if level == max_bits {
                break;
            }
            levels[level + 1].next_pair_freq = prev_freq.wrapping_add(levels[level].last_freq);
            level += 1;
        } else {
            while levels[level - 1].needed > 0 {
                level -= 1;
            }
        }
    }
    let mut out = vec![0i32; max_bits + 1];
    let counts = &leaf[max_bits];
    for (bits, level) in (1..=max_bits).rev().enumerate() {
        out[bits + 1] = counts[level] - counts[level - 1];
    }
    out
}

/// Go's header: code-length runs over the concatenated lengths
/// (`generateCodegen`), code-length code from Go's builder limited to 7
/// bits, HCLEN trimmed in transmission order (minimum 4).
pub(crate) fn go_header(lit: &[u8], dist: &[u8]) -> DynHeader {
    let all: Vec<u8> = lit.iter().chain(dist.iter()).copied().collect();
    let mut rle: Vec<(u8, u8)> = Vec::new();
    let mut cl_freq = [0u32; 19];
    let mut i = 0;
    while i < all.len() {
        let size = all[i];
        let mut count = 1;
        while i + count < all.len() && all[i + count] == size {
            count += 1;
        }
        i += count;
        if size != 0 {
            rle.push((size, 0));
            cl_freq[size as usize] += 1;
            count -= 1;
            while count >= 3 {
                let n = count.min(6);
                rle.push((16, (n - 3) as u8));
                cl_freq[16] += 1;
                count -= n;
            }
        } else {
            while count >= 11 {
                let n = count.min(138);
                rle.push((18, (n - 11) as u8));
                cl_freq[18] += 1;
                count -= n;
            }
            if count >= 3 {
                rle.push((17, (count - 3) as u8));
                cl_freq[17] += 1;
                count = 0;
            }
        }
        for _ in 0..count {
            rle.push((size, 0));
            cl_freq[size as usize] += 1;
        }
    }
    let cl = go_lengths(&cl_freq, 7);
    finish_header(lit.len(), dist.len(), &cl, rle)
}

/// The header for these code lengths, with HCLEN trimmed to the last used
/// code-length code (at least 4).
pub(crate) fn finish_header(nlit: usize, ndist: usize, cl: &[u8], rle: Vec<(u8, u8)>) -> DynHeader {
    let mut cl_lens = [0u8; 19];
    cl_lens.copy_from_slice(cl);
    let mut hclen = 19;
    while hclen > 4 && cl_lens[CL_ORDER[hclen - 1]] == 0 {
        hclen -= 1;
    }
    DynHeader {
        hlit: nlit as u16,
        hdist: ndist as u8,
        hclen: hclen as u8,
        cl_lens,
        rle,
    }
}
