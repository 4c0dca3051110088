//! The step loops of the zlib model while its lookahead is full: the
//! hot part of every zlib, GNU gzip and pigz stream's analysis and
//! rebuild, with the state in locals and the tables sliced to their
//! lengths.

use super::search::{insert_at, longest_match, take_match, At};
use super::{level1, Pick, ZlibModel, HASH_MASK, MAX_DIST, MIN_LOOKAHEAD, MIN_MATCH, NIL, TOO_FAR};
use crate::model::split::W;
use crate::tokens::Token;

impl<const LINKS: usize> ZlibModel<LINKS> {
    /// `run_fast`'s steps while the lookahead is full, with the state in
    /// locals and the tables sliced to their lengths (the model's thread
    /// bounds a piped zlib -1 rebuild: each step is what it costs).
    pub(super) fn fast_steps(&mut self, out: &mut Vec<Token>) {
        let lim = self.limits();
        let (lazy, best) = (self.lazy, self.prev_length);
        let padded = &self.window[..];
        let w = &self.window[..2 * W];
        let head = &mut self.head[..HASH_MASK + 1];
        let prev = &mut self.prev[..2 * W];
        let (mut s, mut look) = (self.strstart, self.lookahead);
        let (mut ml, mut ms) = (self.match_length, self.match_start);
        out.reserve(look);
        assert!(w.len() == 2 * W && s + look <= w.len());
        // Level 1 where the last steps were dense in tokens (mostly
        // literals): the same tokens from `level1::steps`, with fewer stalls.
        let (s0, t0) = (s, out.len());
        let level1 = LINKS == 1
            && (lim.chain, lim.nice, best) == (level1::CHAIN, level1::NICE, MIN_MATCH - 1)
            && matches!(self.pick, Pick::Level1 | Pick::Only(true));
        if level1 {
            let mut at = level1::Cursor { s, look, ml, ms };
            level1::steps(padded, head, prev, lazy, &mut at, out);
            (s, look, ml, ms) = (at.s, at.look, at.ml, at.ms);
        }
        while look >= MIN_LOOKAHEAD {
            // SAFETY (here and below): positions hashed are below s + look
            // - 3 <= 2 W - 3 (look only falls as s grows by as much), and
            // head was sliced to HASH_MASK + 1, prev to 2 W.
            let hash_head = unsafe { insert_at(w, head, prev, s) };
            if hash_head != NIL && s - hash_head <= MAX_DIST {
                let at = At {
                    s,
                    lookahead: look,
                    best,
                };
                ml = longest_match(w, prev, lim, at, hash_head, &mut ms);
            }
            if ml >= MIN_MATCH {
                (s, look) = take_match(w, head, prev, out, (s, look), (ml, ms), lazy);
                ml = 0;
            } else {
                out.push(Token::lit(w[s]));
                look -= 1;
                s += 1;
            }
        }
        if !matches!(self.pick, Pick::Only(_)) {
            let dense = s - s0 < level1::DENSE * (out.len() - t0);
            self.pick = if dense { Pick::Level1 } else { Pick::Walk };
        }
        self.strstart = s;
        self.lookahead = look;
        self.match_length = ml;
        self.match_start = ms;
    }

    /// `run_slow`'s steps while the lookahead is full, on locals as
    /// [`fast_steps`](Self::fast_steps).
    pub(super) fn slow_steps(&mut self, out: &mut Vec<Token>) {
        let lim = self.limits();
        let (lazy, base) = (self.lazy, self.base);
        let w = &self.window[..2 * W];
        let head = &mut self.head[..HASH_MASK + 1];
        let prev = &mut self.prev[..2 * W];
        let mut rec = self.rec.as_deref_mut();
        let (mut s, mut look) = (self.strstart, self.lookahead);
        let (mut ml, mut ms) = (self.match_length, self.match_start);
        let (mut pl, mut pm) = (self.prev_length, self.prev_match);
        let mut avail = self.match_available;
        out.reserve(look);
        assert!(w.len() == 2 * W && s + look <= w.len());
        while look >= MIN_LOOKAHEAD {
            if let Some(rec) = &mut rec {
                if !avail && ml == MIN_MATCH - 1 {
                    rec.note(base + s as u64, base, out.len());
                }
            }
            // SAFETY (here and below): s + look <= 2 W as in `fast_steps`;
            // the match's positions end at s + pl - 2 <= s + 256 < s + look - 4.
            let hash_head = unsafe { insert_at(w, head, prev, s) };
            pl = ml;
            pm = ms;
            ml = MIN_MATCH - 1;
            if hash_head != NIL && pl < lazy && s - hash_head <= MAX_DIST {
                let at = At {
                    s,
                    lookahead: look,
                    best: pl,
                };
                ml = longest_match(w, prev, lim, at, hash_head, &mut ms);
                if ml == MIN_MATCH && s.wrapping_sub(ms) > TOO_FAR {
                    ml = MIN_MATCH - 1;
                }
            }
            if pl >= MIN_MATCH && ml <= pl {
                let max_insert = s + look - MIN_MATCH;
                out.push(Token::matched(pl as u16, (s - 1 - pm) as u16));
                look -= pl - 1;
                // The match's positions after the two already hashed.
                for p in s + 1..=(s + pl - 2).min(max_insert) {
                    unsafe { insert_at(w, head, prev, p) };
                }
                s += pl - 1;
                pl = 0;
                avail = false;
                ml = MIN_MATCH - 1;
            } else if avail {
                out.push(Token::lit(w[s - 1]));
                s += 1;
                look -= 1;
            } else {
                avail = true;
                s += 1;
                look -= 1;
            }
        }
        self.strstart = s;
        self.lookahead = look;
        self.match_length = ml;
        self.match_start = ms;
        self.prev_length = pl;
        self.prev_match = pm;
        self.match_available = avail;
    }
}
