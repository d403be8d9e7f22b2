//! How a running node logs (issue 21): hatrunk's own events at INFO and every dependency at WARN by
//! default, so an operator's first screen is the node's own lines, not openraft's `RaftState` and
//! replication housekeeping. `--log-level` (a level for hatrunk's crates, or a full filter),
//! else `RUST_LOG`, else `HATRUNK_LOG`, else the default; `--log-format json` for log shippers.

use clap::ValueEnum;

/// The crates whose events are hatrunk's own.
const OWN: [&str; 6] = ["hatrunk", "hatrunk_node", "hatrunk_consensus", "hatrunk_core", "hatrunk_sip", "hatrunk_simulation"];

#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`).
    Json,
}

/// The filter directives: `given` (from `--log-level`) or the first environment variable set, as
/// read by `env`. A bare level applies to hatrunk's crates; dependencies stay at WARN unless the
/// level is quieter still. Anything with `=` or `,` is a full `EnvFilter` directive, used as is.
pub fn directives(given: Option<&str>, env: impl Fn(&str) -> Option<String>) -> String {
    let chosen = given.map(str::to_string).or_else(|| env("RUST_LOG")).or_else(|| env("HATRUNK_LOG"));
    let Some(spec) = chosen.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) else {
        return own_at("info");
    };
    if spec.contains('=') || spec.contains(',') {
        return spec;
    }
    own_at(&spec)
}

fn own_at(level: &str) -> String {
    let deps = if matches!(level.to_ascii_lowercase().as_str(), "error" | "off") { level } else { "warn" };
    std::iter::once(deps.to_string()).chain(OWN.iter().map(|c| format!("{c}={level}"))).collect::<Vec<_>>().join(",")
}

/// Install the subscriber on stderr; an invalid filter is a usage error.
pub fn init(given: Option<&str>, format: LogFormat) -> Result<(), String> {
    let spec = directives(given, |k| std::env::var(k).ok());
    let filter = tracing_subscriber::EnvFilter::try_new(&spec).map_err(|e| format!("bad log filter {spec:?}: {e}"))?;
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn by_default_our_crates_say_info_and_dependencies_warn() {
        let d = directives(None, none);
        assert!(d.starts_with("warn,"), "{d}");
        assert!(d.contains("hatrunk_node=info") && d.contains("hatrunk_consensus=info"), "{d}");
        assert!(tracing_subscriber::EnvFilter::try_new(&d).is_ok());
    }

    #[test]
    fn a_level_applies_to_our_crates_and_a_filter_is_taken_as_is() {
        assert!(directives(Some("debug"), none).contains("hatrunk_sip=debug"));
        assert!(directives(Some("debug"), none).starts_with("warn,"), "dependencies stay at warn");
        assert!(directives(Some("error"), none).starts_with("error,"), "quieter than warn: everything");
        assert_eq!(directives(Some("info,openraft=debug"), none), "info,openraft=debug");
    }

    #[test]
    fn the_flag_wins_over_rust_log_which_wins_over_hatrunk_log() {
        let env = |k: &str| match k {
            "RUST_LOG" => Some("trace".to_string()),
            "HATRUNK_LOG" => Some("info".to_string()),
            _ => None,
        };
        assert!(directives(Some("debug"), env).contains("hatrunk=debug"));
        assert!(directives(None, env).contains("hatrunk=trace"));
        assert!(directives(None, |k| (k == "HATRUNK_LOG").then(|| "info".to_string())).contains("hatrunk=info"));
    }
}
