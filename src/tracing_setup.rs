//! Engine diagnostics through `tracing`: off unless `DECAF_TASKS_LOG` (an env-filter
//! directive such as `debug` or `decaf_tasks_core=trace`) or the `logger` option is set.

use std::sync::Once;

static INIT: Once = Once::new();

pub(crate) fn init(level: Option<&str>) {
    let directive = std::env::var("DECAF_TASKS_LOG")
        .ok()
        .or_else(|| level.map(str::to_owned))
        .filter(|d| !d.is_empty() && d != "off");
    let Some(directive) = directive else {
        return;
    };
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_new(&directive)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(true)
            .try_init();
    });
}
