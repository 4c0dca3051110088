//! Property tests (proptest) of both directions:
//!
//! - (a) arbitrary and mutated bytes into `analyze_gzip` never panic; an
//!   error names an offset inside the input and a reason; whatever is
//!   accepted rebuilds to exactly the bytes given;
//! - (b) valid streams (flate2 at random levels with sync/full/partial
//!   flushes at random points, GNU gzip, pigz, Python zlib with random
//!   strategies, window and memory sizes; inputs with runs of 258, matches
//!   at distance 32 KiB, empty input, stored blocks, several members)
//!   round-trip exactly;
//! - (c) a recipe applied to the wrong plaintext, or a corrupted recipe
//!   (serialized bytes or its unpacked streams), never panics and never
//!   yields a stream that passes for a valid one of other content: either
//!   rebuild fails, or its output decodes (flate2) to exactly the plaintext
//!   given, or a decoder rejects it (CRC, invalid code); and the original
//!   stream comes out only from the original plaintext.
//!
//! Case counts are modest (the whole file runs in a few seconds in
//! release); `PROPTEST_CASES=N` raises them for a longer fuzzing session.
//! Failures are persisted in `tests/fuzz.proptest-regressions` (committed,
//! replayed first on every run); crashes found are also kept as named tests
//! at the end of this file.

mod common;

use std::io::Read;

use common::{roundtrip, run, sample};
use flate2::{Compress, Compression, FlushCompress, Status};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use stowage_deflate_recipe::{analyze_gzip, rebuild_gzip, Recipe, RecipeError};

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Plaintexts

/// A piece of plaintext.
#[derive(Clone, Debug)]
enum Seg {
    Bytes(Vec<u8>),
    /// A run of one byte (runs of 258 and longer: the longest match).
    Run(u8, usize),
    /// Copy `len` bytes from `back` bytes earlier (clamped to what exists).
    Copy {
        back: usize,
        len: usize,
    },
    /// Text-like sample (common::sample), up to ~70 KB.
    Sample(u64, usize),
}

fn seg() -> impl Strategy<Value = Seg> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Seg::Bytes),
        (
            any::<u8>(),
            prop_oneof![Just(258usize), Just(259), Just(516), 0..1200usize]
        )
            .prop_map(|(b, n)| Seg::Run(b, n)),
        (
            prop_oneof![Just(32768usize), Just(32767), 1..32768usize],
            prop_oneof![Just(258usize), 3..600usize]
        )
            .prop_map(|(back, len)| Seg::Copy { back, len }),
        (any::<u64>(), 0..70_000usize).prop_map(|(s, n)| Seg::Sample(s, n)),
    ]
}

fn build(segs: &[Seg]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    for s in segs {
        match s {
            Seg::Bytes(b) => out.extend_from_slice(b),
            Seg::Run(b, n) => out.extend(std::iter::repeat(*b).take(*n)),
            Seg::Copy { back, len } => {
                if out.is_empty() {
                    continue;
                }
                let back = (*back).min(out.len());
                for _ in 0..*len {
                    out.push(out[out.len() - back]);
                }
            }
            Seg::Sample(seed, n) => out.extend_from_slice(&sample(*n, *seed)),
        }
    }
    out
}

fn plaintext() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        12 => prop::collection::vec(seg(), 0..10).prop_map(|s| build(&s)),
    ]
}

// ---------------------------------------------------------------------------
// Encoders

#[derive(Clone, Copy, Debug)]
enum Flush {
    Sync,
    Full,
    Partial,
}

/// gzip header variants: they steer which encoder models are tried.
#[derive(Clone, Copy, Debug)]
enum Header {
    /// mtime 0, XFL 0, OS 255 (flate2-like / Go).
    Plain,
    /// pgzip via umoci: mtime 0x886e0900, OS 255.
    Pgzip,
    /// GNU gzip -n: OS 3.
    Gnu,
    /// Name, comment, extra field and header CRC present.
    Fields,
}

#[derive(Clone, Debug)]
enum Enc {
    /// flate2 (zlib-rs) raw deflate with flushes at the given per-mille
    /// positions, wrapped in a hand-made gzip header and trailer.
    Flate2 {
        level: u32,
        flushes: Vec<(u16, Flush)>,
        header: Header,
    },
    Gzip(u32),
    Pigz {
        level: u32,
        block_kib: u32,
        independent: bool,
    },
    /// Python zlib: level, strategy (0 default, 1 filtered, 2 Huffman only,
    /// 3 RLE, 4 fixed), memLevel, window bits.
    Python {
        level: u32,
        strategy: u32,
        mem: u32,
        wbits: u32,
    },
}

fn header_strategy() -> impl Strategy<Value = Header> {
    prop_oneof![
        Just(Header::Plain),
        Just(Header::Pgzip),
        Just(Header::Gnu),
        Just(Header::Fields)
    ]
}

fn flush_strategy() -> impl Strategy<Value = Flush> {
    prop_oneof![Just(Flush::Sync), Just(Flush::Full), Just(Flush::Partial)]
}

fn flate2_enc() -> impl Strategy<Value = Enc> {
    (
        0..=9u32,
        prop::collection::vec((0..=1000u16, flush_strategy()), 0..5),
        header_strategy(),
    )
        .prop_map(|(level, flushes, header)| Enc::Flate2 {
            level,
            flushes,
            header,
        })
}

fn tool_enc() -> impl Strategy<Value = Enc> {
    prop_oneof![
        (1..=9u32).prop_map(Enc::Gzip),
        (1..=9u32, 32..=160u32, any::<bool>()).prop_map(|(level, block_kib, independent)| {
            Enc::Pigz {
                level,
                block_kib,
                independent,
            }
        }),
        (0..=9u32, 0..=4u32, 1..=9u32, 9..=15u32).prop_map(|(level, strategy, mem, wbits)| {
            Enc::Python {
                level,
                strategy,
                mem,
                wbits,
            }
        }),
    ]
}

fn header_bytes(h: Header, level: u32) -> Vec<u8> {
    let xfl = match level {
        1 => 4,
        9 => 2,
        _ => 0,
    };
    match h {
        Header::Plain => vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 0xff],
        Header::Pgzip => vec![0x1f, 0x8b, 8, 0, 0, 9, 0x6e, 0x88, 0, 0xff],
        Header::Gnu => vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3],
        Header::Fields => {
            let mut v = vec![0x1f, 0x8b, 8, 0x1e, 1, 2, 3, 4, xfl, 3, 3, 0, 9, 8, 7];
            v.extend_from_slice(b"layer.tar\0made by proptest\0");
            let mut crc = flate2::Crc::new();
            crc.update(&v);
            v.extend_from_slice(&(crc.sum() as u16).to_le_bytes());
            v
        }
    }
}

/// Raw deflate of `data` by flate2 with flushes after the given per-mille positions.
fn deflate_raw(data: &[u8], level: u32, flushes: &[(u16, Flush)]) -> Vec<u8> {
    let mut c = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(data.len() + 1024);
    let mut cuts: Vec<(usize, FlushCompress)> = flushes
        .iter()
        .map(|&(pm, f)| {
            let f = match f {
                Flush::Sync => FlushCompress::Sync,
                Flush::Full => FlushCompress::Full,
                Flush::Partial => FlushCompress::Partial,
            };
            (data.len() * pm as usize / 1000, f)
        })
        .collect();
    cuts.sort_by_key(|c| c.0);
    cuts.push((data.len(), FlushCompress::Finish));
    let mut pos = 0usize;
    for (end, flush) in cuts {
        loop {
            if out.capacity() - out.len() < 1 << 15 {
                out.reserve(1 << 16);
            }
            let before = c.total_in();
            let st = c.compress_vec(&data[pos..end], &mut out, flush).unwrap();
            pos += (c.total_in() - before) as usize;
            let finished = if matches!(flush, FlushCompress::Finish) {
                st == Status::StreamEnd
            } else {
                pos == end && out.len() < out.capacity()
            };
            if finished {
                break;
            }
        }
    }
    out
}

fn gzip_wrap(header: Vec<u8>, deflate: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut g = header;
    g.extend_from_slice(deflate);
    let mut crc = flate2::Crc::new();
    crc.update(plain);
    g.extend_from_slice(&crc.sum().to_le_bytes());
    g.extend_from_slice(&(plain.len() as u32).to_le_bytes());
    g
}

/// Compress `data`; `None` when the external tool is missing.
fn encode(enc: &Enc, data: &[u8]) -> Option<Vec<u8>> {
    match enc {
        Enc::Flate2 {
            level,
            flushes,
            header,
        } => Some(gzip_wrap(
            header_bytes(*header, *level),
            &deflate_raw(data, *level, flushes),
            data,
        )),
        Enc::Gzip(level) => run("gzip", &[&format!("-{level}"), "-c", "-n"], data),
        Enc::Pigz {
            level,
            block_kib,
            independent,
        } => {
            let (l, b) = (format!("-{level}"), block_kib.to_string());
            let mut args = vec![l.as_str(), "-b", b.as_str(), "-c", "-n"];
            if *independent {
                args.push("-i");
            }
            run("pigz", &args, data)
        }
        Enc::Python {
            level,
            strategy,
            mem,
            wbits,
        } => {
            let script = format!(
                "import sys,zlib;c=zlib.compressobj({level},zlib.DEFLATED,{},{mem},{strategy});\
                 sys.stdout.buffer.write(c.compress(sys.stdin.buffer.read())+c.flush())",
                wbits + 16
            );
            run("python3", &["-c", &script], data)
        }
    }
}

// ---------------------------------------------------------------------------
// Checks

/// (a): analysis of any bytes: an accepted stream rebuilds exactly; an error
/// is a framing or deflate error naming an offset within the input.
fn check_analyze_any(bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut plain = Vec::new();
    match analyze_gzip(bytes, &mut plain) {
        Ok(r) => {
            let r = Recipe::from_bytes(&r.to_bytes()).expect("own recipe parses");
            let mut back = Vec::new();
            rebuild_gzip(&plain[..], &r, &mut back).expect("rebuild of an accepted stream");
            prop_assert!(back == bytes, "accepted stream does not rebuild exactly");
        }
        Err(
            RecipeError::InvalidDeflate { offset, reason }
            | RecipeError::InvalidGzip { offset, reason },
        ) => {
            prop_assert!(!reason.is_empty(), "error without reason");
            prop_assert!(
                offset <= bytes.len() as u64,
                "offset {offset} past the input ({} bytes): {reason}",
                bytes.len()
            );
        }
        Err(e) => prop_assert!(false, "unexpected error kind for bad input: {e}"),
    }
    Ok(())
}

/// (c): the output of a rebuild that was given `given` as plaintext: unless
/// it failed, it either decodes to exactly `given` or is rejected by a
/// decoder; and it equals the original stream only when `given` is the
/// original plaintext.
fn check_rebuild_output(
    res: Result<(), RecipeError>,
    out: &[u8],
    given: &[u8],
    orig_gz: &[u8],
    orig_plain: &[u8],
) -> Result<(), TestCaseError> {
    if res.is_err() {
        return Ok(());
    }
    if out == orig_gz {
        prop_assert!(
            given == orig_plain,
            "original stream rebuilt from other plaintext"
        );
        return Ok(());
    }
    let mut dec = Vec::new();
    if flate2::read::MultiGzDecoder::new(out)
        .read_to_end(&mut dec)
        .is_ok()
    {
        prop_assert!(
            dec == given,
            "rebuilt stream decodes cleanly to other content ({} bytes, given {})",
            dec.len(),
            given.len()
        );
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Delete(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0..8u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<usize>().prop_map(Mutation::Delete),
    ]
}

fn mutate(data: &mut Vec<u8>, muts: &[Mutation]) {
    for m in muts {
        let n = data.len();
        match *m {
            Mutation::Flip(i, b) if n > 0 => data[i % n] ^= 1 << b,
            Mutation::Set(i, v) if n > 0 => data[i % n] = v,
            Mutation::Truncate(i) => data.truncate(i % (n + 1)),
            Mutation::Insert(i, v) => data.insert(i % (n + 1), v),
            Mutation::Delete(i) if n > 0 => {
                data.remove(i % n);
            }
            _ => {}
        }
    }
}

/// The parts of a serialized recipe (see the `recipe` module docs), so the
/// tests can corrupt the packed streams behind zstd's back.
struct Parts {
    head: Vec<u8>,
    meta: Vec<u8>,
    toks: Vec<u8>,
}

fn varint(b: &[u8], p: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let x = b[*p];
        *p += 1;
        v |= ((x & 0x7f) as u64) << shift;
        if x < 0x80 {
            return v;
        }
        shift += 7;
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn unpack(packed: &[u8]) -> Vec<u8> {
    match packed[0] {
        0 => packed[1..].to_vec(),
        1 => zstd::decode_all(&packed[1..]).unwrap(),
        k => panic!("packing {k}"),
    }
}

fn split(bytes: &[u8]) -> Parts {
    let mut p = 4;
    match bytes[p] {
        0 => p += 1,
        1 => {
            p += 2;
            varint(bytes, &mut p);
            varint(bytes, &mut p);
        }
        2 | 3 => p += 2,
        4 => {
            p += 2;
            varint(bytes, &mut p);
            p += 1;
        }
        k => panic!("model {k}"),
    }
    let n = varint(bytes, &mut p);
    for _ in 0..n {
        varint(bytes, &mut p);
    }
    let head = bytes[..p].to_vec();
    let ml = varint(bytes, &mut p) as usize;
    let meta = unpack(&bytes[p..p + ml]);
    p += ml;
    let tl = varint(bytes, &mut p) as usize;
    let toks = unpack(&bytes[p..p + tl]);
    Parts { head, meta, toks }
}

/// Serialize with both streams stored raw (packing byte 0).
fn join(parts: &Parts) -> Vec<u8> {
    let mut out = parts.head.clone();
    for s in [&parts.meta, &parts.toks] {
        put_varint(&mut out, s.len() as u64 + 1);
        out.push(0);
        out.extend_from_slice(s);
    }
    out
}

// ---------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(config(32))]

    /// (b) flate2 streams with flushes and stored blocks round-trip exactly.
    #[test]
    fn flate2_streams_roundtrip(plain in plaintext(), enc in flate2_enc()) {
        let gz = encode(&enc, &plain).unwrap();
        roundtrip(&gz, &plain);
    }

    /// (b) several members and trailing zero padding round-trip exactly.
    #[test]
    fn multi_member_roundtrip(
        a in plaintext(),
        b in plaintext(),
        e1 in flate2_enc(),
        e2 in flate2_enc(),
        pad in prop_oneof![Just(0usize), 1..600usize],
    ) {
        let mut gz = encode(&e1, &a).unwrap();
        gz.extend(encode(&e2, &b).unwrap());
        gz.extend(std::iter::repeat(0u8).take(pad));
        let mut plain = a;
        plain.extend_from_slice(&b);
        roundtrip(&gz, &plain);
    }

    /// (a) arbitrary bytes, bare or behind a gzip header.
    #[test]
    fn arbitrary_bytes_into_analyze(
        body in prop::collection::vec(any::<u8>(), 0..3000),
        header in prop_oneof![
            Just(None),
            header_strategy().prop_map(Some),
        ],
    ) {
        let mut bytes = header.map(|h| header_bytes(h, 6)).unwrap_or_default();
        bytes.extend_from_slice(&body);
        check_analyze_any(&bytes)?;
    }

    /// (a) valid streams with a few mutations.
    #[test]
    fn mutated_streams_into_analyze(
        plain in plaintext(),
        enc in flate2_enc(),
        muts in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut gz = encode(&enc, &plain).unwrap();
        mutate(&mut gz, &muts);
        check_analyze_any(&gz)?;
    }

    /// (c) the right recipe with the wrong plaintext.
    #[test]
    fn wrong_plaintext(
        plain in plaintext(),
        enc in flate2_enc(),
        muts in prop::collection::vec(mutation(), 1..4),
    ) {
        let gz = encode(&enc, &plain).unwrap();
        let recipe = roundtrip(&gz, &plain);
        let mut wrong = plain.clone();
        mutate(&mut wrong, &muts);
        let mut out = Vec::new();
        let res = rebuild_gzip(&wrong[..], &recipe, &mut out);
        if wrong.len() != plain.len() {
            // Usually a Mismatch; a shorter or longer plaintext can also
            // derail the model first, which reads as an invalid recipe.
            prop_assert!(res.is_err(), "plaintext of the wrong length not rejected");
        }
        check_rebuild_output(res, &out, &wrong, &gz, &plain)?;
    }

    /// (c) corrupted recipes: the serialized bytes, or the unpacked meta
    /// and token streams (re-serialized raw, past zstd's checks).
    #[test]
    fn corrupted_recipe(
        plain in plaintext(),
        enc in flate2_enc(),
        target in 0..3u8,
        muts in prop::collection::vec(mutation(), 1..4),
    ) {
        let gz = encode(&enc, &plain).unwrap();
        let recipe = roundtrip(&gz, &plain);
        let bytes = recipe.to_bytes();
        let bad = match target {
            0 => {
                let mut b = bytes.clone();
                mutate(&mut b, &muts);
                b
            }
            t => {
                let mut parts = split(&bytes);
                let s = if t == 1 { &mut parts.meta } else { &mut parts.toks };
                mutate(s, &muts);
                join(&parts)
            }
        };
        if let Ok(r) = Recipe::from_bytes(&bad) {
            let mut out = Vec::new();
            let res = rebuild_gzip(&plain[..], &r, &mut out);
            check_rebuild_output(res, &out, &plain, &gz, &plain)?;
        }
    }
}

proptest! {
    #![proptest_config(config(8))]

    /// (b) streams of real encoders (GNU gzip, pigz, Python zlib with every
    /// strategy, small windows and memLevels) round-trip exactly.
    #[test]
    fn tool_streams_roundtrip(plain in plaintext(), enc in tool_enc()) {
        let Some(gz) = encode(&enc, &plain) else {
            common::skip(&format!("encoder for {enc:?}"));
            return Ok(());
        };
        roundtrip(&gz, &plain);
    }

    /// (c) wrong plaintext against model-predicted recipes.
    #[test]
    fn wrong_plaintext_model_recipes(
        plain in plaintext(),
        enc in tool_enc(),
        muts in prop::collection::vec(mutation(), 1..4),
    ) {
        let Some(gz) = encode(&enc, &plain) else {
            common::skip(&format!("encoder for {enc:?}"));
            return Ok(());
        };
        let recipe = roundtrip(&gz, &plain);
        let mut wrong = plain.clone();
        mutate(&mut wrong, &muts);
        let mut out = Vec::new();
        let res = rebuild_gzip(&wrong[..], &recipe, &mut out);
        check_rebuild_output(res, &out, &wrong, &gz, &plain)?;
    }
}

// ---------------------------------------------------------------------------
// Cases found by the properties above, kept as named tests.

fn fixture(name: &str) -> (Vec<u8>, Vec<u8>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/fuzz")
        .join(name);
    let gz = std::fs::read(path).unwrap();
    let mut plain = Vec::new();
    flate2::read::MultiGzDecoder::new(&gz[..])
        .read_to_end(&mut plain)
        .unwrap();
    (gz, plain)
}

/// Found by `multi_member_roundtrip`: a GNU-headed member (259 bytes, level
/// 1), then a member with a full flush 35 bytes in. The flush marker in the
/// second member taught the pigz candidate a 35-byte block size, which the
/// rebuild then applied to the first member too ("blocks end before the
/// member's plaintext"). Block sizes are now learnt in the first member only.
#[test]
fn late_member_flush_does_not_change_the_model() {
    let (gz, plain) = fixture("multi_member_late_flush.gz");
    roundtrip(&gz, &plain);
}
