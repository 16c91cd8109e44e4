//! The one error type API handlers return; it converts to `tonic::Status`.

/// Why an API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request was malformed or refers to something impossible; nothing changed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with current state (a duplicate agent name).
    #[error("{0}")]
    Conflict(String),
    /// The controller is shutting down or its store failed.
    #[error("{0}")]
    Unavailable(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            ApiError::NotFound(m) => tonic::Status::not_found(m),
            ApiError::Unavailable(m) => tonic::Status::unavailable(m),
            ApiError::Conflict(m) => tonic::Status::already_exists(m),
            ApiError::Store(e) => tonic::Status::internal(format!("store: {e}")),
        }
    }
}

/// Checks an id from a request: 1 to 64 characters of `[A-Za-z0-9._-]`.
pub fn check_id(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(format!(
            "{field} `{}` is not valid: use 1 to 64 characters of letters, digits, `.`, `_`, `-`",
            value.chars().take(80).collect::<String>()
        )))
    }
}
