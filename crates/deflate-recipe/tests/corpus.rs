//! Real layers from the OCI corpus (pgzip via umoci). Large, so ignored by
//! default: `cargo test --release -p stowage-deflate-recipe --test corpus -- --ignored`.

use std::fs::File;
use std::io::{BufReader, Read, Write};

use sha2::{Digest, Sha256};
use stowage_deflate_recipe::{analyze_gzip, rebuild_gzip, recipe_kind, Recipe};

const CORPUS: &str = "/var/tmp/oci-corpus/layout/blobs/sha256";

struct Hasher(Sha256);
impl Write for Hasher {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
#[ignore = "reads hundreds of MB from the local corpus"]
fn corpus_layers_rebuild_exactly() {
    let Ok(dir) = std::fs::read_dir(CORPUS) else {
        eprintln!("SKIP: no corpus at {CORPUS}");
        return;
    };
    let tmp = std::env::temp_dir().join(format!("corpus-test-{}.tar", std::process::id()));
    for entry in dir {
        let path = entry.unwrap().path();
        let mut magic = [0u8; 2];
        if File::open(&path).unwrap().read_exact(&mut magic).is_err() || magic != [0x1f, 0x8b] {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let recipe = {
            let mut out = std::io::BufWriter::new(File::create(&tmp).unwrap());
            let r = analyze_gzip(BufReader::new(File::open(&path).unwrap()), &mut out).unwrap();
            out.flush().unwrap();
            r
        };
        let recipe = Recipe::from_bytes(&recipe.to_bytes()).unwrap();
        let mut h = Hasher(Sha256::new());
        rebuild_gzip(BufReader::new(File::open(&tmp).unwrap()), &recipe, &mut h).unwrap();
        assert_eq!(hex::encode(h.0.finalize()), name, "rebuilt digest differs");
        let size = std::fs::metadata(&path).unwrap().len();
        let pct = recipe.to_bytes().len() as f64 * 100.0 / size as f64;
        eprintln!("{name}: {} {:.4}%", recipe_kind(&recipe), pct);
        if size > 1 << 20 {
            assert!(pct < 1.0, "recipe too large for a pgzip layer: {pct}%");
        }
    }
    let _ = std::fs::remove_file(&tmp);
}
