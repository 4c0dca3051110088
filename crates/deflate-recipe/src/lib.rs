//! Bit-exact gzip reconstruction for stowage.
//!
//! [`analyze_gzip`] splits a gzip blob into its plaintext and a small
//! [`Recipe`]; [`rebuild_gzip`] turns the plaintext and the recipe back into
//! the identical gzip bytes. The recipe stores the gzip framing verbatim, the
//! deflate block structure (Huffman headers only where no builder predicts
//! them), and the token stream as corrections against an encoder model that
//! re-runs the original encoder's match search: klauspost/compress flate and
//! pgzip (levels 1–9), Go's compress/flate (1.8–1.26, levels 1–9), zlib and
//! GNU gzip (levels 1–9) and pigz. Any valid deflate stream round-trips; a
//! model only makes the recipe small (see BENCHMARKS.md).
//!
//! Memory is bounded: plaintext and compressed data are streamed, with a
//! 32 KiB window plus per-block buffers and model state (≤ ~1 MiB per
//! model; while candidates are compared over the first 2 MiB of plaintext,
//! up to ~29 models run side by side, ≤ ~15 MiB). The recipe itself is built
//! in memory (compressed as it grows).
//!
//! Threads: the zlib (levels 4–9), pigz, pgzip (klauspost levels 1–6 in
//! blocks) and Go compress/flate (4–9) models run in pieces (256 KiB,
//! two per thread in flight) on up to [`set_threads`] threads (default:
//! every core, at most 8); the models that cannot be split (zlib and Go
//! 1–3, klauspost's plain flate writer and its levels 7–9) run on a thread
//! of their own while the calling thread applies corrections and writes
//! blocks (so does a pgzip model in analysis, chosen before its block
//! size is known); and before a model is chosen the candidates run side
//! by side.
//! Every model predicts exactly what it predicts on one thread, so recipes
//! do not depend on the thread count (`model::split` and `model::pipe` say
//! why this is exact). Pieces in flight add about `threads` MiB of
//! plaintext and tokens to the memory above (peak RSS of analysing a 46 MB
//! tar's gzip -6 / Go -6 / pgzip / gzip -1 stream on 2 threads: 27 / 42 /
//! 14 / 8 MB, 6-18 MB on one; rebuilding: 19 / 27 / 22 / 7 MB, 5-6 MB on
//! one).
//!
//! Recipe format: see the `recipe` module source; its version byte is
//! [`FORMAT_VERSION`], and older versions stay readable.

mod analyze;
mod bits;
mod diff;
mod error;
mod gzip;
mod hdr_zlib;
mod hdrpred;
mod huffman;
mod inflate;
pub mod model;
mod pages;
mod rebuild;
mod recipe;
mod tokens;
mod varint;
mod writer;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

pub use error::RecipeError;
pub use model::ModelSpec;
pub use recipe::{Recipe, FORMAT_VERSION};

static THREADS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static LOCAL_THREADS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Threads one analysis or rebuild may use for the models that can be
/// split (zlib, pigz, pgzip, Go compress/flate 4–9; see `model::split`):
/// 0 (the default) means the machine's available parallelism, 1 runs every
/// model on the calling thread. Predictions, and so recipes, are the same
/// either way. Process-wide; see [`with_threads`] for one call site.
pub fn set_threads(n: usize) {
    THREADS.store(n, Ordering::Relaxed);
}

/// Run `f` with analyses and rebuilds started on this thread using `n`
/// threads (0: as [`set_threads`] says): for callers that already run
/// several of them side by side and would otherwise oversubscribe.
pub fn with_threads<T>(n: usize, f: impl FnOnce() -> T) -> T {
    let old = LOCAL_THREADS.with(|c| c.replace(n));
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            LOCAL_THREADS.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(old);
    f()
}

/// The threads an analysis or rebuild started on this thread would use:
/// what [`with_threads`] or else [`set_threads`] asks for, and by default
/// the machine's available parallelism, at most 8 (pieces in flight cost
/// memory per thread). For callers dividing the cores between several.
pub fn threads() -> usize {
    let n = match LOCAL_THREADS.with(|c| c.get()) {
        0 => THREADS.load(Ordering::Relaxed),
        n => n,
    };
    match n {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
        n => n,
    }
}

/// Streaming analysis: reads the gzip stream, writes plaintext to
/// `plain_out`, returns the recipe. Tries the encoder models that fit the
/// first gzip header (OS byte, XFL, pgzip's MTIME) on the first megabytes
/// and keeps the one with the fewest corrections.
pub fn analyze_gzip<R: Read, W: Write>(gz: R, plain_out: W) -> Result<Recipe, RecipeError> {
    analyze::analyze_with(gz, plain_out, None)
}

/// Analysis with a fixed list of candidate models (tests, diagnostics).
pub fn analyze_gzip_with<R: Read, W: Write>(
    gz: R,
    plain_out: W,
    candidates: &[ModelSpec],
) -> Result<Recipe, RecipeError> {
    if candidates.is_empty() {
        return Err(RecipeError::InvalidRecipe(
            "analyze_gzip_with: no candidate model given (pass at least one, or call analyze_gzip)"
                .into(),
        ));
    }
    analyze::analyze_with(gz, plain_out, Some(candidates))
}

/// Rebuild: reads plaintext, writes the exact gzip stream.
pub fn rebuild_gzip<R: Read, W: Write>(
    plain: R,
    recipe: &Recipe,
    gz_out: W,
) -> Result<(), RecipeError> {
    rebuild::rebuild(plain, recipe, gz_out)
}

/// Short description of how the recipe predicts the stream, e.g. `tokens`
/// or `model:pgzip`.
pub fn recipe_kind(recipe: &Recipe) -> &str {
    recipe.model().name()
}

#[cfg(test)]
mod tests;
