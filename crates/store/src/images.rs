//! Images, blobs, layers and their forms: the rows that say what the store
//! holds. An image is just a name pointing at a descriptor, plus where it
//! came from so a dropped blob can be fetched again.

use crate::meta::{optional, Meta, MetaError};
use crate::now;
use rusqlite::{params, Row, Transaction};
use serde::Serialize;
use stowage_oci::Digest;

#[derive(Clone, Debug, Serialize)]
pub struct ImageRecord {
    pub name: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub origin_registry: Option<String>,
    pub origin_repository: Option<String>,
    /// The origin was reached over plain HTTP (`--plain-http`).
    pub origin_plain_http: bool,
    pub policy: String,
    pub created: i64,
    pub updated: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerRecord {
    pub digest: Digest,
    pub diff_id: Digest,
    pub media_type: String,
    pub size: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerForm {
    pub form: String,
    #[serde(rename = "ref")]
    pub reference: String,
    pub size: u64,
}

fn digest_col(r: &Row, i: usize) -> rusqlite::Result<Digest> {
    let s: String = r.get(i)?;
    s.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn image_row(r: &Row) -> rusqlite::Result<ImageRecord> {
    Ok(ImageRecord {
        name: r.get(0)?,
        digest: digest_col(r, 1)?,
        media_type: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        origin_registry: r.get(4)?,
        origin_repository: r.get(5)?,
        policy: r.get(6)?,
        created: r.get(7)?,
        updated: r.get(8)?,
        origin_plain_http: r.get::<_, i64>(9)? != 0,
    })
}

const IMAGE_COLS: &str =
    "name, digest, media_type, size, origin_registry, origin_repository, policy, created, updated, origin_plain_http";

impl Meta {
    pub fn images(&self) -> Result<Vec<ImageRecord>, MetaError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("SELECT {IMAGE_COLS} FROM images ORDER BY name"))?;
        let rows = st
            .query_map([], image_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>, MetaError> {
        let conn = self.conn();
        optional(conn.query_row(
            &format!("SELECT {IMAGE_COLS} FROM images WHERE name = ?1"),
            [name],
            image_row,
        ))
    }

    /// Remove an image name. Content stays until `gc`.
    pub fn remove_image(&self, name: &str) -> Result<bool, MetaError> {
        self.write(|tx| Ok(tx.execute("DELETE FROM images WHERE name = ?1", [name])? > 0))
    }

    /// Point `dst` at what `src` points at.
    pub fn tag_image(&self, src: &ImageRecord, dst: &str) -> Result<(), MetaError> {
        self.write(|tx| {
            put_image(
                tx,
                &ImageRecord {
                    name: dst.to_string(),
                    ..src.clone()
                },
            )
        })
    }

    pub fn blob_media_type(&self, d: &Digest) -> Result<Option<String>, MetaError> {
        optional(self.conn().query_row(
            "SELECT media_type FROM blobs WHERE digest = ?1",
            [d.to_string()],
            |r| r.get(0),
        ))
    }

    pub fn layer(&self, d: &Digest) -> Result<Option<LayerRecord>, MetaError> {
        optional(self.conn().query_row(
            "SELECT digest, diff_id, media_type, size FROM layers WHERE digest = ?1",
            [d.to_string()],
            |r| {
                Ok(LayerRecord {
                    digest: digest_col(r, 0)?,
                    diff_id: digest_col(r, 1)?,
                    media_type: r.get(2)?,
                    size: r.get::<_, i64>(3)? as u64,
                })
            },
        ))
    }

    /// Layer digests (compressions) whose tar hashes to `diff_id`.
    pub fn layers_with_diff_id(&self, diff_id: &Digest) -> Result<Vec<Digest>, MetaError> {
        let conn = self.conn();
        let mut st =
            conn.prepare("SELECT digest FROM layers WHERE diff_id = ?1 ORDER BY digest")?;
        let rows = st
            .query_map([diff_id.to_string()], |r| digest_col(r, 0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn layer_forms(&self, layer: &Digest) -> Result<Vec<LayerForm>, MetaError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT form, ref, size FROM layer_forms WHERE layer = ?1 ORDER BY form, ref",
        )?;
        let rows = st
            .query_map([layer.to_string()], |r| {
                Ok(LayerForm {
                    form: r.get(0)?,
                    reference: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn dropped_reason(&self, layer: &Digest, form: &str) -> Result<Option<String>, MetaError> {
        optional(self.conn().query_row(
            "SELECT reason FROM dropped_forms WHERE layer = ?1 AND form = ?2",
            params![layer.to_string(), form],
            |r| r.get(0),
        ))
    }
}

pub fn put_image(tx: &Transaction, img: &ImageRecord) -> Result<(), MetaError> {
    tx.execute(
        "INSERT INTO images (name, digest, media_type, size, origin_registry, origin_repository, policy, created, updated, origin_plain_http)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)
         ON CONFLICT(name) DO UPDATE SET digest = ?2, media_type = ?3, size = ?4, origin_registry = ?5,
             origin_repository = ?6, policy = ?7, updated = ?8, origin_plain_http = ?9",
        params![
            img.name,
            img.digest.to_string(),
            img.media_type,
            img.size as i64,
            img.origin_registry,
            img.origin_repository,
            img.policy,
            now(),
            img.origin_plain_http as i64
        ],
    )?;
    Ok(())
}

pub fn put_blob(
    tx: &Transaction,
    d: &Digest,
    size: u64,
    media_type: &str,
) -> Result<(), MetaError> {
    tx.execute(
        "INSERT INTO blobs (digest, size, media_type, created) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(digest) DO NOTHING",
        params![d.to_string(), size as i64, media_type, now()],
    )?;
    Ok(())
}

pub fn remove_blob(tx: &Transaction, d: &Digest) -> Result<(), MetaError> {
    tx.execute("DELETE FROM blobs WHERE digest = ?1", [d.to_string()])?;
    tx.execute(
        "DELETE FROM layer_forms WHERE form = 'blob' AND ref = ?1",
        [d.to_string()],
    )?;
    Ok(())
}

pub fn put_layer(tx: &Transaction, l: &LayerRecord) -> Result<(), MetaError> {
    tx.execute(
        "INSERT INTO layers (digest, diff_id, media_type, size) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(digest) DO NOTHING",
        params![
            l.digest.to_string(),
            l.diff_id.to_string(),
            l.media_type,
            l.size as i64
        ],
    )?;
    Ok(())
}

pub fn put_form(
    tx: &Transaction,
    layer: &Digest,
    form: &str,
    reference: &str,
    size: u64,
) -> Result<(), MetaError> {
    tx.execute(
        "INSERT INTO layer_forms (layer, form, ref, size, created) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT DO UPDATE SET size = ?4",
        params![layer.to_string(), form, reference, size as i64, now()],
    )?;
    tx.execute(
        "DELETE FROM dropped_forms WHERE layer = ?1 AND form = ?2",
        params![layer.to_string(), form],
    )?;
    Ok(())
}

pub fn drop_form(
    tx: &Transaction,
    layer: &Digest,
    form: &str,
    reason: &str,
) -> Result<(), MetaError> {
    tx.execute(
        "DELETE FROM layer_forms WHERE layer = ?1 AND form = ?2",
        params![layer.to_string(), form],
    )?;
    note_missing_form(tx, layer, form, reason)
}

/// Record why a layer lacks (or did not get) `form`, for `check` and errors,
/// without touching the forms it has.
pub fn note_missing_form(
    tx: &Transaction,
    layer: &Digest,
    form: &str,
    reason: &str,
) -> Result<(), MetaError> {
    tx.execute(
        "INSERT INTO dropped_forms (layer, form, reason, at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO UPDATE SET reason = ?3, at = ?4",
        params![layer.to_string(), form, reason, now()],
    )?;
    Ok(())
}

pub fn set_label(tx: &Transaction, target: &str, key: &str, value: &str) -> Result<(), MetaError> {
    tx.execute(
        "INSERT INTO labels (target, key, value) VALUES (?1, ?2, ?3) ON CONFLICT DO UPDATE SET value = ?3",
        params![target, key, value],
    )?;
    Ok(())
}
