//! The tools that are not the operator: benchmarks, the generated installation, the dependency
//! graph, and following events and Runs from a terminal.

pub mod bench;
pub mod bench_compile;
pub mod bench_versions;
pub mod chart;
pub mod deploy;
pub mod generated;
pub mod graph;
pub mod monitoring;
pub mod tail;
pub mod watch;

/// An error and its causes on one line, `outer: inner: …`, leaving out a cause whose text the
/// message before it already contains.
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// A panic on one line: its message and where it happened.
pub fn panic_line(info: &std::panic::PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".to_owned());
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match info.location() {
        Some(location) => format!(
            "internal error: {message} (at {}:{}); please report it",
            location.file(),
            location.line()
        ),
        None => format!("internal error: {message}; please report it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_one_line_without_repeats() {
        let root = std::io::Error::other("connection refused");
        let error = anyhow::Error::new(root)
            .context("tcp connect error: connection refused")
            .context("cannot connect to nats://127.0.0.1:4222\n(is it running?)");
        assert_eq!(
            error_line(&error),
            "cannot connect to nats://127.0.0.1:4222 (is it running?): tcp connect error: connection refused"
        );
    }
}
