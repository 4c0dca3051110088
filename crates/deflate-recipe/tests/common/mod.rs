//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use stowage_deflate_recipe::{analyze_gzip, analyze_gzip_with, rebuild_gzip, ModelSpec, Recipe};

/// Deterministic test plaintext mixing text, binary noise, runs and repeats,
/// so matches of every length and distance show up.
pub fn sample(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "usr",
        "lib",
        "share",
        "bin",
        "etc",
        "drwxr-xr-x",
        "root",
        "0000644",
        "ustar",
        "\0\0\0\0",
        "libc.so.6",
        "python3",
        "the",
        "of",
        "and",
        "config",
        "debian",
        "amd64",
        "#include",
        "{\n",
        "}\n",
        "return",
        "int",
        "0x",
        "static",
        "const",
    ];
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as usize
    };
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        match next() % 10 {
            0 => {
                let n = next() % 300;
                for _ in 0..n {
                    out.push(next() as u8);
                }
            }
            1 => {
                let n = next() % 700;
                let b = next() as u8;
                out.extend(std::iter::repeat(b).take(n));
            }
            2 if out.len() > 40000 => {
                // A long-distance repeat.
                let d = 30000 + next() % 2768;
                let n = 3 + next() % 400;
                let start = out.len() - d;
                for i in 0..n {
                    let b = out[start + i];
                    out.push(b);
                }
            }
            _ => {
                for _ in 0..(1 + next() % 20) {
                    out.extend_from_slice(words[next() % words.len()].as_bytes());
                    out.push(if next() % 5 == 0 { b'\n' } else { b' ' });
                }
            }
        }
    }
    out.truncate(len);
    out
}

/// Deterministic bytes that do not compress.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u8
        })
        .collect()
}

/// Run `cmd args` with `input` on stdin; `None` if the program is missing.
pub fn run(cmd: &str, args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    writer.join().unwrap().unwrap();
    assert!(child.wait().unwrap().success(), "{cmd} {args:?} failed");
    Some(out)
}

/// Skip (or fail when STOWAGE_TEST_REQUIRED=1) because a tool is missing.
pub fn skip(what: &str) {
    if std::env::var("STOWAGE_TEST_REQUIRED").as_deref() == Ok("1") {
        panic!("{what} is required (STOWAGE_TEST_REQUIRED=1) but not available");
    }
    eprintln!("SKIP: {what} not available");
}

/// Analyse, check the plaintext, rebuild and demand identical bytes.
pub fn roundtrip(gz: &[u8], plain: &[u8]) -> Recipe {
    roundtrip_with(gz, plain, None)
}

/// As [`roundtrip`], optionally with fixed candidate models.
pub fn roundtrip_with(gz: &[u8], plain: &[u8], models: Option<&[ModelSpec]>) -> Recipe {
    let mut out = Vec::new();
    let recipe = match models {
        Some(m) => analyze_gzip_with(gz, &mut out, m),
        None => analyze_gzip(gz, &mut out),
    }
    .expect("analyze");
    assert!(out == plain, "plaintext differs");
    let bytes = recipe.to_bytes();
    let recipe2 = Recipe::from_bytes(&bytes).expect("recipe parses");
    assert_eq!(recipe, recipe2);
    let mut rebuilt = Vec::new();
    rebuild_gzip(plain, &recipe2, &mut rebuilt).expect("rebuild");
    assert_eq!(rebuilt.len(), gz.len(), "rebuilt length differs");
    assert!(rebuilt == gz, "rebuilt bytes differ");
    recipe
}

/// Recipe size as a percentage of the compressed size.
pub fn pct(recipe: &Recipe, gz: &[u8]) -> f64 {
    recipe.to_bytes().len() as f64 * 100.0 / gz.len() as f64
}
