//! The engine's one error type, with stable codes.

use thiserror::Error;

/// Every error the engine returns. [`EngineError::code`] is stable and is what bindings
/// map to their own error types (the napi binding prefixes messages with it).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineError {
    /// A configuration or task field is wrong; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// No task with that id exists in the store.
    #[error("task {0} not found")]
    NotFound(String),
    /// No handler this engine knows can run that classification.
    #[error(
        "no handler is registered for classification '{0}': register one before pushing tasks of it"
    )]
    UnknownClassification(String),
    /// A dependency names a task (or a step of one) that does not exist; the message says
    /// which.
    #[error("{0}")]
    DependencyNotFound(String),
    /// The engine is shut down (or shutting down) and accepts no new work.
    #[error("the engine is shut down: create a new service to push more tasks")]
    Shutdown,
    /// The store failed.
    #[error("store error: {0}")]
    Store(String),
    /// A bug: an invariant did not hold or a panic was caught.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// The stable code of this error, e.g. `E_NOT_FOUND`.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Invalid(_) => "E_INVALID",
            EngineError::NotFound(_) => "E_NOT_FOUND",
            EngineError::UnknownClassification(_) => "E_UNKNOWN_CLASSIFICATION",
            EngineError::DependencyNotFound(_) => "E_DEPENDENCY",
            EngineError::Shutdown => "E_SHUTDOWN",
            EngineError::Store(_) | EngineError::Internal(_) => "E_INTERNAL",
        }
    }
}

/// Result alias used across the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
