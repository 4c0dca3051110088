//! stowage as a library: the operations the CLI, the CRI server and the
//! registry server share. Each front end is a thin adapter over these.

pub mod config;
pub mod du;
pub mod export;
pub mod image;
pub mod import;
pub mod mount;
pub mod peer;
pub mod progress;
pub mod pull;
pub mod push;
pub mod recipe;
pub mod settle;
pub mod unpack;

pub use image::{resolve_image, ImageError, ResolvedImage};
pub use pull::{pull, PullError, PullOptions, PullReport};
pub use stowage_store::{Policy, Store};
