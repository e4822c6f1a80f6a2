//! The log lines a driver writes on stderr.
//!
//! One JSON object per line, in hashicorp/go-plugin's hclog shape, so logs of
//! drivers written with go-plugin read the same as ours:
//! `{"@level":"warn","@message":"disk almost full","@module":"qemu","machine":"dev"}`.
//! Lines that are not such objects (a panic message, a crashing runtime's
//! dump) are kept as raw text.

use std::fmt;

use serde_json::{Map, Value};

/// Severity of a driver log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "trace" => Level::Trace,
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warn" | "warning" => Level::Warn,
            "error" => Level::Error,
            _ => return None,
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of driver output, structured or raw.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// `None` for a raw line that is not structured.
    pub level: Option<Level>,
    pub message: String,
    /// The machine the line is about, when the driver said.
    pub machine: Option<String>,
    /// Other fields, rendered `key=value`.
    pub fields: Vec<(String, String)>,
}

impl LogLine {
    /// Parses one line of stderr output.
    pub fn parse(line: &str) -> Self {
        let line = line.trim_end_matches(['\r', '\n']);
        let raw = || LogLine {
            level: None,
            message: line.to_owned(),
            machine: None,
            fields: Vec::new(),
        };
        if !line.starts_with('{') {
            return raw();
        }
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line) else {
            return raw();
        };
        let Some(level) = map
            .get("@level")
            .and_then(Value::as_str)
            .and_then(Level::parse)
        else {
            return raw();
        };
        let mut out = LogLine {
            level: Some(level),
            message: String::new(),
            machine: None,
            fields: Vec::new(),
        };
        for (k, v) in map {
            let text = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            match k.as_str() {
                "@message" => out.message = text,
                "machine" => out.machine = Some(text),
                "@level" | "@timestamp" | "@module" | "@caller" => {}
                _ => out.fields.push((k, text)),
            }
        }
        out
    }

    /// Renders the line as the JSON object a driver writes.
    pub fn to_json(&self) -> String {
        let mut map = Map::new();
        map.insert(
            "@level".into(),
            Value::from(self.level.unwrap_or(Level::Info).as_str()),
        );
        map.insert("@message".into(), Value::from(self.message.as_str()));
        if let Some(m) = &self.machine {
            map.insert("machine".into(), Value::from(m.as_str()));
        }
        for (k, v) in &self.fields {
            map.insert(k.clone(), Value::from(v.as_str()));
        }
        Value::Object(map).to_string()
    }
}

impl fmt::Display for LogLine {
    /// The message followed by its fields, as shown to users.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for (k, v) in &self.fields {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_structured_line() {
        let line = LogLine {
            level: Some(Level::Warn),
            message: "slow \"disk\"".into(),
            machine: Some("dev".into()),
            fields: vec![("path".into(), "/x".into())],
        };
        let parsed = LogLine::parse(&line.to_json());
        assert_eq!(parsed, line);
        assert_eq!(parsed.to_string(), "slow \"disk\" path=/x");
    }

    #[test]
    fn reads_go_plugin_hclog_line() {
        let l = LogLine::parse(
            r#"{"@level":"debug","@message":"hello","@module":"x","@timestamp":"2026-01-01T00:00:00Z","n":3}"#,
        );
        assert_eq!(l.level, Some(Level::Debug));
        assert_eq!(l.message, "hello");
        assert_eq!(l.fields, vec![("n".to_string(), "3".to_string())]);
    }

    #[test]
    fn keeps_other_text_raw() {
        for raw in [
            "thread 'main' panicked at x.rs:1",
            "{not json",
            r#"{"a":1}"#,
        ] {
            let l = LogLine::parse(raw);
            assert_eq!(l.level, None);
            assert_eq!(l.message, raw);
        }
    }
}
