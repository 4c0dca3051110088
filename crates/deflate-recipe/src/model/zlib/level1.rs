//! zlib level 1 with its hash chains kept four deep in the hash table:
//! the same tokens as zlib's `head` and `prev`, found with fewer loads.
//!
//! At level 1 a search weighs at most four candidates (the chain's head
//! and three links: `max_chain` 4) and stops at the first one matching 8
//! bytes (`nice`). So the first four entries of a chain are all a search
//! can use, and they are the four positions last hashed alike: each
//! entry of [`Four`] holds those, newest first, and hashing a position
//! shifts it in. One load gives all four candidates where zlib's chain
//! gives them one link at a time, each waiting on the last, and there is
//! no `prev` table to move at each slide. The model over the 46 MB tar
//! (GNU gzip -1: 57 % literals) takes 188-190 ms against 217-219 with
//! `head` and `prev`, over 32fd326432a1's (99 %) 28.1-28.3 against 29.8,
//! over 295fef0417ad's (5 %) 19.4 against 19.4-19.7 (BENCHMARKS.md).
//!
//! Why the entries are zlib's links: zlib's `prev[p]` is the head of
//! `p`'s chain when `p` was hashed, the position last hashed alike before
//! `p`, so a chain is the positions hashed alike, newest first, which is
//! what an entry holds. A slide lowers every position by W (a lane below
//! W becomes 0, zlib's "no entry") in both. Lanes are in descending order,
//! so a lane at or below the search's limit ends the chain as zlib's link
//! would, and every lane after it is lower still.
//!
//! Two loops give the same tokens: [`steps`] weighs the head first and
//! the other three only if it matches less than 8 bytes (where matches
//! dominate, most searches end at the head); in a run of literals it also
//! loads the next position's entry before this search, which is the next
//! search's chain if this position ends as a literal (with this position
//! shifted in when both hash alike). The model picks by how dense in
//! tokens the last steps were ([`DENSE`]).

use super::search::{common_prefix, hash, At, Limits};
use super::{HASH_MASK, MAX_DIST, MAX_MATCH, MIN_LOOKAHEAD, MIN_MATCH, NIL, W};
use crate::tokens::Token;

/// Steps that averaged fewer plaintext bytes per token than this load
/// the next entry ahead next time (the 46 MB tar: 3.7 bytes a token;
/// 295fef0417ad: 9.2, where loading ahead cost 8 % in a prototype).
pub(super) const DENSE: usize = 8;

/// Bytes past the window's 2 W that the model keeps, so that the 8 bytes
/// at any `u16` position can be read without a bounds check (lanes that
/// zlib would not follow are read too, and may point anywhere).
pub(super) const PAD: usize = 8;

/// Level 1's search limits: four candidates, stop at 8 bytes.
pub(super) const CHAIN: usize = 4;
pub(super) const NICE: usize = 8;

/// One entry per hash: the four positions last hashed to it, 16 bits
/// each, newest in the low bits (0: none). One u64 rather than `[u16;
/// 4]`: hashing a position in is a shift and an or (the 46 MB tar's
/// model 201 -> 188 ms).
pub(super) type Four = u64;

/// Entry `e` with position `p` hashed in.
#[inline(always)]
fn shift_in(e: Four, p: usize) -> Four {
    (e << 16) | p as u64
}

/// The `k`th newest position of entry `e` (0: the head).
#[inline(always)]
pub(super) fn lane(e: Four, k: usize) -> usize {
    (e >> (16 * k)) as u16 as usize
}

/// An entry holding `head` alone.
pub(super) fn only(head: usize) -> Four {
    head as u64
}

/// Hash position `p`; returns its chain before (zlib's old head first).
#[inline(always)]
pub(super) fn insert(w: &[u8], four: &mut [Four], p: usize) -> Four {
    let h = hash(u32::from_le_bytes([w[p], w[p + 1], w[p + 2], 0]));
    let e = four[h];
    four[h] = shift_in(e, p);
    e
}

/// A slide by W: every lane lowered, those below W to 0.
pub(super) fn slide(four: &mut [Four]) {
    // SAFETY: the same memory as 4 u16 lanes per entry: u16's alignment
    // divides u64's and every bit pattern is a valid u16; `four` is
    // borrowed mutably for the view's life.
    let lanes =
        unsafe { std::slice::from_raw_parts_mut(four.as_mut_ptr() as *mut u16, four.len() * 4) };
    super::super::slide_down(lanes, W);
}

/// zlib's longest_match over the chain `e` (lane 0 is the head, not
/// none and within MAX_DIST of `at.s`): the longest match strictly longer
/// than `at.best`, nearest first on ties, within the chain and nice
/// limits; `match_start` is moved to it. For the steps near the end of
/// the stream, where the lookahead is short (`steps` has its own).
pub(super) fn longest_match(
    w: &[u8],
    e: Four,
    lim: Limits,
    at: At,
    match_start: &mut usize,
) -> usize {
    let At {
        s,
        lookahead,
        mut best,
    } = at;
    assert!(lim.chain <= CHAIN);
    let mut chain = lim.chain;
    let nice = lim.nice.min(lookahead);
    let limit = if s > MAX_DIST { s - MAX_DIST } else { NIL };
    if best >= lim.good {
        chain >>= 2;
    }
    let avail = lookahead.min(MAX_MATCH);
    if best >= avail {
        return best.min(lookahead);
    }
    let mut found = *match_start;
    let mut k = 0;
    loop {
        let cur = lane(e, k);
        // zlib's first checks: the two bytes ending at the length to
        // beat, then the first two (the third follows from the hash).
        if w[cur + best - 1..=cur + best] == w[s + best - 1..=s + best]
            && w[cur..cur + 2] == w[s..s + 2]
        {
            let len = 2 + common_prefix(&w[cur + 2..], &w[s + 2..s + avail]);
            if len > best {
                found = cur;
                best = len;
                if len >= nice || len >= avail {
                    break;
                }
            }
        }
        k += 1;
        if k == CHAIN || lane(e, k) <= limit {
            break;
        }
        chain -= 1;
        if chain == 0 {
            break;
        }
    }
    *match_start = found;
    best.min(lookahead)
}

/// deflate_fast's step after a match of `ml` bytes at `s` starting at
/// `ms`, as `search::take_match`, hashing into `four`.
#[inline(always)]
pub(super) fn take_match(
    w: &[u8],
    four: &mut [Four],
    out: &mut Vec<Token>,
    (s, look): (usize, usize),
    (ml, ms): (usize, usize),
    max_insert: usize,
) -> (usize, usize) {
    out.push(Token::matched(ml as u16, (s - ms) as u16));
    let look = look - ml;
    if ml <= max_insert && look >= MIN_MATCH {
        assert!(s + ml + 3 <= w.len() && four.len() == HASH_MASK + 1);
        let wp = w.as_ptr();
        for p in s + 1..s + ml {
            // SAFETY: p + 4 <= s + ml + 3 <= w.len() (asserted above);
            // a hash is below 2^15 = four.len().
            unsafe {
                let h = hash(u32::from_le((wp.add(p) as *const u32).read_unaligned()));
                let e = *four.get_unchecked(h);
                *four.get_unchecked_mut(h) = shift_in(e, p);
            }
        }
    }
    (s + ml, look)
}

/// Where the steps are: position, lookahead, match length and start.
#[derive(Clone, Copy)]
pub(super) struct Cursor {
    pub s: usize,
    pub look: usize,
    pub ml: usize,
    pub ms: usize,
}

/// `fast_steps` for level 1 (`max_insert` = 4, best so far 2) while the
/// lookahead is full; `ahead`: load the next position's entry before
/// each search in a run of literals.
pub(super) fn steps(
    w: &[u8],
    four: &mut [Four],
    max_insert: usize,
    ahead: bool,
    at: &mut Cursor,
    out: &mut Vec<Token>,
) {
    // One loop for each: the branches on `ahead` out of the hot path.
    if ahead {
        steps_as::<true>(w, four, max_insert, at, out)
    } else {
        steps_as::<false>(w, four, max_insert, at, out)
    }
}

fn steps_as<const AHEAD: bool>(
    w: &[u8],
    four: &mut [Four],
    max_insert: usize,
    at: &mut Cursor,
    out: &mut Vec<Token>,
) {
    let ahead = AHEAD;
    let Cursor {
        mut s,
        mut look,
        mut ml,
        mut ms,
    } = *at;
    // Every read below is in bounds by type: positions are u16 (< 2 W),
    // `four` has 2^15 entries, and the window 2 W + PAD bytes.
    assert!(w.len() == 2 * W + PAD && four.len() == HASH_MASK + 1 && 2 * W == 1 << 16);
    assert!(s + look <= 2 * W && look >= MIN_LOOKAHEAD && max_insert < MIN_LOOKAHEAD);
    let wp = w.as_ptr();
    // SAFETY: p < 2 W (a u16 position, or s + 1 < s + look <= 2 W), so
    // p + 8 <= w.len().
    let ld = |p: usize| unsafe { u64::from_le((wp.add(p) as *const u64).read_unaligned()) };
    // SAFETY: h < 2^15 = four.len() (a hash).
    let entry = |four: &[Four], h: usize| unsafe { *four.get_unchecked(h) };
    let mut sv = ld(s);
    let mut h = hash(sv as u32);
    let mut e = entry(four, h);
    while look >= MIN_LOOKAHEAD {
        // The next position's entry, which is the next search's chain if
        // this position ends as a literal (loaded only where they abound).
        let (mut sv1, mut h1, mut e1) = (0, 0, 0);
        if ahead {
            sv1 = ld(s + 1);
            h1 = hash(sv1 as u32);
            e1 = entry(four, h1);
        }
        // SAFETY: as `entry`.
        unsafe { *four.get_unchecked_mut(h) = shift_in(e, s) };
        let c0 = lane(e, 0);
        if c0 != NIL && s - c0 <= MAX_DIST {
            let len8 = |c: usize| ((ld(c) ^ sv).trailing_zeros() / 8) as usize;
            let (mut best, mut cur) = (len8(c0), c0);
            if best < NICE {
                // zlib stops at the first link at or below the limit.
                let limit = if s > MAX_DIST { s - MAX_DIST } else { NIL };
                let (c1, c2, c3) = (lane(e, 1), lane(e, 2), lane(e, 3));
                let v1 = c1 > limit;
                let v2 = v1 & (c2 > limit);
                let v3 = v2 & (c3 > limit);
                let l1 = len8(c1) * v1 as usize;
                let l2 = len8(c2) * v2 as usize;
                let l3 = len8(c3) * v3 as usize;
                // The first of the longest (zlib takes only a longer one).
                if l1 > best {
                    (best, cur) = (l1, c1);
                }
                if l2 > best {
                    (best, cur) = (l2, c2);
                }
                if l3 > best {
                    (best, cur) = (l3, c3);
                }
            }
            if best >= MIN_MATCH {
                if best == NICE {
                    best += common_prefix(&w[cur + NICE..], &w[s + NICE..s + MAX_MATCH]);
                }
                ml = best;
                ms = cur;
            }
        }
        if ml >= MIN_MATCH {
            (s, look) = take_match(w, four, out, (s, look), (ml, ms), max_insert);
            ml = 0;
            if look >= MIN_LOOKAHEAD {
                sv = ld(s);
                h = hash(sv as u32);
                e = entry(four, h);
            }
        } else {
            out.push(Token::lit(w[s]));
            look -= 1;
            if !ahead {
                sv1 = ld(s + 1);
                h1 = hash(sv1 as u32);
                e1 = entry(four, h1);
            } else if h1 == h {
                // Loaded before s was shifted into it.
                e1 = shift_in(e, s);
            }
            s += 1;
            (sv, h, e) = (sv1, h1, e1);
        }
    }
    *at = Cursor { s, look, ml, ms };
}

#[cfg(test)]
mod tests {
    use super::super::{Pick, ZlibModel};
    use crate::model::Model;
    use crate::tokens::Token;

    /// Tokens of a level 1 model over `data` fed in 64 KiB chunks: on its
    /// four-deep chains with `pick`, or on zlib's `head` and `prev`.
    fn tokens(data: &[u8], pick: Option<Pick>) -> Vec<Token> {
        let mut m = match pick {
            Some(pick) => ZlibModel::<1> {
                pick,
                ..ZlibModel::new(1)
            },
            None => ZlibModel::<1>::on_chains(1),
        };
        let mut out = Vec::new();
        for c in data.chunks(1 << 16) {
            m.predict(c, &mut out);
        }
        m.finish(&mut out);
        out
    }

    /// Literal-dense and match-dense stretches, chains of every length:
    /// random bytes, text from a small vocabulary, long runs of one byte,
    /// four-letter noise (short matches, crowded chains), strings whose
    /// first byte the hash leaves out, copies from just
    /// inside and just outside zlib's 32 506-byte reach, and 258-byte
    /// repeats; each over several window slides.
    fn samples() -> Vec<(&'static str, Vec<u8>)> {
        let mut g = crate::tests::Lcg(0x5eed);
        let mut r = || u64::from(g.next());
        let random: Vec<u8> = (0..300_000).map(|_| r() as u8).collect();
        let words = [
            "the ", "layer ", "blob ", "tar ", "recipe ", "zlib ", "\n", "a", "of ",
        ];
        let mut text = Vec::new();
        while text.len() < 400_000 {
            text.extend_from_slice(words[(r() % words.len() as u64) as usize].as_bytes());
            if r() % 7 == 0 {
                text.push(r() as u8);
            }
        }
        let mut runs = Vec::new();
        while runs.len() < 400_000 {
            let n = (r() % 700) as usize;
            runs.extend(std::iter::repeat_n((r() % 3) as u8, n));
            runs.extend((0..r() % 40).map(|_| r() as u8));
        }
        let acgt: Vec<u8> = (0..300_000).map(|_| b"ACGT"[(r() % 4) as usize]).collect();
        let mut far: Vec<u8> = (0..40_000).map(|_| r() as u8).collect();
        while far.len() < 400_000 {
            let back = [32_000, 32_506, 32_507, 32_768, 258, 3][(r() % 6) as usize];
            let n = 3 + (r() % 300) as usize;
            let from = far.len() - back;
            for i in 0..n {
                far.push(far[from + i]);
            }
            far.extend((0..r() % 20).map(|_| r() as u8));
        }
        // Bytes that are multiples of 32 leave the first byte out of the
        // hash: "x a a a" puts x's position and the next on one chain,
        // the case where a literal's successor is searched from it.
        let mut collide = Vec::new();
        while collide.len() < 300_000 {
            let a = (r() % 8) as u8 * 32;
            collide.push((r() % 8) as u8 * 32);
            collide.extend(std::iter::repeat_n(a, 2 + (r() % 3) as usize));
        }
        let mixed = [&random[..100_000], &runs[..], &text[..], &acgt[..100_000]].concat();
        vec![
            ("random", random),
            ("text", text),
            ("runs", runs),
            ("acgt", acgt),
            ("far", far),
            ("collide", collide),
            ("mixed", mixed),
        ]
    }

    /// Both loops on the four-deep chains, and the model switching
    /// between them as it goes, give the tokens of zlib's walk over
    /// `head` and `prev` (checked against zlib's own output by the stream
    /// tests, for levels 2 and 3 as for 1 before) on every sample.
    #[test]
    fn same_tokens_as_the_walk() {
        for (name, data) in samples() {
            let walk = tokens(&data, None);
            let plain = tokens(&data, Some(Pick::Only(false)));
            let ahead = tokens(&data, Some(Pick::Only(true)));
            let auto = tokens(&data, Some(Pick::Plain));
            assert!(walk.len() > 1000, "{name}");
            assert!(walk == plain, "{name}: plain steps differ from the walk");
            assert!(
                walk == ahead,
                "{name}: steps loading ahead differ from the walk"
            );
            assert!(
                walk == auto,
                "{name}: switching loops differs from the walk"
            );
        }
    }

    /// Each loop runs where it should: literal-dense data loads ahead,
    /// match-dense data does not.
    #[test]
    fn picks_by_density() {
        let samples = samples();
        let pick_after = |name: &str| {
            let data = &samples.iter().find(|s| s.0 == name).unwrap().1;
            let mut m = ZlibModel::<1>::new(1);
            let mut out = Vec::new();
            m.predict(&data[..1 << 16], &mut out);
            m.predict(&data[1 << 16..2 << 16], &mut out);
            m.pick
        };
        assert_eq!(pick_after("random"), Pick::Ahead);
        assert_eq!(pick_after("runs"), Pick::Plain);
    }
}
