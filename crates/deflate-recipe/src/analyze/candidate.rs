//! One candidate encoder model during analysis, with its own corrections.

use std::collections::VecDeque;

use crate::diff::DiffEncoder;
use crate::error::{RecipeError, Result};
use crate::model::{Model, ModelSpec};
use crate::tokens::Token;

/// What the parsed stream says about a stretch of plaintext.
#[derive(Clone, Copy)]
enum Act {
    /// A token of a Huffman block.
    Tok(Token),
    /// Bytes of a stored block (8-byte entries: while a split model's
    /// predictions are on their way, megabytes of these wait).
    Skip(u32),
}

/// One candidate model with its own corrections.
pub(super) struct Candidate {
    pub(super) spec: ModelSpec,
    pub(super) model: Box<dyn Model>,
    pub(super) diff: DiffEncoder,
    /// Plaintext not yet given to the model.
    buf: Vec<u8>,
    /// Actual tokens waiting for predictions.
    pending: VecDeque<Act>,
    scratch: Vec<Token>,
    /// Threads the model runs on (see `go_parallel`).
    threads: usize,
}

impl Candidate {
    pub(super) fn new(spec: ModelSpec) -> Self {
        Candidate {
            spec,
            model: spec.build(),
            diff: DiffEncoder::default(),
            buf: Vec::new(),
            pending: VecDeque::new(),
            scratch: Vec::new(),
            threads: 1,
        }
    }

    /// Once chosen, run the model on several threads (split in pieces,
    /// or on a thread of its own): same predictions, sooner. Not while a
    /// split model's spec may still change (a pigz block size not learnt
    /// yet).
    pub(super) fn go_parallel(&mut self, threads: usize) {
        // A pigz block size may still be learnt, which a model split in
        // pieces could not take. (pgzip's may too: klauspost's model with
        // no block size runs on a thread of its own, which takes it, and
        // stays there. Waiting for the block size to split it instead was
        // slower: 46 MB pgzip stream on 2 threads 445 vs 383 ms, corpus
        // layers 575 vs 455 and 71 vs 53 ms, min of 7 alternating runs.)
        let unsettled = matches!(self.spec, ModelSpec::Pigz { block: 0, .. });
        if self.threads > 1 || threads < 2 || unsettled {
            return;
        }
        if let Some(m) = self.model.parallel(threads) {
            self.model = m;
            self.threads = threads;
        }
    }

    /// `stored`: the bytes came from a stored block, whose "tokens" say
    /// nothing about the encoder's matches (zlib stores blocks it had
    /// matched when storing is cheaper), so they skip the predictions.
    pub(super) fn feed(&mut self, tokens: &[Token], plain: &[u8], stored: bool) {
        if stored {
            if !plain.is_empty() {
                for part in plain.chunks(u32::MAX as usize) {
                    self.pending.push_back(Act::Skip(part.len() as u32));
                }
            }
        } else {
            self.pending.extend(tokens.iter().map(|&t| Act::Tok(t)));
        }
        self.buf.extend_from_slice(plain);
        let mut off = 0;
        loop {
            let want = self.model.next_chunk();
            if self.buf.len() - off < want {
                break;
            }
            self.predict(off, want);
            off += want;
            self.drain();
        }
        self.buf.drain(..off);
        self.drain();
    }

    fn predict(&mut self, off: usize, n: usize) {
        self.scratch.clear();
        self.model
            .predict(&self.buf[off..off + n], &mut self.scratch);
        self.diff.predicted(&self.scratch);
    }

    fn drain(&mut self) {
        while let Some(&a) = self.pending.front() {
            let done = match a {
                Act::Tok(t) => self.diff.actual(t),
                Act::Skip(n) => self.diff.skip(n as u64),
            };
            if !done {
                break;
            }
            self.pending.pop_front();
        }
    }

    /// End of a deflate stream: predict the tail and start a fresh model.
    pub(super) fn finish_stream(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            let n = self.buf.len();
            self.predict(0, n);
            self.buf.clear();
        }
        self.scratch.clear();
        self.model.finish(&mut self.scratch);
        self.diff.predicted(&self.scratch);
        self.drain();
        if !self.pending.is_empty() {
            return Err(RecipeError::mismatch(
                "tokens left after the stream's plaintext",
            ));
        }
        self.diff.finish_stream()?;
        self.model = self.spec.build_threads(self.threads);
        Ok(())
    }

    /// The same candidate under another spec and model (see `fork_pigz`).
    pub(super) fn fork(&self, spec: ModelSpec, model: Box<dyn Model>) -> Self {
        Candidate {
            spec,
            model,
            diff: self.diff.clone(),
            buf: self.buf.clone(),
            pending: self.pending.clone(),
            scratch: Vec::new(),
            threads: 1,
        }
    }

    /// The stream's block size is learnt: carry on as `spec`.
    pub(super) fn learn_segment(&mut self, spec: ModelSpec, segment: usize) {
        self.spec = spec;
        self.scratch.clear();
        self.model.set_segment(segment, &mut self.scratch);
        self.diff.predicted(&self.scratch);
        self.drain();
    }

    pub(super) fn cost(&self) -> usize {
        self.diff.out.len()
    }
}
