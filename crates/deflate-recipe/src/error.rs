//! Error type shared by the analysis and rebuild paths.

use thiserror::Error;

/// Everything that can go wrong while analysing or rebuilding a gzip stream.
#[derive(Debug, Error)]
pub enum RecipeError {
    /// Reading the input or writing the output failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The compressed input is not a valid gzip/deflate stream.
    #[error("invalid deflate stream at byte {offset}: {reason}")]
    InvalidDeflate {
        /// Byte offset in the compressed input (approximate to the byte holding the bit).
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// The gzip framing (header or trailer) is invalid.
    #[error("invalid gzip framing at byte {offset}: {reason}")]
    InvalidGzip {
        /// Byte offset in the compressed input.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// The serialized recipe could not be decoded.
    #[error("invalid recipe: {0}")]
    InvalidRecipe(String),
    /// The plaintext given to rebuild does not fit the recipe.
    #[error("plaintext does not match recipe: {0}")]
    Mismatch(String),
}

impl RecipeError {
    pub(crate) fn deflate(offset: u64, reason: impl Into<String>) -> Self {
        RecipeError::InvalidDeflate {
            offset,
            reason: reason.into(),
        }
    }
    pub(crate) fn recipe(reason: impl Into<String>) -> Self {
        RecipeError::InvalidRecipe(reason.into())
    }
    pub(crate) fn mismatch(reason: impl Into<String>) -> Self {
        RecipeError::Mismatch(reason.into())
    }
    /// Prefix a recipe or plaintext error with where it happened (`at`);
    /// other errors already say enough or carry their own offset.
    pub(crate) fn context(self, at: impl FnOnce() -> String) -> Self {
        match self {
            RecipeError::InvalidRecipe(r) => RecipeError::InvalidRecipe(format!("{}: {r}", at())),
            RecipeError::Mismatch(r) => RecipeError::Mismatch(format!("{}: {r}", at())),
            e => e,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, RecipeError>;
