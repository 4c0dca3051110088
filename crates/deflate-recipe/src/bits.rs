//! LSB-first bit reader over any `Read`, and the matching bit writer.
//!
//! The reader buffers input in a fixed-size buffer so memory stays bounded
//! whatever the stream length; byte-level access (gzip header and trailer)
//! goes through the same reader so no byte is lost between the deflate bits
//! and the framing around them.

use std::io::{Read, Write};

use crate::error::{RecipeError, Result};

const IN_BUF: usize = 1 << 16;

/// Buffered LSB-first bit reader.
pub struct BitReader<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// Bytes of input consumed into `buf` before `buf[0]`.
    base: u64,
    bitbuf: u64,
    nbits: u32,
    eof: bool,
}

impl<R: Read> BitReader<R> {
    /// Wrap a reader.
    pub fn new(inner: R) -> Self {
        BitReader {
            inner,
            buf: vec![0u8; IN_BUF].into_boxed_slice(),
            pos: 0,
            end: 0,
            base: 0,
            bitbuf: 0,
            nbits: 0,
            eof: false,
        }
    }

    /// Byte offset of the next unread bit (rounded down), for error messages.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64 - (self.nbits / 8) as u64
    }

    fn fill_buf(&mut self) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        // Keep nothing: bytes already moved into `bitbuf` are accounted by `pos`.
        self.base += self.pos as u64;
        let rest = self.end - self.pos;
        self.buf.copy_within(self.pos..self.end, 0);
        self.pos = 0;
        self.end = rest;
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(self.end > 0);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Make sure at least `n` (≤ 57) bits are buffered if the input has them.
    /// Returns false when the input ends first.
    #[inline]
    pub fn ensure(&mut self, n: u32) -> Result<bool> {
        if self.nbits >= n {
            return Ok(true);
        }
        self.refill()?;
        Ok(self.nbits >= n)
    }

    #[inline]
    fn refill(&mut self) -> Result<()> {
        if self.end - self.pos >= 8 {
            // Fast path: load eight bytes, keep as many whole bytes as fit.
            let word = u64::from_le_bytes(self.buf[self.pos..self.pos + 8].try_into().unwrap());
            let take = (63 - self.nbits) / 8;
            self.bitbuf |= (word & ((1u64 << (take * 8)) - 1)) << self.nbits;
            self.pos += take as usize;
            self.nbits += take * 8;
            return Ok(());
        }
        while self.nbits <= 56 {
            if self.pos == self.end && !self.fill_buf()? {
                break;
            }
            if self.pos == self.end {
                break;
            }
            self.bitbuf |= (self.buf[self.pos] as u64) << self.nbits;
            self.pos += 1;
            self.nbits += 8;
        }
        Ok(())
    }

    /// Peek at the buffered bits (call `ensure` first).
    #[inline]
    pub fn peek(&self) -> u64 {
        self.bitbuf
    }

    /// Number of buffered bits.
    #[inline]
    pub fn available(&self) -> u32 {
        self.nbits
    }

    /// Drop `n` bits (must be buffered).
    #[inline]
    pub fn consume(&mut self, n: u32) {
        debug_assert!(n <= self.nbits);
        self.bitbuf >>= n;
        self.nbits -= n;
    }

    /// Read `n` ≤ 32 bits, erroring on end of input.
    #[inline]
    pub fn bits(&mut self, n: u32) -> Result<u32> {
        if n == 0 {
            return Ok(0);
        }
        if !self.ensure(n)? {
            return Err(self.truncated());
        }
        let v = (self.bitbuf & ((1u64 << n) - 1)) as u32;
        self.consume(n);
        Ok(v)
    }

    /// The error for input that ends in the middle of something.
    pub fn truncated(&self) -> RecipeError {
        RecipeError::deflate(self.offset(), "truncated input")
    }

    /// Skip to the byte boundary, returning the skipped bits' value.
    pub fn align(&mut self) -> u32 {
        let n = self.nbits % 8;
        let v = (self.bitbuf & ((1u64 << n) - 1)) as u32;
        self.consume(n);
        v
    }

    /// Read one byte at a byte boundary; `None` at end of input.
    pub fn byte(&mut self) -> Result<Option<u8>> {
        debug_assert_eq!(self.nbits % 8, 0);
        if self.nbits >= 8 {
            let b = self.bitbuf as u8;
            self.consume(8);
            return Ok(Some(b));
        }
        if self.pos == self.end && !self.fill_buf()? {
            return Ok(None);
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(Some(b))
    }

    /// Read exactly `out.len()` bytes at a byte boundary.
    pub fn bytes_exact(&mut self, out: &mut [u8]) -> Result<bool> {
        let mut i = 0;
        while i < out.len() && self.nbits >= 8 {
            out[i] = self.bitbuf as u8;
            self.consume(8);
            i += 1;
        }
        while i < out.len() {
            if self.pos == self.end && !self.fill_buf()? {
                return Ok(false);
            }
            let n = (self.end - self.pos).min(out.len() - i);
            out[i..i + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            i += n;
        }
        Ok(true)
    }

    /// Copy up to `max` bytes at a byte boundary into `out`; returns the count (0 at end).
    pub fn bytes_some(&mut self, out: &mut Vec<u8>, max: usize) -> Result<usize> {
        let mut n = 0;
        while n < max && self.nbits >= 8 {
            out.push(self.bitbuf as u8);
            self.consume(8);
            n += 1;
        }
        if n == max {
            return Ok(n);
        }
        if self.pos == self.end && !self.fill_buf()? {
            return Ok(n);
        }
        let k = (self.end - self.pos).min(max - n);
        out.extend_from_slice(&self.buf[self.pos..self.pos + k]);
        self.pos += k;
        Ok(n + k)
    }
}

const WIDE_BUF: usize = 4096;

/// A bit writer that keeps fewer than 8 bits pending, so that each `put`
/// may add up to 56 and is one 8-byte store into a small buffer (5-8 %
/// off rebuilding fast Go and zlib streams, against a `put` per field
/// appending to a byte vector).
pub struct Wide<'a> {
    buf: [u8; WIDE_BUF + 8],
    at: usize,
    acc: u64,
    n: u32,
    out: &'a mut Vec<u8>,
}

impl Wide<'_> {
    /// Write `n` ≤ 56 bits of `v` (LSB first).
    #[inline(always)]
    pub fn put(&mut self, v: u64, n: u32) {
        debug_assert!(n <= 56 && self.n < 8);
        debug_assert!(v >> n == 0);
        self.acc |= v << self.n;
        self.n += n;
        let at = self.at;
        self.buf[at..at + 8].copy_from_slice(&self.acc.to_le_bytes());
        let bytes = self.n >> 3;
        self.at = at + bytes as usize;
        // A shift by 64 is not defined: two shifts drop 8·bytes bits.
        self.acc = (self.acc >> (4 * bytes)) >> (4 * bytes);
        self.n &= 7;
        if self.at >= WIDE_BUF {
            self.spill();
        }
    }

    fn spill(&mut self) {
        self.out.extend_from_slice(&self.buf[..self.at]);
        self.at = 0;
    }
}

/// LSB-first bit writer with an internal output buffer.
pub struct BitWriter<W: Write> {
    inner: W,
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl<W: Write> BitWriter<W> {
    /// Wrap a writer.
    pub fn new(inner: W) -> Self {
        BitWriter {
            inner,
            out: Vec::with_capacity(1 << 16),
            acc: 0,
            n: 0,
        }
    }

    /// Write `n` ≤ 32 bits of `v` (LSB first).
    #[inline]
    pub fn put(&mut self, v: u32, n: u32) {
        debug_assert!(n <= 32);
        debug_assert!(n == 32 || v >> n == 0);
        self.acc |= (v as u64) << self.n;
        self.n += n;
        if self.n >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    /// Write many codes of up to 56 bits each: `f` is handed a [`Wide`]
    /// writer over this one's pending bits (the block writer puts a
    /// literal as one code, a match with its length, distance and extra
    /// bits as another).
    pub fn wide<T>(&mut self, f: impl FnOnce(&mut Wide) -> T) -> T {
        self.flush_bytes();
        let mut w = Wide {
            buf: [0; WIDE_BUF + 8],
            at: 0,
            acc: self.acc,
            n: self.n,
            out: &mut self.out,
        };
        let r = f(&mut w);
        w.spill();
        self.acc = w.acc;
        self.n = w.n;
        r
    }

    /// Bits pending before the next byte boundary is reached.
    pub fn bits_to_boundary(&self) -> u32 {
        (8 - self.n % 8) % 8
    }

    /// Pad to a byte boundary with the given bit values.
    pub fn align(&mut self, pad: u32) {
        let n = self.bits_to_boundary();
        self.put(pad & ((1 << n) - 1), n);
        self.flush_bytes();
    }

    fn flush_bytes(&mut self) {
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// Write whole bytes; only valid at a byte boundary.
    pub fn bytes(&mut self, b: &[u8]) -> Result<()> {
        debug_assert_eq!(self.n % 8, 0);
        self.flush_bytes();
        self.out.extend_from_slice(b);
        self.maybe_flush()
    }

    /// Push buffered bytes to the inner writer once the buffer is large.
    #[inline]
    pub fn maybe_flush(&mut self) -> Result<()> {
        if self.out.len() >= 1 << 16 {
            self.inner.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Flush everything (must be byte aligned) and return the inner writer.
    pub fn finish(mut self) -> Result<W> {
        debug_assert_eq!(self.n % 8, 0);
        self.flush_bytes();
        self.inner.write_all(&self.out)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}
