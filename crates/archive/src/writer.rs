//! Streaming archive writer: blobs go straight from their source into the
//! tar, hashed on the way; a blob whose bytes do not match its digest aborts
//! the archive rather than being written as if it were right.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use stowage_oci::{Digest, Hasher};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing archive: {0}")]
    Io(#[from] io::Error),
}

pub struct ArchiveWriter<W: Write> {
    b: tar::Builder<W>,
    written: HashSet<Digest>,
}

fn header(size: u64, dir: bool) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// Hashes what passes and fails the read that ends the stream if the bytes
/// are not the promised blob.
struct Verify<R> {
    inner: R,
    hasher: Hasher,
    want: Digest,
    size: u64,
}

impl<R: Read> Read for Verify<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.size - self.hasher.len();
        if left == 0 {
            let got = self.hasher.clone().finish();
            if got != self.want {
                return Err(io::Error::other(format!(
                    "blob {}: bytes hash to {got}",
                    self.want
                )));
            }
            return Ok(0);
        }
        let want = buf.len().min(left as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "blob {}: source ended after {} of {} bytes",
                    self.want,
                    self.hasher.len(),
                    self.size
                ),
            ));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl<W: Write> ArchiveWriter<W> {
    /// Start an archive: `oci-layout` and the blob directories.
    pub fn new(w: W) -> Result<Self, WriteError> {
        let mut b = tar::Builder::new(w);
        b.mode(tar::HeaderMode::Deterministic);
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        b.append_data(
            &mut header(layout.len() as u64, false),
            "oci-layout",
            &layout[..],
        )?;
        b.append_data(&mut header(0, true), "blobs/", io::empty())?;
        b.append_data(&mut header(0, true), "blobs/sha256/", io::empty())?;
        Ok(ArchiveWriter {
            b,
            written: HashSet::new(),
        })
    }

    pub fn has(&self, d: &Digest) -> bool {
        self.written.contains(d)
    }

    /// Append blob `d` of `size` bytes read from `r`, verifying both.
    /// A blob already in the archive is skipped.
    pub fn blob(&mut self, d: &Digest, size: u64, r: impl Read) -> Result<(), WriteError> {
        if self.written.contains(d) {
            return Ok(());
        }
        let v = Verify {
            inner: r,
            hasher: Hasher::new(),
            want: d.clone(),
            size,
        };
        self.b
            .append_data(&mut header(size, false), crate::blob_path(d), v)?;
        self.written.insert(d.clone());
        Ok(())
    }

    /// Append a small file (index.json, manifest.json).
    pub fn file(&mut self, name: &str, bytes: &[u8]) -> Result<(), WriteError> {
        self.b
            .append_data(&mut header(bytes.len() as u64, false), name, bytes)?;
        Ok(())
    }

    /// Write the end-of-archive blocks and hand back the writer.
    pub fn finish(self) -> Result<W, WriteError> {
        Ok(self.b.into_inner()?)
    }
}
