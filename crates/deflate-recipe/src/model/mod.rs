//! Encoder models: predict the tokens an encoder would emit for a plaintext.
//!
//! A model sees the plaintext of one deflate stream in chunks of the size it
//! asks for (the last chunk may be shorter) and returns its predicted tokens
//! for each chunk. Predictions never need to be right: wrong ones only cost
//! corrections in the recipe.
//!
//! A model's predictions are part of the recipe format: a stored recipe is
//! only meaningful with the exact model that made it. Never change what an
//! existing [`ModelSpec`] predicts (tests/format.rs guards this with v1
//! fixtures); add a new variant for a new encoder version instead. The same
//! holds for the header builders in `hdrpred`.

mod cpus;
mod gofast;
mod gostd;
mod klauspost;
mod kp_lazy;
mod kp_low;
mod kp_mid;
mod pipe;
mod split;
mod workers;
mod zlib;

use crate::error::{RecipeError, Result};
use crate::tokens::Token;
use crate::varint::{self, ByteReader};

pub use gofast::GoFastModel;
pub use gostd::GoStdModel;
pub use klauspost::KlauspostModel;
pub use zlib::ZlibModel;

/// A zeroed table of `n` entries with every page written once now.
///
/// `vec![0; n]` leaves fresh pages unmapped; a model's first touch of a
/// table entry is a read (a hash head), which maps the shared zero page,
/// and the write after it replaces that page, which flushes the TLB of
/// every CPU the process runs on. With models on several threads each
/// such flush is an inter-processor interrupt, and on this VM a costly
/// one: analysing a 3 MB klauspost layer on 2 threads spent more time
/// in those flushes (`smp_call_function_many_cond`, `native_write_msr`)
/// than in the models they interrupted. A write first maps a page once.
pub(crate) fn table<T: Copy + Default>(n: usize) -> Vec<T> {
    table_of(n, T::default())
}

/// The chain entry of a position put at the head of its chain, for the
/// models that keep `L` links per position (zlib's `prev`, Go's `links`):
/// the old head, then the first links of the old head's entry `o`.
#[inline(always)]
pub(crate) fn chain_entry<const L: usize>(old: u16, o: &[u16; L]) -> [u16; L] {
    let mut e = [old; L];
    if L > 1 {
        e[1..].copy_from_slice(&o[..L - 1]);
    }
    e
}

/// [`table`] of `n` copies of `zero`.
pub(crate) fn table_of<T: Copy>(n: usize, zero: T) -> Vec<T> {
    let mut v = vec![zero; n];
    let step = (4096 / std::mem::size_of::<T>().max(1)).max(1);
    for i in (0..n).step_by(step) {
        // SAFETY: `i < n == v.len()`. Volatile: a plain store of zero to
        // memory known to be zeroed may be left out by the compiler.
        unsafe { std::ptr::write_volatile(v.as_mut_ptr().add(i), zero) };
    }
    v
}

/// A token predictor for one deflate stream. `Send`: analysis runs the
/// candidate models on several threads.
pub trait Model: Send {
    /// Bytes wanted for the next `predict` call.
    fn next_chunk(&self) -> usize;
    /// Predict the tokens for `chunk`, the next bytes of the stream.
    fn predict(&mut self, chunk: &[u8], out: &mut Vec<Token>);
    /// [`predict`](Self::predict) for `page[range]`, a page the caller
    /// shares: a model on another thread takes the page as it is
    /// (`pipe.rs`) instead of a copy.
    fn predict_page(
        &mut self,
        page: &std::sync::Arc<Vec<u8>>,
        range: std::ops::Range<usize>,
        out: &mut Vec<Token>,
    ) {
        self.predict(&page[range], out)
    }
    /// The stream ended: emit tokens still held back (lookahead).
    fn finish(&mut self, _out: &mut Vec<Token>) {}
    /// The stream turned out to be cut into independent blocks of this
    /// many bytes (pgzip); called when the first block has ended, which the
    /// model may have seen all of already (tokens it then owes go to `out`).
    fn set_segment(&mut self, _segment: usize, _out: &mut Vec<Token>) {}
    /// A copy of this model's state as the pigz model of the same level
    /// with no block size learnt yet (`ModelSpec::Pigz { block: 0, dict }`),
    /// which predicts exactly as plain zlib until its first block ends.
    /// Analysis runs one zlib model instead of three until then.
    fn fork_pigz(&self, _dict: bool) -> Option<Box<dyn Model>> {
        None
    }
    /// The same model carried on over `threads` threads, predicting the
    /// same tokens (later, in bigger batches); None where the model cannot
    /// be split. On Some, `self` is spent: use only the returned model.
    fn parallel(&mut self, _threads: usize) -> Option<Box<dyn Model>> {
        None
    }
}

/// Identifies a model and its parameters; stored in the recipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelSpec {
    /// Predicts literals only: the recipe holds every match.
    Literals,
    /// klauspost/compress flate levels 1..=9; `segment` > 0 models
    /// pgzip's independent blocks of that size primed with `dict` bytes.
    Klauspost {
        /// Compression level 1..=9.
        level: u8,
        /// pgzip block size (0: one plain flate writer).
        segment: u32,
        /// Bytes of the previous block used as dictionary.
        dict: u32,
    },
    /// Go compress/flate (1.8–1.26) at a level 1..=9.
    GoStd {
        /// Compression level.
        level: u8,
    },
    /// zlib (and GNU gzip's shared search) at a level 1..=9.
    Zlib {
        /// Compression level.
        level: u8,
    },
    /// pigz: zlib restarted every `block` bytes, primed with the previous
    /// block's last 32 KiB when `dict`.
    Pigz {
        /// Compression level.
        level: u8,
        /// Input bytes per block (pigz `-b` KiB × 1024; 0 = one block).
        block: u32,
        /// False for `pigz -i`.
        dict: bool,
    },
}

impl ModelSpec {
    /// Short name for diagnostics.
    pub fn name(&self) -> &'static str {
        match self {
            ModelSpec::Literals => "tokens",
            ModelSpec::Klauspost { segment: 0, .. } => "model:klauspost-flate",
            ModelSpec::Klauspost { .. } => "model:pgzip",
            ModelSpec::Zlib { .. } => "model:zlib",
            ModelSpec::Pigz { .. } => "model:pigz",
            ModelSpec::GoStd { .. } => "model:go-flate",
        }
    }

    /// Instantiate for a new deflate stream, run on up to `threads`
    /// threads where the model can be split (same predictions).
    pub fn build_threads(&self, threads: usize) -> Box<dyn Model> {
        let mut m = self.build();
        if threads > 1 {
            if let Some(p) = m.parallel(threads) {
                return p;
            }
        }
        m
    }

    /// Instantiate for a new deflate stream.
    pub fn build(&self) -> Box<dyn Model> {
        match *self {
            ModelSpec::Literals => Box::new(LiteralModel),
            ModelSpec::Klauspost {
                level,
                segment,
                dict,
            } if level >= 7 => Box::new(kp_lazy::KpLazyModel::new(level, segment, dict)),
            ModelSpec::Klauspost {
                level,
                segment,
                dict,
            } => Box::new(KlauspostModel::new(level, segment, dict)),
            ModelSpec::Zlib { level } => zlib::boxed(level, 0, false),
            ModelSpec::Pigz { level, block, dict } => zlib::boxed(level, block as usize, dict),
            ModelSpec::GoStd { level: 1 } => Box::new(GoFastModel::new()),
            ModelSpec::GoStd { level } => gostd::boxed(level),
        }
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        match *self {
            ModelSpec::Literals => out.push(0),
            ModelSpec::Klauspost {
                level,
                segment,
                dict,
            } => {
                out.push(1);
                out.push(level);
                varint::put(out, segment as u64);
                varint::put(out, dict as u64);
            }
            ModelSpec::Zlib { level } => {
                out.push(2);
                out.push(level);
            }
            ModelSpec::GoStd { level } => {
                out.push(3);
                out.push(level);
            }
            ModelSpec::Pigz { level, block, dict } => {
                out.push(4);
                out.push(level);
                varint::put(out, block as u64);
                out.push(dict as u8);
            }
        }
    }

    pub(crate) fn read<R: std::io::Read>(r: &mut ByteReader<R>) -> Result<ModelSpec> {
        Ok(match r.u8()? {
            0 => ModelSpec::Literals,
            1 => {
                let level = r.u8()?;
                let segment = r.var()? as u32;
                let dict = r.var()? as u32;
                if !(1..=9).contains(&level) || dict > 32768 || (segment != 0 && segment <= dict) {
                    return Err(RecipeError::recipe("bad klauspost model parameters"));
                }
                ModelSpec::Klauspost {
                    level,
                    segment,
                    dict,
                }
            }
            2 => {
                let level = r.u8()?;
                if !(1..=9).contains(&level) {
                    return Err(RecipeError::recipe("bad zlib model level"));
                }
                ModelSpec::Zlib { level }
            }
            3 => {
                let level = r.u8()?;
                if !(1..=9).contains(&level) {
                    return Err(RecipeError::recipe("bad go flate model level"));
                }
                ModelSpec::GoStd { level }
            }
            4 => {
                let level = r.u8()?;
                let block = r.var()?;
                let dict = r.u8()?;
                if !(1..=9).contains(&level) || block > u32::MAX as u64 || dict > 1 {
                    return Err(RecipeError::recipe("bad pigz model parameters"));
                }
                ModelSpec::Pigz {
                    level,
                    block: block as u32,
                    dict: dict == 1,
                }
            }
            k => return Err(RecipeError::recipe(format!("unknown model kind {k}"))),
        })
    }

    /// Candidate models for a stream whose first gzip member header is
    /// `hdr`: the header's OS byte, XFL and MTIME narrow down the encoder.
    pub fn candidates_for(hdr: &[u8]) -> Vec<ModelSpec> {
        let mtime = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let (xfl, os) = (hdr[8], hdr[9]);
        // XFL: 2 = slowest (level 9), 4 = fastest (level 1), else the middle.
        let levels: Vec<u8> = match xfl {
            2 => vec![9],
            4 => vec![1],
            _ => (2..=8).collect(),
        };
        let mut v = vec![ModelSpec::Literals];
        let kl: &[u8] = match xfl {
            4 => &[1],
            2 => &[9],
            _ => &[5, 6, 2, 3, 4, 7, 8],
        };
        // pgzip's block size is learnt from the first sync marker (segment
        // 0 with a dictionary means "not known yet"; a plain flate stream
        // never has one).
        let klauspost = || {
            kl.iter().map(|&level| ModelSpec::Klauspost {
                level,
                segment: 0,
                dict: 16 << 10,
            })
        };
        if os == 255 {
            // Go programs: pgzip always writes MTIME from a zero time.Time.
            v.extend(klauspost());
            if mtime != 0x886E_0900 {
                v.extend(levels.iter().map(|&level| ModelSpec::GoStd { level }));
                // Other tools also write "unknown" (flate2, for one) over zlib-like encoders.
                v.extend(levels.iter().map(|&level| ModelSpec::Zlib { level }));
            }
        } else {
            v.extend(levels.iter().map(|&level| ModelSpec::Zlib { level }));
            // pigz matches zlib until its first block ends; its block size
            // is learnt from the first flush marker (block 0 = not known
            // yet), or is the default 128 KiB when that block had none.
            for (block, dict) in [(128 << 10, true), (0, true), (0, false)] {
                v.extend(
                    levels
                        .iter()
                        .map(|&level| ModelSpec::Pigz { level, block, dict }),
                );
            }
        }
        v
    }
}

/// Predicts nothing but literals.
struct LiteralModel;

impl Model for LiteralModel {
    fn next_chunk(&self) -> usize {
        1 << 16
    }
    fn predict(&mut self, chunk: &[u8], out: &mut Vec<Token>) {
        out.extend(chunk.iter().map(|&b| Token::lit(b)));
    }
}

/// A hash-chain table after its window slid down by `by`: entries hold
/// window index + 1 (or a window index with 0 for none, as zlib), and those
/// that fall out of the window become 0. A loop per table: a chained
/// iterator over two of them kept this scalar (29 % of rebuilding a fast,
/// well-compressed zlib stream).
pub(super) fn slide_down(table: &mut [u16], by: usize) {
    let by = by as u16;
    for e in table.iter_mut() {
        *e = e.saturating_sub(by);
    }
}

/// Token and plaintext buffers of finished work, handed to new work: taken
/// fresh from the allocator each time they are new pages each time
/// (rebuilding the 46 MB tar's gzip -6 stream on 2 threads: 8800 page
/// faults, 6300 with a split model's buffers handed on).
#[derive(Default)]
pub(super) struct Spare {
    tokens: Vec<Vec<Token>>,
    input: Vec<Vec<u8>>,
}

impl Spare {
    /// Keep finished work's buffers (no more than `max` of each).
    pub(super) fn keep(&mut self, tokens: Vec<Token>, input: Vec<u8>, max: usize) {
        if self.tokens.len() < max && tokens.capacity() > 0 {
            self.tokens.push(tokens);
        }
        if self.input.len() < max && input.capacity() > 0 {
            self.input.push(input);
        }
    }

    /// An empty token buffer, kept or new.
    pub(super) fn tokens(&mut self) -> Vec<Token> {
        let mut v = self.tokens.pop().unwrap_or_default();
        v.clear();
        v
    }

    /// An empty plaintext buffer, kept or new.
    pub(super) fn input(&mut self) -> Vec<u8> {
        let mut v = self.input.pop().unwrap_or_default();
        v.clear();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_specs() -> Vec<ModelSpec> {
        let mut v = vec![ModelSpec::Literals];
        for level in 1..=9 {
            for (segment, dict) in [(0, 0), (1 << 17, 16 << 10), (100_000, 0)] {
                v.push(ModelSpec::Klauspost {
                    level,
                    segment,
                    dict,
                });
            }
        }
        v.extend((1..=9).map(|level| ModelSpec::Zlib { level }));
        v.extend((1..=9).map(|level| ModelSpec::GoStd { level }));
        for level in [1, 6, 9] {
            for dict in [true, false] {
                v.push(ModelSpec::Pigz {
                    level,
                    block: 40_000,
                    dict,
                });
            }
        }
        v
    }

    /// Inputs that stress match finders: runs, short periods, noise, long
    /// repeats at the window edge, and odd chunk sizes at the end.
    fn inputs() -> Vec<Vec<u8>> {
        let mut x = 0x9e3779b97f4a7c15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let noise: Vec<u8> = (0..120_000).map(|_| rnd() as u8).collect();
        let mut periodic = Vec::new();
        for p in [1usize, 2, 3, 7, 258, 32768, 32769] {
            periodic.extend((0..40_000).map(|i| (i % p) as u8));
        }
        let mut far = noise[..40_000].to_vec();
        far.extend_from_slice(&noise[..40_000]);
        far.extend(std::iter::repeat(0u8).take(70_000));
        far.extend_from_slice(&noise[1000..33_000]);
        vec![
            vec![],
            vec![7],
            vec![0; 17],
            vec![0; 200_000],
            noise,
            periodic,
            far,
        ]
    }

    /// Every model must predict tokens that cover exactly the input and
    /// decode to it, whatever the chunking, without panicking.
    #[test]
    fn models_cover_input_exactly() {
        for data in inputs() {
            for spec in all_specs() {
                let mut m = spec.build();
                let mut out = Vec::new();
                let mut pos = 0;
                while pos < data.len() {
                    let n = m.next_chunk().min(data.len() - pos);
                    m.predict(&data[pos..pos + n], &mut out);
                    pos += n;
                }
                m.finish(&mut out);
                let mut plain: Vec<u8> = Vec::with_capacity(data.len());
                for t in &out {
                    if t.is_lit() {
                        plain.push(t.raw_len() as u8);
                    } else {
                        let d = t.dist() as usize;
                        assert!(
                            d >= 1 && d <= plain.len() && d <= 32768,
                            "{spec:?}: bad distance {d}"
                        );
                        assert!((3..=258).contains(&t.span()), "{spec:?}: bad length");
                        for _ in 0..t.span() {
                            plain.push(plain[plain.len() - d]);
                        }
                    }
                }
                assert!(
                    plain == data,
                    "{spec:?}: predicted tokens do not rebuild the input"
                );
            }
        }
    }

    /// zlib and Go compress/flate emit the same tokens however their input
    /// is cut (without flushes), and so must their models: the Go model
    /// searches as soon as 262 bytes of lookahead are there, and both copy
    /// chunks straight into the window, so chunks of other sizes than the
    /// 64 KiB they ask for make them search and slide at other calls.
    #[test]
    fn zlib_and_go_tokens_do_not_depend_on_chunks() {
        let specs = (1..=9)
            .map(|level| ModelSpec::Zlib { level })
            .chain((2..=9).map(|level| ModelSpec::GoStd { level }));
        for spec in specs {
            for data in inputs() {
                let run = |step: Option<usize>| {
                    let mut m = spec.build();
                    let mut out = Vec::new();
                    let mut pos = 0;
                    while pos < data.len() {
                        let n = step.unwrap_or(m.next_chunk()).min(data.len() - pos);
                        m.predict(&data[pos..pos + n], &mut out);
                        pos += n;
                    }
                    m.finish(&mut out);
                    out
                };
                let want = run(None);
                for step in [1, 261, 262, 7919, 40_000, 100_000] {
                    assert!(run(Some(step)) == want, "{spec:?}, chunks of {step}");
                }
            }
        }
    }

    /// The zlib and Go models walk their chains a link at a time or
    /// several links per load (`ZlibModel::prev`, `GoStdModel::links`);
    /// the tokens must not depend on how many. Text made of a few words
    /// repeated at random gives long chains (level 6 weighs its full 128
    /// candidates) and matches of every length.
    #[test]
    fn tokens_do_not_depend_on_links_per_entry() {
        let mut x = 0x2545f4914f6cdd1du64;
        let words = [
            "the ",
            "layer ",
            "blob ",
            "snapshot ",
            "recipe ",
            "a ",
            "of ",
            "digest ",
            "sha256:",
            "/usr/lib/",
            "x86_64-linux-gnu/",
            "libc.so.6 ",
            "\\n",
            "0000",
        ];
        let mut text = Vec::new();
        while text.len() < 300_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.extend_from_slice(words[(x % words.len() as u64) as usize].as_bytes());
        }
        let run = |mut m: Box<dyn Model>, data: &[u8]| {
            let mut out = Vec::new();
            for c in data.chunks(m.next_chunk()) {
                m.predict(c, &mut out);
            }
            m.finish(&mut out);
            out
        };
        let mut all = inputs();
        all.push(text);
        for data in &all {
            let n = data.len();
            for level in 1..=9 {
                let want = run(Box::new(ZlibModel::<1>::new(level)), data);
                let two = run(Box::new(ZlibModel::<2>::new(level)), data);
                let four = run(Box::new(ZlibModel::<4>::new(level)), data);
                assert!(two == want && four == want, "zlib level {level}, {n} bytes");
                let want = run(Box::new(ZlibModel::<1>::pigz(level, 100_000, true)), data);
                let four = run(Box::new(ZlibModel::<4>::pigz(level, 100_000, true)), data);
                assert!(four == want, "pigz level {level}, {n} bytes");
            }
            for level in 2..=9 {
                let want = run(Box::new(GoStdModel::<1>::new(level)), data);
                let two = run(Box::new(GoStdModel::<2>::new(level)), data);
                let four = run(Box::new(GoStdModel::<4>::new(level)), data);
                assert!(two == want && four == want, "go level {level}, {n} bytes");
            }
        }
    }
}
