//! The step loops of the zlib model: deflate_fast and deflate_slow, and
//! their stretches while the lookahead is full (the hot part of every
//! zlib, GNU gzip and pigz stream's analysis and rebuild), there with the
//! state in locals and the tables sliced to their lengths.

use super::search::{insert_at, longest_match, take_match, At};
use super::{
    level1, Chains, Pick, ZlibModel, HASH_MASK, MAX_DIST, MIN_LOOKAHEAD, MIN_MATCH, NIL, TOO_FAR,
};
use crate::model::split::W;
use crate::tokens::Token;

impl<const LINKS: usize> ZlibModel<LINKS> {
    /// zlib's fill at a loop top: whether to search on (false: wait for
    /// more input, or, when `flush`, the input is all searched).
    fn topped_up(&mut self, flush: bool) -> bool {
        if self.lookahead < MIN_LOOKAHEAD {
            self.fill_window();
            if self.lookahead < MIN_LOOKAHEAD && !flush || self.lookahead == 0 {
                return false;
            }
        }
        true
    }

    /// deflate_fast: search while enough lookahead is buffered (to the
    /// end when `flush`), the full-lookahead stretches in `fast_steps`.
    pub(super) fn run_fast(&mut self, out: &mut Vec<Token>, flush: bool) {
        loop {
            if !self.topped_up(flush) {
                return;
            }
            if self.lookahead >= MIN_LOOKAHEAD {
                self.fast_steps(out);
                continue;
            }
            let mut chain = 0;
            if self.lookahead >= MIN_MATCH {
                chain = self.insert_chain(self.strstart);
            }
            let hash_head = level1::lane(chain, 0);
            if hash_head != NIL && self.strstart - hash_head <= MAX_DIST {
                self.match_length = self.longest_match(chain);
            }
            if self.match_length >= MIN_MATCH {
                let w = &self.window[..2 * W];
                let (at, m) = (
                    (self.strstart, self.lookahead),
                    (self.match_length, self.match_start),
                );
                (self.strstart, self.lookahead) = match &mut self.chains {
                    Chains::Links { head, prev } => {
                        take_match(w, head, prev, out, at, m, self.lazy)
                    }
                    Chains::Four(four) => level1::take_match(w, four, out, at, m, self.lazy),
                };
                self.match_length = 0;
            } else {
                self.lit(out, self.strstart);
                self.lookahead -= 1;
                self.strstart += 1;
            }
        }
    }

    /// deflate_slow (lazy matching), as `run_fast`.
    pub(super) fn run_slow(&mut self, out: &mut Vec<Token>, flush: bool) {
        loop {
            if !self.topped_up(flush) {
                if !flush {
                    return;
                }
                // The end: a literal held back is the last token.
                break;
            }
            if self.lookahead >= MIN_LOOKAHEAD {
                self.slow_steps(out);
                continue;
            }
            if let Some(rec) = &mut self.rec {
                if !self.match_available && self.match_length == MIN_MATCH - 1 {
                    rec.note(self.base + self.strstart as u64, self.base, out.len());
                }
            }
            let mut hash_head = NIL;
            if self.lookahead >= MIN_MATCH {
                hash_head = self.insert(self.strstart);
            }
            self.prev_length = self.match_length;
            self.prev_match = self.match_start;
            self.match_length = MIN_MATCH - 1;
            if hash_head != NIL
                && self.prev_length < self.lazy
                && self.strstart - hash_head <= MAX_DIST
            {
                self.match_length = self.longest_match(level1::only(hash_head));
                if self.match_length == MIN_MATCH
                    && self.strstart.wrapping_sub(self.match_start) > TOO_FAR
                {
                    self.match_length = MIN_MATCH - 1;
                }
            }
            if self.prev_length >= MIN_MATCH && self.match_length <= self.prev_length {
                let max_insert = self.strstart + self.lookahead - MIN_MATCH;
                out.push(Token::matched(
                    self.prev_length as u16,
                    (self.strstart - 1 - self.prev_match) as u16,
                ));
                self.lookahead -= self.prev_length - 1;
                self.prev_length -= 2;
                while self.prev_length != 0 {
                    self.strstart += 1;
                    if self.strstart <= max_insert {
                        self.insert(self.strstart);
                    }
                    self.prev_length -= 1;
                }
                self.match_available = false;
                self.match_length = MIN_MATCH - 1;
                self.strstart += 1;
            } else if self.match_available {
                self.lit(out, self.strstart - 1);
                self.strstart += 1;
                self.lookahead -= 1;
            } else {
                self.match_available = true;
                self.strstart += 1;
                self.lookahead -= 1;
            }
        }
        if self.match_available {
            self.lit(out, self.strstart - 1);
            self.match_available = false;
        }
    }

    /// `run_fast`'s steps while the lookahead is full, with the state in
    /// locals and the tables sliced to their lengths (the model's thread
    /// bounds a piped zlib -1 rebuild: each step is what it costs).
    pub(super) fn fast_steps(&mut self, out: &mut Vec<Token>) {
        out.reserve(self.lookahead);
        let lim = self.limits();
        let (lazy, best) = (self.lazy, self.prev_length);
        let Chains::Links { head, prev } = &mut self.chains else {
            return self.level1_steps(out);
        };
        let w = &self.window[..2 * W];
        let head = &mut head[..HASH_MASK + 1];
        let prev = &mut prev[..2 * W];
        let (mut s, mut look) = (self.strstart, self.lookahead);
        let (mut ml, mut ms) = (self.match_length, self.match_start);
        assert!(w.len() == 2 * W && s + look <= w.len());
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
        self.strstart = s;
        self.lookahead = look;
        self.match_length = ml;
        self.match_start = ms;
    }

    /// `fast_steps` at level 1, on its chains four deep (`level1`): the
    /// next position's chain loaded ahead where the last steps were dense
    /// in tokens (mostly literals).
    fn level1_steps(&mut self, out: &mut Vec<Token>) {
        let lim = self.limits();
        assert!(
            (lim.chain, lim.nice, self.prev_length) == (level1::CHAIN, level1::NICE, MIN_MATCH - 1)
        );
        let mut at = level1::Cursor {
            s: self.strstart,
            look: self.lookahead,
            ml: self.match_length,
            ms: self.match_start,
        };
        let (s0, t0) = (at.s, out.len());
        let ahead = matches!(self.pick, Pick::Ahead | Pick::Only(true));
        let Chains::Four(four) = &mut self.chains else {
            unreachable!("level 1 steps on the four-deep chains")
        };
        level1::steps(&self.window, four, self.lazy, ahead, &mut at, out);
        if !matches!(self.pick, Pick::Only(_)) {
            let dense = at.s - s0 < level1::DENSE * (out.len() - t0);
            self.pick = if dense { Pick::Ahead } else { Pick::Plain };
        }
        self.strstart = at.s;
        self.lookahead = at.look;
        self.match_length = at.ml;
        self.match_start = at.ms;
    }

    /// `run_slow`'s steps while the lookahead is full, on locals as
    /// [`fast_steps`](Self::fast_steps).
    pub(super) fn slow_steps(&mut self, out: &mut Vec<Token>) {
        let lim = self.limits();
        let (lazy, base) = (self.lazy, self.base);
        let Chains::Links { head, prev } = &mut self.chains else {
            unreachable!("the lazy levels keep zlib's chains")
        };
        let w = &self.window[..2 * W];
        let head = &mut head[..HASH_MASK + 1];
        let prev = &mut prev[..2 * W];
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
