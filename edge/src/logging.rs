//! Logs: `tracing` to stderr. Under systemd (`JOURNAL_STREAM` set) without timestamps or
//! colours, since journald adds its own; `RUST_LOG` overrides the level.

use tracing_subscriber::EnvFilter;

/// Installs the subscriber; `default` is the level when `RUST_LOG` is unset.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!journald && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = if journald {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}
