//! The one place engine errors become JS errors: `"<CODE>: <message>"`, parsed back into
//! typed error classes by `lib/errors.ts`.

use decaf_tasks_core::EngineError;

pub(crate) fn to_js(error: EngineError) -> napi::Error {
    napi::Error::from_reason(format!("{}: {}", error.code(), error))
}

pub(crate) fn invalid(msg: impl std::fmt::Display) -> napi::Error {
    to_js(EngineError::Invalid(msg.to_string()))
}

/// Parses JSON produced by `lib/`, naming what it was on failure.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> napi::Result<T> {
    serde_json::from_str(json).map_err(|e| invalid(format!("{what}: {e}")))
}

/// Serializes a value for `lib/`.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> napi::Result<String> {
    serde_json::to_string(value)
        .map_err(|e| to_js(EngineError::Internal(format!("serialization failed: {e}"))))
}
