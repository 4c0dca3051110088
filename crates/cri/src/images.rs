//! Image names in the store, grouped into CRI images (one per config
//! digest, as containerd does), and looked up by what kubelet and crictl
//! send: an image id (`sha256:<config digest>` or a unique prefix of it), a
//! reference (`debian`, `docker.io/library/debian:12`, `repo@sha256:…`).

use crate::proto;
use crate::{Backend, BackendError, ErrorKind, ResolvedView};
use std::collections::BTreeMap;
use stowage_oci::{Digest, Reference};
use stowage_store::{ImageRecord, Store};

/// One CRI image: every store name whose platform config is `id`.
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: Digest,
    pub records: Vec<ImageRecord>,
    pub resolved: ResolvedView,
}

fn store_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::new(ErrorKind::Internal, format!("store: {e}"))
}

/// Every image in the store, grouped by image id, sorted by id. Names whose
/// manifest or config cannot be read are left out (and logged).
pub fn all(store: &Store, backend: &dyn Backend) -> Result<Vec<Entry>, BackendError> {
    let records = store.meta.images().map_err(store_err)?;
    let mut by_id: BTreeMap<Digest, Entry> = BTreeMap::new();
    for rec in records {
        let resolved = match backend.resolve(store, &rec) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(image = %rec.name, "left out of the CRI image list: {e}");
                continue;
            }
        };
        match by_id.get_mut(&resolved.config_digest) {
            Some(entry) => entry.records.push(rec),
            None => {
                let id = resolved.config_digest.clone();
                by_id.insert(
                    id.clone(),
                    Entry {
                        id,
                        records: vec![rec],
                        resolved,
                    },
                );
            }
        }
    }
    Ok(by_id.into_values().collect())
}

/// The name a reference is recorded under: `registry/repo:tag` (`latest`
/// when neither tag nor digest is given) or `registry/repo@digest`.
pub fn record_name(r: &Reference) -> String {
    let mut n = r.clone();
    if n.tag.is_none() && n.digest.is_none() {
        n.tag = Some("latest".into());
    }
    n.to_string()
}

/// Find the image `spec` means. `Ok(None)` when there is none;
/// `InvalidArgument` when `spec` is neither a reference nor an image id.
pub fn find(
    store: &Store,
    backend: &dyn Backend,
    spec: &str,
) -> Result<Option<Entry>, BackendError> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(BackendError::new(
            ErrorKind::InvalidArgument,
            "image spec is empty",
        ));
    }
    let entries = all(store, backend)?;
    // 1. A full image id.
    if let Ok(d) = spec.parse::<Digest>() {
        return Ok(entries.into_iter().find(|e| e.id == d));
    }
    // 2. A reference: a recorded name, or repo@digest of a recorded name.
    let parsed = spec.parse::<Reference>();
    if let Ok(r) = &parsed {
        let name = record_name(r);
        if let Some(e) = entries
            .iter()
            .find(|e| e.records.iter().any(|rec| rec.name == name))
        {
            return Ok(Some(e.clone()));
        }
        if let Some(d) = &r.digest {
            let repo = r.name();
            let hit = entries.iter().find(|e| {
                (e.resolved.manifest_digest == *d || e.records.iter().any(|rec| rec.digest == *d))
                    && e.records.iter().any(|rec| repository_of(&rec.name) == repo)
            });
            if let Some(e) = hit {
                return Ok(Some(e.clone()));
            }
        }
    }
    // 3. A unique prefix of an image id (as `crictl inspecti 1a2b3c` sends).
    let hex = spec.strip_prefix("sha256:").unwrap_or(spec);
    if !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let hex = hex.to_ascii_lowercase();
        let mut hits = entries.into_iter().filter(|e| e.id.hex().starts_with(&hex));
        let first = hits.next();
        if hits.next().is_some() {
            return Err(BackendError::new(
                ErrorKind::InvalidArgument,
                format!("image id prefix {spec:?} matches several images; give more of it"),
            ));
        }
        return Ok(first);
    }
    match parsed {
        Ok(_) => Ok(None),
        Err(e) => Err(BackendError::new(ErrorKind::InvalidArgument, e.to_string())),
    }
}

/// `registry/repo` of a recorded name (`registry/repo:tag` or `…@digest`).
pub fn repository_of(name: &str) -> String {
    match name.parse::<Reference>() {
        Ok(r) => r.name(),
        Err(_) => name.to_string(),
    }
}

/// containerd's `getUserFromImage`: a numeric user is a uid, anything else
/// a user name; the group part is dropped.
fn user_of(user: &str) -> (Option<i64>, String) {
    if user.is_empty() {
        return (None, String::new());
    }
    let u = user.split(':').next().unwrap_or("");
    match u.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, u.to_string()),
    }
}

/// The CRI `Image` message of an entry.
pub fn to_cri(e: &Entry) -> proto::Image {
    let mut tags = Vec::new();
    let mut digests = Vec::new();
    for rec in &e.records {
        let Ok(r) = rec.name.parse::<Reference>() else {
            continue;
        };
        if r.tag.is_some() && r.digest.is_none() {
            tags.push(rec.name.clone());
        }
        let d = format!("{}@{}", r.name(), rec.digest);
        if !digests.contains(&d) {
            digests.push(d);
        }
    }
    tags.sort();
    digests.sort();
    let (uid, username) = user_of(&e.resolved.user);
    proto::Image {
        id: e.id.to_string(),
        repo_tags: tags,
        repo_digests: digests,
        size: e.resolved.size,
        uid: uid.map(|value| proto::Int64Value { value }),
        username,
        spec: Some(proto::ImageSpec {
            image: e.id.to_string(),
            ..Default::default()
        }),
        pinned: false,
    }
}

/// The verbose `info` of `ImageStatus`: one key, `info`, holding JSON with
/// the image's names, origin, policy, layers and the forms each layer keeps
/// in the store, and the image config (as containerd's `imageSpec`).
pub fn verbose_info(store: &Store, e: &Entry) -> Result<String, BackendError> {
    let mut layers = Vec::new();
    for l in &e.resolved.layers {
        let forms = store.meta.layer_forms(&l.digest).map_err(store_err)?;
        let kept: Vec<&str> = forms.iter().map(|f| f.form.as_str()).collect();
        let mut dropped = serde_json::Map::new();
        for form in ["blob", "snapshot", "recipe"] {
            if kept.contains(&form) {
                continue;
            }
            if let Some(reason) = store
                .meta
                .dropped_reason(&l.digest, form)
                .map_err(store_err)?
            {
                dropped.insert(form.to_string(), reason.into());
            }
        }
        layers.push(serde_json::json!({
            "digest": l.digest.to_string(),
            "diffID": l.diff_id.to_string(),
            "chainID": l.chain_id.to_string(),
            "mediaType": l.media_type,
            "size": l.size,
            "forms": forms,
            "dropped": dropped,
        }));
    }
    let names: Vec<serde_json::Value> = e
        .records
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "digest": r.digest.to_string(),
                "mediaType": r.media_type,
                "policy": r.policy,
                "origin": { "registry": r.origin_registry, "repository": r.origin_repository },
            })
        })
        .collect();
    let first = &e.records[0];
    let info = serde_json::json!({
        "id": e.id.to_string(),
        "manifestDigest": e.resolved.manifest_digest.to_string(),
        "size": e.resolved.size,
        "policy": first.policy,
        "origin": { "registry": first.origin_registry, "repository": first.origin_repository },
        "names": names,
        "layers": layers,
        "imageSpec": e.resolved.config,
    });
    serde_json::to_string(&info).map_err(|e| BackendError::new(ErrorKind::Internal, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_as_containerd_reads_them() {
        assert_eq!(user_of(""), (None, String::new()));
        assert_eq!(user_of("1000"), (Some(1000), String::new()));
        assert_eq!(user_of("1000:1000"), (Some(1000), String::new()));
        assert_eq!(user_of("nobody"), (None, "nobody".to_string()));
        assert_eq!(user_of("app:staff"), (None, "app".to_string()));
    }

    #[test]
    fn names_normalize_like_pulls_record_them() {
        assert_eq!(
            record_name(&"debian".parse().unwrap()),
            "docker.io/library/debian:latest"
        );
        assert_eq!(
            record_name(&"127.0.0.1:5000/corpus/x:1".parse().unwrap()),
            "127.0.0.1:5000/corpus/x:1"
        );
        assert_eq!(
            repository_of("docker.io/library/debian:12"),
            "docker.io/library/debian"
        );
    }
}
