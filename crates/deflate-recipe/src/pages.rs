//! The plaintext of one gzip member as the rebuild reads it: 64 KiB
//! pages, handed to a model on another thread as they are.
//!
//! Why pages: the rebuild reads plaintext ahead of its tokens (a piped
//! model is a few batches ahead) and keeps the 32 KiB before the next
//! token for explicit matches. In one buffer, the kept bytes were moved
//! down now and then (about one move per byte read) and each batch was
//! copied again for the model's thread: two copies of the whole member
//! on the calling thread, which in a piped zlib -1 rebuild of
//! 295fef0417ad had 13.6-14.5 ms of CPU work against its model's 19.4
//! (11.5-12.8 with pages; BENCHMARKS.md). Pages are shared with the model
//! ([`Model::predict_page`](crate::model::Model::predict_page)) and
//! dropped whole; only a stretch that spans two pages is gathered.

use std::collections::VecDeque;
use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

use crate::error::{RecipeError, Result};

/// Bytes per page: the models' chunk, the pipe's batch.
pub(crate) const PAGE: usize = 1 << 16;

/// Pages dropped whole kept to read into again.
const SPARE: usize = 4;

/// Plaintext of one member, read ahead as the rebuild needs it.
pub(crate) struct Pages<'a, R: Read> {
    r: &'a mut R,
    /// Page `k` holds member offsets from `base + k × PAGE`.
    pages: VecDeque<Arc<Vec<u8>>>,
    base: u64,
    /// Member offset up to which plaintext has been read.
    filled: u64,
    /// Member plaintext length.
    pub(crate) end: u64,
    pub(crate) crc: crc32fast::Hasher,
    spare: Vec<Vec<u8>>,
    /// A stretch across pages, gathered.
    gather: Vec<u8>,
}

impl<'a, R: Read> Pages<'a, R> {
    pub(crate) fn new(r: &'a mut R, end: u64) -> Self {
        Pages {
            r,
            pages: VecDeque::new(),
            base: 0,
            filled: 0,
            end,
            crc: crc32fast::Hasher::new(),
            spare: Vec::new(),
            gather: Vec::new(),
        }
    }

    /// Read pages until they hold member offsets up to `upto` (≤ end).
    pub(crate) fn ensure(&mut self, upto: u64) -> Result<()> {
        if upto > self.end {
            return Err(RecipeError::mismatch(
                "the recipe reads past the member's plaintext",
            ));
        }
        while self.filled < upto {
            let want = (self.end - self.filled).min(PAGE as u64) as usize;
            // A page is zeroed once, when new, and read into after.
            let mut page = self.spare.pop().unwrap_or_default();
            page.resize(want, 0);
            let mut got = 0;
            while got < want {
                match self.r.read(&mut page[got..]) {
                    Ok(0) => {
                        return Err(RecipeError::mismatch(
                            "plaintext shorter than the recipe says",
                        ))
                    }
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.crc.update(&page);
            self.pages.push_back(Arc::new(page));
            self.filled += want as u64;
        }
        Ok(())
    }

    /// The index of the page holding offset `at` and where in it.
    fn index(&self, at: u64) -> (usize, usize) {
        debug_assert!(at >= self.base && at < self.filled);
        let off = at - self.base;
        ((off / PAGE as u64) as usize, (off % PAGE as u64) as usize)
    }

    /// The page holding offset `at` and where in it.
    fn locate(&self, at: u64) -> (&Arc<Vec<u8>>, usize) {
        let (k, i) = self.index(at);
        (&self.pages[k], i)
    }

    /// The page and range holding `[from, to)` if one page holds it all.
    pub(crate) fn within(&self, from: u64, to: u64) -> Option<(&Arc<Vec<u8>>, Range<usize>)> {
        if from == to {
            return None;
        }
        let (page, i) = self.locate(from);
        let n = (to - from) as usize;
        (i + n <= page.len()).then_some((page, i..i + n))
    }

    /// The byte at offset `at` (read already).
    pub(crate) fn byte(&self, at: u64) -> u8 {
        let (page, i) = self.locate(at);
        page[i]
    }

    /// Offsets `[from, to)` (read already), gathered when they span pages.
    pub(crate) fn slice(&mut self, from: u64, to: u64) -> &[u8] {
        debug_assert!(from <= to && to <= self.filled);
        if from == to {
            return &[];
        }
        let ((k, i), n) = (self.index(from), (to - from) as usize);
        if i + n <= self.pages[k].len() {
            return &self.pages[k][i..i + n];
        }
        let mut gather = std::mem::take(&mut self.gather);
        gather.clear();
        let mut at = from;
        while at < to {
            let (page, i) = self.locate(at);
            let n = (page.len() - i).min((to - at) as usize);
            gather.extend_from_slice(&page[i..i + n]);
            at += n as u64;
        }
        self.gather = gather;
        &self.gather
    }

    /// Whether `[a, a + n)` and `[b, b + n)` (read already) hold the
    /// same bytes.
    pub(crate) fn same(&self, a: u64, b: u64, n: u64) -> bool {
        let (mut a, mut b, end) = (a, b, a + n);
        while a < end {
            let (pa, i) = self.locate(a);
            let (pb, j) = self.locate(b);
            let k = (pa.len() - i).min(pb.len() - j).min((end - a) as usize);
            if pa[i..i + k] != pb[j..j + k] {
                return false;
            }
            a += k as u64;
            b += k as u64;
        }
        true
    }

    /// Forget the (whole) pages before offset `keep`.
    pub(crate) fn trim(&mut self, keep: u64) {
        while let Some(p) = self.pages.front() {
            if p.len() < PAGE || self.base + PAGE as u64 > keep {
                break;
            }
            let p = self.pages.pop_front().expect("a front page");
            self.base += PAGE as u64;
            // Still shared with a model's thread: it is freed there.
            if let Ok(v) = Arc::try_unwrap(p) {
                if self.spare.len() < SPARE {
                    self.spare.push(v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads in odd sizes, to show pages do not depend on them.
    struct Dribble<'a>(&'a [u8], usize);

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn slices_bytes_and_comparisons_across_pages() {
        let data: Vec<u8> = (0..3 * PAGE + 1000).map(|i| (i * 7 % 251) as u8).collect();
        let mut r = Dribble(&data, 10_007);
        let end = data.len() as u64;
        let mut p = Pages::new(&mut r, end);
        p.ensure(end).unwrap();
        assert_eq!(p.crc.clone().finalize(), crc32fast::hash(&data));
        for (a, b) in [
            (0, 10),
            (PAGE - 5, PAGE + 5),
            (100, 2 * PAGE + 50),
            (3 * PAGE, 3 * PAGE + 1000),
        ] {
            assert_eq!(p.slice(a as u64, b as u64), &data[a..b], "{a}..{b}");
            assert_eq!(p.byte(b as u64 - 1), data[b - 1]);
        }
        assert!(p.within(PAGE as u64 - 5, PAGE as u64 + 5).is_none());
        let (page, r) = p.within(PAGE as u64, 2 * PAGE as u64).unwrap();
        assert_eq!(&page[r], &data[PAGE..2 * PAGE]);
        // Period 251: equal 251 × k bytes apart, across page boundaries.
        assert!(p.same(PAGE as u64 - 100, PAGE as u64 - 100 + 251 * 3, 500));
        assert!(!p.same(PAGE as u64 - 100, PAGE as u64 - 99, 500));
        p.trim(2 * PAGE as u64 + 3);
        assert_eq!(
            p.slice(2 * PAGE as u64 + 3, 2 * PAGE as u64 + 9),
            &data[2 * PAGE + 3..2 * PAGE + 9]
        );
        assert_eq!(p.base, PAGE as u64 * 2);
    }

    #[test]
    fn short_plaintext_and_reads_past_the_end_are_errors() {
        let data = vec![1u8; 1000];
        let mut r = &data[..];
        let mut p = Pages::new(&mut r, 2000);
        let e = p.ensure(1500).unwrap_err();
        assert!(e.to_string().contains("shorter"), "{e}");
        let mut r = &data[..];
        let mut p = Pages::new(&mut r, 1000);
        p.ensure(1000).unwrap();
        let e = p.ensure(1001).unwrap_err();
        assert!(e.to_string().contains("past the member"), "{e}");
    }
}
