//! Progress reporting, so the library can drive a terminal's bars, a CRI
//! progress timer or nothing at all.

/// Receives progress of long operations. Every method has a no-op default.
pub trait Progress: Sync {
    /// A unit of work (a layer) started; `total` bytes are expected.
    fn start(&self, _id: &str, _label: &str, _total: u64) {}
    /// `n` more bytes of `id` were processed.
    fn advance(&self, _id: &str, _n: u64) {}
    /// `id` finished with a short status ("done", "exists", ...).
    fn finish(&self, _id: &str, _status: &str) {}
    /// A one-line message for the user.
    fn message(&self, _msg: &str) {}
}

/// Reports nothing.
pub struct Silent;
impl Progress for Silent {}
