//! Hand-made and randomly generated streams: every valid stream must
//! round-trip bit-exactly; invalid ones must fail with an offset and reason.

use std::io::Read;

use crate::bits::BitWriter;
use crate::hdrpred::{go_header, go_lengths, Freqs};
use crate::tokens::{BlockHead, BlockKind, DynHeader, Token, IRREGULAR_258};
use crate::writer::write_block;
use crate::{analyze_gzip, rebuild_gzip, Recipe, RecipeError};

/// A block to craft: head and tokens (literal bytes inside).
type Craft = (BlockHead, Vec<Token>);

/// Write raw deflate from crafted blocks, with `end_pad` after the last one.
fn deflate(blocks: &[Craft], end_pad: u32) -> Vec<u8> {
    let mut bw = BitWriter::new(Vec::new());
    for (h, t) in blocks {
        write_block(&mut bw, h, t).unwrap();
    }
    bw.align(end_pad);
    bw.finish().unwrap()
}

/// Plaintext of crafted tokens.
fn plain_of(blocks: &[Craft]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    for (_, toks) in blocks {
        for t in toks {
            if t.is_lit() {
                out.push(t.raw_len() as u8);
            } else {
                let d = t.dist() as usize;
                for _ in 0..t.span() {
                    out.push(out[out.len() - d]);
                }
            }
        }
    }
    out
}

fn gzip_wrap(deflate: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut g = vec![0x1f, 0x8b, 8, 0, 0, 9, 0x6e, 0x88, 0, 0xff];
    g.extend_from_slice(deflate);
    let mut crc = flate2::Crc::new();
    crc.update(plain);
    g.extend_from_slice(&crc.sum().to_le_bytes());
    g.extend_from_slice(&(plain.len() as u32).to_le_bytes());
    g
}

fn roundtrip(gz: &[u8], plain: &[u8]) -> Recipe {
    let mut out = Vec::new();
    let r = analyze_gzip(gz, &mut out).expect("analyze");
    assert!(out == plain, "plaintext differs");
    let r = Recipe::from_bytes(&r.to_bytes()).unwrap();
    let mut back = Vec::new();
    rebuild_gzip(plain, &r, &mut back).expect("rebuild");
    assert!(back == gz, "rebuilt bytes differ");
    r
}

fn check(blocks: &[Craft], end_pad: u32, reference_decoder: bool) {
    let d = deflate(blocks, end_pad);
    let plain = plain_of(blocks);
    if reference_decoder {
        let mut got = Vec::new();
        flate2::read::DeflateDecoder::new(&d[..])
            .read_to_end(&mut got)
            .expect("reference decoder accepts the crafted stream");
        assert_eq!(got, plain);
    }
    roundtrip(&gzip_wrap(&d, &plain), &plain);
}

fn lits(b: &[u8]) -> Vec<Token> {
    b.iter().map(|&v| Token::lit(v)).collect()
}

fn head(last: bool, kind: BlockKind) -> BlockHead {
    BlockHead { last, kind }
}

fn dyn_for(toks: &[Token]) -> BlockKind {
    let mut f = Freqs::default();
    f.add(toks);
    let mut lit = f.lit.to_vec();
    lit[256] = 1;
    let ll = go_lengths(&lit, 15);
    let mut dl = go_lengths(&f.dist, 15);
    if dl.iter().all(|&l| l == 0) {
        dl[0] = 1;
    }
    BlockKind::Dynamic(Box::new(go_header(&ll, &dl)))
}

#[test]
fn stored_blocks_with_padding() {
    let data: Vec<u8> = (0..70000u32).map(|i| (i * 7 % 251) as u8).collect();
    let blocks = vec![
        (head(false, BlockKind::Stored { len: 0, pad: 0 }), vec![]),
        (head(false, BlockKind::Fixed), lits(b"ab")),
        (
            head(
                false,
                BlockKind::Stored {
                    len: 3,
                    pad: 0b10101,
                },
            ),
            lits(b"xyz"),
        ),
        (
            head(false, BlockKind::Stored { len: 65535, pad: 0 }),
            lits(&data[..65535]),
        ),
        (head(true, BlockKind::Stored { len: 0, pad: 0 }), vec![]),
    ];
    check(&blocks, 0, true);
}

#[test]
fn empty_final_fixed_block_and_end_padding() {
    check(&[(head(true, BlockKind::Fixed), vec![])], 0, true);
    check(
        &[(head(true, BlockKind::Fixed), lits(b"hello"))],
        0b101,
        true,
    );
}

#[test]
fn long_matches_and_far_distances() {
    let mut toks = lits(b"a");
    toks.push(Token::matched(258, 1));
    toks.push(Token::matched(IRREGULAR_258, 1));
    let filler: Vec<u8> = (0..32800u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    toks.extend(lits(&filler));
    toks.push(Token::matched(100, 32768));
    toks.push(Token::matched(3, 32768));
    toks.push(Token::matched(257, 32767));
    check(&[(head(true, BlockKind::Fixed), toks.clone())], 0, true);
    let kind = dyn_for(&toks);
    check(&[(head(true, kind), toks)], 0, true);
}

#[test]
fn single_code_and_empty_distance_trees() {
    // Go style: one distance code of one bit.
    let mut toks = lits(b"abcabc");
    toks.push(Token::matched(6, 3));
    let kind = dyn_for(&toks);
    if let BlockKind::Dynamic(h) = &kind {
        assert_eq!(h.lengths().1.iter().filter(|&&l| l > 0).count(), 1);
    }
    check(&[(head(true, kind), toks)], 0, true);
    // Literal-only block with a zero-length distance tree.
    let toks = lits(b"just literals here");
    let mut f = Freqs::default();
    f.add(&toks);
    let mut lit = f.lit.to_vec();
    lit[256] = 1;
    let h = go_header(&go_lengths(&lit, 15), &[0]);
    check(
        &[(head(true, BlockKind::Dynamic(Box::new(h))), toks)],
        0,
        true,
    );
    // Only one literal/length code in use besides EOB (two one-bit codes).
    let toks = lits(b"zzzzzz");
    let kind = dyn_for(&toks);
    check(&[(head(true, kind), toks)], 0, true);
}

#[test]
fn odd_header_encodings() {
    let toks = lits(b"header oddities, header oddities");
    let mut f = Freqs::default();
    f.add(&toks);
    let mut lit = f.lit.to_vec();
    lit[256] = 1;
    let ll = go_lengths(&lit, 15);
    let base = go_header(&ll, &[1, 0, 0, 0]);
    // Same lengths sent as literal symbols only, with every code-length code
    // length present (HCLEN 19) and a repeat of zero via 16.
    let (l, d) = base.lengths();
    let mut rle: Vec<(u8, u8)> = Vec::new();
    let all: Vec<u8> = l.iter().chain(d.iter()).copied().collect();
    let mut i = 0;
    while i < all.len() {
        if all[i] == 0
            && i > 0
            && all[i - 1] == 0
            && i + 3 <= all.len()
            && all[i..i + 3] == [0, 0, 0]
        {
            rle.push((16, 0));
            i += 3;
        } else {
            rle.push((all[i], 0));
            i += 1;
        }
    }
    let mut cl_freq = [0u32; 19];
    for &(s, _) in &rle {
        cl_freq[s as usize] += 1;
    }
    let mut cl = go_lengths(&cl_freq, 7);
    // Fill unused code-length symbols is not allowed (must stay a valid code), so keep them 0.
    cl.resize(19, 0);
    let mut cl_lens = [0u8; 19];
    cl_lens.copy_from_slice(&cl);
    let h = DynHeader {
        hlit: base.hlit,
        hdist: base.hdist,
        hclen: 19,
        cl_lens,
        rle,
    };
    check(
        &[(head(true, BlockKind::Dynamic(Box::new(h))), toks)],
        0,
        true,
    );
}

/// Small deterministic generator for the random tests.
pub(crate) struct Lcg(pub(crate) u64);
impl Lcg {
    pub(crate) fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn below(&mut self, n: u32) -> u32 {
        self.next() % n.max(1)
    }
}

/// Random valid streams: random tokens, block types, paddings and headers.
#[test]
fn random_streams_roundtrip() {
    let mut rng = Lcg(12345);
    let iters: u32 = std::env::var("STOWAGE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    for _ in 0..iters {
        let mut blocks: Vec<Craft> = Vec::new();
        let mut produced = 0usize;
        let nblocks = 1 + rng.below(5);
        for bi in 0..nblocks {
            let last = bi + 1 == nblocks;
            let mut toks = Vec::new();
            let cap = if rng.below(4) == 0 { 3000 } else { 60 };
            let ntok = rng.below(cap);
            let alphabet = 1 + rng.below(255);
            for _ in 0..ntok {
                if produced > 0 && rng.below(3) == 0 {
                    let dist = 1 + rng.below(produced.min(32768) as u32);
                    let len = match rng.below(5) {
                        0 => 258,
                        1 => IRREGULAR_258,
                        _ => 3 + rng.below(256) as u16,
                    };
                    toks.push(Token::matched(len, dist as u16));
                    produced += toks.last().unwrap().span();
                } else {
                    toks.push(Token::lit(rng.below(alphabet) as u8));
                    produced += 1;
                }
            }
            let kind = match rng.below(3) {
                0 if toks.iter().all(|t| t.is_lit()) => BlockKind::Stored {
                    len: toks.len() as u16,
                    pad: rng.below(128) as u8,
                },
                1 => BlockKind::Fixed,
                _ => dyn_for(&toks),
            };
            blocks.push((head(last, kind), toks));
        }
        check(&blocks, rng.below(128), true);
    }
}

/// Corrupted gzip bytes must never panic; whatever analyses must rebuild exactly.
#[test]
fn corrupted_streams_never_panic() {
    use std::io::Write;
    let data: Vec<u8> = (0..20000u32)
        .map(|i| b"some text to squeeze "[(i % 21) as usize] ^ (i / 997) as u8)
        .collect();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(&data).unwrap();
    let gz = e.finish().unwrap();
    let mut rng = Lcg(99);
    let mut accepted = 0;
    let iters: u32 = std::env::var("STOWAGE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for _ in 0..iters {
        let mut bad = gz.clone();
        for _ in 0..1 + rng.below(3) {
            let i = 10 + rng.below(bad.len() as u32 - 10) as usize;
            bad[i] ^= 1 << rng.below(8);
        }
        if rng.below(5) == 0 {
            bad.truncate(rng.below(bad.len() as u32) as usize);
        }
        let mut out = Vec::new();
        match analyze_gzip(&bad[..], &mut out) {
            Ok(r) => {
                accepted += 1;
                let mut back = Vec::new();
                rebuild_gzip(&out[..], &r, &mut back).expect("rebuild of accepted stream");
                assert!(back == bad);
            }
            Err(
                RecipeError::InvalidDeflate { reason, .. }
                | RecipeError::InvalidGzip { reason, .. },
            ) => {
                assert!(!reason.is_empty());
            }
            Err(e) => panic!("unexpected error kind: {e}"),
        }
    }
    eprintln!("{accepted} of {iters} corrupted streams were still valid");
}

fn oversubscribed() -> Vec<u8> {
    let mut bw = BitWriter::new(Vec::new());
    bw.put(1, 1);
    bw.put(2, 2);
    bw.put(0, 5);
    bw.put(0, 5);
    bw.put(15, 4);
    for _ in 0..19 {
        bw.put(1, 3);
    }
    bw.align(0);
    bw.finish().unwrap()
}

#[test]
fn invalid_streams_name_offset_and_reason() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![0x07], "invalid block type"),
        (
            vec![0x01, 0x05, 0x00, 0x00, 0x00],
            "does not match its complement",
        ),
        (vec![0x01, 0x05, 0x00, 0xfa, 0xff, b'a'], "truncated"),
        // Fixed block: match with distance 1 but no history.
        (
            deflate(
                &[(head(true, BlockKind::Fixed), vec![Token::matched(3, 1)])],
                0,
            ),
            "too far back",
        ),
        // Dynamic header with an over-subscribed code-length code (all 19 lengths 1).
        (oversubscribed(), "over-subscribed"),
    ];
    for (d, want) in cases {
        let gz = gzip_wrap(&d, b"");
        let err = analyze_gzip(&gz[..], Vec::new()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(want), "{msg:?} should mention {want:?}");
        assert!(msg.contains("at byte"), "{msg:?} should name the offset");
    }
}

#[test]
fn wrong_plaintext_is_not_accepted_silently() {
    let blocks = vec![(head(true, BlockKind::Fixed), lits(b"hello hello hello"))];
    let d = deflate(&blocks, 0);
    let plain = plain_of(&blocks);
    let gz = gzip_wrap(&d, &plain);
    let r = roundtrip(&gz, &plain);
    let mut out = Vec::new();
    assert!(rebuild_gzip(&b"hello"[..], &r, &mut out).is_err());
    let mut out = Vec::new();
    let res = rebuild_gzip(&b"jello hello hello"[..], &r, &mut out);
    assert!(res.is_err() || out != gz);
}

/// Corrupted recipes must never panic: rebuild either fails or writes
/// something (which the caller's digest check rejects).
#[test]
fn corrupted_recipes_never_panic() {
    use std::io::Write;
    let data: Vec<u8> = (0..60000u32)
        .map(|i| b"corrupt me softly, "[(i % 19) as usize] ^ (i / 1013) as u8)
        .collect();
    let mut streams = Vec::new();
    for level in [1, 6, 9] {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(&data).unwrap();
        streams.push(e.finish().unwrap());
    }
    // A hand-made stream with stored, fixed and dynamic blocks.
    let mut toks = lits(b"abcabc");
    toks.push(Token::matched(30, 3));
    let blocks = vec![
        (
            head(false, BlockKind::Stored { len: 3, pad: 0 }),
            lits(b"xyz"),
        ),
        (head(false, BlockKind::Fixed), toks.clone()),
        (head(true, dyn_for(&toks)), toks),
    ];
    let d = deflate(&blocks, 0);
    let p = plain_of(&blocks);
    streams.push(gzip_wrap(&d, &p));
    let mut rng = Lcg(7);
    for gz in &streams {
        let mut plain = Vec::new();
        let r = analyze_gzip(&gz[..], &mut plain).unwrap();
        let good = r.to_bytes();
        let iters: u32 = std::env::var("STOWAGE_FUZZ_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(400);
        for _ in 0..iters {
            let mut bad = good.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(bad.len() as u32) as usize;
                bad[i] ^= 1 << rng.below(8);
            }
            if rng.below(6) == 0 {
                bad.truncate(rng.below(bad.len() as u32) as usize);
            }
            if let Ok(r) = Recipe::from_bytes(&bad) {
                let _ = rebuild_gzip(&plain[..], &r, std::io::sink());
            }
            // Also corrupt the unpacked streams, which zstd would otherwise shield.
            let mut r2 = r.clone();
            let which = rng.below(2);
            let packed = if which == 0 { &r.meta } else { &r.toks };
            let mut raw = Vec::new();
            crate::recipe::unpack(packed)
                .unwrap()
                .read_to_end(&mut raw)
                .unwrap();
            if raw.is_empty() {
                continue;
            }
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(raw.len() as u32) as usize;
                raw[i] = match rng.below(3) {
                    0 => raw[i] ^ (1 << rng.below(8)),
                    1 => rng.below(256) as u8,
                    _ => 0xff,
                };
            }
            let repacked = crate::recipe::pack(&raw).unwrap();
            if which == 0 {
                r2.meta = repacked;
            } else {
                r2.toks = repacked;
            }
            let _ = rebuild_gzip(&plain[..], &r2, std::io::sink());
        }
    }
}

/// Found by fuzzing: header counts near 255 in a recipe overflowed a u8.
#[test]
fn recipe_header_counts_do_not_overflow() {
    let mut meta = vec![crate::recipe::TAG_MEMBER, 10];
    meta.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
    // Dynamic block, explicit header, 1 token, HLIT-257 = 0, HDIST-1 = 255.
    meta.extend_from_slice(&[2 << 1 | 8, 1, 0, 255, 255]);
    let r = Recipe {
        version: crate::FORMAT_VERSION,
        model: crate::ModelSpec::Literals,
        members: vec![1],
        meta: crate::recipe::pack(&meta).unwrap(),
        toks: crate::recipe::pack(&[]).unwrap(),
    };
    let err = rebuild_gzip(&b"a"[..], &r, std::io::sink()).unwrap_err();
    assert!(err.to_string().contains("header counts"), "{err}");
}

/// A rebuild error inside a member says which member, block and plaintext
/// offset it hit.
#[test]
fn rebuild_errors_name_the_member_and_offset() {
    let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, &plain).unwrap();
    let gz = enc.finish().unwrap();
    let recipe = roundtrip(&gz, &plain);
    let err = rebuild_gzip(&plain[..1000], &recipe, std::io::sink()).unwrap_err();
    assert!(matches!(err, RecipeError::Mismatch(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("gzip member 1 of 1, block 1"), "{msg}");
    assert!(msg.contains("plaintext shorter"), "{msg}");
}

/// `with_threads` applies to its closure on this thread only and is undone
/// afterwards, also when the closure panics.
#[test]
fn with_threads_is_scoped() {
    let outside = crate::threads();
    assert_eq!(crate::with_threads(1, crate::threads), 1);
    assert_eq!(crate::with_threads(3, crate::threads), 3);
    assert_eq!(
        crate::with_threads(3, || std::thread::spawn(crate::threads).join().unwrap()),
        outside
    );
    let _ = std::panic::catch_unwind(|| crate::with_threads(5, || panic!("inside")));
    assert_eq!(crate::threads(), outside);
}

/// A recipe claiming a stored block longer than deflate allows fails with
/// its length before the rebuild reads that much plaintext.
#[test]
fn oversized_stored_block_fails_before_reading() {
    let plain: Vec<u8> = (0..1_000_000u64)
        .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
        .collect();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    std::io::Write::write_all(&mut enc, &plain).unwrap();
    let gz = enc.finish().unwrap();
    let mut recipe = roundtrip(&gz, &plain);
    // The first block record: member tag, header, flags, size (bytes).
    let mut meta = Vec::new();
    crate::recipe::unpack(&recipe.meta)
        .unwrap()
        .read_to_end(&mut meta)
        .unwrap();
    // A LEB128 varint at the start of `b`: (value, bytes).
    let leb = |b: &[u8]| {
        let n = b.iter().position(|&x| x < 0x80).unwrap() + 1;
        let v = b[..n]
            .iter()
            .rev()
            .fold(0u64, |v, &x| v << 7 | (x & 0x7f) as u64);
        (v, n)
    };
    assert_eq!(meta[0], crate::recipe::TAG_MEMBER);
    let (header, hl) = leb(&meta[1..]);
    let at = 1 + hl + header as usize;
    assert_eq!(
        (meta[at] >> crate::recipe::BF_TYPE_SHIFT) & 3,
        0,
        "a stored block"
    );
    let (len, sl) = leb(&meta[at + 1..]);
    assert!((60_000..=0xffff).contains(&len), "{len}");
    let mut size = Vec::new();
    crate::varint::put(&mut size, 70_000);
    meta.splice(at + 1..at + 1 + sl, size);
    recipe.meta = crate::recipe::pack(&meta).unwrap();

    struct Counting<'a>(&'a [u8], usize);
    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1 += n;
            Ok(n)
        }
    }
    let mut src = Counting(&plain, 0);
    let err = rebuild_gzip(&mut src, &recipe, std::io::sink()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("stored block of 70000 bytes"), "{msg}");
    assert!(msg.contains("gzip member 1 of 1, block 1"), "{msg}");
    assert!(src.1 < 70_000, "read {} bytes of plaintext first", src.1);
}

/// The rebuild reads plaintext in 64 KiB pages (`pages.rs`): explicit
/// matches that reach back across a page boundary (every match, with the
/// literals-only model), and model chunks that straddle pages (a pigz
/// block of 100 000 bytes), rebuild exactly.
#[test]
fn matches_and_chunks_across_pages() {
    let mut r = Lcg(11);
    let words: Vec<Vec<u8>> = (0..50)
        .map(|_| {
            (0..2 + r.below(9))
                .map(|_| b'a' + r.below(26) as u8)
                .collect()
        })
        .collect();
    let mut plain = Vec::new();
    while plain.len() < 400_000 {
        plain.extend_from_slice(&words[r.below(50) as usize]);
        plain.push(if r.below(9) == 0 { b'\n' } else { b' ' });
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    std::io::Write::write_all(&mut enc, &plain).unwrap();
    let gz = enc.finish().unwrap();
    let specs = [
        crate::ModelSpec::Literals,
        crate::ModelSpec::Pigz {
            level: 6,
            block: 100_000,
            dict: true,
        },
    ];
    for spec in specs {
        let mut out = Vec::new();
        let recipe = crate::analyze::analyze_with(&gz[..], &mut out, Some(&[spec])).unwrap();
        assert!(out == plain);
        assert_eq!(recipe.model(), spec);
        for threads in [1, 2] {
            let mut back = Vec::new();
            crate::with_threads(threads, || rebuild_gzip(&plain[..], &recipe, &mut back)).unwrap();
            assert!(back == gz, "{spec:?} on {threads} threads");
        }
    }
}
