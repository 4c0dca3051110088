//! `stowage push`.

use super::output::human_size;
use super::progress::Bars;
use super::Format;
use stowage::image::find_image;
use stowage::push::{push as push_image, PushOptions};
use stowage::Store;
use stowage_oci::Reference;

pub fn push(
    store: &Store,
    reference: &str,
    destination: Option<&str>,
    opts: &PushOptions,
    quiet: bool,
    format: Format,
) -> Result<(), String> {
    let record = find_image(store, reference).map_err(|e| e.to_string())?;
    let dest: Reference = destination
        .unwrap_or(&record.name)
        .parse()
        .map_err(|e: stowage_oci::ReferenceError| e.to_string())?;
    let bars = Bars::new(quiet || format == Format::Json);
    let started = std::time::Instant::now();
    let report = push_image(store, &record.name, &dest, opts, &bars).map_err(|e| e.to_string())?;
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    if !quiet {
        eprintln!(
            "pushed {} to {} in {:.1}s: {} blobs uploaded ({}; {} rebuilt from recipes, {} re-fetched), {} already there",
            report.name,
            report.destination,
            started.elapsed().as_secs_f64(),
            report.blobs_uploaded,
            human_size(report.bytes_uploaded),
            report.rebuilt,
            report.refetched,
            report.blobs_present
        );
    }
    println!("{}", report.digest);
    Ok(())
}
