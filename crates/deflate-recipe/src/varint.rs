//! Small byte-stream helpers: LEB128 varints over `Vec<u8>` and a cursor
//! reader over any `Read` (the zstd-decompressed recipe streams).

use std::io::Read;

use crate::error::{RecipeError, Result};

/// Append an unsigned LEB128 varint.
#[inline]
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Buffered reader of recipe bytes and varints.
pub struct ByteReader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
}

impl<R: Read> ByteReader<R> {
    /// Wrap a reader.
    pub fn new(inner: R) -> Self {
        ByteReader {
            inner,
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn fill(&mut self) -> Result<bool> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        let old = self.buf.len();
        self.buf.resize(old + (1 << 16), 0);
        let n = loop {
            match self.inner.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(RecipeError::recipe(format!(
                        "cannot decompress recipe stream: {e}"
                    )))
                }
            }
        };
        self.buf.truncate(old + n);
        Ok(n > 0)
    }

    /// One byte; error at end of stream.
    #[inline]
    pub fn u8(&mut self) -> Result<u8> {
        if self.pos == self.buf.len() && !self.fill()? {
            return Err(RecipeError::recipe("recipe stream ends early"));
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    /// One byte, or `None` at a clean end of stream.
    pub fn opt_u8(&mut self) -> Result<Option<u8>> {
        if self.pos == self.buf.len() && !self.fill()? {
            return Ok(None);
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(Some(b))
    }

    /// A varint.
    #[inline]
    pub fn var(&mut self) -> Result<u64> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift > 63 {
                return Err(RecipeError::recipe("varint too long"));
            }
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    /// Exactly `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n.min(1 << 20));
        for _ in 0..n {
            out.push(self.u8()?);
        }
        Ok(out)
    }
}
