//! Validation of pushed task specs. Bindings validate too (with messages in their own
//! terms); this is the engine's own line of defence, so a Rust caller gets the same rules.

use crate::error::{EngineError, Result};
use crate::model::{Atomicity, Backoff, StepSpec, TaskSpec};

/// Longest classification, name or lock key accepted.
pub const MAX_KEY_LEN: usize = 256;

fn invalid(msg: String) -> EngineError {
    EngineError::Invalid(msg)
}

fn check_key(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(invalid(format!("{field} must be a non-empty string")));
    }
    if value.len() > MAX_KEY_LEN {
        return Err(invalid(format!(
            "{field} must be at most {MAX_KEY_LEN} bytes long"
        )));
    }
    Ok(())
}

fn check_backoff(field: &str, backoff: &Backoff) -> Result<()> {
    if backoff.max_ms < backoff.base_ms {
        return Err(invalid(format!(
            "{field}.maxMs ({}) must be at least {field}.baseMs ({})",
            backoff.max_ms, backoff.base_ms
        )));
    }
    Ok(())
}

/// Checks a spec: keys non-empty and bounded, `maxAttempts ≥ 1`, backoff `maxMs ≥ baseMs`,
/// a composite has steps and an atomic task has none.
pub fn validate(spec: &TaskSpec) -> Result<()> {
    check_key("classification", &spec.classification)?;
    if let Some(name) = &spec.name {
        if name.len() > MAX_KEY_LEN * 4 {
            return Err(invalid("name must be at most 1024 bytes long".into()));
        }
    }
    if spec.max_attempts == Some(0) {
        return Err(invalid("maxAttempts must be a positive integer".into()));
    }
    if spec.timeout_ms == Some(0) {
        return Err(invalid("timeoutMs must be a positive integer".into()));
    }
    if let Some(backoff) = &spec.backoff {
        check_backoff("backoff", backoff)?;
    }
    if let Some(lock) = &spec.lock {
        check_key("lock", lock)?;
    }
    for (i, dep) in spec.dependencies.iter().flatten().enumerate() {
        check_key(&format!("dependencies[{i}]"), dep)?;
    }
    let steps = spec.steps.as_deref().unwrap_or_default();
    match spec.atomicity.unwrap_or_default() {
        Atomicity::Atomic if !steps.is_empty() => {
            return Err(invalid(
                "steps are only allowed with atomicity 'composite'".into(),
            ))
        }
        Atomicity::Composite if steps.is_empty() => {
            return Err(invalid("a composite task needs at least one step".into()))
        }
        _ => {}
    }
    for (i, step) in steps.iter().enumerate() {
        validate_step(&format!("steps[{i}]"), step)?;
    }
    Ok(())
}

/// Checks one step (`path` names it in messages, e.g. `steps[2]`).
pub(crate) fn validate_step(path: &str, step: &StepSpec) -> Result<()> {
    check_key(&format!("{path}.classification"), &step.classification)?;
    if let Some(name) = &step.name {
        if name.len() > MAX_KEY_LEN * 4 {
            return Err(invalid(format!(
                "{path}.name must be at most 1024 bytes long"
            )));
        }
    }
    if let Some(lock) = &step.lock {
        check_key(&format!("{path}.lock"), lock)?;
    }
    for (j, dep) in step.depends_on.iter().enumerate() {
        check_key(&format!("{path}.dependsOn[{j}]"), dep)?;
    }
    if step.max_attempts == Some(0) {
        return Err(invalid(format!(
            "{path}.maxAttempts must be a positive integer"
        )));
    }
    if let Some(backoff) = &step.backoff {
        check_backoff(&format!("{path}.backoff"), backoff)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rejects_bad_fields_with_their_names() {
        let mut s = TaskSpec::new("", json!(null));
        assert!(validate(&s)
            .unwrap_err()
            .to_string()
            .contains("classification"));
        s.classification = "ok".into();
        s.max_attempts = Some(0);
        assert!(validate(&s)
            .unwrap_err()
            .to_string()
            .contains("maxAttempts"));
        s.max_attempts = None;
        s.backoff = Some(Backoff {
            base_ms: 10,
            max_ms: 5,
            ..Backoff::default()
        });
        assert!(validate(&s)
            .unwrap_err()
            .to_string()
            .contains("backoff.maxMs"));
        s.backoff = None;
        s.atomicity = Some(Atomicity::Composite);
        assert!(validate(&s).unwrap_err().to_string().contains("composite"));
        s.atomicity = None;
        assert!(validate(&s).is_ok());
    }
}
