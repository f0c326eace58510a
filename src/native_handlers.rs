//! Built-in native handlers, registered on every engine under the reserved `native:`
//! prefix. They serve tests, the demo and the benchmark, and show how Rust handlers look.

use std::sync::Arc;
use std::time::{Duration, Instant};

use decaf_tasks_core::{Engine, HandlerResult, TaskContext, TaskError};
use serde_json::{json, Value};

fn field_u64(input: &Value, key: &str) -> Option<u64> {
    input.get(key).and_then(Value::as_u64)
}

/// `native:noop`: returns `null`.
fn noop(_input: &Value, _ctx: &TaskContext) -> HandlerResult {
    Ok(Value::Null)
}

/// `native:echo`: returns its input.
fn echo(input: &Value, _ctx: &TaskContext) -> HandlerResult {
    Ok(input.clone())
}

/// `native:cpu`: burns CPU. Input `{ iterations }` (default 1,000,000) or `{ ms }` (spin
/// for that long). Reports progress every quarter; stops early when aborted.
fn cpu(input: &Value, ctx: &TaskContext) -> HandlerResult {
    let deadline = field_u64(input, "ms").map(|ms| Instant::now() + Duration::from_millis(ms));
    let iterations = field_u64(input, "iterations").unwrap_or(1_000_000);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ iterations;
    let mut done: u64 = 0;
    let quarter = (iterations / 4).max(1);
    loop {
        for _ in 0..4096 {
            // xorshift64*: cheap, not optimised away because the result is returned.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        done += 4096;
        if ctx.is_aborted() {
            return Err(TaskError::new("aborted").with_code("E_ABORTED").into());
        }
        match deadline {
            Some(at) => {
                if Instant::now() >= at {
                    break;
                }
            }
            None => {
                if done >= iterations {
                    break;
                }
                if done % quarter < 4096 && done < iterations {
                    ctx.progress(json!({ "done": done, "of": iterations }));
                }
            }
        }
    }
    Ok(json!({ "iterations": done, "checksum": x.to_string() }))
}

/// `native:sleep`: sleeps `{ ms }` (default 10) in short slices, stopping when aborted.
fn sleep(input: &Value, ctx: &TaskContext) -> HandlerResult {
    let ms = field_u64(input, "ms").unwrap_or(10);
    let until = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < until {
        if ctx.is_aborted() {
            return Err(TaskError::new("aborted").with_code("E_ABORTED").into());
        }
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(5)));
    }
    Ok(json!({ "sleptMs": ms }))
}

/// `native:fail`: fails with `{ message?, code? }` until attempt `succeedOnAttempt` (never,
/// by default), then returns `{ attempt }`. Logs each attempt.
fn fail(input: &Value, ctx: &TaskContext) -> HandlerResult {
    ctx.log("info", &format!("attempt {}", ctx.attempt()), None);
    if let Some(n) = field_u64(input, "succeedOnAttempt") {
        if u64::from(ctx.attempt()) >= n {
            return Ok(json!({ "attempt": ctx.attempt() }));
        }
    }
    let message = input
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("native:fail failed as asked");
    let mut error = TaskError::new(message);
    error.code = input.get("code").cloned();
    Err(error.into())
}

/// `native:panic`: panics (the engine turns it into a failed attempt).
fn panic(_input: &Value, _ctx: &TaskContext) -> HandlerResult {
    panic!("native:panic panicked as asked")
}

pub(crate) fn register_all(engine: &Engine) -> decaf_tasks_core::Result<()> {
    engine.register_native("native:noop", Arc::new(noop))?;
    engine.register_native("native:echo", Arc::new(echo))?;
    engine.register_native("native:cpu", Arc::new(cpu))?;
    engine.register_native("native:sleep", Arc::new(sleep))?;
    engine.register_native("native:fail", Arc::new(fail))?;
    engine.register_native("native:panic", Arc::new(panic))?;
    Ok(())
}
