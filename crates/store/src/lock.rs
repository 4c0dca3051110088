//! File locks (flock) on small files under the root: one GC at a time, one
//! settle at a time, one opener setting up the database, one fetcher per
//! layer. Lock files are never removed: deleting one that another process
//! has open would split the lock.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// A held lock; released when dropped.
pub type FileLock = Flock<File>;

/// Take an exclusive lock on `path` (created if missing). With `wait` it
/// blocks until the lock is free; without, `None` means another holds it.
pub fn lock_file(path: &Path, wait: bool) -> io::Result<Option<FileLock>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let arg = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    match Flock::lock(file, arg) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}
