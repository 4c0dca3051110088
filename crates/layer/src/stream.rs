//! Stream adapters around a layer: decompression and hashing.

use std::io::{self, Read};

use stowage_oci::{Compression, Digest, Hasher};

/// Wrap a compressed layer stream in the decoder its compression needs.
///
/// Gzip uses a multi-member decoder because pigz and some registries emit
/// several concatenated gzip members, and a single-member decoder would stop
/// after the first one and silently truncate the tar.
pub fn decompress<'a, R: Read + 'a>(c: Compression, r: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::Decoder::new(r)?),
    })
}

/// A reader that sha256-hashes (and counts) every byte read through it.
///
/// Put one under the decompressor to check the blob digest and one above it
/// to check the diffID, in a single pass over the stream.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R> HashingReader<R> {
    /// Start hashing everything read from `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(),
        }
    }

    /// The hash state so far.
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// Bytes read through this reader so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    /// Whether nothing has been read yet.
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// The digest of the bytes read so far (the reader can keep going).
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finish()
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The wrapped reader, mutably; bytes read from it directly are not hashed.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Give back the reader and the hash state.
    pub fn into_inner(self) -> (R, Hasher) {
        (self.inner, self.hasher)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn hashes_what_passes() {
        let mut r = HashingReader::new(&b"hello world"[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello world");
        assert_eq!(r.len(), 11);
        assert_eq!(r.digest(), Digest::of(b"hello world"));
        let (_, h) = r.into_inner();
        assert_eq!(h.finish(), Digest::of(b"hello world"));
    }

    #[test]
    fn decompresses_each_kind() {
        let data = b"some tar bytes, repeated repeated repeated".repeat(100);
        // Two gzip members back to back, as pigz can write.
        let mut gz = Vec::new();
        for half in data.chunks(data.len() / 2) {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(half).unwrap();
            gz.extend(e.finish().unwrap());
        }
        let zs = zstd::encode_all(&data[..], 3).unwrap();
        for (c, bytes) in [
            (Compression::None, data.clone()),
            (Compression::Gzip, gz),
            (Compression::Zstd, zs),
        ] {
            let mut out = Vec::new();
            decompress(c, &bytes[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "{c:?}");
        }
    }
}
