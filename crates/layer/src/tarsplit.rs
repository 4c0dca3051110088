//! Tar-split: record, while a layer is being unpacked, everything needed to
//! rebuild its uncompressed tar byte-for-byte from the unpacked files: every
//! header block as it was (PAX, GNU long names, odd checksums), padding,
//! entry order, the end-of-archive blocks and any trailing bytes. File bodies
//! are not stored; the record names the file each body comes from.
//!
//! The recorder parses the raw byte stream itself (it does not trust or
//! depend on the tar crate's view), and anything it does not understand is
//! kept verbatim. A wrong guess can only make a rebuild fail its diffID
//! check, never produce a wrong tar that passes it.
//!
//! Stream format (zstd-compressed): a sequence of ops, `M` + u32 length +
//! bytes (verbatim bytes) or `B` + u32 path length + path + u64 size (a file
//! body read from the snapshot), ending with `E`.

use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Longest PAX or GNU long-name payload we parse for a path; longer ones are
/// still recorded, verbatim.
const MAX_CAPTURE: usize = 1 << 20;
/// Verbatim bytes are flushed to the encoder in chunks of this size.
const FLUSH_AT: usize = 64 * 1024;

enum State {
    /// Collecting a 512-byte header block (`have` bytes so far).
    Header { have: usize },
    /// Bytes kept verbatim; `capture` also collects them for parsing.
    Meta { remaining: u64, capture: Capture },
    /// A file body: not stored; then `pad` bytes of padding.
    Body { remaining: u64, pad: u64 },
    /// Something we could not parse: the rest is kept verbatim.
    Verbatim,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Capture {
    None,
    Pax,
    LongName,
}

/// A reader adapter that records the tar-split of the stream read through it.
pub struct TarSplitRecorder<R> {
    inner: R,
    state: State,
    block: Box<[u8; 512]>,
    pending: Vec<u8>,
    captured: Vec<u8>,
    capture_overflow: bool,
    next_path: Option<Vec<u8>>,
    next_size: Option<u64>,
    enc: zstd::stream::Encoder<'static, Vec<u8>>,
    error: Option<io::Error>,
    tar_size: u64,
}

impl<R: Read> TarSplitRecorder<R> {
    pub fn new(inner: R) -> io::Result<Self> {
        Ok(TarSplitRecorder {
            inner,
            state: State::Header { have: 0 },
            block: Box::new([0; 512]),
            pending: Vec::new(),
            captured: Vec::new(),
            capture_overflow: false,
            next_path: None,
            next_size: None,
            enc: zstd::stream::Encoder::new(Vec::new(), 3)?,
            error: None,
            tar_size: 0,
        })
    }

    /// Finish: the tar-split stream and the number of tar bytes seen.
    pub fn finish(mut self) -> io::Result<(Vec<u8>, u64)> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        // A header cut short by the end of the stream is kept as it was.
        if let State::Header { have } = self.state {
            let partial = self.block[..have].to_vec();
            self.pending.extend_from_slice(&partial);
        }
        self.flush_meta()?;
        self.enc.write_all(b"E")?;
        Ok((self.enc.finish()?, self.tar_size))
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    fn flush_meta(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.enc.write_all(b"M")?;
            self.enc
                .write_all(&(self.pending.len() as u32).to_le_bytes())?;
            self.enc.write_all(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    fn meta(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= FLUSH_AT {
            self.flush_meta()?;
        }
        Ok(())
    }

    fn feed(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match &mut self.state {
                State::Verbatim => {
                    let b = buf;
                    buf = &[];
                    self.meta(b)?;
                }
                State::Header { have } => {
                    let take = (512 - *have).min(buf.len());
                    self.block[*have..*have + take].copy_from_slice(&buf[..take]);
                    *have += take;
                    buf = &buf[take..];
                    if *have == 512 {
                        self.header_done()?;
                    }
                }
                State::Meta { remaining, capture } => {
                    let take = (*remaining).min(buf.len() as u64) as usize;
                    *remaining -= take as u64;
                    let (cap, done) = (*capture, *remaining == 0);
                    if cap != Capture::None {
                        if self.captured.len() + take <= MAX_CAPTURE {
                            self.captured.extend_from_slice(&buf[..take]);
                        } else {
                            self.capture_overflow = true;
                        }
                    }
                    let (now, rest) = buf.split_at(take);
                    self.meta(now)?;
                    buf = rest;
                    if done {
                        self.capture_done(cap);
                        self.state = State::Header { have: 0 };
                    }
                }
                State::Body { remaining, pad } => {
                    let take = (*remaining).min(buf.len() as u64) as usize;
                    *remaining -= take as u64;
                    buf = &buf[take..];
                    if *remaining == 0 {
                        let pad = *pad;
                        self.state = if pad > 0 {
                            State::Meta {
                                remaining: pad,
                                capture: Capture::None,
                            }
                        } else {
                            State::Header { have: 0 }
                        };
                    }
                }
            }
        }
        Ok(())
    }

    fn capture_done(&mut self, cap: Capture) {
        let data = std::mem::take(&mut self.captured);
        let overflow = std::mem::replace(&mut self.capture_overflow, false);
        if overflow {
            // Unknown name: the next body is kept verbatim.
            self.next_path = Some(Vec::new());
            return;
        }
        match cap {
            Capture::LongName => {
                let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
                self.next_path = Some(data[..end].to_vec());
            }
            Capture::Pax => {
                for (k, v) in pax_records(&data) {
                    match k {
                        b"path" => self.next_path = Some(v.to_vec()),
                        b"size" => {
                            self.next_size =
                                std::str::from_utf8(v).ok().and_then(|s| s.parse().ok())
                        }
                        _ => {}
                    }
                }
            }
            Capture::None => {}
        }
    }

    fn header_done(&mut self) -> io::Result<()> {
        let block = *self.block;
        self.meta(&block)?;
        if block.iter().all(|b| *b == 0) {
            self.state = State::Header { have: 0 };
            return Ok(());
        }
        if !checksum_ok(&block) {
            self.state = State::Verbatim;
            return Ok(());
        }
        let Some(size) = parse_size(&block[124..136]) else {
            self.state = State::Verbatim;
            return Ok(());
        };
        let kind = block[156];
        let pad = |n: u64| (512 - n % 512) % 512;
        match kind {
            b'x' | b'L' | b'g' | b'K' => {
                let capture = match kind {
                    b'x' => Capture::Pax,
                    b'L' => Capture::LongName,
                    _ => Capture::None,
                };
                self.captured.clear();
                let total = size + pad(size);
                self.state = if total == 0 {
                    self.capture_done(capture);
                    State::Header { have: 0 }
                } else {
                    State::Meta {
                        remaining: total,
                        capture,
                    }
                };
            }
            _ => {
                let path = self.next_path.take().unwrap_or_else(|| header_name(&block));
                let size = self.next_size.take().unwrap_or(size);
                let regular = matches!(kind, b'0' | 0 | b'7');
                let normalized = crate::paths::normalize(&path)
                    .ok()
                    .filter(|p| !p.as_os_str().is_empty());
                match (regular && size > 0, normalized) {
                    (true, Some(p)) => {
                        self.flush_meta()?;
                        let pb = p.as_os_str().as_bytes();
                        self.enc.write_all(b"B")?;
                        self.enc.write_all(&(pb.len() as u32).to_le_bytes())?;
                        self.enc.write_all(pb)?;
                        self.enc.write_all(&size.to_le_bytes())?;
                        self.state = State::Body {
                            remaining: size,
                            pad: pad(size),
                        };
                    }
                    _ => {
                        let total = size + pad(size);
                        self.state = if total == 0 {
                            State::Header { have: 0 }
                        } else {
                            State::Meta {
                                remaining: total,
                                capture: Capture::None,
                            }
                        };
                    }
                }
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for TarSplitRecorder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tar_size += n as u64;
        if self.error.is_none() {
            if let Err(e) = self.feed(&buf[..n]) {
                self.error = Some(e);
            }
        }
        Ok(n)
    }
}

fn checksum_ok(b: &[u8; 512]) -> bool {
    let Some(want) = parse_octal(&b[148..156]) else {
        return false;
    };
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &c) in b.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += c as u64;
        signed += (c as i8) as i64;
    }
    want == unsigned || want as i64 == signed
}

fn parse_octal(f: &[u8]) -> Option<u64> {
    let s: Vec<u8> = f
        .iter()
        .copied()
        .skip_while(|c| *c == b' ')
        .take_while(|c| *c != 0 && *c != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&s).ok()?, 8).ok()
}

fn parse_size(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        // GNU base-256.
        let mut v: u64 = (f[0] & 0x7f) as u64;
        for &c in &f[1..] {
            v = v.checked_mul(256)?.checked_add(c as u64)?;
        }
        return Some(v);
    }
    parse_octal(f)
}

fn header_name(b: &[u8; 512]) -> Vec<u8> {
    let cstr = |f: &[u8]| f[..f.iter().position(|c| *c == 0).unwrap_or(f.len())].to_vec();
    let name = cstr(&b[0..100]);
    let ustar = &b[257..263] == b"ustar\0";
    let prefix = if ustar {
        cstr(&b[345..500])
    } else {
        Vec::new()
    };
    if prefix.is_empty() {
        name
    } else {
        let mut p = prefix;
        p.push(b'/');
        p.extend_from_slice(&name);
        p
    }
}

fn pax_records(data: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let Some(sp) = rest.iter().position(|b| *b == b' ') else {
            break;
        };
        let Some(len) = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        if len <= sp + 1 || len > rest.len() {
            break;
        }
        let rec = &rest[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(eq) = rec.iter().position(|b| *b == b'=') {
            out.push((&rec[..eq], &rec[eq + 1..]));
        }
        rest = &rest[len..];
    }
    out
}

/// Rebuild the tar described by `tar_split` from the files under `root`,
/// writing it to `out`. Returns the number of bytes written.
pub fn replay_tar(tar_split: &[u8], root: &Path, out: &mut dyn Write) -> io::Result<u64> {
    let mut dec = zstd::stream::Decoder::new(tar_split)?;
    let mut written = 0u64;
    let mut buf = vec![0u8; 128 * 1024];
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    loop {
        let mut tag = [0u8; 1];
        dec.read_exact(&mut tag)
            .map_err(|e| bad(format!("tar-split stream ends early: {e}")))?;
        match tag[0] {
            b'E' => return Ok(written),
            b'M' => {
                let mut l = [0u8; 4];
                dec.read_exact(&mut l)?;
                let n = u32::from_le_bytes(l) as u64;
                let copied = io::copy(&mut (&mut dec).take(n), out)?;
                if copied != n {
                    return Err(bad("tar-split stream ends inside a verbatim run".into()));
                }
                written += n;
            }
            b'B' => {
                let mut l = [0u8; 4];
                dec.read_exact(&mut l)?;
                let plen = u32::from_le_bytes(l) as usize;
                if plen > crate::paths::MAX_PATH_LEN {
                    return Err(bad("tar-split path too long".into()));
                }
                let mut p = vec![0u8; plen];
                dec.read_exact(&mut p)?;
                let mut s = [0u8; 8];
                dec.read_exact(&mut s)?;
                let size = u64::from_le_bytes(s);
                let rel = crate::paths::normalize(&p)
                    .map_err(|_| bad("tar-split path climbs out".into()))?;
                let path = root.join(&rel);
                let mut f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", rel.display())))?;
                let mut left = size;
                while left > 0 {
                    let want = buf.len().min(left as usize);
                    let n = f.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(bad(format!(
                            "{}: file is shorter than its tar entry ({size} bytes)",
                            rel.display()
                        )));
                    }
                    out.write_all(&buf[..n])?;
                    left -= n as u64;
                }
                let mut probe = [0u8; 1];
                if f.read(&mut probe)? != 0 {
                    return Err(bad(format!(
                        "{}: file is longer than its tar entry ({size} bytes)",
                        rel.display()
                    )));
                }
                written += size;
            }
            t => return Err(bad(format!("tar-split stream has unknown op {t:#x}"))),
        }
    }
}
