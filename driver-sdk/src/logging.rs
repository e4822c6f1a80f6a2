//! Driver logging: `tracing` events become JSON lines on stderr in the
//! protocol's log shape ([`machine_proto::log`]), tagged with the machine the
//! current call is about, so the CLI can show them with a prefix.

use std::fmt::Write as _;
use std::io::Write as _;

use machine_proto::log::{Level as LogLevel, LogLine};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Environment variable with the driver's log filter (`info` by default;
/// the CLI passes `debug` when run with `--debug`).
pub const ENV_LOG: &str = "MACHINE_DRIVER_LOG";

#[derive(Default)]
struct Fields {
    message: String,
    machine: Option<String>,
    rest: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.put(field, s);
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            "machine" => self.machine = Some(value),
            name => self.rest.push((name.to_owned(), value)),
        }
    }
}

/// Span fields kept for the events inside the span.
struct SpanMachine(Option<String>);

struct JsonLines;

impl<S> Layer<S> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanMachine(fields.machine));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.machine.is_none()
            && let Some(scope) = ctx.event_scope(event)
        {
            fields.machine = scope
                .from_root()
                .filter_map(|span| span.extensions().get::<SpanMachine>()?.0.clone())
                .last();
        }
        let level = match *event.metadata().level() {
            Level::TRACE => LogLevel::Trace,
            Level::DEBUG => LogLevel::Debug,
            Level::INFO => LogLevel::Info,
            Level::WARN => LogLevel::Warn,
            Level::ERROR => LogLevel::Error,
        };
        let line = LogLine {
            level: Some(level),
            message: fields.message,
            machine: fields.machine,
            fields: fields.rest,
        };
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", line.to_json());
    }
}

/// Installs the JSON-lines subscriber; a second call does nothing.
pub(crate) fn init() {
    let filter = EnvFilter::try_from_env(ENV_LOG).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(JsonLines.with_filter(filter))
        .try_init();
}
