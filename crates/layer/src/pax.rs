//! Bounding and parsing the extension headers in front of each tar entry.
//!
//! The `tar` crate reads GNU long names and PAX records into memory without
//! any size limit, and parses PAX records by splitting on newlines, which
//! breaks on binary xattr values (a `security.capability` can contain 0x0a)
//! and then silently drops the `uid`, `gid` and `size` records that follow.
//! So the reader under the parser records the bytes it consumes between two
//! entries, refuses to hand out more than [`META_BUDGET`] of them, and this
//! module finds the PAX header among them and parses it by its length prefixes.

use std::cell::RefCell;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::rc::Rc;

/// Largest PAX extension data accepted for one entry.
pub const MAX_PAX_LEN: usize = 1 << 20;

/// Bytes the tar parser may consume while looking for the next entry:
/// padding, headers, GNU long names, PAX records and GNU sparse maps.
pub(crate) const META_BUDGET: u64 = MAX_PAX_LEN as u64 + 64 * 1024;

const BLOCK: u64 = 512;

/// Shared between [`Guarded`] (inside the tar parser) and the apply loop.
#[derive(Default)]
pub(crate) struct Recorder {
    /// Bytes read from the stream so far.
    pos: u64,
    recording: bool,
    /// Stream offset of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
    tripped: bool,
}

impl Recorder {
    /// Start recording (and budgeting) what the parser reads.
    pub fn start(&mut self) {
        self.recording = true;
        self.start = self.pos;
        self.buf.clear();
        self.tripped = false;
    }

    /// Stop recording; true if the budget was exceeded.
    pub fn stop(&mut self) -> bool {
        self.recording = false;
        self.tripped
    }

    /// The PAX data recorded for the entry whose header is at `header_pos`.
    pub fn pax_data(&self, header_pos: u64) -> Result<Option<&[u8]>, String> {
        find_pax(&self.buf, self.start, header_pos)
    }
}

/// The reader handed to the tar parser.
pub(crate) struct Guarded<R> {
    pub inner: R,
    pub rec: Rc<RefCell<Recorder>>,
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut rec = self.rec.borrow_mut();
        let n = if rec.recording {
            let room = META_BUDGET.saturating_sub(rec.buf.len() as u64);
            if room == 0 && !buf.is_empty() {
                rec.tripped = true;
                return Err(io::Error::other(
                    "tar extension headers exceed the size limit",
                ));
            }
            let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            let n = self.inner.read(&mut buf[..want])?;
            rec.buf.extend_from_slice(&buf[..n]);
            n
        } else {
            self.inner.read(buf)?
        };
        rec.pos += n as u64;
        Ok(n)
    }
}

/// Walk the headers recorded from stream offset `start` up to the entry
/// header at `main`, and return the data of the PAX (`x`) header among them.
fn find_pax(rec: &[u8], start: u64, main: u64) -> Result<Option<&[u8]>, String> {
    let mut h = start.next_multiple_of(BLOCK);
    let mut found = None;
    while h < main {
        let off = usize::try_from(h - start).map_err(|e| e.to_string())?;
        let block = rec
            .get(off..off + BLOCK as usize)
            .ok_or("extension header outside the recorded bytes")?;
        let hdr = tar::Header::from_byte_slice(block);
        let size = hdr
            .entry_size()
            .map_err(|e| format!("extension header size: {e}"))?;
        let et = hdr.entry_type();
        if et.is_pax_local_extensions() {
            let data = usize::try_from(size)
                .ok()
                .and_then(|s| rec.get(off + 512..(off + 512).checked_add(s)?));
            found = Some(data.ok_or("PAX data outside the recorded bytes")?);
        } else if !(et.is_gnu_longname() || et.is_gnu_longlink()) {
            return Err(format!(
                "unexpected header type {:?} before the entry",
                et.as_byte() as char
            ));
        }
        h = size
            .checked_next_multiple_of(BLOCK)
            .and_then(|s| h.checked_add(BLOCK + s))
            .ok_or("extension header size overflows")?;
    }
    if h != main {
        return Err("extension headers do not line up with the entry header".into());
    }
    Ok(found)
}

/// The PAX records this crate acts on.
#[derive(Debug, Default)]
pub(crate) struct Pax {
    pub path: Option<Vec<u8>>,
    pub linkpath: Option<Vec<u8>>,
    pub uid: Option<u64>,
    pub gid: Option<u64>,
    pub size: Option<u64>,
    /// Seconds and nanoseconds.
    pub mtime: Option<(i64, i64)>,
    /// `SCHILY.xattr.NAME` records, in order.
    pub xattrs: Vec<(OsString, Vec<u8>)>,
}

/// Parse PAX records (`"<len> <key>=<value>\n"`, `len` counting the whole record).
pub(crate) fn parse(data: &[u8]) -> Result<Pax, String> {
    let mut pax = Pax::default();
    let mut i = 0;
    while i < data.len() {
        let rest = &data[i..];
        // Some writers pad the data with NULs; nothing follows them.
        if rest[0] == 0 {
            break;
        }
        let sp = rest
            .iter()
            .take(21)
            .position(|b| *b == b' ')
            .ok_or("record without a length")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or("record length is not a number")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(format!("record length {len} does not match the data"));
        }
        let kv = &rest[sp + 1..len - 1];
        let eq = kv
            .iter()
            .position(|b| *b == b'=')
            .ok_or("record without '='")?;
        let (key, value) = (&kv[..eq], &kv[eq + 1..]);
        apply_record(&mut pax, key, value)?;
        i += len;
    }
    Ok(pax)
}

fn apply_record(pax: &mut Pax, key: &[u8], value: &[u8]) -> Result<(), String> {
    let num = |v: &[u8]| -> Result<u64, String> {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{} is not a number", String::from_utf8_lossy(key)))
    };
    // An empty value deletes the key (POSIX), which for us means "not set".
    let some = |v: &[u8]| (!v.is_empty()).then(|| v.to_vec());
    match key {
        b"path" => pax.path = some(value),
        b"linkpath" => pax.linkpath = some(value),
        b"uid" if !value.is_empty() => pax.uid = Some(num(value)?),
        b"gid" if !value.is_empty() => pax.gid = Some(num(value)?),
        b"size" if !value.is_empty() => pax.size = Some(num(value)?),
        b"mtime" if !value.is_empty() => {
            pax.mtime = Some(parse_time(value).ok_or("mtime is not a time")?)
        }
        _ => {
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                if !name.is_empty() {
                    pax.xattrs
                        .push((OsString::from_vec(name.to_vec()), value.to_vec()));
                }
            }
        }
    }
    Ok(())
}

/// Parse a PAX time, `[-]SECONDS[.FRACTION]`, into seconds and nanoseconds.
fn parse_time(v: &[u8]) -> Option<(i64, i64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nsec: i64 = 0;
    for (k, d) in frac.bytes().take(9).enumerate() {
        nsec += i64::from(d - b'0') * 10i64.pow(8 - k as u32);
    }
    Some(match (neg, nsec) {
        (false, _) => (secs, nsec),
        (true, 0) => (-secs, 0),
        (true, n) => (-secs - 1, 1_000_000_000 - n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, value: &[u8]) -> Vec<u8> {
        let body_len = key.len() + value.len() + 3;
        let mut len = body_len + 1;
        while len.to_string().len() + body_len != len {
            len += 1;
        }
        let mut r = format!("{len} {key}=").into_bytes();
        r.extend_from_slice(value);
        r.push(b'\n');
        r
    }

    #[test]
    fn parses_binary_xattr_then_numbers() {
        let mut data = record("SCHILY.xattr.security.capability", b"\x01\x0a\x00=\n\x02");
        data.extend(record("path", b"a/long/name"));
        data.extend(record("uid", b"100000"));
        data.extend(record("mtime", b"1700000000.5"));
        let pax = parse(&data).unwrap();
        assert_eq!(
            pax.xattrs,
            vec![(
                OsString::from("security.capability"),
                b"\x01\x0a\x00=\n\x02".to_vec()
            )]
        );
        assert_eq!(pax.path.as_deref(), Some(&b"a/long/name"[..]));
        assert_eq!(pax.uid, Some(100000));
        assert_eq!(pax.mtime, Some((1_700_000_000, 500_000_000)));
    }

    #[test]
    fn rejects_bad_lengths() {
        assert!(parse(b"99 path=x\n").is_err());
        assert!(parse(b"x path=x\n").is_err());
        assert!(parse(b"3 \n").is_err());
        assert!(parse(b"10 pathx\n\n").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time(b"12"), Some((12, 0)));
        assert_eq!(parse_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_time(b"1.1234567891"), Some((1, 123_456_789)));
        assert_eq!(parse_time(b"1.x"), None);
    }
}
