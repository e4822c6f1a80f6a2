//! `machine ls --filter` with Docker Machine's semantics, and the natural
//! sort order `machine ls` lists machines in.
//!
//! Each `--filter` is `key=value` with one of the keys in [`FILTER_KEYS`]
//! (case-insensitive):
//!
//! * `driver=NAME`: the driver name, compared case-insensitively.
//! * `state=STATE`: the machine state, compared case-insensitively
//!   (`running` matches `Running`); `state=error` matches machines whose state
//!   could not be read, which the caller reports as `Error`.
//! * `name=REGEX`: a regular expression searched for anywhere in the name
//!   (anchor it with `^...$` for an exact match).
//! * `label=KEY=VALUE` or `label=KEY`: an engine label with that key and (if
//!   given) that value; keys are compared exactly, values case-insensitively,
//!   as Docker Machine did.
//! * `swarm=NAME`: machines in the swarm whose master is the machine `NAME`
//!   (case-insensitive).
//!
//! Several filters with the same key are alternatives (OR); filters with
//! different keys must all hold (AND).

use std::cmp::Ordering;

use regex::Regex;

/// The filter keys `machine ls --filter` accepts.
pub const FILTER_KEYS: &[&str] = &["driver", "label", "name", "state", "swarm"];

/// A bad `--filter` argument.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The argument has no `=`.
    #[error(
        "invalid filter \"{arg}\": expected the form --filter key=value, \
         for example --filter driver=virtualbox (keys: {keys})"
    )]
    MissingEquals {
        /// The argument as given.
        arg: String,
        /// The valid keys, comma-separated.
        keys: String,
    },
    /// The key is not one of [`FILTER_KEYS`].
    #[error("unknown filter key \"{key}\" in \"{arg}\": valid keys are {keys}")]
    UnknownKey {
        /// The key as given.
        key: String,
        /// The argument as given.
        arg: String,
        /// The valid keys, comma-separated.
        keys: String,
    },
    /// A `name=` value that is not a valid regular expression.
    #[error(
        "invalid name filter \"{pattern}\": not a valid regular expression \
         (escape special characters such as . or * with a backslash): {source}"
    )]
    InvalidName {
        /// The pattern as given.
        pattern: String,
        /// Why it does not compile.
        source: regex::Error,
    },
    /// `label=` or `label==value`.
    #[error(
        "invalid label filter \"{arg}\": the label key is empty; write \
         --filter label=key=value or --filter label=key"
    )]
    EmptyLabel {
        /// The argument as given.
        arg: String,
    },
}

/// One machine as the filters see it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The machine's name.
    pub name: &'a str,
    /// The driver's name, such as `virtualbox`.
    pub driver: &'a str,
    /// The state as shown by `machine ls` (`Running`, `Stopped`, `Error`, ...).
    /// Only consulted when [`Filters::needs_state`] is true.
    pub state: &'a str,
    /// The name of the swarm master of the machine's swarm; `None` when the
    /// machine is not part of a swarm.
    pub swarm_master: Option<&'a str>,
    /// Engine labels as `key=value` strings.
    pub labels: &'a [String],
}

/// Parsed `--filter` arguments. The default value matches every machine.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    drivers: Vec<String>,
    states: Vec<String>,
    names: Vec<Regex>,
    labels: Vec<(String, Option<String>)>,
    swarms: Vec<String>,
}

impl Filters {
    /// Parses `key=value` arguments, one per `--filter`.
    pub fn parse(args: &[String]) -> Result<Filters, FilterError> {
        let keys = || FILTER_KEYS.join(", ");
        let mut filters = Filters::default();
        for arg in args {
            let Some((key, value)) = arg.split_once('=') else {
                return Err(FilterError::MissingEquals {
                    arg: arg.clone(),
                    keys: keys(),
                });
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "driver" => filters.drivers.push(value.to_owned()),
                "state" => filters.states.push(value.to_owned()),
                "swarm" => filters.swarms.push(value.to_owned()),
                "name" => {
                    let re = Regex::new(value).map_err(|source| FilterError::InvalidName {
                        pattern: value.to_owned(),
                        source,
                    })?;
                    filters.names.push(re);
                }
                "label" => {
                    let (k, v) = match value.split_once('=') {
                        Some((k, v)) => (k, Some(v.to_owned())),
                        None => (value, None),
                    };
                    if k.is_empty() {
                        return Err(FilterError::EmptyLabel { arg: arg.clone() });
                    }
                    filters.labels.push((k.to_owned(), v));
                }
                _ => {
                    return Err(FilterError::UnknownKey {
                        key: key.to_owned(),
                        arg: arg.clone(),
                        keys: keys(),
                    });
                }
            }
        }
        Ok(filters)
    }

    /// True when no filter was given, so every machine matches.
    pub fn is_empty(&self) -> bool {
        self.drivers.is_empty()
            && self.states.is_empty()
            && self.names.is_empty()
            && self.labels.is_empty()
            && self.swarms.is_empty()
    }

    /// True when matching looks at [`Candidate::state`], so the caller must
    /// ask the drivers for each machine's state before calling
    /// [`Filters::matches`].
    pub fn needs_state(&self) -> bool {
        !self.states.is_empty()
    }

    /// Whether a machine passes: for every key that has filters, at least one
    /// of that key's filters matches.
    pub fn matches(&self, c: &Candidate<'_>) -> bool {
        fn any<T>(filters: &[T], hit: impl Fn(&T) -> bool) -> bool {
            filters.is_empty() || filters.iter().any(hit)
        }
        any(&self.drivers, |d| d.eq_ignore_ascii_case(c.driver))
            && any(&self.states, |s| eq_fold(s, c.state))
            && any(&self.names, |re| re.is_match(c.name))
            && any(&self.swarms, |s| {
                c.swarm_master.is_some_and(|m| eq_fold(s, m))
            })
            && any(&self.labels, |(key, value)| {
                c.labels.iter().any(|label| {
                    let (k, v) = label.split_once('=').unwrap_or((label.as_str(), ""));
                    k == key && value.as_deref().is_none_or(|want| eq_fold(want, v))
                })
            })
    }
}

/// Case-insensitive comparison, Unicode-aware like Go's `strings.EqualFold`.
fn eq_fold(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || a.to_lowercase() == b.to_lowercase()
}

/// Natural order for machine names: runs of digits compare by numeric value
/// (`m2` < `m10`), everything else byte by byte; names that compare equal
/// that way (`m01` and `m1`) fall back to plain string order, so the result
/// is consistent with `==`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        if x[i].is_ascii_digit() && y[j].is_ascii_digit() {
            let (si, sj) = (i, j);
            while i < x.len() && x[i].is_ascii_digit() {
                i += 1;
            }
            while j < y.len() && y[j].is_ascii_digit() {
                j += 1;
            }
            let strip =
                |run: &[u8]| -> usize { run.iter().position(|&d| d != b'0').unwrap_or(run.len()) };
            let rx = &x[si..i];
            let ry = &y[sj..j];
            let (rx, ry) = (&rx[strip(rx)..], &ry[strip(ry)..]);
            let ord = rx.len().cmp(&ry.len()).then_with(|| rx.cmp(ry));
            if ord != Ordering::Equal {
                return ord;
            }
        } else {
            let ord = x[i].cmp(&y[j]);
            if ord != Ordering::Equal {
                return ord;
            }
            i += 1;
            j += 1;
        }
    }
    (x.len() - i).cmp(&(y.len() - j)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(args: &[&str]) -> Filters {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        Filters::parse(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn parse_err(args: &[&str]) -> FilterError {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        match Filters::parse(&args) {
            Ok(f) => panic!("{args:?} parsed: {f:?}"),
            Err(e) => e,
        }
    }

    fn labels(ls: &[&str]) -> Vec<String> {
        ls.iter().map(|s| (*s).to_owned()).collect()
    }

    fn machine<'a>(name: &'a str, driver: &'a str, state: &'a str) -> Candidate<'a> {
        Candidate {
            name,
            driver,
            state,
            swarm_master: None,
            labels: &[],
        }
    }

    #[test]
    fn no_filters_match_everything() {
        let f = filters(&[]);
        assert!(f.is_empty());
        assert!(!f.needs_state());
        assert!(f.matches(&machine("a", "virtualbox", "Running")));
        assert!(Filters::default().matches(&machine("", "", "")));
    }

    #[test]
    fn driver_is_case_insensitive() {
        let f = filters(&["driver=VirtualBox"]);
        assert!(!f.is_empty());
        assert!(f.matches(&machine("a", "virtualbox", "")));
        assert!(!f.matches(&machine("a", "generic", "")));
    }

    #[test]
    fn keys_are_case_insensitive() {
        let f = filters(&["DRIVER=generic", "Name=^a$"]);
        assert!(f.matches(&machine("a", "generic", "")));
        assert!(!f.matches(&machine("ab", "generic", "")));
    }

    #[test]
    fn state_is_case_insensitive_and_needs_state() {
        let f = filters(&["state=running"]);
        assert!(f.needs_state());
        assert!(f.matches(&machine("a", "x", "Running")));
        assert!(!f.matches(&machine("a", "x", "Stopped")));
        let f = filters(&["state=error"]);
        assert!(f.matches(&machine("a", "x", "Error")));
        assert!(!f.matches(&machine("a", "x", "Running")));
    }

    #[test]
    fn name_is_an_unanchored_regex() {
        let f = filters(&["name=dev"]);
        assert!(f.matches(&machine("dev", "", "")));
        assert!(f.matches(&machine("my-dev-1", "", "")));
        assert!(!f.matches(&machine("prod", "", "")));
        let f = filters(&["name=^dev[0-9]+$"]);
        assert!(f.matches(&machine("dev12", "", "")));
        assert!(!f.matches(&machine("dev", "", "")));
        assert!(!f.matches(&machine("xdev1", "", "")));
        let f = filters(&["name="]);
        assert!(f.matches(&machine("anything", "", "")));
    }

    #[test]
    fn invalid_name_regex_is_an_error() {
        let e = parse_err(&["name=dev[", "driver=x"]);
        assert!(matches!(&e, FilterError::InvalidName { pattern, .. } if pattern == "dev["));
        let msg = e.to_string();
        assert!(msg.contains("invalid name filter \"dev[\""), "{msg}");
        assert!(msg.contains("regular expression"), "{msg}");
    }

    #[test]
    fn label_with_and_without_value() {
        let ls = labels(&["env=prod", "tier=web", "flag"]);
        let c = Candidate {
            labels: &ls,
            ..machine("a", "x", "")
        };
        assert!(filters(&["label=env=prod"]).matches(&c));
        assert!(filters(&["label=env=PROD"]).matches(&c));
        assert!(!filters(&["label=env=dev"]).matches(&c));
        assert!(!filters(&["label=ENV=prod"]).matches(&c));
        assert!(filters(&["label=tier"]).matches(&c));
        assert!(filters(&["label=flag"]).matches(&c));
        assert!(filters(&["label=flag="]).matches(&c));
        assert!(!filters(&["label=region"]).matches(&c));
        assert!(!filters(&["label=env"]).matches(&machine("b", "x", "")));
        // A value may itself contain '='.
        let ls = labels(&["opts=a=b"]);
        let c = Candidate {
            labels: &ls,
            ..machine("a", "x", "")
        };
        assert!(filters(&["label=opts=a=b"]).matches(&c));
        assert!(!filters(&["label=opts=a"]).matches(&c));
    }

    #[test]
    fn empty_label_key_is_an_error() {
        let e = parse_err(&["label="]);
        assert!(matches!(e, FilterError::EmptyLabel { .. }));
        assert!(e.to_string().contains("label=key=value"), "{e}");
        assert!(matches!(
            parse_err(&["label==x"]),
            FilterError::EmptyLabel { .. }
        ));
    }

    #[test]
    fn swarm_matches_the_master_name() {
        let f = filters(&["swarm=Master1"]);
        let in_swarm = Candidate {
            swarm_master: Some("master1"),
            ..machine("node", "x", "")
        };
        let other = Candidate {
            swarm_master: Some("master2"),
            ..machine("node", "x", "")
        };
        assert!(f.matches(&in_swarm));
        assert!(!f.matches(&other));
        assert!(!f.matches(&machine("node", "x", "")));
    }

    #[test]
    fn or_within_a_key_and_across_keys() {
        let f = filters(&["driver=virtualbox", "driver=generic", "state=Running"]);
        assert!(f.matches(&machine("a", "virtualbox", "Running")));
        assert!(f.matches(&machine("a", "generic", "Running")));
        assert!(!f.matches(&machine("a", "generic", "Stopped")));
        assert!(!f.matches(&machine("a", "amazonec2", "Running")));

        let ls = labels(&["env=prod"]);
        let c = Candidate {
            labels: &ls,
            ..machine("web1", "generic", "Stopped")
        };
        assert!(filters(&["label=env=dev", "label=env=prod"]).matches(&c));
        assert!(filters(&["name=^db", "name=^web"]).matches(&c));
        assert!(!filters(&["name=^web", "label=env=dev"]).matches(&c));
    }

    #[test]
    fn missing_equals_shows_the_form() {
        let e = parse_err(&["driver"]);
        assert!(matches!(&e, FilterError::MissingEquals { arg, .. } if arg == "driver"));
        let msg = e.to_string();
        assert!(msg.contains("--filter key=value"), "{msg}");
        assert!(msg.contains("driver, label, name, state, swarm"), "{msg}");
    }

    #[test]
    fn unknown_key_lists_valid_keys() {
        let e = parse_err(&["driver=x", "color=red"]);
        assert!(matches!(&e, FilterError::UnknownKey { key, .. } if key == "color"));
        assert_eq!(
            e.to_string(),
            "unknown filter key \"color\" in \"color=red\": valid keys are \
             driver, label, name, state, swarm"
        );
    }

    #[test]
    fn natural_order() {
        use Ordering::*;
        assert_eq!(natural_cmp("m2", "m10"), Less);
        assert_eq!(natural_cmp("m10", "m2"), Greater);
        assert_eq!(natural_cmp("m10", "m10"), Equal);
        assert_eq!(natural_cmp("m01", "m1"), Less);
        assert_eq!(natural_cmp("m1", "m01"), Greater);
        assert_eq!(natural_cmp("a", "b"), Less);
        assert_eq!(natural_cmp("a", "a1"), Less);
        assert_eq!(natural_cmp("", "a"), Less);
        assert_eq!(natural_cmp("", ""), Equal);
        assert_eq!(natural_cmp("node9-b", "node10-a"), Less);
        assert_eq!(natural_cmp("node10-a", "node10-b"), Less);
        assert_eq!(natural_cmp("x1y2", "x1y10"), Less);
        assert_eq!(natural_cmp("9", "a"), Less);
        assert_eq!(
            natural_cmp(
                "m99999999999999999999999999",
                "m100000000000000000000000000"
            ),
            Less
        );
        assert_eq!(natural_cmp("é2", "é10"), Less);

        let mut names = vec!["m10", "dev", "m2", "m1", "m01", "Dev", "m100", "m9a", "m9"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            ["Dev", "dev", "m01", "m1", "m2", "m9", "m9a", "m10", "m100"]
        );
    }

    #[test]
    fn natural_order_is_antisymmetric() {
        let names = [
            "", "a", "a1", "a01", "a001b", "a1b", "a10", "b", "10", "9", "0", "00",
        ];
        for a in names {
            for b in names {
                assert_eq!(natural_cmp(a, b), natural_cmp(b, a).reverse(), "{a} {b}");
                assert_eq!(natural_cmp(a, b) == Ordering::Equal, a == b, "{a} {b}");
            }
        }
    }
}
