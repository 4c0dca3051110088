//! Content store: blobs by digest under `blobs/sha256/`. A blob is written to
//! an ingest file while it is hashed, fsync'd, and renamed into place only
//! when its digest and size match what was expected, so a blob file that
//! exists is always complete and correct.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use stowage_oci::{Digest, Hasher};

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("blob {digest}: digest mismatch: got {actual} ({size} bytes)")]
    DigestMismatch {
        digest: Digest,
        actual: Digest,
        size: u64,
    },
    #[error("blob {digest}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest}: not found in the content store")]
    NotFound { digest: Digest },
    #[error("content store {path:?}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> ContentError + 'a {
    move |source| ContentError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

static INGEST_SEQ: AtomicU64 = AtomicU64::new(0);

impl ContentStore {
    pub fn open(root: &Path) -> Result<ContentStore, ContentError> {
        let blobs = root.join("blobs/sha256");
        let ingest = root.join("ingest");
        for d in [&blobs, &ingest] {
            fs::create_dir_all(d).map_err(io_err(d, "create directory"))?;
        }
        Ok(ContentStore { blobs, ingest })
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.hex())
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    pub fn size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.path(d)).ok().map(|m| m.len())
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File, ContentError> {
        File::open(self.path(d)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ContentError::NotFound { digest: d.clone() },
            _ => ContentError::Io {
                path: self.path(d),
                op: "open",
                source: e,
            },
        })
    }

    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, ContentError> {
        fs::read(self.path(d)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ContentError::NotFound { digest: d.clone() },
            _ => ContentError::Io {
                path: self.path(d),
                op: "read",
                source: e,
            },
        })
    }

    /// Remove a blob file. Metadata is the caller's business.
    pub fn remove(&self, d: &Digest) -> Result<(), ContentError> {
        match fs::remove_file(self.path(d)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ContentError::Io {
                path: self.path(d),
                op: "remove",
                source: e,
            }),
        }
    }

    /// Start writing a blob that should come out as `expected`.
    pub fn writer(&self, expected: &Digest) -> Result<IngestWriter, ContentError> {
        let path = self.ingest_path(expected);
        let file = File::create(&path).map_err(io_err(&path, "create ingest file"))?;
        Ok(IngestWriter {
            file: Some(io::BufWriter::with_capacity(256 * 1024, file)),
            path,
            hasher: Hasher::new(),
            expected: expected.clone(),
            dest: self.path(expected),
            skip: 0,
        })
    }

    /// A writer for `expected` that continues where a stopped download of the
    /// same blob left off: a partial file whose writer is gone (killed, or
    /// kept by [`IngestWriter::keep_for_resume`]) and no longer than
    /// `max_len`. Returns the writer, the partial's bytes to read back and
    /// their length. The caller feeds those bytes through the writer again
    /// (they are hashed, not rewritten) and fetches the rest from there, so
    /// the blob is still verified as a whole.
    pub fn resume_writer(
        &self,
        expected: &Digest,
        max_len: u64,
    ) -> Result<(IngestWriter, Option<File>, u64), ContentError> {
        let prefix = format!("{}.", expected.hex());
        let mut best: Option<(PathBuf, u64)> = None;
        for e in fs::read_dir(&self.ingest)
            .map_err(io_err(&self.ingest, "list"))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&prefix) || !name.ends_with(".partial") || writer_alive(&name) {
                continue;
            }
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            if len > 0 && len <= max_len && best.as_ref().is_none_or(|b| len > b.1) {
                best = Some((e.path(), len));
            }
        }
        let Some((old, len)) = best else {
            return Ok((self.writer(expected)?, None, 0));
        };
        let path = self.ingest_path(expected);
        // Claiming by rename: of two claimants only one finds the file.
        if fs::rename(&old, &path).is_err() {
            return Ok((self.writer(expected)?, None, 0));
        }
        let reader = File::open(&path).map_err(io_err(&path, "open partial"))?;
        let file = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(&path, "open partial"))?;
        Ok((
            IngestWriter {
                file: Some(io::BufWriter::with_capacity(256 * 1024, file)),
                path,
                hasher: Hasher::new(),
                expected: expected.clone(),
                dest: self.path(expected),
                skip: len,
            },
            Some(reader),
            len,
        ))
    }

    fn ingest_path(&self, expected: &Digest) -> PathBuf {
        self.ingest.join(format!(
            "{}.{}.{}.partial",
            expected.hex(),
            std::process::id(),
            INGEST_SEQ.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Write `bytes` as a blob, verifying it against `expected`.
    pub fn put(&self, expected: &Digest, bytes: &[u8]) -> Result<(), ContentError> {
        if self.contains(expected) {
            return Ok(());
        }
        let mut w = self.writer(expected)?;
        w.write_all(bytes)
            .map_err(io_err(&w.path.clone(), "write"))?;
        w.commit(Some(bytes.len() as u64))
    }

    /// Store a stream whose digest is not known in advance (a docker-save
    /// `layer.tar`): hashed while written, named by what it hashes to.
    /// Returns the blob ready to publish (or already present).
    pub fn ingest_unknown(
        &self,
        r: &mut dyn io::Read,
        limit: u64,
    ) -> Result<VerifiedBlob, ContentError> {
        let name = format!(
            "unknown.{}.{}.partial",
            std::process::id(),
            INGEST_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.ingest.join(name);
        let mut file = io::BufWriter::with_capacity(
            256 * 1024,
            File::create(&path).map_err(io_err(&path, "create ingest file"))?,
        );
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 128 * 1024];
        let cleanup = |e: ContentError| {
            let _ = fs::remove_file(&path);
            e
        };
        loop {
            let n = r
                .read(&mut buf)
                .map_err(io_err(&path, "read"))
                .map_err(cleanup)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if hasher.len() > limit {
                return Err(cleanup(ContentError::Io {
                    path: path.clone(),
                    op: "ingest",
                    source: io::Error::other(format!("larger than the {limit} bytes allowed")),
                }));
            }
            file.write_all(&buf[..n])
                .map_err(io_err(&path, "write"))
                .map_err(cleanup)?;
        }
        let f = file.into_inner().map_err(|e| {
            cleanup(ContentError::Io {
                path: path.clone(),
                op: "flush",
                source: e.into_error(),
            })
        })?;
        f.sync_all()
            .map_err(io_err(&path, "fsync"))
            .map_err(cleanup)?;
        let size = hasher.len();
        let digest = hasher.finish();
        Ok(VerifiedBlob {
            dest: self.path(&digest),
            path,
            digest,
            size,
        })
    }

    /// Remove ingest files left by processes that no longer run.
    pub fn clean_ingest(&self) -> io::Result<usize> {
        let mut n = 0;
        for e in fs::read_dir(&self.ingest)? {
            let e = e?;
            if !writer_alive(&e.file_name().to_string_lossy()) {
                let _ = fs::remove_file(e.path());
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Whether the process named in an ingest file name (`<hex>.<pid>.<seq>.partial`)
/// still runs. pid 0 marks a partial kept for a later resume.
fn writer_alive(name: &str) -> bool {
    let pid = name.split('.').nth(1).and_then(|p| p.parse::<i32>().ok());
    pid.is_some_and(|p| p > 0 && Path::new(&format!("/proc/{p}")).exists())
}

/// A blob being written. Dropping it without `commit` removes the ingest file.
pub struct IngestWriter {
    file: Option<io::BufWriter<File>>,
    path: PathBuf,
    hasher: Hasher,
    expected: Digest,
    dest: PathBuf,
    /// Bytes already in the file (a resumed partial): hashed when written
    /// again, not appended.
    skip: u64,
}

impl IngestWriter {
    /// Leave what was written for a later pull to resume (a download that
    /// failed, not a blob that was wrong). `gc` removes such partials.
    pub fn keep_for_resume(mut self) {
        let Some(mut file) = self.file.take() else {
            return;
        };
        if file.flush().is_err() {
            return;
        }
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let Some(name) = name else { return };
        let mut parts: Vec<&str> = name.split('.').collect();
        if parts.len() == 4 {
            parts[1] = "0";
            let kept = self.path.with_file_name(parts.join("."));
            if fs::rename(&self.path, &kept).is_ok() {
                self.path = PathBuf::new();
            }
        }
    }

    /// The hash of what was written so far.
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// Verify digest and (when given) size, fsync, and rename into place.
    pub fn commit(self, expected_size: Option<u64>) -> Result<(), ContentError> {
        self.verify(expected_size)?.publish()
    }

    /// Verify digest and (when given) size and fsync, but do not publish
    /// yet: a pull publishes its blobs only once every layer checked out.
    pub fn verify(mut self, expected_size: Option<u64>) -> Result<VerifiedBlob, ContentError> {
        let file = self.file.take().expect("verify once");
        let file = file.into_inner().map_err(|e| ContentError::Io {
            path: self.path.clone(),
            op: "flush",
            source: e.into_error(),
        })?;
        let hasher = std::mem::take(&mut self.hasher);
        let size = hasher.len();
        let actual = hasher.finish();
        if let Some(exp) = expected_size {
            if exp != size {
                return Err(ContentError::SizeMismatch {
                    digest: self.expected.clone(),
                    expected: exp,
                    actual: size,
                });
            }
        }
        if actual != self.expected {
            return Err(ContentError::DigestMismatch {
                digest: self.expected.clone(),
                actual,
                size,
            });
        }
        file.sync_all().map_err(io_err(&self.path, "fsync"))?;
        Ok(VerifiedBlob {
            path: std::mem::take(&mut self.path),
            dest: std::mem::take(&mut self.dest),
            digest: self.expected.clone(),
            size,
        })
    }
}

/// A blob whose bytes were verified and synced, waiting in ingest/ to be
/// published. Dropping it removes the ingest file.
pub struct VerifiedBlob {
    path: PathBuf,
    dest: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

impl VerifiedBlob {
    /// Where the verified bytes wait until published.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn publish(mut self) -> Result<(), ContentError> {
        fs::rename(&self.path, &self.dest).map_err(io_err(&self.dest, "rename into place"))?;
        self.path = PathBuf::new();
        if let Some(dir) = self.dest.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for VerifiedBlob {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Write for IngestWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.skip > 0 {
            let k = buf.len().min(self.skip.min(usize::MAX as u64) as usize);
            self.hasher.update(&buf[..k]);
            self.skip -= k as u64;
            return Ok(k);
        }
        let n = self.file.as_mut().expect("not committed").write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("not committed").flush()
    }
}

impl Drop for IngestWriter {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_verifies_and_rejects() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of(b"hello");
        cs.put(&d, b"hello").unwrap();
        assert_eq!(cs.read(&d).unwrap(), b"hello");
        let wrong = Digest::of(b"other");
        assert!(matches!(
            cs.put(&wrong, b"hello"),
            Err(ContentError::DigestMismatch { .. })
        ));
        assert!(!cs.contains(&wrong));
        assert_eq!(
            fs::read_dir(dir.path().join("ingest")).unwrap().count(),
            0,
            "ingest left behind"
        );
    }
}
