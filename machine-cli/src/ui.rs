//! What the CLI tells the person at the terminal, on stderr: errors,
//! warnings, progress and driver log lines. stdout is reserved for data.
//! Colour only when stderr is a terminal and `NO_COLOR` is unset.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::Duration;

use machine_proto::log::Level;

fn color() -> bool {
    static COLOR: OnceLock<bool> = OnceLock::new();
    *COLOR.get_or_init(|| {
        std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
    })
}

fn paint(code: &str, text: &str) -> String {
    if color() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

fn line(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// `error: ...` with its causes and hints.
pub fn error(text: &str) {
    line(&format!("{} {text}", paint("1;31", "error:")));
}

pub fn warn(text: &str) {
    line(&format!("{} {text}", paint("1;33", "warning:")));
}

/// A step of a longer operation.
pub fn step(text: &str) {
    line(&format!("{} {text}", paint("1;36", "==>")));
}

/// A finished step with how long it took.
pub fn done(text: &str, took: Duration) {
    line(&format!(
        "{} {text} {}",
        paint("1;32", "==>"),
        paint("2", &format!("({:.1}s)", took.as_secs_f64()))
    ));
}

/// Plain information.
pub fn info(text: &str) {
    line(text);
}

/// A line a driver logged, prefixed with the driver (and machine).
pub fn driver_line(who: &str, level: Level, text: &str) {
    let tag = match level {
        Level::Error => paint("31", "error"),
        Level::Warn => paint("33", "warn"),
        other => paint("2", other.as_str()),
    };
    line(&format!("{} {tag} {text}", paint("2", &format!("[{who}]"))));
}
