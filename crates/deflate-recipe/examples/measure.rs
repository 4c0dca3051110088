//! Measure recipe size and speed on gzip files.
//!
//! Usage: `cargo run --release -p stowage-deflate-recipe --example measure -- FILE|DIR...`
//! (default: the corpus at /var/tmp/oci-corpus/layout/blobs/sha256). For each gzip
//! file: analyse (plaintext to a temp file), rebuild from that file, check the
//! sha256 of the rebuilt stream against the original, and print the recipe kind,
//! recipe size as % of the compressed size and MB/s of plaintext for both steps.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use sha2::{Digest, Sha256};
use stowage_deflate_recipe::{analyze_gzip, rebuild_gzip, recipe_kind};

struct HashWriter(Sha256, u64);

impl Write for HashWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        self.1 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn is_gzip(p: &PathBuf) -> bool {
    let mut m = [0u8; 2];
    File::open(p).and_then(|mut f| f.read_exact(&mut m)).is_ok() && m == [0x1f, 0x8b]
}

fn main() {
    let mut args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if args.is_empty() {
        args.push("/var/tmp/oci-corpus/layout/blobs/sha256".into());
    }
    let mut files = Vec::new();
    for a in args {
        if a.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(&a)
                .expect("read dir")
                .map(|e| e.unwrap().path())
                .collect();
            v.sort();
            files.extend(v);
        } else {
            files.push(a);
        }
    }
    let tmp = std::env::temp_dir().join(format!("measure-{}.tar", std::process::id()));
    println!(
        "file\tkind\tgz_bytes\ttar_bytes\trecipe_bytes\trecipe_%\tanalyze_MB/s\trebuild_MB/s\tok"
    );
    for f in files.iter().filter(|f| is_gzip(f)) {
        let gz_len = std::fs::metadata(f).unwrap().len();
        let mut orig = Sha256::new();
        std::io::copy(&mut File::open(f).unwrap(), &mut orig).unwrap();
        let orig = orig.finalize();

        let t = Instant::now();
        let input = BufReader::with_capacity(1 << 20, File::open(f).unwrap());
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp).unwrap());
        let recipe = match analyze_gzip(input, &mut out) {
            Ok(r) => r,
            Err(e) => {
                println!("{}\terror: {e}", f.display());
                continue;
            }
        };
        out.flush().unwrap();
        drop(out);
        let ta = t.elapsed().as_secs_f64();
        let tar_len = std::fs::metadata(&tmp).unwrap().len();
        let rbytes = recipe.to_bytes().len();
        eprintln!("  streams (meta, tokens): {:?}", recipe.stream_sizes());

        let t = Instant::now();
        let plain = BufReader::with_capacity(1 << 20, File::open(&tmp).unwrap());
        let mut hw = HashWriter(Sha256::new(), 0);
        let res = rebuild_gzip(plain, &recipe, &mut hw);
        let tr = t.elapsed().as_secs_f64();
        let ok = res.is_ok() && hw.0.finalize() == orig && hw.1 == gz_len;
        let mb = tar_len as f64 / 1e6;
        println!(
            "{}\t{}\t{}\t{}\t{}\t{:.3}\t{:.1}\t{:.1}\t{}",
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .chars()
                .take(12)
                .collect::<String>(),
            recipe_kind(&recipe),
            gz_len,
            tar_len,
            rbytes,
            rbytes as f64 * 100.0 / gz_len as f64,
            mb / ta,
            mb / tr,
            if ok {
                "ok".to_string()
            } else {
                format!("FAILED {res:?}")
            }
        );
    }
    let _ = std::fs::remove_file(&tmp);
}
