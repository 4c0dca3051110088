//! Recipe format stability: recipes written by format version 1 (kept in
//! testdata/v1) must keep rebuilding their streams exactly.
//!
//! Regenerate the `.recipe` files (only when deliberately changing v1, which
//! should not happen once released) with `STOWAGE_REGEN_FIXTURES=1`.

use std::path::PathBuf;

use stowage_deflate_recipe::{analyze_gzip, rebuild_gzip, Recipe};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/v1")
}

#[test]
fn version_1_recipes_rebuild() {
    let plain = std::fs::read(dir().join("sample.bin")).unwrap();
    for name in [
        "gnu6", "gnu1", "pgzip", "pgzip2", "pgzip9", "gostd6", "gostd1",
    ] {
        let gz = std::fs::read(dir().join(format!("{name}.gz"))).unwrap();
        let recipe_path = dir().join(format!("{name}.recipe"));
        if std::env::var("STOWAGE_REGEN_FIXTURES").as_deref() == Ok("1") {
            let r = analyze_gzip(&gz[..], std::io::sink()).unwrap();
            std::fs::write(&recipe_path, r.to_bytes()).unwrap();
        }
        let bytes = std::fs::read(&recipe_path).unwrap();
        assert_eq!(bytes[3], 1, "{name}: fixture is format version 1");
        let recipe = Recipe::from_bytes(&bytes).unwrap();
        let mut out = Vec::new();
        rebuild_gzip(&plain[..], &recipe, &mut out).unwrap();
        assert!(
            out == gz,
            "{name}: version 1 recipe no longer rebuilds the stream"
        );
    }
}
