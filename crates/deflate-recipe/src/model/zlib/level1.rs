//! zlib level 1's steps where the stream is mostly literals: the same
//! tokens as `fast_steps` with [`longest_match`](super::search), found
//! with fewer stalls.
//!
//! At level 1 a search weighs at most four candidates (the chain's head
//! and three links) and stops at the first one matching 8 bytes (`nice`).
//! Where most positions end as literals, the time per token is the
//! loads a search waits on (hash head, then link after link, then each
//! candidate's bytes, mostly from L2) and the branches on what they hold,
//! which mispredict whenever a candidate fails or a chain ends. Here, in
//! a run of literals, the next position's head and its three links are
//! loaded before this position is searched (when this one ends as a
//! literal, that is the next search's chain: only `s` itself can have
//! joined it, and it joins at the head), and the four candidates' first 8
//! bytes are compared at once and the first longest taken without a
//! branch per candidate. The 46 MB tar's GNU gzip -1 stream (57 %
//! literals): the model 241-258 -> 210-222 ms. Where matches dominate
//! (295fef0417ad: 5 % literals) the chain loaded ahead is mostly wasted
//! and the branchy walk, which stops at the first 8-byte candidate
//! without loading the rest, is faster (19.7 against 21.2 ms), so the
//! model picks the loop by how dense in tokens the last steps were
//! ([`DENSE`]).

use super::search::{common_prefix, hash, take_match};
use super::{MAX_DIST, MAX_MATCH, MIN_LOOKAHEAD, MIN_MATCH, NIL, W};
use crate::tokens::Token;

/// Steps that averaged fewer plaintext bytes per token than this take
/// this loop next time (the 46 MB tar: 3.7 bytes a token; 295fef0417ad:
/// 9.2). Chosen by measurement: 6 to 16 were within 2 % on the first,
/// 16 lost 6 % on the second.
pub(super) const DENSE: usize = 8;

/// Bytes past the window's 2 W that the model keeps, so that the 8 bytes
/// at any `u16` position can be read without a bounds check (links that
/// zlib would not follow are read too, and may point anywhere).
pub(super) const PAD: usize = 8;

/// Level 1's search limits: four candidates, stop at 8 bytes.
pub(super) const CHAIN: usize = 4;
pub(super) const NICE: usize = 8;

/// Where the steps are: position, lookahead, match length and start.
#[derive(Clone, Copy)]
pub(super) struct Cursor {
    pub s: usize,
    pub look: usize,
    pub ml: usize,
    pub ms: usize,
}

/// `fast_steps` for level 1 (`max_insert` = 4, best so far 2), while the
/// lookahead is full.
pub(super) fn steps<const L: usize>(
    w: &[u8],
    head: &mut [u16],
    prev: &mut [[u16; L]],
    max_insert: usize,
    at: &mut Cursor,
    out: &mut Vec<Token>,
) {
    let Cursor {
        mut s,
        mut look,
        mut ml,
        mut ms,
    } = *at;
    // Every read below is in bounds by type: positions are u16 (< 2 W),
    // `prev` has 2 W entries, `head` 2^15, and the window 2 W + PAD bytes.
    assert!(w.len() == 2 * W + PAD && prev.len() == 2 * W);
    assert!(head.len() == super::HASH_MASK + 1 && 2 * W == 1 << 16);
    assert!(s + look <= 2 * W && look >= MIN_LOOKAHEAD && max_insert < MIN_LOOKAHEAD);
    let wp = w.as_ptr();
    // SAFETY: p < 2 W (a u16 position, or s + 1 < s + look <= 2 W), so
    // p + 8 <= w.len().
    let ld = |p: usize| unsafe { u64::from_le((wp.add(p) as *const u64).read_unaligned()) };
    // SAFETY: p < 2 W = prev.len() (a u16 position, or s < 2 W).
    let link = |prev: &[[u16; L]], p: usize| unsafe { prev.get_unchecked(p)[0] as usize };
    let chain = |prev: &[[u16; L]], c0: usize| {
        let c1 = link(prev, c0);
        let c2 = link(prev, c1);
        (c1, c2, link(prev, c2))
    };
    let mut h = hash(ld(s) as u32);
    let mut c0 = head[h] as usize;
    let (mut c1, mut c2, mut c3) = chain(prev, c0);
    // Whether c1..c3 are loaded (not after a match, where the search
    // needs them only if the head matches less than 8 bytes).
    let mut chained = true;
    while look >= MIN_LOOKAHEAD {
        let h1 = hash(ld(s + 1) as u32);
        // In a run of literals, the next position's chain, loaded before
        // this search (head[h1] is not touched by inserting s unless
        // h1 == h, handled below).
        let ahead = chained;
        let (mut n0, mut n1, mut n2, mut n3) = (0, 0, 0, 0);
        if ahead {
            // SAFETY: h1 < 2^15 = head.len().
            n0 = unsafe { *head.get_unchecked(h1) } as usize;
            (n1, n2, n3) = chain(prev, n0);
        }
        let hash_head = c0;
        // SAFETY: s < 2 W = prev.len(); h < 2^15 = head.len().
        unsafe {
            *prev.get_unchecked_mut(s) = [c0 as u16; L];
            *head.get_unchecked_mut(h) = s as u16;
        }
        if hash_head != NIL && s - hash_head <= MAX_DIST {
            let limit = if s > MAX_DIST { s - MAX_DIST } else { NIL };
            let sv = ld(s);
            let len8 = |c: usize| ((ld(c) ^ sv).trailing_zeros() / 8) as usize;
            let (mut best, mut cur) = (len8(c0), c0);
            if best < NICE {
                if !chained {
                    (c1, c2, c3) = chain(prev, c0);
                }
                // zlib stops at the first link at or below the limit.
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
            (s, look) = take_match(w, head, prev, out, (s, look), (ml, ms), max_insert);
            ml = 0;
            chained = false;
            if look >= MIN_LOOKAHEAD {
                h = hash(ld(s) as u32);
                c0 = head[h] as usize;
            }
        } else {
            out.push(Token::lit(w[s]));
            look -= 1;
            if !ahead {
                n0 = head[h1] as usize;
                (n1, n2, n3) = chain(prev, n0);
            }
            if h1 == h {
                // s heads the next position's chain, before s's own (whose
                // links are loaded: by the search, or no search ran as c0
                // is out of reach, and so are the links after it).
                (c0, c1, c2, c3) = (s, c0, c1, c2);
            } else {
                (c0, c1, c2, c3) = (n0, n1, n2, n3);
            }
            chained = true;
            s += 1;
            h = h1;
        }
    }
    *at = Cursor { s, look, ml, ms };
}

#[cfg(test)]
mod tests {
    use super::super::{Pick, ZlibModel};
    use crate::model::Model;
    use crate::tokens::Token;

    /// Tokens of a level 1 model over `data` fed in 64 KiB chunks.
    fn tokens(data: &[u8], pick: Pick) -> Vec<Token> {
        let mut m = ZlibModel::<1>::new(1);
        m.pick = pick;
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

    /// Both loops, and the model switching between them as it goes, give
    /// zlib's tokens (the walk's, checked against zlib's own output by the
    /// stream tests) on every sample.
    #[test]
    fn same_tokens_as_the_walk() {
        for (name, data) in samples() {
            let walk = tokens(&data, Pick::Only(false));
            let level1 = tokens(&data, Pick::Only(true));
            let auto = tokens(&data, Pick::Walk);
            assert!(walk.len() > 1000, "{name}");
            assert!(walk == level1, "{name}: level1 differs from the walk");
            assert!(
                walk == auto,
                "{name}: switching loops differs from the walk"
            );
        }
    }

    /// Each loop runs where it should: literal-dense data takes `steps`,
    /// match-dense data the walk.
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
        assert_eq!(pick_after("random"), Pick::Level1);
        assert_eq!(pick_after("runs"), Pick::Walk);
    }
}
