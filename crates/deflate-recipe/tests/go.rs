//! Round trips of Go standard library and klauspost/pgzip output, using the
//! helper in testdata/gogzip built with Debian's Go (GOPATH mode, offline).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use stowage_deflate_recipe::recipe_kind;

const GO: &str = "/usr/lib/go-1.19/bin/go";

/// Build the helper once; `None` when Go or the pgzip sources are missing.
fn gogzip() -> Option<&'static PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/gogzip");
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gogzip");
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gocache");
        let ok = Command::new(GO)
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(&src)
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOCACHE", &cache)
            .env("GOFLAGS", "")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(out)
    })
    .as_ref()
}

fn go_gzip(args: &[&str], data: &[u8]) -> Option<Vec<u8>> {
    let bin = gogzip()?;
    run(bin.to_str().unwrap(), args, data)
}

#[test]
fn pgzip_default_level() {
    for (len, seed) in [(0usize, 0u64), (100, 1), (70_000, 2), (3_500_000, 3)] {
        let data = sample(len, seed);
        let Some(gz) = go_gzip(&["pgzip", "-1"], &data) else {
            return skip("go toolchain with klauspost/pgzip (apt-get install golang-1.19-go golang-github-klauspost-pgzip-dev)");
        };
        let r = roundtrip(&gz, &data);
        eprintln!(
            "pgzip default len {len}: {} {:.3}%",
            recipe_kind(&r),
            pct(&r, &gz)
        );
    }
}

#[test]
fn pgzip_levels_and_block_sizes() {
    let data = sample(600_000, 9);
    let cases = [
        ["pgzip", "1", "1048576"],
        ["pgzip", "2", "1048576"],
        ["pgzip", "3", "1048576"],
        ["pgzip", "4", "1048576"],
        ["pgzip", "6", "1048576"],
        ["pgzip", "7", "1048576"],
        ["pgzip", "9", "1048576"],
        ["pgzip", "5", "100000"],
        ["pgzip", "5", "262144"],
    ];
    for args in cases {
        let Some(gz) = go_gzip(&args, &data) else {
            return skip("go toolchain with klauspost/pgzip");
        };
        let r = roundtrip(&gz, &data);
        eprintln!("{args:?}: {} {:.3}%", recipe_kind(&r), pct(&r, &gz));
        assert!(pct(&r, &gz) < 0.5, "pgzip {args:?} should be predicted");
    }
}

/// Long incompressible stretches, as in layers of compressed files: the
/// lazy levels (7-9) stop searching after a run of misses and then hash
/// ever longer runs at a time, and the blocks there are stored. The model
/// must come out of them in step with the encoder: no corrections at all.
#[test]
fn pgzip_lazy_levels_through_incompressible_stretches() {
    let mut s = 0x2545f4914f6cdd1du64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect()
    };
    let mut data = sample(100_000, 11);
    data.extend(noise(400_000));
    data.extend(sample(100_000, 12));
    data.extend(noise(200_000));
    data.extend(sample(50_000, 13));
    for level in ["7", "8", "9"] {
        let args = ["pgzip", level, "1048576"];
        let Some(gz) = go_gzip(&args, &data) else {
            return skip("go toolchain with klauspost/pgzip");
        };
        let r = roundtrip(&gz, &data);
        let (_, toks) = r.stream_sizes();
        eprintln!(
            "{args:?}: {} {:.3}%, corrections {toks} B",
            recipe_kind(&r),
            pct(&r, &gz)
        );
        assert!(
            toks <= 16,
            "pgzip {args:?}: the model left corrections ({toks} B)"
        );
    }
}

#[test]
fn go_stdlib_levels() {
    let data = sample(300_000, 4);
    for level in ["-1", "1", "2", "5", "9", "0", "-2"] {
        let Some(gz) = go_gzip(&["std", level], &data) else {
            return skip("go toolchain");
        };
        let r = roundtrip(&gz, &data);
        eprintln!("go std {level}: {} {:.3}%", recipe_kind(&r), pct(&r, &gz));
        assert!(pct(&r, &gz) < 0.5, "go std {level} should be predicted");
    }
    // Empty input: Go writes `01 00 00 ff ff` after the header.
    let gz = go_gzip(&["std", "6"], b"").unwrap();
    roundtrip(&gz, b"");
}
