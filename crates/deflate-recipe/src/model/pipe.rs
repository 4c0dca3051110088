//! A model that cannot be split, run on a thread of its own: the calling
//! thread hands it the plaintext in batches and takes its predictions
//! back a few batches later, meanwhile applying corrections, writing blocks
//! or inflating.
//!
//! Why: for the encoders whose search is one serial run (zlib levels 1–3,
//! Go's BestSpeed and levels 2–3, klauspost's plain flate writer, its lazy
//! levels 7–9) the model is 40–60 % of a rebuild and the rest
//! (corrections, Huffman coding, CRC) as much again; on one thread the
//! second core idles. (Why these cannot be split: `split` module docs.)
//!
//! Exact by construction: the model sees the same bytes in the same
//! chunks, and a learnt block size at the same point, as on the calling
//! thread. The thread cuts what it receives into the chunks the model
//! asks for ([`Model::next_chunk`]) and gives it the short rest only at
//! the end of the stream, which is what every caller does. A block size
//! ([`Model::set_segment`]) is handed on after all the plaintext fed
//! before it; until then the models piped ask for chunks of one size,
//! the size the pipe asks its caller for, so the model has then been
//! given exactly what the caller gave.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use super::cpus::{self, CpuPair};
use super::{Model, Spare};
use crate::tokens::Token;

/// Plaintext per batch handed to the model's thread. Small batches keep
/// the buffers in circulation small: each batch's predictions take four
/// bytes a literal, and on this VM every fresh page costs a fault of
/// ~3 µs; 256 KiB batches put ~7 MB of new pages under a 3 MB stream
/// (2545 page faults against 772 on one thread, 32fd326432a1 rebuilt in
/// 14.2 ms against 10.8 with 64 KiB). Big streams lose nothing with more
/// batches in flight (below): the 46 MB gzip -1 and pgzip streams
/// analyse and rebuild in the same time or less (min of 5 alternating
/// runs: rebuild 309 vs 306 ms, analyse 366 vs 398 and 389 vs 410 ms).
const BATCH: usize = 1 << 16;
/// Batches in flight: the caller uses the oldest batch's predictions
/// while the model's thread predicts the next ones.
const DEPTH: usize = 4;

enum Msg {
    /// Plaintext, and an empty vector to put the predictions in.
    Data(Vec<u8>, Vec<Token>),
    /// The same, a whole page shared with the caller (no copy).
    Page(Arc<Vec<u8>>, Vec<Token>),
    /// The block size learnt ([`Model::set_segment`]).
    Segment(usize, Vec<Token>),
    /// The stream ended: the rest of the predictions.
    Finish(Vec<Token>),
}

/// Predictions for one message, with the plaintext buffer to reuse.
type Reply = std::thread::Result<(Vec<Token>, Vec<u8>)>;

/// A model run on its own thread (see the module docs).
pub(super) struct Pipe {
    /// The chunk the model asks for at the start (callers' chunks are
    /// gathered into batches; their size does not matter).
    chunk: usize,
    to: Option<Sender<Msg>>,
    from: Receiver<Reply>,
    in_flight: usize,
    batch: Vec<u8>,
    spare: Spare,
    /// The CPUs the two threads are bound to for the stream, if any
    /// (`cpus` module docs); the caller's own set comes back on drop.
    _cpus: Option<CpuPair>,
}

impl Pipe {
    /// Run `model` on a new thread; gives it back if no thread can be had.
    pub(super) fn start<M: Model + Send + 'static>(model: M) -> Result<Pipe, M> {
        let chunk = model.next_chunk();
        let (to, rx) = channel::<Msg>();
        let (tx, from) = channel::<Reply>();
        // The model goes to the thread through a channel so that it can
        // be had back if the thread cannot be started.
        let (give, take) = channel::<M>();
        let mut pair = CpuPair::pick();
        let model_cpu = pair.as_ref().map(CpuPair::model_cpu);
        let spawned = std::thread::Builder::new()
            .name("deflate-model".into())
            .spawn(move || {
                // It binds itself, and the caller binds itself only after
                // the spawn: a thread whose binding fails keeps the
                // caller's whole set, not the caller's one CPU.
                if let Some(cpu) = model_cpu {
                    cpus::bind_here(cpu);
                }
                if let Ok(model) = take.recv() {
                    serve(model, rx, tx);
                }
            });
        match spawned {
            Ok(_) => {
                give.send(model).expect("the model's thread waits for it");
                if let Some(p) = &mut pair {
                    p.bind_caller();
                }
                Ok(Pipe {
                    chunk,
                    to: Some(to),
                    from,
                    in_flight: 0,
                    batch: Vec::with_capacity(BATCH + chunk),
                    spare: Spare::default(),
                    _cpus: pair,
                })
            }
            Err(_) => Err(model),
        }
    }

    fn send(&mut self, msg: Msg) {
        self.to
            .as_ref()
            .expect("open until finished")
            .send(msg)
            .expect("the model's thread runs until finished");
        self.in_flight += 1;
    }

    /// Wait for the oldest batch's predictions.
    fn take(&mut self, out: &mut Vec<Token>) {
        let reply = self
            .from
            .recv()
            .unwrap_or_else(|_| panic!("the model's thread ended without a reply"));
        self.in_flight -= 1;
        let (mut tokens, data) = reply.unwrap_or_else(|e| std::panic::resume_unwind(e));
        if out.is_empty() {
            // Callers mostly hand an empty vector: no copy then.
            std::mem::swap(out, &mut tokens);
        } else {
            out.extend_from_slice(&tokens);
        }
        self.spare.keep(tokens, data, DEPTH + 1);
    }

    fn send_batch(&mut self) {
        let fresh = self.spare.input();
        let data = std::mem::replace(&mut self.batch, fresh);
        let tokens = self.spare.tokens();
        self.send(Msg::Data(data, tokens));
    }

    /// Predictions come exactly DEPTH - 1 batches behind, never sooner
    /// even when ready: a caller feeds plaintext only when it wants
    /// predictions, so taking them early left the model's thread idle
    /// until the caller had used them up and fed two batches at once,
    /// then made the caller wait a whole batch (a 10.8 MB Go BestSpeed
    /// layer rebuilt in 27 ms, 6.5 of them waiting; then 0.3).
    fn take_due(&mut self, out: &mut Vec<Token>) {
        while self.in_flight >= DEPTH {
            self.take(out);
        }
    }
}

impl Model for Pipe {
    fn next_chunk(&self) -> usize {
        self.chunk
    }

    fn predict(&mut self, chunk: &[u8], out: &mut Vec<Token>) {
        self.batch.extend_from_slice(chunk);
        if self.batch.len() >= BATCH {
            self.send_batch();
        }
        self.take_due(out);
    }

    fn predict_page(
        &mut self,
        page: &Arc<Vec<u8>>,
        range: std::ops::Range<usize>,
        out: &mut Vec<Token>,
    ) {
        // A whole page of a batch's size, nothing gathered before it: the
        // batch as it is.
        if !self.batch.is_empty() || range != (0..BATCH) || page.len() != BATCH {
            return self.predict(&page[range], out);
        }
        let tokens = self.spare.tokens();
        self.send(Msg::Page(Arc::clone(page), tokens));
        self.take_due(out);
    }

    fn finish(&mut self, out: &mut Vec<Token>) {
        if !self.batch.is_empty() {
            self.send_batch();
        }
        let tokens = self.spare.tokens();
        self.send(Msg::Finish(tokens));
        self.to = None;
        while self.in_flight > 0 {
            self.take(out);
        }
    }

    /// Handed on after every byte fed so far, as on the calling thread;
    /// the tokens it may owe come with the next predictions.
    fn set_segment(&mut self, segment: usize, _out: &mut Vec<Token>) {
        if !self.batch.is_empty() {
            self.send_batch();
        }
        let tokens = self.spare.tokens();
        self.send(Msg::Segment(segment, tokens));
    }
}

/// The model's thread: predict each batch, reply in order.
fn serve<M: Model>(mut model: M, rx: Receiver<Msg>, tx: Sender<Reply>) {
    // Plaintext short of the chunk the model asks for, kept for the next batch.
    let mut rest: Vec<u8> = Vec::new();
    for msg in rx {
        let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match msg {
            Msg::Data(data, mut tokens) => {
                predict_batch(&mut model, &mut rest, &data, &mut tokens);
                (tokens, data)
            }
            Msg::Page(page, mut tokens) => {
                predict_batch(&mut model, &mut rest, &page, &mut tokens);
                (tokens, Vec::new())
            }
            Msg::Segment(segment, mut tokens) => {
                model.set_segment(segment, &mut tokens);
                (tokens, Vec::new())
            }
            Msg::Finish(mut tokens) => {
                if !rest.is_empty() {
                    model.predict(&rest, &mut tokens);
                    rest.clear();
                }
                model.finish(&mut tokens);
                (tokens, Vec::new())
            }
        }));
        let failed = reply.is_err();
        if tx.send(reply).is_err() || failed {
            return;
        }
    }
}

/// One batch `data` for the model, in the chunks it asks for; what is
/// short of a chunk waits in `rest` for the next batch.
fn predict_batch<M: Model>(
    model: &mut M,
    rest: &mut Vec<u8>,
    data: &[u8],
    tokens: &mut Vec<Token>,
) {
    let from_rest = !rest.is_empty();
    if from_rest {
        rest.extend_from_slice(data);
    }
    let src: &[u8] = if from_rest { rest } else { data };
    let mut off = 0;
    loop {
        let n = model.next_chunk();
        if src.len() - off < n {
            break;
        }
        model.predict(&src[off..off + n], tokens);
        off += n;
    }
    if from_rest {
        rest.drain(..off);
    } else {
        rest.extend_from_slice(&data[off..]);
    }
}

/// `model` carried on on a thread of its own ([`Model::parallel`] for
/// models that cannot be split); `spent` takes its place. None (and
/// `model` as it was) if no thread can be had.
pub(super) fn piped<M: Model + Send + 'static>(model: &mut M, spent: M) -> Option<Box<dyn Model>> {
    match Pipe::start(std::mem::replace(model, spent)) {
        Ok(p) => Some(Box::new(p)),
        Err(m) => {
            *model = m;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelSpec;

    /// Feed `data` as analysis does: it arrives `step` bytes at a time and
    /// the model gets whole chunks of what it asks for; piped (from the
    /// first chunk boundary at or past `pipe_at`, if any) and told the
    /// block size `segment` when `segment` bytes have arrived.
    fn run(spec: ModelSpec, pipe_at: Option<usize>, segment: usize, data: &[u8]) -> Vec<Token> {
        let step = 10_000;
        let mut m = spec.build();
        let mut out = Vec::new();
        let (mut fed, mut have) = (0, 0);
        let mut piped = false;
        while have < data.len() {
            have = (have + step).min(data.len());
            if have > segment && have - step.min(have) < segment {
                have = segment;
            }
            loop {
                if !piped && pipe_at.is_some_and(|p| fed >= p) {
                    m = m.parallel(2).expect("piped");
                    piped = true;
                }
                let n = m.next_chunk();
                if have - fed < n {
                    break;
                }
                m.predict(&data[fed..fed + n], &mut out);
                fed += n;
            }
            if have == segment {
                m.set_segment(segment, &mut out);
            }
        }
        if !piped && pipe_at.is_some() {
            m = m.parallel(2).expect("piped");
        }
        if fed < data.len() {
            m.predict(&data[fed..], &mut out);
        }
        m.finish(&mut out);
        out
    }

    /// Piped models predict exactly what they predict on the calling
    /// thread, piped from the start or mid-stream, whatever the length.
    #[test]
    fn same_tokens_as_one_thread() {
        let data = super::super::split::tests::input();
        let mut specs: Vec<ModelSpec> = (1..=3).map(|level| ModelSpec::Zlib { level }).collect();
        specs.extend((1..=3).map(|level| ModelSpec::GoStd { level }));
        specs.extend((1..=9).map(|level| ModelSpec::Klauspost {
            level,
            segment: 0,
            dict: 0,
        }));
        specs.push(ModelSpec::Klauspost {
            level: 8,
            segment: 300_000,
            dict: 16 << 10,
        });
        for spec in specs {
            for len in [
                0,
                1,
                127,
                65535,
                65536,
                BATCH + 1,
                3 * BATCH + 100,
                data.len(),
            ] {
                let data = &data[..len];
                let want = run(spec, None, usize::MAX, data);
                for pipe_at in [0, 200_000, len] {
                    let got = run(spec, Some(pipe_at), usize::MAX, data);
                    assert!(got == want, "{spec:?} len {len} piped at {pipe_at}");
                }
            }
        }
    }

    /// A block size learnt on the calling thread reaches the piped model
    /// after the plaintext fed before it, as if the model were there.
    #[test]
    fn learnt_block_size() {
        let data = super::super::split::tests::input();
        for level in [2, 6, 8] {
            let spec = ModelSpec::Klauspost {
                level,
                segment: 0,
                dict: 16 << 10,
            };
            for segment in [250_000, 1 << 20] {
                let want = run(spec, None, segment, &data);
                for pipe_at in [0, 100_000] {
                    let got = run(spec, Some(pipe_at), segment, &data);
                    assert!(
                        got == want,
                        "level {level} block {segment} piped at {pipe_at}"
                    );
                }
                // It made a difference: the model did learn it.
                assert!(want != run(spec, None, usize::MAX, &data), "level {level}");
            }
        }
    }

    /// A model that fails on its thread fails the caller's call.
    #[test]
    fn panic_reaches_the_caller() {
        struct Boom;
        impl Model for Boom {
            fn next_chunk(&self) -> usize {
                1000
            }
            fn predict(&mut self, _: &[u8], _: &mut Vec<Token>) {
                panic!("model failed");
            }
        }
        let mut p = match Pipe::start(Boom) {
            Ok(p) => p,
            Err(_) => panic!("no thread"),
        };
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut out = Vec::new();
            for _ in 0..2 * BATCH / 1000 + 1 {
                p.predict(&[0; 1000], &mut out);
            }
            p.finish(&mut out);
        }))
        .expect_err("the panic is re-raised");
        assert_eq!(err.downcast_ref::<&str>(), Some(&"model failed"));
    }
}
