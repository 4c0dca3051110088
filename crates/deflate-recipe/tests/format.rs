//! Recipe format stability: recipes written by earlier format versions
//! (testdata/v1: the last pre-release snapshot; testdata/v2: the first
//! frozen format) must keep rebuilding their streams exactly.
//!
//! `STOWAGE_REGEN_FIXTURES=1` writes the current version's `.recipe` files;
//! never regenerate a frozen version's directory.

use std::path::PathBuf;

use stowage_deflate_recipe::{analyze_gzip, rebuild_gzip, Recipe};

fn dir(version: u8) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("testdata/v{version}"))
}

#[test]
fn version_1_recipes_rebuild() {
    check(1, false);
}

#[test]
fn version_2_recipes_rebuild() {
    check(
        2,
        std::env::var("STOWAGE_REGEN_FIXTURES").as_deref() == Ok("1"),
    );
}

fn check(version: u8, regen: bool) {
    let plain = std::fs::read(dir(1).join("sample.bin")).unwrap();
    let names = [
        "gnu6", "gnu1", "pigz6", "pgzip", "pgzip2", "pgzip9", "gostd6", "gostd1",
    ];
    for name in names {
        let gz = std::fs::read(dir(1).join(format!("{name}.gz"))).unwrap();
        let recipe_path = dir(version).join(format!("{name}.recipe"));
        if regen {
            let r = analyze_gzip(&gz[..], std::io::sink()).unwrap();
            std::fs::create_dir_all(dir(version)).unwrap();
            std::fs::write(&recipe_path, r.to_bytes()).unwrap();
        }
        if !recipe_path.exists() && version == 1 {
            continue; // added after version 1
        }
        let bytes = std::fs::read(&recipe_path).unwrap();
        assert_eq!(
            bytes[3], version,
            "{name}: fixture is format version {version}"
        );
        let recipe = Recipe::from_bytes(&bytes).unwrap();
        let mut out = Vec::new();
        rebuild_gzip(&plain[..], &recipe, &mut out).unwrap();
        assert!(
            out == gz,
            "{name}: version 1 recipe no longer rebuilds the stream"
        );
    }
}
