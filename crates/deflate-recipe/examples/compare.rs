//! Same-run comparison of this crate with preflate-rs on the same inputs.
//!
//! Usage:
//!
//! ```text
//! cargo run --release -p stowage-deflate-recipe --example compare -- \
//!     [--runs N] [--max-mb M] [--recompress BLOB] [--no-recompress] [FILE|DIR ...]
//! ```
//!
//! Inputs: every gzip file (magic 1f 8b) of at least 1 MB under the given
//! files/directories (searched recursively; default: the local registry's
//! blob store /var/tmp/stowage-dev/registry/docker/registry/v2/blobs/sha256),
//! skipping those whose plaintext would exceed `--max-mb` (default 200).
//! Then the plaintext (tar) of `--recompress BLOB` (default: the smallest
//! input of at least 30 MB of plaintext) is recompressed with GNU gzip
//! -1/-6/-9, pigz -6, Python zlib -6, Go compress/gzip -6 and
//! klauspost/pgzip default (the Go helper in testdata/gogzip, built with
//! Debian's Go 1.19), and each of those streams is measured too.
//!
//! For every stream and every run (default 3, medians reported):
//! - ours: `analyze_gzip` from memory to memory, `rebuild_gzip` from
//!   memory, rebuilt bytes compared with the original;
//! - preflate-rs 0.7.6: the raw deflate stream of the (single) gzip member
//!   through `PreflateStreamProcessor` (default 128 MiB plaintext chunks,
//!   `verify_compression: false`, i.e. without its built-in recompression
//!   check, which would double its analyse time) and rebuilt with
//!   `RecreateStreamProcessor`, compared with the original;
//! - the original encoder (recompressed rows only): compressing the same
//!   tar from a file to /dev/null, one thread (pigz -p 1, GOMAXPROCS=1);
//! - paired rebuilds: ours (default threads) and preflate-rs's timed back
//!   to back, alternating which goes first, 1 to 5 pairs a run (as many
//!   as fit in about a second); the table gives the median of preflate-rs's
//!   time ÷ ours over every pair, their number and range
//!   (`PAIRS_DEBUG=1` prints each pair). Why: this VM's vCPUs slow down
//!   by a quarter or more for stretches of 0.1 s to seconds, and the
//!   per-run medians above compare timings taken a whole pass over the
//!   inputs apart (BENCHMARKS.md, "The host's slow stretches").
//!
//! MB/s are MB (10^6 bytes) of plaintext (tar) per second of wall time.
//! Recipe bytes: ours is `Recipe::to_bytes().len()`; preflate's is the sum
//! of its correction chunks plus the gzip header and trailer bytes plus 4
//! bytes per chunk for the chunk's plaintext length (what a container would
//! have to keep besides the corrections).

use std::fs::File;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use preflate_rs::{PreflateConfig, PreflateStreamProcessor, RecreateStreamProcessor};
use stowage_deflate_recipe::{analyze_gzip, rebuild_gzip, recipe_kind, set_threads, Recipe};

const REGISTRY: &str = "/var/tmp/stowage-dev/registry/docker/registry/v2/blobs/sha256";
const GO: &str = "/usr/lib/go-1.19/bin/go";

/// CPU seconds used by this thread.
fn thread_cpu() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// CPU seconds (user + system) used by this process's threads.
fn process_cpu() -> f64 {
    // SAFETY: getrusage fills the zeroed struct we own.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(r.ru_utime) + tv(r.ru_stime)
}

/// CPU seconds (user + system) used by waited-for children.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the zeroed struct we own.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut r) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(r.ru_utime) + tv(r.ru_stime)
}

/// Wall and CPU time of one step: CPU of this thread, or of the whole
/// process when the step runs threads of its own.
struct Clock(Instant, f64, bool);

impl Clock {
    fn start() -> Self {
        Clock(Instant::now(), thread_cpu(), false)
    }
    fn start_process() -> Self {
        Clock(Instant::now(), process_cpu(), true)
    }
    /// MB/s of `bytes` by (wall, cpu) time.
    fn rate(&self, bytes: usize) -> (f64, f64) {
        let mb = bytes as f64 / 1e6;
        let cpu = if self.2 { process_cpu() } else { thread_cpu() };
        (mb / self.0.elapsed().as_secs_f64(), mb / (cpu - self.1))
    }
}

/// Medians of (wall, cpu) rates.
fn medians(v: &[(f64, f64)]) -> (f64, f64) {
    let mut w: Vec<f64> = v.iter().map(|x| x.0).collect();
    let mut c: Vec<f64> = v.iter().map(|x| x.1).collect();
    (median(&mut w), median(&mut c))
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn is_gzip(p: &Path) -> bool {
    let mut m = [0u8; 2];
    File::open(p).and_then(|mut f| f.read_exact(&mut m)).is_ok() && m == [0x1f, 0x8b]
}

fn walk(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)
            .expect("read dir")
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        for e in v {
            walk(&e, out);
        }
    } else if is_gzip(p) && std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) >= 1 << 20 {
        out.push(p.to_path_buf());
    }
}

/// Length of the gzip member header at the start of `gz`.
fn gzip_header_len(gz: &[u8]) -> Option<usize> {
    if gz.len() < 10 || gz[0] != 0x1f || gz[1] != 0x8b || gz[2] != 8 {
        return None;
    }
    let flg = gz[3];
    let mut p = 10;
    if flg & 4 != 0 {
        let xlen = u16::from_le_bytes([*gz.get(p)?, *gz.get(p + 1)?]) as usize;
        p += 2 + xlen;
    }
    for bit in [8u8, 16] {
        if flg & bit != 0 {
            p += gz.get(p..)?.iter().position(|&b| b == 0)? + 1;
        }
    }
    if flg & 2 != 0 {
        p += 2;
    }
    (p <= gz.len()).then_some(p)
}

/// An encoder command line: program, arguments, environment.
type EncoderCmd = (String, Vec<String>, Vec<(String, String)>);

/// A label and an encoder command line.
type NamedEncoder = (String, String, Vec<String>, Vec<(String, String)>);

/// One measured stream.
struct Input {
    label: String,
    gz: Vec<u8>,
    /// Command that made it from the tar (recompressed rows).
    encoder: Option<EncoderCmd>,
}

#[derive(Default)]
struct Row {
    tar: usize,
    ours_kind: String,
    ours_recipe: usize,
    /// One thread: (wall, thread CPU).
    ours_a: Vec<(f64, f64)>,
    ours_r: Vec<(f64, f64)>,
    /// Default threads: (wall, process CPU).
    par_a: Vec<(f64, f64)>,
    par_r: Vec<(f64, f64)>,
    ours_ok: bool,
    pf_recipe: Option<usize>,
    pf_chunks: usize,
    pf_err: Option<String>,
    pf_a: Vec<(f64, f64)>,
    pf_r: Vec<(f64, f64)>,
    pf_ok: bool,
    enc: Vec<(f64, f64)>,
    /// Rebuilds timed in pairs (see `pairs`): preflate-rs's wall time ÷
    /// ours on the default threads, one per pair.
    paired: Vec<f64>,
}

/// What preflate-rs's rebuild needs: the gzip header length, its chunks
/// (corrections, plaintext) and the member's trailer.
struct PfKept {
    header: usize,
    chunks: Vec<(Vec<u8>, Vec<u8>)>,
    tail: Vec<u8>,
}

/// What a rebuild needs, kept from the analyses of one run.
struct Kept {
    plain: Vec<u8>,
    recipe: Recipe,
    pf: Option<PfKept>,
}

/// Our rebuild on the default threads: wall seconds.
fn ours_rebuild(k: &Kept, gz: &[u8]) -> f64 {
    set_threads(0);
    let mut out = Vec::with_capacity(gz.len());
    let t = Instant::now();
    rebuild_gzip(&k.plain[..], &k.recipe, &mut out).expect("our rebuild");
    let s = t.elapsed().as_secs_f64();
    assert!(out == gz, "our rebuild differs");
    s
}

/// preflate-rs's rebuild of the gzip member `gz` from what it analysed.
fn pf_recreate(k: &PfKept, gz: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(gz.len());
    out.extend_from_slice(&gz[..k.header]);
    let mut rec = RecreateStreamProcessor::new();
    for (corr, plain) in &k.chunks {
        let (bytes, _) = rec
            .recompress(&mut Cursor::new(&plain[..]), corr)
            .map_err(|e| format!("rebuild {:?}: {}", e.exit_code(), first_line(e.message())))?;
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(&k.tail);
    Ok(out)
}

/// `pf_recreate` of a member it rebuilt before: wall seconds.
fn pf_rebuild(k: &PfKept, gz: &[u8]) -> f64 {
    let t = Instant::now();
    let out = pf_recreate(k, gz).expect("preflate-rs rebuilt it before");
    let s = t.elapsed().as_secs_f64();
    assert!(out == gz, "preflate-rs's rebuild differs");
    s
}

/// Rebuilds timed back to back, ours and preflate-rs's alternating, as
/// many pairs as fit in about a second (1 to 5): this host's vCPUs slow
/// down by a quarter or more for stretches of 0.1 s to seconds
/// (BENCHMARKS.md), and timings minutes apart then compare a slow
/// stretch with a calm one.
fn pairs(k: &Kept, gz: &[u8], row: &mut Row) {
    let Some(pf) = &k.pf else {
        return;
    };
    let mut n = 5;
    let mut i = 0;
    while i < n {
        let (o, p) = if i % 2 == 0 {
            let o = ours_rebuild(k, gz);
            (o, pf_rebuild(pf, gz))
        } else {
            let p = pf_rebuild(pf, gz);
            (ours_rebuild(k, gz), p)
        };
        row.paired.push(p / o);
        if std::env::var_os("PAIRS_DEBUG").is_some() {
            eprintln!(
                "pair {i}: ours {:.1} ms, preflate-rs {:.1} ms",
                o * 1e3,
                p * 1e3
            );
        }
        if i == 0 {
            n = ((1.0 / (o + p)) as usize).clamp(1, 5);
        }
        i += 1;
    }
}

/// Ours on one thread (`threads` 1) or on the default thread count (0).
fn ours(gz: &[u8], row: &mut Row, threads: usize) -> (Vec<u8>, Recipe) {
    set_threads(threads);
    let clock = if threads == 1 {
        Clock::start
    } else {
        Clock::start_process
    };
    let mut plain = Vec::with_capacity(row.tar.max(gz.len() * 3));
    let t = clock();
    let recipe = analyze_gzip(gz, &mut plain).expect("our analyse");
    let ta = t.rate(plain.len());
    let bytes = recipe.to_bytes();
    let recipe = Recipe::from_bytes(&bytes).expect("recipe parses");
    let mut out = Vec::with_capacity(gz.len());
    let t = clock();
    rebuild_gzip(&plain[..], &recipe, &mut out).expect("our rebuild");
    let tr = t.rate(plain.len());
    row.tar = plain.len();
    let kind = recipe_kind(&recipe).to_string();
    let ok = out == gz;
    if threads == 1 {
        row.ours_kind = kind;
        row.ours_recipe = bytes.len();
        row.ours_ok = ok;
        row.ours_a.push(ta);
        row.ours_r.push(tr);
    } else {
        // Same recipe whatever the threads: a difference is a mismatch.
        row.ours_ok &= ok && kind == row.ours_kind && bytes.len() == row.ours_recipe;
        row.par_a.push(ta);
        row.par_r.push(tr);
    }
    (plain, recipe)
}

/// preflate-rs's analyse and rebuild of `gz`; what it analysed, for
/// `pairs`.
fn preflate(gz: &[u8], row: &mut Row) -> Option<PfKept> {
    let Some(h) = gzip_header_len(gz) else {
        row.pf_err = Some("not a gzip member".into());
        return None;
    };
    if gz.len() < h + 8 {
        row.pf_err = Some("truncated gzip member".into());
        return None;
    }
    let deflate = &gz[h..];
    let config = PreflateConfig {
        verify_compression: false,
        ..PreflateConfig::default()
    };
    let t = Clock::start();
    let mut proc = PreflateStreamProcessor::new(&config);
    let mut off = 0usize;
    let mut chunks: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    while !proc.is_done() {
        match proc.decompress(&deflate[off..]) {
            Ok(r) => {
                off += r.compressed_size;
                chunks.push((r.corrections, proc.plain_text().text().to_vec()));
                proc.shrink_to_dictionary();
            }
            Err(e) => {
                row.pf_err = Some(format!("{:?}: {}", e.exit_code(), first_line(e.message())));
                return None;
            }
        }
    }
    let plain_len: usize = chunks.iter().map(|c| c.1.len()).sum();
    let ta = t.rate(plain_len);
    let tail = &deflate[off..];
    if tail.len() != 8 {
        row.pf_err = Some(format!(
            "{} bytes after the deflate stream (more members?)",
            tail.len()
        ));
        return None;
    }
    let kept = PfKept {
        header: h,
        chunks,
        tail: tail.to_vec(),
    };
    let t = Clock::start();
    let out = match pf_recreate(&kept, gz) {
        Ok(out) => out,
        Err(e) => {
            row.pf_err = Some(e);
            return None;
        }
    };
    let tr = t.rate(plain_len);
    row.pf_ok = out == gz;
    let chunks = &kept.chunks;
    row.pf_recipe =
        Some(chunks.iter().map(|c| c.0.len()).sum::<usize>() + h + 8 + 4 * chunks.len());
    row.pf_chunks = chunks.len();
    row.pf_a.push(ta);
    row.pf_r.push(tr);
    row.pf_ok.then_some(kept)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// Time `cmd` compressing the tar file to /dev/null; MB/s of tar by
/// (wall, CPU) time.
fn time_encoder(
    cmd: &str,
    args: &[String],
    env: &[(String, String)],
    tar: &Path,
    len: usize,
) -> (f64, f64) {
    let c0 = children_cpu();
    let t = Instant::now();
    let st = Command::new(cmd)
        .args(args)
        .envs(env.iter().cloned())
        .stdin(File::open(tar).unwrap())
        .stdout(File::create("/dev/null").unwrap())
        .status()
        .expect("run encoder");
    assert!(st.success(), "{cmd} failed");
    let mb = len as f64 / 1e6;
    (mb / t.elapsed().as_secs_f64(), mb / (children_cpu() - c0))
}

fn compress_with(cmd: &str, args: &[String], env: &[(String, String)], tar: &Path) -> Vec<u8> {
    let out = Command::new(cmd)
        .args(args)
        .envs(env.iter().cloned())
        .stdin(File::open(tar).unwrap())
        .stdout(Stdio::piped())
        .output()
        .expect("run encoder");
    assert!(out.status.success(), "{cmd} {args:?} failed");
    out.stdout
}

/// Build testdata/gogzip with Debian's Go; `None` when Go or pgzip is missing.
fn gogzip() -> Option<PathBuf> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/gogzip");
    let dir = std::env::temp_dir().join("stowage-compare-gogzip");
    let out = dir.join("gogzip");
    let ok = Command::new(GO)
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", dir.join("gocache"))
        .env("GOFLAGS", "")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(out)
}

fn short(p: &Path) -> String {
    let s = p.to_string_lossy();
    let name = if s.ends_with("/data") {
        p.parent().unwrap().file_name().unwrap().to_string_lossy()
    } else {
        p.file_name().unwrap().to_string_lossy()
    };
    name.chars().take(12).collect()
}

fn main() {
    let mut runs = 3usize;
    let mut max_mb = 200.0f64;
    let mut recompress: Option<PathBuf> = None;
    let mut do_recompress = true;
    let mut paths = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--runs") => runs = args.next().unwrap().to_str().unwrap().parse().unwrap(),
            Some("--max-mb") => max_mb = args.next().unwrap().to_str().unwrap().parse().unwrap(),
            Some("--recompress") => recompress = Some(args.next().unwrap().into()),
            Some("--no-recompress") => do_recompress = false,
            _ => paths.push(PathBuf::from(a)),
        }
    }
    if paths.is_empty() {
        paths.push(REGISTRY.into());
    }
    let mut files = Vec::new();
    for p in &paths {
        walk(p, &mut files);
    }

    // Plaintext sizes (one decompression each) to filter and pick the tar.
    let mut inputs = Vec::new();
    let mut sized = Vec::new();
    for f in files {
        let gz = std::fs::read(&f).unwrap();
        let mut n = 0u64;
        let mut d = flate2::read::MultiGzDecoder::new(&gz[..]);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match d.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => n += k as u64,
                Err(_) => break,
            }
        }
        if n as f64 / 1e6 > max_mb {
            eprintln!(
                "skip {} ({} MB of plaintext > --max-mb)",
                short(&f),
                n / 1_000_000
            );
            continue;
        }
        sized.push((f.clone(), n));
        let hdr = &gz[..10];
        inputs.push(Input {
            label: format!(
                "{} (mtime {:02x}{:02x}{:02x}{:02x} os {})",
                short(&f),
                hdr[7],
                hdr[6],
                hdr[5],
                hdr[4],
                hdr[9]
            ),
            gz,
            encoder: None,
        });
    }

    let src = recompress.or_else(|| {
        sized
            .iter()
            .filter(|s| s.1 >= 30_000_000)
            .min_by_key(|s| s.1)
            .map(|s| s.0.clone())
    });
    let tar_path = std::env::temp_dir().join(format!("compare-{}.tar", std::process::id()));
    let mut tar_len = 0usize;
    if let (true, Some(src)) = (do_recompress, &src) {
        let gz = std::fs::read(src).unwrap();
        let mut tar = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut tar)
            .unwrap();
        tar_len = tar.len();
        File::create(&tar_path).unwrap().write_all(&tar).unwrap();
        drop(tar);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let py = |level: u32| {
            format!(
                "import sys,zlib;c=zlib.compressobj({level},zlib.DEFLATED,31);\
                 sys.stdout.buffer.write(c.compress(sys.stdin.buffer.read())+c.flush())"
            )
        };
        let mut encs: Vec<NamedEncoder> = vec![
            (
                "GNU gzip -1".into(),
                "gzip".into(),
                s(&["-1", "-c", "-n"]),
                vec![],
            ),
            (
                "GNU gzip -6".into(),
                "gzip".into(),
                s(&["-6", "-c", "-n"]),
                vec![],
            ),
            (
                "GNU gzip -9".into(),
                "gzip".into(),
                s(&["-9", "-c", "-n"]),
                vec![],
            ),
            (
                "pigz -6".into(),
                "pigz".into(),
                s(&["-6", "-p", "1", "-c", "-n"]),
                vec![],
            ),
            (
                "Python zlib -6".into(),
                "python3".into(),
                vec!["-c".into(), py(6)],
                vec![],
            ),
        ];
        if let Some(go) = gogzip() {
            let go = go.to_string_lossy().to_string();
            let env = vec![("GOMAXPROCS".to_string(), "1".to_string())];
            encs.push((
                "Go std -6".into(),
                go.clone(),
                s(&["std", "6"]),
                env.clone(),
            ));
            encs.push(("pgzip default".into(), go, s(&["pgzip", "-1"]), env));
        } else {
            eprintln!(
                "no Go helper (apt-get install golang-1.19-go golang-github-klauspost-pgzip-dev)"
            );
        }
        for (label, cmd, args, env) in encs {
            let gz = compress_with(&cmd, &args, &env, &tar_path);
            inputs.push(Input {
                label: format!("{label} of {}", short(src)),
                gz,
                encoder: Some((cmd, args, env)),
            });
        }
    }

    let mut rows: Vec<Row> = inputs.iter().map(|_| Row::default()).collect();
    for run in 0..runs {
        for (inp, row) in inputs.iter().zip(rows.iter_mut()) {
            eprintln!("run {run}: {}", inp.label);
            drop(ours(&inp.gz, row, 1));
            let (plain, recipe) = ours(&inp.gz, row, 0);
            let mut pf = None;
            if row.pf_err.is_none() {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    preflate(&inp.gz, row)
                }));
                match r {
                    Ok(k) => pf = k,
                    Err(_) => row.pf_err = Some("panicked".into()),
                }
            }
            if row.ours_ok {
                pairs(&Kept { plain, recipe, pf }, &inp.gz, row);
            }
            if let Some((cmd, args, env)) = &inp.encoder {
                row.enc
                    .push(time_encoder(cmd, args, env, &tar_path, tar_len));
            }
        }
    }
    let _ = std::fs::remove_file(&tar_path);

    println!("Sizes (recipe % of the compressed stream):\n");
    println!("| stream | gz bytes | tar bytes | ours: model | ours: recipe B (%) | preflate-rs: recipe B (%) |");
    println!("|---|---:|---:|---|---:|---:|");
    for (inp, row) in inputs.iter().zip(rows.iter()) {
        let gzl = inp.gz.len();
        let pct = |b: usize| b as f64 * 100.0 / gzl as f64;
        let bad = |ok: bool| if ok { "" } else { " **MISMATCH**" };
        let pf = match (&row.pf_err, row.pf_recipe) {
            (Some(e), _) => format!("refused: {e}"),
            (None, Some(b)) => format!(
                "{b} ({:.4}){}{}",
                pct(b),
                if row.pf_chunks > 1 {
                    format!(", {} chunks", row.pf_chunks)
                } else {
                    String::new()
                },
                bad(row.pf_ok)
            ),
            (None, None) => "–".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} ({:.4}){} | {} |",
            inp.label,
            gzl,
            row.tar,
            row.ours_kind,
            row.ours_recipe,
            pct(row.ours_recipe),
            bad(row.ours_ok),
            pf
        );
    }
    let threads = stowage_deflate_recipe::threads();
    println!(
        "\nSpeed on one thread, MB/s of plaintext by CPU time (by wall time in parentheses), medians of {runs} runs:\n"
    );
    println!("| stream | ours: analyse | preflate-rs: analyse | analyse × | ours: rebuild | preflate-rs: rebuild | rebuild × | encoder | rebuild ÷ encoder |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let f = |v: (f64, f64)| format!("{:.1} ({:.1})", v.1, v.0);
    let pf = |row: &Row| {
        (row.pf_err.is_none() && !row.pf_a.is_empty())
            .then(|| (medians(&row.pf_a), medians(&row.pf_r)))
    };
    for (inp, row) in inputs.iter().zip(rows.iter()) {
        let (oa, or) = (medians(&row.ours_a), medians(&row.ours_r));
        let (pa, pr, xa, xr) = match pf(row) {
            Some((pa, pr)) => (
                f(pa),
                f(pr),
                format!("{:.2}", oa.1 / pa.1),
                format!("{:.2}", or.1 / pr.1),
            ),
            None => ("refused".into(), "–".into(), "–".into(), "–".into()),
        };
        let (enc, ratio) = if row.enc.is_empty() {
            ("–".to_string(), "–".to_string())
        } else {
            let e = medians(&row.enc);
            (f(e), format!("{:.2}", or.1 / e.1))
        };
        println!(
            "| {} | {} | {pa} | {xa} | {} | {pr} | {xr} | {enc} | {ratio} |",
            inp.label,
            f(oa),
            f(or),
        );
    }
    println!(
        "\n× = ours ÷ preflate-rs by CPU time; rebuild ÷ encoder = our rebuild ÷ the original encoder compressing the same tar (CPU time, one thread)."
    );
    println!(
        "\nSpeed on this machine's {threads} threads, MB/s of plaintext by wall time (CPU time of the whole process in parentheses), medians of {runs} runs; preflate-rs and the encoders run on one thread (pigz -p 1, GOMAXPROCS=1):\n"
    );
    println!("| stream | ours: analyse | analyse × preflate-rs | ours: rebuild | rebuild × preflate-rs | rebuild × paired (pairs, range) | rebuild ÷ encoder |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let g = |v: (f64, f64)| format!("{:.1} ({:.1})", v.0, v.1);
    for (inp, row) in inputs.iter().zip(rows.iter()) {
        let (oa, or) = (medians(&row.par_a), medians(&row.par_r));
        let (xa, xr) = match pf(row) {
            Some((pa, pr)) => (format!("{:.2}", oa.0 / pa.0), format!("{:.2}", or.0 / pr.0)),
            None => ("–".into(), "–".into()),
        };
        let ratio = if row.enc.is_empty() {
            "–".to_string()
        } else {
            format!("{:.2}", or.0 / medians(&row.enc).0)
        };
        let paired = if row.paired.is_empty() {
            "–".to_string()
        } else {
            let mut v = row.paired.clone();
            let m = median(&mut v);
            format!("{m:.2} ({}, {:.2}-{:.2})", v.len(), v[0], v[v.len() - 1])
        };
        println!(
            "| {} | {} | {xa} | {} | {xr} | {paired} | {ratio} |",
            inp.label,
            g(oa),
            g(or)
        );
    }
    println!(
        "\n× = ours ÷ preflate-rs by wall time; rebuild ÷ encoder = our rebuild ÷ the original encoder compressing the same tar on one thread (wall time). Paired: our rebuild and preflate-rs's timed back to back, alternating, 1 to 5 pairs a run (as many as fit in about a second); the median of preflate-rs's time ÷ ours over all pairs, their number and range."
    );
}
