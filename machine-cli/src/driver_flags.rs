//! A driver's create flags on the command line: declarations from
//! GetCreateFlags become clap arguments of `create` (so `--help` shows them
//! with their environment variables), and parsed values become the
//! protocol's flag values.

use std::collections::HashMap;

use clap::{Arg, ArgAction, ArgMatches, parser::ValueSource};
use machine_proto::v1::{self, flag_value::Value};

/// Names `create` uses itself; a driver flag with one of them is skipped.
fn reserved(cmd: &clap::Command, name: &str) -> bool {
    cmd.get_arguments()
        .any(|a| a.get_id().as_str() == name || a.get_long() == Some(name))
        || matches!(name, "help" | "version")
}

/// Adds the driver's flags to the `create` command.
pub fn add_to(create: clap::Command, driver: &str, flags: &[v1::Flag]) -> clap::Command {
    let mut cmd = create;
    for f in flags {
        if reserved(&cmd, &f.name) {
            crate::ui::warn(&format!(
                "driver `{driver}` declares --{}, which create already has; ignoring the driver's",
                f.name
            ));
            continue;
        }
        let mut help = f.usage.clone();
        if !f.default_value.is_empty() {
            help.push_str(&format!(" [default: {}]", f.default_value));
        }
        let mut arg = Arg::new(f.name.clone())
            .long(f.name.clone())
            .help(help)
            .help_heading(format!("Driver `{driver}` options"))
            .required(f.required);
        arg = match v1::FlagType::try_from(f.r#type).unwrap_or(v1::FlagType::String) {
            v1::FlagType::Bool => arg.action(ArgAction::SetTrue),
            v1::FlagType::Int => arg
                .action(ArgAction::Set)
                .value_name("N")
                .value_parser(clap::value_parser!(i64)),
            v1::FlagType::StringList => arg.action(ArgAction::Append).value_name("VALUE"),
            _ => arg.action(ArgAction::Set).value_name("VALUE"),
        };
        if !f.env_var.is_empty() {
            arg = arg.env(f.env_var.clone());
        }
        if f.secret {
            arg = arg.hide_env_values(true);
        }
        cmd = cmd.arg(arg);
    }
    cmd
}

/// Reads the driver flags the user gave (or set through their environment
/// variables); absent flags are left out so the driver applies its defaults.
pub fn values(matches: &ArgMatches, flags: &[v1::Flag]) -> HashMap<String, v1::FlagValue> {
    let mut out = HashMap::new();
    for f in flags {
        let id = f.name.as_str();
        if !matches!(matches.try_contains_id(id), Ok(true))
            || matches!(
                matches.value_source(id),
                Some(ValueSource::DefaultValue) | None
            )
        {
            continue;
        }
        let value = match v1::FlagType::try_from(f.r#type).unwrap_or(v1::FlagType::String) {
            v1::FlagType::Bool => Value::BoolValue(matches.get_flag(id)),
            v1::FlagType::Int => match matches.get_one::<i64>(id) {
                Some(n) => Value::IntValue(*n),
                None => continue,
            },
            v1::FlagType::StringList => Value::StringListValue(v1::StringList {
                values: matches
                    .get_many::<String>(id)
                    .map(|v| v.cloned().collect())
                    .unwrap_or_default(),
            }),
            _ => match matches.get_one::<String>(id) {
                Some(s) => Value::StringValue(s.clone()),
                None => continue,
            },
        };
        out.insert(f.name.clone(), v1::FlagValue { value: Some(value) });
    }
    out
}
