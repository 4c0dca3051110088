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
//!   tar from a file to /dev/null, one thread (pigz -p 1, GOMAXPROCS=1).
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
use stowage_deflate_recipe::{analyze_gzip, rebuild_gzip, recipe_kind, Recipe};

const REGISTRY: &str = "/var/tmp/stowage-dev/registry/docker/registry/v2/blobs/sha256";
const GO: &str = "/usr/lib/go-1.19/bin/go";

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
    ours_a: Vec<f64>,
    ours_r: Vec<f64>,
    ours_ok: bool,
    pf_recipe: Option<usize>,
    pf_chunks: usize,
    pf_err: Option<String>,
    pf_a: Vec<f64>,
    pf_r: Vec<f64>,
    pf_ok: bool,
    enc: Vec<f64>,
}

fn ours(gz: &[u8], row: &mut Row) -> Vec<u8> {
    let mut plain = Vec::with_capacity(row.tar.max(gz.len() * 3));
    let t = Instant::now();
    let recipe = analyze_gzip(gz, &mut plain).expect("our analyse");
    let ta = t.elapsed().as_secs_f64();
    let bytes = recipe.to_bytes();
    let recipe = Recipe::from_bytes(&bytes).expect("recipe parses");
    let mut out = Vec::with_capacity(gz.len());
    let t = Instant::now();
    rebuild_gzip(&plain[..], &recipe, &mut out).expect("our rebuild");
    let tr = t.elapsed().as_secs_f64();
    row.tar = plain.len();
    row.ours_kind = recipe_kind(&recipe).to_string();
    row.ours_recipe = bytes.len();
    row.ours_ok = out == gz;
    row.ours_a.push(plain.len() as f64 / 1e6 / ta);
    row.ours_r.push(plain.len() as f64 / 1e6 / tr);
    plain
}

fn preflate(gz: &[u8], row: &mut Row) {
    let Some(h) = gzip_header_len(gz) else {
        row.pf_err = Some("not a gzip member".into());
        return;
    };
    if gz.len() < h + 8 {
        row.pf_err = Some("truncated gzip member".into());
        return;
    }
    let deflate = &gz[h..];
    let config = PreflateConfig {
        verify_compression: false,
        ..PreflateConfig::default()
    };
    let t = Instant::now();
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
                return;
            }
        }
    }
    let ta = t.elapsed().as_secs_f64();
    let tail = &deflate[off..];
    let plain_len: usize = chunks.iter().map(|c| c.1.len()).sum();
    if tail.len() != 8 {
        row.pf_err = Some(format!(
            "{} bytes after the deflate stream (more members?)",
            tail.len()
        ));
        return;
    }
    let t = Instant::now();
    let mut rec = RecreateStreamProcessor::new();
    let mut out = Vec::with_capacity(gz.len());
    out.extend_from_slice(&gz[..h]);
    for (corr, plain) in &chunks {
        match rec.recompress(&mut Cursor::new(&plain[..]), corr) {
            Ok((bytes, _)) => out.extend_from_slice(&bytes),
            Err(e) => {
                row.pf_err = Some(format!(
                    "rebuild {:?}: {}",
                    e.exit_code(),
                    first_line(e.message())
                ));
                return;
            }
        }
    }
    out.extend_from_slice(tail);
    let tr = t.elapsed().as_secs_f64();
    row.pf_ok = out == gz;
    row.pf_recipe =
        Some(chunks.iter().map(|c| c.0.len()).sum::<usize>() + h + 8 + 4 * chunks.len());
    row.pf_chunks = chunks.len();
    row.pf_a.push(plain_len as f64 / 1e6 / ta);
    row.pf_r.push(plain_len as f64 / 1e6 / tr);
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// Time `cmd` compressing the tar file to /dev/null; MB/s of tar.
fn time_encoder(
    cmd: &str,
    args: &[String],
    env: &[(String, String)],
    tar: &Path,
    len: usize,
) -> f64 {
    let t = Instant::now();
    let st = Command::new(cmd)
        .args(args)
        .envs(env.iter().cloned())
        .stdin(File::open(tar).unwrap())
        .stdout(File::create("/dev/null").unwrap())
        .status()
        .expect("run encoder");
    assert!(st.success(), "{cmd} failed");
    len as f64 / 1e6 / t.elapsed().as_secs_f64()
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
            let plain = ours(&inp.gz, row);
            drop(plain);
            if row.pf_err.is_none() {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    preflate(&inp.gz, row)
                }));
                if r.is_err() {
                    row.pf_err = Some("panicked".into());
                }
            }
            if let Some((cmd, args, env)) = &inp.encoder {
                row.enc
                    .push(time_encoder(cmd, args, env, &tar_path, tar_len));
            }
        }
    }
    let _ = std::fs::remove_file(&tar_path);

    println!(
        "| stream | gz bytes | tar bytes | ours: kind | ours: recipe B (%) | ours: analyse MB/s | ours: rebuild MB/s | preflate-rs: recipe B (%) | preflate-rs: analyse MB/s | preflate-rs: rebuild MB/s | encoder MB/s | analyse × | rebuild × |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (inp, row) in inputs.iter().zip(rows.iter_mut()) {
        let gzl = inp.gz.len();
        let pct = |b: usize| b as f64 * 100.0 / gzl as f64;
        let (oa, or) = (median(&mut row.ours_a), median(&mut row.ours_r));
        let ours_ok = if row.ours_ok { "" } else { " **MISMATCH**" };
        let (pf, pa, pr, xa, xr) = match (&row.pf_err, row.pf_recipe) {
            (Some(e), _) => (
                format!("refused: {e}"),
                "–".to_string(),
                "–".to_string(),
                "–".to_string(),
                "–".to_string(),
            ),
            (None, Some(b)) => {
                let (pa, pr) = (median(&mut row.pf_a), median(&mut row.pf_r));
                (
                    format!(
                        "{b} ({:.4}){}{}",
                        pct(b),
                        if row.pf_chunks > 1 {
                            format!(", {} chunks", row.pf_chunks)
                        } else {
                            String::new()
                        },
                        if row.pf_ok { "" } else { " **MISMATCH**" }
                    ),
                    format!("{pa:.1}"),
                    format!("{pr:.1}"),
                    format!("{:.2}", oa / pa),
                    format!("{:.2}", or / pr),
                )
            }
            _ => unreachable!(),
        };
        let enc = if row.enc.is_empty() {
            "–".to_string()
        } else {
            format!("{:.1}", median(&mut row.enc))
        };
        println!(
            "| {} | {} | {} | {} | {} ({:.4}){} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} |",
            inp.label,
            gzl,
            row.tar,
            row.ours_kind,
            row.ours_recipe,
            pct(row.ours_recipe),
            ours_ok,
            oa,
            or,
            pf,
            pa,
            pr,
            enc,
            xa,
            xr
        );
    }
    println!("\n{runs} runs, medians; MB/s = 10^6 bytes of plaintext (tar) per second.");
}
