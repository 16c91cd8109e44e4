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
    /// A limit of the controller is reached (running sweeps, agents).
    #[error("{0}")]
    ResourceExhausted(String),
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
            ApiError::ResourceExhausted(m) => tonic::Status::resource_exhausted(m),
            ApiError::Store(e) => tonic::Status::internal(format!("store: {e}")),
        }
    }
}

/// Checks an id from a request by the one id rule
/// ([`chimera_domain::ids::check_id`]).
pub fn check_id(field: &str, value: &str) -> Result<(), ApiError> {
    chimera_domain::ids::check_id(field, value).map_err(ApiError::InvalidArgument)
}
