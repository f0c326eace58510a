//! napi-rs binding of the decaf-tasks engine. Thin by design: JSON and strings in and out,
//! threadsafe functions for wake-ups, error mapping in one place. The engine itself lives
//! in `crates/core` and knows nothing of JS.

#![deny(clippy::all)]

mod engine;
mod errors;
mod executor;
mod native_handlers;
mod sink;
mod tracing_setup;

pub use engine::NativeEngine;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
