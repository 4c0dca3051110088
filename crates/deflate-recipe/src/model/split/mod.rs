//! Models run in pieces on several threads, predicting exactly what they
//! predict on one thread: zlib levels 4–9, pigz, Go compress/flate 4–9.
//!
//! Why this works: the match search is nearly all the cost of analysing
//! and rebuilding a stream from these encoders, and it is serial (each
//! search starts where the previous token ended). But at their lazy
//! levels zlib and Go hash every position, so the hash chains at any
//! offset depend only on the 32 KiB of plaintext before it; what carries
//! over from earlier is the token boundary and the lazy state. A piece
//! started cold at offset `x` (chains built from the 32 KiB before `x`,
//! nothing held back) soon passes a *clean* loop top (nothing held back,
//! see [`Clean`]) that the true run, carried on past `x`, passes too: from
//! there both compute the same thing. So every piece runs [`SYNC`] bytes
//! into the next one and notes its clean loop tops where it starts and
//! where it overruns, and two pieces are joined at the first clean loop
//! top (same offset, same window base) they share. A pair that never meets
//! is not guessed at: the true run is carried on through the next piece on
//! the calling thread (slower, same tokens). pigz restarts its search at
//! every block, so its pieces start on block boundaries and join without
//! a check.
//!
//! zlib's fast levels (1–3) and Go's levels 2–3 do not hash inside long
//! matches, so their chains depend on earlier tokens and a cold piece
//! cannot rebuild them: those models run on a thread of their own
//! instead (`pipe.rs`). (Pieces started 72 KiB early with empty chains,
//! joined where their tokens fell into step with the true run's, were
//! exact but cost more than they gained: a 46 MB gzip -1 stream rebuilt
//! 20 % slower than on its own thread, at 45 MB more memory. On
//! 295fef0417ad, whose matches come in a few lengths (3, 9, 20 bytes),
//! such pieces met the true run at 0-2 of 10 starts: the two runs hash
//! different positions inside earlier matches, and the data's repeats
//! keep them out of step; see BENCHMARKS.md.)
//!
//! Both encoders slide their 64 KiB window by 32 KiB at the first loop top
//! at least 261 bytes short of its end, so away from those stretches the
//! window base at an offset is known without having run: cold pieces start
//! [`OFF`] bytes past a multiple of 32 KiB and look for meetings well
//! before the next slide.
//!
//! Predictions come out up to `2 × threads` pieces (256 KiB each) late;
//! callers already take them as they come.

use std::collections::VecDeque;
#[cfg(test)]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;

use super::workers::Workers;
use super::Model;
use super::Spare;
use crate::tokens::Token;

/// Window size of the encoders split here.
pub(super) const W: usize = 1 << 15;

/// A loop top of a lazy search with nothing held back (no pending
/// literal, no match waiting for the lazy check): from here on the tokens
/// depend only on the position, the window base and the hash chains.
/// 16 bytes: a piece notes every one in its first [`SYNC`] bytes and in
/// its overrun, up to one per byte where literals abound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Clean {
    /// Stream offset.
    pub pos: u64,
    /// `pos` less the stream offset of window index 0 there (< 64 KiB).
    gap: u32,
    /// Tokens emitted before it (index into a piece's output, which holds
    /// at most a piece and its overrun).
    idx: u32,
}

impl Clean {
    fn new(pos: u64, base: u64, idx: usize) -> Clean {
        debug_assert!(pos - base <= u32::MAX as u64 && idx <= u32::MAX as usize);
        Clean {
            pos,
            gap: (pos - base) as u32,
            idx: idx as u32,
        }
    }

    /// Stream offset of window index 0 there.
    fn base(&self) -> u64 {
        self.pos - self.gap as u64
    }

    fn idx(&self) -> usize {
        self.idx as usize
    }
}

/// Where to note clean loop tops, and what was noted.
#[derive(Clone, Default, Debug)]
pub(super) struct Recorder {
    /// Half-open stream ranges to watch.
    pub ranges: Vec<(u64, u64)>,
    pub seen: Vec<Clean>,
}

impl Recorder {
    /// Note a clean loop top at `pos` if it is in a watched range.
    #[inline]
    pub fn note(&mut self, pos: u64, base: u64, idx: usize) {
        if self.ranges.iter().any(|&(a, b)| (a..b).contains(&pos)) {
            self.seen.push(Clean::new(pos, base, idx));
        }
    }
}

/// A model that can be split into pieces.
pub(super) trait Split: Model + Send + Sized + 'static {
    /// What a cold piece needs to build its model.
    type Params: Copy + Send + 'static;
    fn params(&self) -> Self::Params;
    /// Plaintext bytes given to `predict` so far.
    fn fed(&self) -> u64;
    /// The last (up to) 32 KiB of plaintext seen.
    fn tail(&self) -> &[u8];
    /// Input bytes per independently compressed block (pigz, pgzip), or 0 when
    /// pieces start cold and must meet the true run.
    fn block(p: Self::Params) -> usize;
    /// The model at stream offset `at` (a block start when `block` > 0),
    /// the plaintext before it ending with `prefix`.
    fn cold(p: Self::Params, at: u64, prefix: &[u8]) -> Self;
    /// Where clean loop tops are noted.
    fn recorder(&mut self) -> &mut Option<Box<Recorder>>;
}

/// Plaintext per piece. Two pieces per thread run at once (see `predict`): with 256 KiB pieces
/// that holds as much plaintext and tokens as one 512 KiB piece per
/// thread did, and rebuilt gzip -6 as fast as 512 KiB pieces two deep.
const SEG: u64 = 1 << 18;
/// Plaintext past its end a cold-started piece runs through on its own
/// thread. Pieces mostly meet within a few bytes; the rest of the meeting
/// stretch `[end, end + SYNC)` is searched on the calling thread.
const OVERRUN: u64 = 2 << 10;
/// Pieces in flight per thread: two, so that one slow piece leaves no
/// core idle (see `Par::predict`).
const DEPTH: usize = 2;
/// zlib pieces start this far past a multiple of the piece length (and so of 32 KiB),
/// where the window base is known and no slide can happen for a while.
pub(super) const OFF: u64 = 1 << 10;
/// How far a zlib piece runs into the next one looking for a meeting point
/// (kept clear of the next window slide: OFF + SYNC + 262 < 32 KiB).
pub(super) const SYNC: u64 = 24 << 10;
/// The sequential callers feed 64 KiB chunks from the stream start.
const CHUNK: u64 = 1 << 16;
/// Bytes a search may look ahead (zlib's MIN_LOOKAHEAD, Go's 4 + 258).
const MAX_LOOKAHEAD: u64 = 262;
/// Times no meeting point was found, and times one was looked for on the
/// calling thread (tests check every path ran).
#[cfg(test)]
static FALLBACKS: AtomicUsize = AtomicUsize::new(0);
#[cfg(test)]
static LATE_MEETINGS: AtomicUsize = AtomicUsize::new(0);

/// One piece's run.
struct Piece<M> {
    /// Stream offset where the next piece starts.
    end: u64,
    /// The piece ran to the end of the stream.
    last: bool,
    model: M,
    tokens: Vec<Token>,
    /// Clean loop tops in `[start, start + SYNC)`.
    early: Vec<Clean>,
    /// Clean loop tops in `[end, end + SYNC)`.
    late: Vec<Clean>,
    /// The plaintext it was given (kept to be reused, see `Spare`).
    input: Vec<u8>,
}

/// How a piece's model starts.
enum Start<M> {
    /// The true run so far, carried on.
    Warm(Box<M>),
    /// Cold at the piece start; the data begins with up to 32 KiB before it.
    Cold { prefix: usize },
}

/// A piece being run, or run already (when no thread could be started).
enum Job<M> {
    Running(Receiver<std::thread::Result<Piece<M>>>),
    Done(Box<Piece<M>>),
}

impl<M> Job<M> {
    fn join(self) -> Piece<M> {
        match self {
            Job::Running(rx) => rx
                .recv()
                .expect("a piece's worker answers")
                .unwrap_or_else(|e| std::panic::resume_unwind(e)),
            Job::Done(p) => *p,
        }
    }
}

/// Parameters shared by every piece.
struct Kind<M: Split> {
    params: M::Params,
}

impl<M: Split> Clone for Kind<M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M: Split> Copy for Kind<M> {}

impl<M: Split> Kind<M> {
    /// pigz and pgzip: pieces start on the encoder's own block boundaries.
    fn by_blocks(&self) -> bool {
        self.block() > 0
    }

    fn block(&self) -> usize {
        M::block(self.params)
    }

    /// The piece boundary after `x`.
    fn next_boundary(&self, x: u64) -> u64 {
        if self.by_blocks() {
            let block = self.block() as u64;
            let stride = (SEG / block).max(1) * block;
            (x / stride + 1) * stride
        } else {
            let j = x.saturating_sub(OFF) / SEG + 1;
            j * SEG + OFF
        }
    }

    /// Plaintext a piece needs past its end.
    fn overrun(&self) -> u64 {
        if self.by_blocks() {
            0
        } else {
            OVERRUN
        }
    }

    /// How far past a piece's end the true run may go to meet the next.
    fn reach(&self) -> u64 {
        self.overrun().max(SYNC + 2 * MAX_LOOKAHEAD)
    }

    /// Give `model` the plaintext `data` (stream offset `at`) in the
    /// chunks a one-thread caller would.
    fn feed(&self, model: &mut M, data: &[u8], at: u64, out: &mut Vec<Token>) {
        let mut pos = 0;
        while pos < data.len() {
            let mut n = model.next_chunk().min(data.len() - pos);
            if !self.by_blocks() {
                let abs = at + pos as u64;
                n = n.min((CHUNK - abs % CHUNK) as usize);
            }
            model.predict(&data[pos..pos + n], out);
            pos += n;
        }
    }

    /// `feed`, noting the model's clean loop tops in `ranges`.
    fn feed_noting(
        &self,
        model: &mut M,
        data: &[u8],
        at: u64,
        out: &mut Vec<Token>,
        ranges: Vec<(u64, u64)>,
    ) -> Vec<Clean> {
        *model.recorder() = Some(Box::new(Recorder {
            ranges,
            seen: Vec::new(),
        }));
        self.feed(model, data, at, out);
        model.recorder().take().map(|r| r.seen).unwrap_or_default()
    }

    /// Run one piece over `data` (stream offset `at` of its first byte).
    #[allow(clippy::too_many_arguments)]
    fn run(
        self,
        start: Start<M>,
        data: &[u8],
        at: u64,
        x: u64,
        end: u64,
        last: bool,
        mut tokens: Vec<Token>,
    ) -> Piece<M> {
        let (mut model, from) = match start {
            Start::Warm(m) => {
                let from = (m.fed() - at) as usize;
                (*m, from)
            }
            Start::Cold { prefix } => (M::cold(self.params, x, &data[..prefix]), prefix),
        };
        tokens.clear();
        let (data, at) = (&data[from..], at + from as u64);
        let seen = if self.by_blocks() {
            self.feed(&mut model, data, at, &mut tokens);
            Vec::new()
        } else {
            let ranges = vec![(x, x + SYNC), (end, end + SYNC)];
            self.feed_noting(&mut model, data, at, &mut tokens, ranges)
        };
        if last {
            model.finish(&mut tokens);
        }
        let (early, late) = seen.into_iter().partition(|c| c.pos < x + SYNC);
        Piece {
            end,
            last,
            model,
            tokens,
            early,
            late,
            input: Vec::new(),
        }
    }
}

/// The first clean loop top two pieces share: token indexes in each.
fn meet(late: &[Clean], early: &[Clean]) -> Option<(usize, usize)> {
    let mut j = 0;
    for a in late {
        while j < early.len() && early[j].pos < a.pos {
            j += 1;
        }
        match early.get(j) {
            Some(b) if b.pos == a.pos && b.base() == a.base() => return Some((a.idx(), b.idx())),
            Some(_) => {}
            None => return None,
        }
    }
    None
}

/// A model split over threads (see the module docs).
pub struct Par<M: Split> {
    kind: Kind<M>,
    threads: usize,
    /// Plaintext from stream offset `data_at` on.
    data: Vec<u8>,
    data_at: u64,
    fed: u64,
    /// The true run, until its piece is started.
    first: Option<M>,
    /// Where the next piece not yet started begins.
    next: u64,
    jobs: VecDeque<Job<M>>,
    /// The true run so far and how many of its tokens were handed out.
    cur: Option<(Piece<M>, usize)>,
    /// Start of the oldest piece not joined yet (its data must stay).
    keep_from: u64,
    workers: Workers,
    spare: Spare,
}

impl<M: Split> Par<M> {
    /// Carry on `model` (which may have seen part of the stream) in pieces.
    pub(super) fn new(model: M, threads: usize) -> Self {
        let kind = Kind {
            params: model.params(),
        };
        let fed = model.fed();
        // The model keeps the last 32 KiB it saw: the first cold piece
        // builds its chains from them.
        let data = model.tail().to_vec();
        Par {
            kind,
            threads: threads.max(1),
            data_at: fed - data.len() as u64,
            data,
            fed,
            first: Some(model),
            next: fed,
            jobs: VecDeque::new(),
            cur: None,
            keep_from: fed,
            workers: Workers::new(threads.max(1)),
            spare: Spare::default(),
        }
    }

    /// Plaintext from stream offset `from` to `to`.
    fn bytes(&self, from: u64, to: u64) -> &[u8] {
        &self.data[(from - self.data_at) as usize..(to - self.data_at) as usize]
    }

    fn spawn(&mut self, start: Start<M>, from: u64, x: u64, to: u64, end: u64, last: bool) {
        let kind = self.kind;
        let mut data = self.spare.input();
        data.extend_from_slice(self.bytes(from, to));
        let tokens = self.spare.tokens();
        let job = match self.workers.run(move || {
            let mut p = kind.run(start, &data, from, x, end, last, tokens);
            p.input = data;
            p
        }) {
            Ok(rx) => Job::Running(rx),
            // No thread to be had: run it here.
            Err(f) => Job::Done(Box::new(f())),
        };
        self.jobs.push_back(job);
    }

    /// Start every piece whose plaintext is all here (`last`: the stream
    /// ended, start the rest).
    fn launch(&mut self, last: bool) {
        loop {
            let x = self.next;
            let end = self.kind.next_boundary(x);
            let need = end + self.kind.overrun();
            if self.fed < need && !last {
                return;
            }
            if x >= self.fed && self.first.is_none() {
                return;
            }
            let (end, to, fin) = if self.fed < need {
                (self.fed, self.fed, true)
            } else {
                (end, need, false)
            };
            if let Some(m) = self.first.take() {
                let from = m.fed();
                self.spawn(Start::Warm(Box::new(m)), from, x, to, end, fin);
            } else {
                let prefix = (W as u64).min(x - self.data_at);
                self.spawn(
                    Start::Cold {
                        prefix: prefix as usize,
                    },
                    x - prefix,
                    x,
                    to,
                    end,
                    fin,
                );
            }
            self.next = end;
            if fin {
                return;
            }
        }
    }

    /// Where the true run `cur` meets `next`: carried on a little at a
    /// time on this thread while the meeting stretch is not passed.
    fn meet_on(&self, cur: &mut Piece<M>, next: &Piece<M>) -> Option<(usize, usize)> {
        let limit = (cur.end + self.kind.reach()).min(self.fed);
        loop {
            if let Some(m) = meet(&cur.late, &next.early) {
                return Some(m);
            }
            let at = cur.model.fed();
            if at >= limit {
                return None;
            }
            #[cfg(test)]
            LATE_MEETINGS.fetch_add(1, Ordering::Relaxed);
            let to = (at + 4096).min(limit);
            let ranges = vec![(cur.end, cur.end + SYNC)];
            let seen = self.kind.feed_noting(
                &mut cur.model,
                self.bytes(at, to),
                at,
                &mut cur.tokens,
                ranges,
            );
            cur.late.extend(seen);
        }
    }

    /// Join the oldest piece onto the true run; hand out settled tokens.
    fn join_one(&mut self, out: &mut Vec<Token>) {
        let Some(h) = self.jobs.pop_front() else {
            return;
        };
        let piece = h.join();
        let Some((mut cur, from)) = self.cur.take() else {
            self.keep_from = piece.end;
            self.cur = Some((piece, 0));
            return;
        };
        // Buffers kept for new pieces: as many as can be in flight.
        let max = DEPTH * self.threads + 1;
        if self.kind.by_blocks() {
            out.extend_from_slice(&cur.tokens[from..]);
            self.keep_from = piece.end;
            self.cur = Some((piece, 0));
            self.spare.keep(cur.tokens, cur.input, max);
        } else if let Some((i, k)) = self.meet_on(&mut cur, &piece) {
            out.extend_from_slice(&cur.tokens[from..i]);
            self.keep_from = piece.end;
            self.cur = Some((piece, k));
            self.spare.keep(cur.tokens, cur.input, max);
        } else {
            // No meeting point: carry the true run through this piece.
            #[cfg(test)]
            FALLBACKS.fetch_add(1, Ordering::Relaxed);
            out.extend_from_slice(&cur.tokens[from..]);
            let at = cur.model.fed();
            let to = if piece.last {
                piece.end
            } else {
                piece.end + self.kind.overrun()
            };
            let x = cur.end;
            let mut p = self.kind.run(
                Start::Warm(Box::new(cur.model)),
                self.bytes(at, to),
                at,
                x,
                piece.end,
                piece.last,
                piece.tokens,
            );
            p.early.clear();
            self.keep_from = piece.end;
            self.cur = Some((p, 0));
            self.spare.keep(cur.tokens, cur.input, max);
            self.spare.keep(Vec::new(), piece.input, max);
        }
        // Forget plaintext no piece or fallback can need any more.
        let keep = self.keep_from.saturating_sub(W as u64).max(self.data_at);
        let cut = (keep - self.data_at) as usize;
        if cut > (1 << 20).max(self.data.len() / 2) {
            self.data.drain(..cut);
            self.data_at = keep;
        }
    }
}

impl<M: Split> Model for Par<M> {
    fn next_chunk(&self) -> usize {
        CHUNK as usize
    }

    fn predict(&mut self, chunk: &[u8], out: &mut Vec<Token>) {
        self.data.extend_from_slice(chunk);
        self.fed += chunk.len() as u64;
        self.launch(false);
        // Join once two pieces per thread run: at most that many pieces of plaintext
        // (and, in analysis, of the stream's tokens) wait. One per thread
        // left a core idle whenever a piece finished before the older one
        // being waited for (pieces of the same length differ in cost with
        // the data): gzip -6 rebuilt 10 % slower on 2 threads.
        while self.jobs.len() >= DEPTH * self.threads {
            self.join_one(out);
        }
    }

    fn finish(&mut self, out: &mut Vec<Token>) {
        self.launch(true);
        while !self.jobs.is_empty() {
            self.join_one(out);
        }
        if let Some((cur, from)) = self.cur.take() {
            out.extend_from_slice(&cur.tokens[from..]);
        }
    }
}

#[cfg(test)]
pub(super) mod tests;
