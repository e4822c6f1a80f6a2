//! The `machine` binary's own surface: version, help and usage errors.
//! (Building this test also makes cargo build the binary for the
//! end-to-end tests in `integration/`.)

use std::process::Command;

fn machine(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_machine"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run machine")
}

#[test]
fn prints_its_version() {
    let out = machine(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("machine {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_the_driver_commands() {
    let out = machine(&["driver", "--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ls"), "{text}");
    assert!(text.contains("info"), "{text}");
}

#[test]
fn a_usage_error_exits_2_with_the_problem_on_stderr() {
    let out = machine(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unrecognized subcommand 'frobnicate'"),
        "{err}"
    );
}
