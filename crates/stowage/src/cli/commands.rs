//! One function per command.

use super::output::{age, human_size, split_name, table};
use super::progress::Bars;
use super::settle::SettleMode;
use super::{Command, Format};
use serde_json::json;
use std::path::Path;
use stowage::config::Config;
use stowage::image::{find_image, resolve_image, resolve_record};
use stowage::pull::{pull, PullOptions};
use stowage::{Policy, Store};
use stowage_oci::{Platform, Reference};
use stowage_remote::{ClientOptions, Credentials};

type Result<T> = std::result::Result<T, String>;

fn open(root: &Path) -> Result<Store> {
    Store::open(root).map_err(|e| e.to_string())
}

fn platform(p: &Option<String>) -> Result<Option<Platform>> {
    p.as_deref()
        .map(|s| s.parse::<Platform>().map_err(|e| e.to_string()))
        .transpose()
}

/// How the CLI reaches a registry: `--plain-http`, `--creds`, the hosts.toml
/// tree and docker's config.json.
fn client_options(
    config: &Config,
    plain_http: bool,
    creds: Option<String>,
) -> Result<ClientOptions> {
    let credentials = match creds {
        Some(c) => Some(Credentials::parse(&c).ok_or("--creds must be USER:PASS")?),
        None => None,
    };
    Ok(ClientOptions {
        plain_http,
        credentials,
        user_agent: None,
        hosts_dir: config
            .registry_config_path
            .clone()
            .or_else(stowage_remote::hosts::default_dir),
        docker_config: stowage_remote::dockercfg::default_path(),
    })
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(v).map_err(|e| e.to_string())?
    );
    Ok(())
}

pub fn dispatch(cmd: Command, root: &Path, config: &Config) -> Result<()> {
    match cmd {
        Command::Pull {
            reference,
            platform: p,
            all_platforms,
            policy,
            plain_http,
            creds,
            max_concurrent,
            settle,
            quiet,
            format,
        } => {
            let r: Reference = reference
                .parse()
                .map_err(|e: stowage_oci::ReferenceError| e.to_string())?;
            let policy = match policy {
                Some(p) => p.parse::<Policy>()?,
                None => config.policy,
            };
            let opts = PullOptions {
                platform: platform(&p)?,
                all_platforms,
                policy,
                max_concurrent: max_concurrent.unwrap_or(config.max_concurrent_downloads),
                client: client_options(config, plain_http, creds)?,
                recipe_max_ratio: config.recipe_max_ratio,
                settle_now: settle == SettleMode::Now,
            };
            let store = open(root)?;
            let bars = Bars::new(quiet || format == Format::Json);
            let started = std::time::Instant::now();
            let report = pull(&store, &r, &opts, &bars).map_err(|e| e.to_string())?;
            if policy == Policy::Recipe && settle == SettleMode::Background {
                super::settle::spawn_background(root, config.recipe_max_ratio);
            }
            if format == Format::Json {
                return print_json(&report);
            }
            if !quiet {
                eprintln!(
                    "pulled {} in {:.1}s: {} layers fetched ({}), {} already present, policy {}",
                    report.name,
                    started.elapsed().as_secs_f64(),
                    report.layers_fetched,
                    human_size(report.bytes_fetched),
                    report.layers_present,
                    policy.as_str()
                );
            }
            println!("{}", report.digest);
            Ok(())
        }
        Command::Images { format, quiet } => {
            let store = open(root)?;
            let images = store.meta.images().map_err(|e| e.to_string())?;
            let mut rows = Vec::new();
            let mut docs = Vec::new();
            for img in images {
                let resolved = resolve_record(&store, img.clone(), None).ok();
                let size = resolved.as_ref().map(|r| r.content_size());
                let created = resolved.as_ref().and_then(|r| r.config.created().clone());
                let (repo, tag) = split_name(&img.name);
                if quiet {
                    println!("{}", img.name);
                    continue;
                }
                rows.push(vec![
                    repo.clone(),
                    tag.clone(),
                    img.digest.to_string()[..19].to_string(),
                    size.map(human_size).unwrap_or_else(|| "-".into()),
                    age(img.created),
                ]);
                docs.push(json!({
                    "name": img.name, "repository": repo, "tag": tag, "digest": img.digest,
                    "mediaType": img.media_type, "size": size, "created": created,
                    "pulled": img.created, "policy": img.policy,
                    "origin": img.origin_registry.as_ref().map(|r| format!("{}/{}", r, img.origin_repository.clone().unwrap_or_default())),
                }));
            }
            if quiet {
                return Ok(());
            }
            match format {
                Format::Json => print_json(&docs),
                Format::Table => {
                    table(&["REPOSITORY", "TAG", "DIGEST", "SIZE", "CREATED"], &rows);
                    Ok(())
                }
            }
        }
        Command::Inspect {
            reference,
            platform: p,
            format,
        } => {
            let store = open(root)?;
            let img = resolve_image(&store, &reference, platform(&p)?.as_ref())
                .map_err(|e| e.to_string())?;
            let mut layers = Vec::new();
            for l in &img.layers {
                let forms = store
                    .meta
                    .layer_forms(&l.digest)
                    .map_err(|e| e.to_string())?;
                let has_blob = store.content.contains(&l.digest);
                let has_snapshot = store.snapshots.exists(&l.chain_id);
                let dropped = store
                    .meta
                    .dropped_reason(&l.digest, "blob")
                    .map_err(|e| e.to_string())?;
                // Why a `recipe` image still keeps this blob (zstd, a failed
                // proof, a recipe over recipe_max_ratio), when settled.
                let no_recipe = if has_blob {
                    store
                        .meta
                        .dropped_reason(&l.digest, "recipe")
                        .map_err(|e| e.to_string())?
                } else {
                    None
                };
                let mut kept = Vec::new();
                if has_blob {
                    kept.push("blob");
                }
                if has_snapshot {
                    kept.push("snapshot");
                }
                // A tar-split alone rebuilds the tar (the diffID), not the
                // compressed blob; only a full recipe counts as the blob.
                if forms.iter().any(|f| f.form == "recipe") {
                    match stowage::export::plan::layer_recipe(&store, &l.digest) {
                        Some(r) if r.rebuilds_blob() => kept.push("recipe"),
                        _ => kept.push("tar-split"),
                    }
                }
                layers.push(json!({
                    "digest": l.digest, "mediaType": l.media_type, "size": l.size,
                    "diffID": l.diff_id, "chainID": l.chain_id, "forms": kept,
                    "blobDropped": dropped, "blobKeptBecause": no_recipe,
                }));
            }
            let manifest: serde_json::Value =
                serde_json::from_slice(&img.manifest_bytes).map_err(|e| e.to_string())?;
            let config = serde_json::to_value(&img.config).map_err(|e| e.to_string())?;
            let doc = json!({
                "name": img.record.name, "digest": img.record.digest, "mediaType": img.record.media_type,
                "manifestDigest": img.manifest_digest, "configDigest": img.config_digest,
                "policy": img.record.policy,
                "origin": {"registry": img.record.origin_registry, "repository": img.record.origin_repository},
                "size": img.content_size(),
                "layers": layers, "manifest": manifest, "config": config,
            });
            match format {
                Format::Json => print_json(&doc),
                Format::Table => {
                    println!("Name:      {}", img.record.name);
                    println!("Digest:    {}", img.record.digest);
                    println!("Manifest:  {}", img.manifest_digest);
                    println!("Config:    {}", img.config_digest);
                    if let (Some(r), Some(p)) =
                        (&img.record.origin_registry, &img.record.origin_repository)
                    {
                        println!("Origin:    {r}/{p}");
                    }
                    println!("Policy:    {}", img.record.policy);
                    println!(
                        "Platform:  {}/{}",
                        img.config.os(),
                        img.config.architecture()
                    );
                    println!("Size:      {}", human_size(img.content_size()));
                    println!("Layers:");
                    let rows: Vec<Vec<String>> = layers
                        .iter()
                        .map(|l| {
                            vec![
                                l["digest"].as_str().unwrap_or("").to_string(),
                                human_size(l["size"].as_u64().unwrap_or(0)),
                                l["forms"]
                                    .as_array()
                                    .map(|a| {
                                        a.iter()
                                            .filter_map(|x| x.as_str())
                                            .collect::<Vec<_>>()
                                            .join("+")
                                    })
                                    .unwrap_or_default(),
                            ]
                        })
                        .collect();
                    table(
                        &["  DIGEST", "SIZE", "FORMS"],
                        &rows
                            .into_iter()
                            .map(|mut r| {
                                r[0] = format!("  {}", r[0]);
                                r
                            })
                            .collect::<Vec<_>>(),
                    );
                    for l in &layers {
                        if let Some(why) = l["blobKeptBecause"].as_str() {
                            println!(
                                "  {}: blob kept: {why}",
                                &l["digest"].as_str().unwrap_or("")[..19]
                            );
                        }
                    }
                    Ok(())
                }
            }
        }
        Command::Tag { source, target } => {
            let store = open(root)?;
            let src = find_image(&store, &source).map_err(|e| e.to_string())?;
            let dst: Reference = target
                .parse()
                .map_err(|e: stowage_oci::ReferenceError| e.to_string())?;
            let name = stowage::pull::image_name(&dst);
            store
                .meta
                .tag_image(&src, &name)
                .map_err(|e| e.to_string())?;
            println!("{name}");
            Ok(())
        }
        Command::Rm { references } => {
            let store = open(root)?;
            let mut failed = Vec::new();
            for r in references {
                match find_image(&store, &r) {
                    Ok(img) => {
                        store
                            .meta
                            .remove_image(&img.name)
                            .map_err(|e| e.to_string())?;
                        println!("{}", img.name);
                    }
                    Err(e) => failed.push(e.to_string()),
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(failed.join("\n"))
            }
        }
        Command::Unpack {
            reference,
            dir,
            platform: p,
        } => {
            let store = open(root)?;
            let report = stowage::unpack::unpack(&store, &reference, &dir, platform(&p)?.as_ref())
                .map_err(|e| e.to_string())?;
            eprintln!(
                "unpacked {reference} into {}: {} files, {} dirs, {}",
                dir.display(),
                report.files,
                report.dirs,
                human_size(report.bytes)
            );
            Ok(())
        }
        Command::Serve {
            cri_socket,
            plain_http_registry,
            registry_addr,
            pull_through,
        } => super::serve::run(
            root,
            config,
            cri_socket,
            plain_http_registry,
            registry_addr.map(|a| (a, pull_through)),
        ),
        Command::Login {
            registry,
            username,
            password_stdin,
        } => super::login::login(&registry, username, password_stdin, config),
        Command::Logout { registry } => super::login::logout(&registry),
        Command::Export {
            output,
            references,
            platform: p,
            all_platforms,
            no_fetch,
            recompress,
            skip_manifest_json,
            format,
        } => {
            let opts = stowage::export::ExportOptions {
                platform: platform(&p)?,
                all_platforms,
                no_fetch,
                recompress,
                skip_manifest_json,
            };
            super::archive::export(&open(root)?, &output, &references, &opts, format)
        }
        Command::Push {
            reference,
            destination,
            platform: p,
            all_platforms,
            no_fetch,
            plain_http,
            creds,
            quiet,
            format,
        } => {
            let opts = stowage::push::PushOptions {
                platform: platform(&p)?,
                all_platforms,
                no_fetch,
                client: client_options(config, plain_http, creds)?,
            };
            super::push::push(
                &open(root)?,
                &reference,
                destination.as_deref(),
                &opts,
                quiet,
                format,
            )
        }
        Command::Import {
            file,
            name,
            policy,
            format,
        } => {
            let policy = match policy {
                Some(p) => p.parse::<Policy>()?,
                None => config.policy,
            };
            super::archive::import(&open(root)?, &file, name.as_deref(), policy, format)?;
            if policy == Policy::Recipe {
                super::settle::spawn_background(root, config.recipe_max_ratio);
            }
            Ok(())
        }
        Command::Settle {
            references,
            background,
            retry,
            max_ratio,
            jobs,
            quiet,
            format,
        } => {
            let mut opts = stowage::settle::SettleOptions {
                max_ratio: max_ratio.unwrap_or(config.recipe_max_ratio),
                retry,
                ..Default::default()
            };
            if let Some(j) = jobs {
                opts.jobs = j.max(1);
            }
            super::settle::run(&open(root)?, &references, background, opts, quiet, format)
        }
        Command::Gc { format } => super::archive::gc(&open(root)?, format),
        Command::Du { format } => super::archive::du(&open(root)?, format),
        Command::Check {
            references,
            platform: p,
            all_platforms,
            no_fetch,
            format,
        } => {
            let opts = stowage::export::ExportOptions {
                platform: platform(&p)?,
                all_platforms,
                no_fetch,
                ..Default::default()
            };
            super::archive::check(&open(root)?, &references, &opts, format)
        }
        Command::Mount {
            reference,
            dir,
            platform: p,
        } => {
            let store = open(root)?;
            stowage::mount::mount_image(&store, &reference, &dir, platform(&p)?.as_ref())
                .map_err(|e| e.to_string())?;
            eprintln!(
                "mounted {reference} read-only on {}; `umount {}` releases it",
                dir.display(),
                dir.display()
            );
            Ok(())
        }
    }
}
