//! zlib's match search: the hash of three bytes, the chains and
//! longest_match, as free functions over the model's window and tables so
//! that the step loops can hold them in locals.

use super::{HASH_MASK, MAX_DIST, MAX_MATCH, MIN_MATCH, NIL, W};
use crate::model::chain_entry as entry;
use crate::tokens::Token;

/// zlib's hash, `(b0 << 10 ^ b1 << 5 ^ b2) & HASH_MASK`, of the three bytes
/// in the low 24 bits of `v` (read little-endian; the top byte is ignored).
#[inline(always)]
pub(super) fn hash(v: u32) -> usize {
    (((v & 0x1f) << 10) ^ ((v >> 3) & 0x1fe0) ^ ((v >> 16) & 0xff)) as usize
}

/// Length of the common prefix of `a` and `b` (at most `b.len()`).
#[inline]
pub(crate) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let max = b.len().min(a.len());
    let mut n = 0;
    while n + 8 <= max {
        let x = u64::from_le_bytes(a[n..n + 8].try_into().unwrap())
            ^ u64::from_le_bytes(b[n..n + 8].try_into().unwrap());
        if x != 0 {
            return n + (x.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    while n < max && a[n] == b[n] {
        n += 1;
    }
    n
}

/// Hash position `p` into the chains; returns the chain's previous head.
#[inline(always)]
pub(super) fn insert<const L: usize>(
    w: &[u8],
    head: &mut [u16],
    prev: &mut [[u16; L]],
    p: usize,
) -> usize {
    let h = hash(u32::from_le_bytes([w[p], w[p + 1], w[p + 2], 0]));
    let old = head[h] as usize;
    prev[p] = entry(old as u16, &prev[old]);
    head[h] = p as u16;
    old
}

/// [`insert`] for the step loops, where the lookahead is full: the hash
/// from one four-byte load, no bounds checks.
///
/// # Safety
/// `p + 4 <= w.len()`, `p < prev.len()`, `prev.len() == 2 W` and
/// `head.len() == HASH_MASK + 1`.
#[inline(always)]
pub(super) unsafe fn insert_at<const L: usize>(
    w: &[u8],
    head: &mut [u16],
    prev: &mut [[u16; L]],
    p: usize,
) -> usize {
    debug_assert!(p + 4 <= w.len() && p < prev.len() && head.len() == HASH_MASK + 1);
    let h = hash(u32::from_le(
        (w.as_ptr().add(p) as *const u32).read_unaligned(),
    ));
    let old = *head.get_unchecked(h) as usize;
    // Heads are window positions, below 2 W.
    let e = entry(old as u16, prev.get_unchecked(old));
    *prev.get_unchecked_mut(p) = e;
    *head.get_unchecked_mut(h) = p as u16;
    old
}

/// deflate_fast's step after a match of `ml` bytes at `s` starting at
/// `ms`: the token, then, for a match no longer than `max_insert`, the
/// match's other positions hashed (zlib hashes none of a longer one's).
/// Returns the position and lookahead after it.
#[inline(always)]
pub(super) fn take_match<const L: usize>(
    w: &[u8],
    head: &mut [u16],
    prev: &mut [[u16; L]],
    out: &mut Vec<Token>,
    (s, look): (usize, usize),
    (ml, ms): (usize, usize),
    max_insert: usize,
) -> (usize, usize) {
    out.push(Token::matched(ml as u16, (s - ms) as u16));
    let look = look - ml;
    if ml <= max_insert && look >= MIN_MATCH {
        assert!(s + ml + 3 <= w.len() && s + ml <= prev.len() && head.len() == HASH_MASK + 1);
        for p in s + 1..s + ml {
            // SAFETY: p + 4 <= s + ml + 3 <= w.len() and p < prev.len()
            // (asserted above).
            unsafe { insert_at(w, head, prev, p) };
        }
    }
    (s + ml, look)
}

/// A level's search limits (zlib's `configuration_table`).
#[derive(Clone, Copy)]
pub(super) struct Limits {
    pub good: usize,
    pub nice: usize,
    pub chain: usize,
}

/// Where a search starts: the position, its lookahead, the length to beat.
pub(super) struct At {
    pub s: usize,
    pub lookahead: usize,
    pub best: usize,
}

/// zlib's longest_match from candidate `cur`: the longest match strictly
/// longer than `at.best`, nearest first on ties, within the chain and
/// nice limits; `match_start` is moved to it.
#[inline]
pub(super) fn longest_match<const L: usize>(
    w: &[u8],
    prev: &[[u16; L]],
    lim: Limits,
    at: At,
    mut cur: usize,
    match_start: &mut usize,
) -> usize {
    let At {
        s,
        lookahead,
        mut best,
    } = at;
    let mut chain = lim.chain;
    let nice = lim.nice.min(lookahead);
    let limit = if s > MAX_DIST { s - MAX_DIST } else { NIL };
    if best >= lim.good {
        chain >>= 2;
    }
    let avail = lookahead.min(MAX_MATCH);
    if best >= avail {
        // No candidate can be longer (zlib walks on without effect).
        return best.min(lookahead);
    }
    // Every candidate is below `s`, and no read goes past `s + avail`.
    assert!(s + avail <= w.len() && prev.len() == 2 * W && best >= 1);
    let wp = w.as_ptr();
    // SAFETY: callers pass p + 2 <= s + avail <= w.len() (asserted above).
    let ld16 = |p: usize| unsafe { (wp.add(p) as *const u16).read_unaligned() };
    // Two-byte compares at the start and at the end of the length to
    // beat: a candidate failing either cannot be longer than `best`.
    let start = ld16(s);
    let mut end = ld16(s + best - 1);
    let mut found = *match_start;
    // Candidate `cur`: take it if longer; `break 'walk` at `nice`.
    macro_rules! check {
        ($cur:expr, $walk:lifetime) => {{
            let cur = $cur;
            if ld16(cur + best - 1) == end && ld16(cur) == start {
                let len = 2 + common_prefix(&w[cur + 2..], &w[s + 2..s + avail]);
                if len > best {
                    found = cur;
                    best = len;
                    if len >= nice || len >= avail {
                        break $walk;
                    }
                    end = ld16(s + best - 1);
                }
            }
        }};
    }
    // zlib's stop rule for the next candidate `l`: at the limit, or when
    // the chain budget is spent.
    macro_rules! stop_before {
        ($l:expr, $walk:lifetime) => {{
            if $l <= limit {
                break $walk;
            }
            chain -= 1;
            if chain == 0 {
                break $walk;
            }
        }};
    }
    // zlib's order: weigh a candidate, step to the next, stop; an entry
    // holds the next L links.
    'walk: {
        if L == 1 {
            // One link per entry: zlib's loop as it is (the form below,
            // with its two places that weigh a candidate, is slower here).
            loop {
                check!(cur, 'walk);
                // SAFETY: cur < s < 2 W = prev's length.
                cur = unsafe { prev.get_unchecked(cur)[0] } as usize;
                stop_before!(cur, 'walk);
            }
        }
        check!(cur, 'walk);
        loop {
            // SAFETY: cur < s < 2 W = prev's length.
            let next = unsafe { *prev.get_unchecked(cur) };
            for l in next {
                let l = l as usize;
                stop_before!(l, 'walk);
                check!(l, 'walk);
            }
            cur = next[L - 1] as usize;
        }
    }
    *match_start = found;
    best.min(lookahead)
}
