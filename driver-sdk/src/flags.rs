//! Typed create-flag declarations and the values the CLI sends back.
//!
//! A driver declares its flags once ([`Flag`]); the CLI turns them into
//! `machine create -d <driver>` options (with `--help` text and environment
//! variables) and sends the values the user gave in [`FlagValues`].

use std::collections::HashMap;

use machine_proto::v1;

use crate::error::{Error, Result};

/// The type of a flag's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagType {
    String,
    Int,
    Bool,
    StringList,
}

/// One create flag of a driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub name: String,
    pub ty: FlagType,
    pub usage: String,
    pub default: Option<String>,
    pub env_var: Option<String>,
    pub required: bool,
    pub secret: bool,
}

impl Flag {
    fn new(name: &str, ty: FlagType, usage: &str) -> Self {
        Self {
            name: name.to_owned(),
            ty,
            usage: usage.to_owned(),
            default: None,
            env_var: None,
            required: false,
            secret: false,
        }
    }

    /// A text flag, e.g. `Flag::string("qemu-image", "boot image URL or path")`.
    pub fn string(name: &str, usage: &str) -> Self {
        Self::new(name, FlagType::String, usage)
    }
    pub fn int(name: &str, usage: &str) -> Self {
        Self::new(name, FlagType::Int, usage)
    }
    pub fn bool(name: &str, usage: &str) -> Self {
        Self::new(name, FlagType::Bool, usage)
    }
    /// A flag that may be given several times.
    pub fn string_list(name: &str, usage: &str) -> Self {
        Self::new(name, FlagType::StringList, usage)
    }
    /// The default shown in `--help`, applied by the driver when the flag is absent.
    pub fn default_value(mut self, value: impl ToString) -> Self {
        self.default = Some(value.to_string());
        self
    }
    /// The environment variable the CLI reads when the flag is not given.
    pub fn env(mut self, var: &str) -> Self {
        self.env_var = Some(var.to_owned());
        self
    }
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
    /// Marks a token or password: never echoed, never stored in plain text.
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    pub(crate) fn to_proto(&self) -> v1::Flag {
        v1::Flag {
            name: self.name.clone(),
            r#type: match self.ty {
                FlagType::String => v1::FlagType::String,
                FlagType::Int => v1::FlagType::Int,
                FlagType::Bool => v1::FlagType::Bool,
                FlagType::StringList => v1::FlagType::StringList,
            } as i32,
            usage: self.usage.clone(),
            default_value: self.default.clone().unwrap_or_default(),
            env_var: self.env_var.clone().unwrap_or_default(),
            required: self.required,
            secret: self.secret,
        }
    }
}

/// The flag values of a create request, by flag name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlagValues(HashMap<String, v1::FlagValue>);

impl FlagValues {
    pub(crate) fn from_proto(map: HashMap<String, v1::FlagValue>) -> Self {
        Self(map)
    }

    /// Builds values by hand, for tests.
    pub fn insert_string(&mut self, name: &str, value: &str) {
        self.0.insert(
            name.to_owned(),
            v1::FlagValue {
                value: Some(v1::flag_value::Value::StringValue(value.to_owned())),
            },
        );
    }

    pub fn is_set(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    fn get(&self, name: &str) -> Option<&v1::flag_value::Value> {
        self.0.get(name).and_then(|v| v.value.as_ref())
    }

    fn wrong_type(name: &str, want: &str) -> Error {
        Error::invalid_argument(format!("--{name} must be {want}"))
    }

    /// A string flag's value, if given.
    pub fn string(&self, name: &str) -> Result<Option<String>> {
        use v1::flag_value::Value;
        match self.get(name) {
            None => Ok(None),
            Some(Value::StringValue(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Self::wrong_type(name, "text")),
        }
    }

    /// A string flag's value, or `default`.
    pub fn string_or(&self, name: &str, default: &str) -> Result<String> {
        Ok(self.string(name)?.unwrap_or_else(|| default.to_owned()))
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>> {
        use v1::flag_value::Value;
        match self.get(name) {
            None => Ok(None),
            Some(Value::IntValue(i)) => Ok(Some(*i)),
            // Tolerate a number sent as text by a non-Rust host.
            Some(Value::StringValue(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| Self::wrong_type(name, "a whole number")),
            Some(_) => Err(Self::wrong_type(name, "a whole number")),
        }
    }

    pub fn bool(&self, name: &str) -> Result<bool> {
        use v1::flag_value::Value;
        match self.get(name) {
            None => Ok(false),
            Some(Value::BoolValue(b)) => Ok(*b),
            Some(Value::StringValue(s)) => match s.as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" | "" => Ok(false),
                _ => Err(Self::wrong_type(name, "true or false")),
            },
            Some(_) => Err(Self::wrong_type(name, "true or false")),
        }
    }

    pub fn string_list(&self, name: &str) -> Result<Vec<String>> {
        use v1::flag_value::Value;
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::StringListValue(l)) => Ok(l.values.clone()),
            Some(Value::StringValue(s)) => Ok(vec![s.clone()]),
            Some(_) => Err(Self::wrong_type(name, "a list of text values")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::flag_value::Value;

    fn values(pairs: &[(&str, Value)]) -> FlagValues {
        FlagValues::from_proto(
            pairs
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        v1::FlagValue {
                            value: Some(v.clone()),
                        },
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn reads_typed_values() {
        let v = values(&[
            ("a", Value::StringValue("x".into())),
            ("n", Value::IntValue(4)),
            ("b", Value::BoolValue(true)),
            (
                "l",
                Value::StringListValue(v1::StringList {
                    values: vec!["p".into(), "q".into()],
                }),
            ),
        ]);
        assert_eq!(v.string("a").unwrap().as_deref(), Some("x"));
        assert_eq!(v.string_or("missing", "d").unwrap(), "d");
        assert_eq!(v.int("n").unwrap(), Some(4));
        assert!(v.bool("b").unwrap());
        assert!(!v.bool("missing").unwrap());
        assert_eq!(v.string_list("l").unwrap(), vec!["p", "q"]);
    }

    #[test]
    fn wrong_types_are_invalid_arguments() {
        let v = values(&[
            ("n", Value::StringValue("lots".into())),
            ("a", Value::IntValue(1)),
        ]);
        let e = v.int("n").unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::InvalidArgument);
        assert_eq!(e.message, "--n must be a whole number");
        assert!(v.string("a").is_err());
    }

    #[test]
    fn declares_flags() {
        let f = Flag::int("qemu-memory", "memory in MiB")
            .default_value(2048)
            .env("QEMU_MEMORY")
            .to_proto();
        assert_eq!(f.name, "qemu-memory");
        assert_eq!(f.r#type, v1::FlagType::Int as i32);
        assert_eq!(f.default_value, "2048");
        assert_eq!(f.env_var, "QEMU_MEMORY");
    }
}
