//! `du`: bytes per image in blobs, snapshots and recipes, bytes shared
//! between images, and what dropping blobs saved compared with `keep`.

use serde::Serialize;
use std::collections::HashMap;
use stowage_oci::Digest;
use stowage_store::gc::{mark_image, Marks};
use stowage_store::Store;

#[derive(Debug, Default, Serialize, Clone)]
pub struct Usage {
    pub blobs: u64,
    pub snapshots: u64,
    pub recipes: u64,
    /// Of the above, bytes also used by another image.
    pub shared: u64,
    /// Compressed layer bytes not kept (policy discard or recipe).
    pub saved_vs_keep: u64,
}

#[derive(Debug, Serialize)]
pub struct ImageUsage {
    pub name: String,
    pub policy: String,
    #[serde(flatten)]
    pub usage: Usage,
}

#[derive(Debug, Serialize)]
pub struct DiskUsage {
    pub images: Vec<ImageUsage>,
    /// Each byte counted once.
    pub total: Usage,
}

pub fn disk_usage(store: &Store) -> Result<DiskUsage, stowage_store::MetaError> {
    let images = store.meta.images()?;
    let mut marks: Vec<Marks> = Vec::new();
    let mut users: HashMap<String, usize> = HashMap::new();
    for img in &images {
        let mut m = Marks::default();
        mark_image(store, &img.digest, &mut m);
        for b in &m.blobs {
            *users.entry(format!("b{b}")).or_default() += 1;
        }
        for s in &m.snapshots {
            *users.entry(format!("s{s}")).or_default() += 1;
        }
        marks.push(m);
    }
    let recipe = |d: &Digest| {
        store.meta.blob_media_type(d).ok().flatten().as_deref()
            == Some(stowage_layer::RECIPE_MEDIA_TYPE)
    };
    let snap_size = |s: &Digest| {
        store
            .meta
            .snapshot(s)
            .ok()
            .flatten()
            .map(|r| r.size)
            .unwrap_or(0)
    };
    let mut out = Vec::new();
    let mut total = Usage::default();
    let mut counted: std::collections::HashSet<String> = Default::default();
    for (img, m) in images.iter().zip(&marks) {
        let mut u = Usage::default();
        for b in &m.blobs {
            let Some(size) = store.content.size(b) else {
                if let Ok(Some(l)) = store.meta.layer(b) {
                    u.saved_vs_keep += l.size;
                }
                continue;
            };
            let key = format!("b{b}");
            if recipe(b) {
                u.recipes += size;
            } else {
                u.blobs += size;
            }
            if users[&key] > 1 {
                u.shared += size;
            }
            if counted.insert(key) {
                if recipe(b) {
                    total.recipes += size;
                } else {
                    total.blobs += size;
                }
            }
        }
        for s in &m.snapshots {
            if !store.snapshots.exists(s) {
                continue;
            }
            let size = snap_size(s);
            let key = format!("s{s}");
            u.snapshots += size;
            if users[&key] > 1 {
                u.shared += size;
            }
            if counted.insert(key) {
                total.snapshots += size;
            }
        }
        total.saved_vs_keep += u.saved_vs_keep;
        out.push(ImageUsage {
            name: img.name.clone(),
            policy: img.policy.clone(),
            usage: u,
        });
    }
    Ok(DiskUsage { images: out, total })
}
