//! The one error type of `hatrunk-core`.

/// Errors from validating trunks and applying pool operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// A trunk file field is wrong; `field` is its dotted path (`primary.allowed_ips[1]`).
    #[error("invalid trunk field `{field}`: {reason}")]
    InvalidField { field: String, reason: String },
    /// The trunk file is not valid TOML or has a value of the wrong type.
    #[error("trunk file does not parse: {0}")]
    Syntax(String),
    /// A number in the file already belongs to another trunk.
    #[error("invalid trunk field `numbers`: {number} already belongs to trunk {owner}")]
    NumberTaken { number: String, owner: String },
}

impl CoreError {
    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CoreError::InvalidField { field: field.into(), reason: reason.into() }
    }
}
