//! `export`, `import` and `check`.

use super::output::{human_size, table};
use super::Format;
use std::io::Write;
use std::path::Path;
use stowage::export::{plan_export, write_archive, BlobSource, ExportOptions};
use stowage::{Policy, Store};

type Result<T> = std::result::Result<T, String>;

pub fn export(
    store: &Store,
    output: &Path,
    refs: &[String],
    opts: &ExportOptions,
    format: Format,
) -> Result<()> {
    // Every blob is resolved before a byte is written.
    let plan = plan_export(store, refs, opts, true).map_err(|e| e.to_string())?;
    let report = if output == Path::new("-") {
        let stdout = std::io::stdout().lock();
        let (mut w, report) = write_archive(
            store,
            &plan,
            opts,
            std::io::BufWriter::with_capacity(1 << 20, stdout),
        )
        .map_err(|e| e.to_string())?;
        w.flush().map_err(|e| format!("stdout: {e}"))?;
        report
    } else {
        // Written beside the target and renamed when complete, so a failed
        // export never leaves a partial archive under the final name.
        let dir = output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = output
            .file_name()
            .ok_or("-o needs a file name")?
            .to_string_lossy()
            .into_owned();
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let result = write_archive(
            store,
            &plan,
            opts,
            std::io::BufWriter::with_capacity(1 << 20, f),
        );
        let finish = result.map_err(|e| e.to_string()).and_then(|(w, report)| {
            let f = w.into_inner().map_err(|e| e.to_string())?;
            f.sync_all().map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, output).map_err(|e| format!("{}: {e}", output.display()))?;
            Ok(report)
        });
        match finish {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
    };
    for img in &report.images {
        if let Some(orig) = &img.original_digest {
            eprintln!(
                "WARNING: {} was exported under a NEW digest {} (was {}): {} layer(s) recompressed; signatures on the old digest do not apply",
                img.name,
                img.digest,
                orig,
                img.recompressed.len()
            );
            for (old, new) in &img.recompressed {
                eprintln!("  layer {old} -> {new}");
            }
        }
    }
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else if output != Path::new("-") {
        for img in &report.images {
            eprintln!(
                "exported {} {} ({} re-fetched, {} rebuilt from recipes)",
                img.name, img.digest, img.refetched, img.rebuilt
            );
        }
    }
    Ok(())
}

pub fn check(store: &Store, refs: &[String], opts: &ExportOptions, format: Format) -> Result<()> {
    let plan = plan_export(store, refs, opts, false).map_err(|e| e.to_string())?;
    let mut exact = true;
    let mut docs = Vec::new();
    let mut rows = Vec::new();
    for img in &plan.images {
        let mut blobs = Vec::new();
        let mut img_exact = true;
        for b in img.blobs() {
            let status = match &b.source {
                BlobSource::Present => "present",
                BlobSource::Rebuild => "rebuildable exactly",
                BlobSource::Fetch => "fetchable",
                BlobSource::Recompress => "rebuildable only under a new digest",
                BlobSource::Missing { .. } => {
                    if b.layer.is_some() && stowage::export::plan::has_snapshot_and_recipe(store, b)
                    {
                        "rebuildable only under a new digest"
                    } else {
                        "missing"
                    }
                }
            };
            if !matches!(
                b.source,
                BlobSource::Present | BlobSource::Rebuild | BlobSource::Fetch
            ) {
                img_exact = false;
            }
            let detail = match &b.source {
                BlobSource::Missing { reason } => reason.clone(),
                _ => String::new(),
            };
            rows.push(vec![
                img.record.name.clone(),
                b.kind.to_string(),
                b.digest.to_string(),
                human_size(b.size),
                status.to_string(),
            ]);
            blobs.push(serde_json::json!({"digest": b.digest, "kind": b.kind, "size": b.size, "mediaType": b.media_type, "status": status, "detail": detail}));
        }
        exact &= img_exact;
        docs.push(serde_json::json!({"name": img.record.name, "digest": img.record.digest, "policy": img.record.policy, "exact": img_exact, "blobs": blobs}));
    }
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&docs).map_err(|e| e.to_string())?
        ),
        Format::Table => {
            table(&["IMAGE", "KIND", "DIGEST", "SIZE", "STATUS"], &rows);
            for d in &docs {
                for b in d["blobs"].as_array().unwrap() {
                    if !b["detail"].as_str().unwrap_or("").is_empty() {
                        eprintln!(
                            "{} {}: {}",
                            d["name"].as_str().unwrap_or(""),
                            b["digest"].as_str().unwrap_or(""),
                            b["detail"].as_str().unwrap_or("")
                        );
                    }
                }
            }
        }
    }
    if exact {
        Ok(())
    } else {
        Err("some images cannot be exported with their exact digests (see above)".into())
    }
}

pub fn import(
    store: &Store,
    file: &Path,
    name: Option<&str>,
    policy: Policy,
    format: Format,
) -> Result<()> {
    let report = if file == Path::new("-") {
        stowage::import::import(store, std::io::stdin().lock(), name, policy)
    } else {
        let f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
        stowage::import::import(
            store,
            std::io::BufReader::with_capacity(1 << 20, f),
            name,
            policy,
        )
    }
    .map_err(|e| e.to_string())?;
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        for i in &report.images {
            println!("{} {}", i.name, i.digest);
        }
    }
    Ok(())
}

pub fn gc(store: &Store, format: Format) -> Result<()> {
    let r = stowage_store::gc::gc(store).map_err(|e| e.to_string())?;
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "removed {} blobs ({}), {} snapshots ({}), {} stale leases, {} temporary files",
            r.blobs_removed,
            human_size(r.blob_bytes),
            r.snapshots_removed,
            human_size(r.snapshot_bytes),
            r.leases_dropped,
            r.temp_removed
        );
    }
    Ok(())
}

pub fn du(store: &Store, format: Format) -> Result<()> {
    let u = stowage::du::disk_usage(store).map_err(|e| e.to_string())?;
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&u).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let row = |name: &str, policy: &str, x: &stowage::du::Usage| {
        vec![
            name.to_string(),
            policy.to_string(),
            human_size(x.blobs),
            human_size(x.snapshots),
            human_size(x.recipes),
            human_size(x.shared),
            human_size(x.saved_vs_keep),
        ]
    };
    let mut rows: Vec<Vec<String>> = u
        .images
        .iter()
        .map(|i| row(&i.name, &i.policy, &i.usage))
        .collect();
    rows.push(row("TOTAL (each byte once)", "", &u.total));
    table(
        &[
            "IMAGE",
            "POLICY",
            "BLOBS",
            "SNAPSHOTS",
            "RECIPES",
            "SHARED",
            "SAVED VS KEEP",
        ],
        &rows,
    );
    Ok(())
}
