//! `stowage settle` and the background settle a `recipe` pull starts.
//!
//! A pull under `recipe` returns as soon as the image is usable; the deflate
//! analysis and the proof rebuild (seconds per 100 MB of layers) then run in
//! a detached `stowage settle`, as `git gc --auto` detaches. `--settle now`
//! keeps the work in the pull; `stowage settle` waits for a running one and
//! finishes whatever is left.

use super::output::human_size;
use super::Format;
use clap::ValueEnum;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use stowage::image::find_image;
use stowage::recipe::RecipeOutcome;
use stowage::settle::{image_layers, settle, settle_background, SettleOptions};
use stowage::Store;

/// When a `recipe` pull or import turns blobs into recipes.
#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
pub enum SettleMode {
    /// In a detached `stowage settle` started when the command returns.
    #[default]
    Background,
    /// Before the command returns.
    Now,
    /// Not until `stowage settle` runs.
    Later,
}

/// Start a detached `stowage settle` on `root`. It logs to `root/settle.log`;
/// a failure to start it only warns, since the image is complete already.
pub fn spawn_background(root: &Path, max_ratio: f64) {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("cannot start a background settle: {e}; run `stowage settle`");
            return;
        }
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("settle.log"))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let mut cmd = Command::new(exe);
    cmd.arg("--root")
        .arg(root)
        .arg("--log-level")
        .arg("info")
        .arg("settle")
        .arg("--background")
        .arg("--max-ratio")
        .arg(max_ratio.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group: a Ctrl-C meant for the pull's terminal
        // must not kill it halfway (it would be harmless, but wasteful).
        .process_group(0);
    match cmd.spawn() {
        Ok(mut child) => {
            tracing::debug!(pid = child.id(), "background settle started");
            // A long-running `serve` reaps its children; a CLI command exits
            // first and leaves the child to init.
            std::thread::spawn(move || child.wait());
        }
        Err(e) => tracing::warn!("cannot start a background settle: {e}; run `stowage settle`"),
    }
}

/// `stowage settle`: `opts.only` is filled from `references` here.
pub fn run(
    store: &Store,
    references: &[String],
    background: bool,
    mut opts: SettleOptions,
    quiet: bool,
    format: Format,
) -> Result<(), String> {
    if !references.is_empty() {
        let mut set = std::collections::HashSet::new();
        for r in references {
            let img = find_image(store, r).map_err(|e| e.to_string())?;
            set.extend(
                image_layers(store, &img.digest)
                    .into_iter()
                    .map(|l| l.digest),
            );
        }
        opts.only = Some(set);
    }
    let outcomes = if background {
        match settle_background(store, &opts).map_err(|e| e.to_string())? {
            Some(o) => o,
            None => {
                tracing::info!("a settle is already waiting; it will do this work");
                return Ok(());
            }
        }
    } else {
        settle(store, &opts).map_err(|e| e.to_string())?
    };
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcomes).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    if !quiet {
        print_outcomes(&outcomes);
        print_state(store);
    }
    Ok(())
}

/// Where every layer of the `recipe` images stands, whoever settled it
/// (this command, or a background settle it waited for).
fn print_state(store: &Store) {
    let Ok(images) = store.meta.images() else {
        return;
    };
    let (mut recipes, mut blobs) = (0, 0);
    let mut seen = std::collections::HashSet::new();
    for img in images.iter().filter(|i| i.policy == "recipe") {
        for l in image_layers(store, &img.digest) {
            if !seen.insert(l.digest.clone()) {
                continue;
            }
            if store.content.contains(&l.digest) {
                blobs += 1;
            } else {
                recipes += 1;
            }
        }
    }
    eprintln!(
        "layers of images under policy recipe: {recipes} kept as snapshot + recipe, {blobs} keeping their blob{}",
        if blobs > 0 { " (`stowage inspect IMAGE` says why)" } else { "" }
    );
}

fn print_outcomes(outcomes: &[RecipeOutcome]) {
    if outcomes.is_empty() {
        return;
    }
    let (mut saved, mut dropped) = (0, 0);
    for o in outcomes {
        let short = &o.layer.to_string()[..19];
        if o.dropped {
            dropped += 1;
            saved += o.blob_bytes.saturating_sub(o.recipe_bytes);
            eprintln!(
                "{short}  blob {} -> recipe {}",
                human_size(o.blob_bytes),
                human_size(o.recipe_bytes)
            );
        } else {
            eprintln!("{short}  {}", o.detail);
        }
    }
    eprintln!(
        "settled {} layers: {dropped} blobs dropped, {} saved",
        outcomes.len(),
        human_size(saved)
    );
}
