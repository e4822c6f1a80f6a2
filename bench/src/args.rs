//! The benchmarks' flags: `--flag VALUE` or `--flag=VALUE`, read one at a
//! time by each subcommand's parser.

/// Calls `on(flag, value)` for each flag; `value()` takes the flag's value
/// (inline after `=`, or the next argument), and is not called for flags
/// that take none.
pub(crate) fn each(
    args: &[String],
    mut on: impl FnMut(&str, &mut dyn FnMut() -> Result<String, String>) -> Result<(), String>,
) -> Result<(), String> {
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        on(flag, &mut value)?;
    }
    Ok(())
}

/// A positive whole number given to `flag`.
pub(crate) fn positive(flag: &str, value: &str) -> Result<usize, String> {
    value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{flag} wants a positive number, not {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_spellings_and_refuses_bad_numbers() {
        let args: Vec<String> = ["--runs", "3", "--calls=7", "--flag"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let mut seen = Vec::new();
        each(&args, |flag, value| {
            let v = if flag == "--flag" {
                String::new()
            } else {
                value()?
            };
            seen.push(format!("{flag}:{v}"));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["--runs:3", "--calls:7", "--flag:"]);
        assert_eq!(positive("--runs", " 4"), Ok(4));
        assert!(positive("--runs", "0").is_err());
        let err = each(&["--runs".to_owned()], |_, value| value().map(drop)).unwrap_err();
        assert_eq!(err, "--runs needs a value");
    }
}
