//! A Python with the OpenTelemetry SDK exporters (`CHANGETRAIL_TEST_PYTHON`, which `.ci/run`
//! sets), and the scripts the real-client tests run with it.

use std::path::PathBuf;

/// tests/it/python/otlp_client.py: exports spans the way an instrumented service does.
pub const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/it/python/otlp_client.py"
);

/// tests/conductor/worker.py: the example Conductor deploy worker, run on one polled task.
pub const CONDUCTOR_WORKER: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conductor/worker.py");

/// The Python to run, or `None` with a printed note that `test` is skipped.
pub fn python(test: &str) -> Option<PathBuf> {
    match std::env::var("CHANGETRAIL_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: CHANGETRAIL_TEST_PYTHON (a python with the OpenTelemetry exporters) is not set; .ci/run sets it"
            );
            None
        }
    }
}
