//! `machine-bench`: benchmarks that print figures, never pass or fail on
//! timing. See `docs/benchmarks.md` for how to run them and what was
//! measured.
//!
//! Subcommands:
//!
//! - `driver-spawn`: driver start-up (spawn→ready) and the cost of single
//!   GetInfo/GetState calls, sequential and concurrent.
//! - `cli`: the `machine` binary's wall time per command (`ls`, `inspect`,
//!   `env`, …) over stores of many machines, as a user runs it.
//! - `provision`: provisioning Docker over SSH on a real host, `env`/`ls`
//!   on it, and the container driver's create, one and several at once.

mod args;
mod cli_surface;
mod driver_spawn;
mod provision;
mod stats;

use std::process::ExitCode;

const USAGE: &str = "\
usage: machine-bench SUBCOMMAND [OPTIONS]

subcommands:
  driver-spawn   driver start-up time and per-call cost (see --help)
  cli            the machine binary's wall time per command (see --help)
  provision      provisioning, env/ls and the container driver on real hosts";

/// The host this runs on, for the report: CPUs, kernel and load.
fn host_line() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned());
    // Other work on the machine skews every figure; say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            let parts: Vec<&str> = s.split_whitespace().take(3).collect();
            (parts.len() == 3).then(|| parts.join(" "))
        })
        .unwrap_or_else(|| "?".to_owned());
    format!(
        "{cpus} CPUs, {} {kernel}, {}, load average {load} at start",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(sub) = args.get(1) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match sub.as_str() {
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        "driver-spawn" => {
            let rest = &args[2..];
            if rest.iter().any(|a| a == "-h" || a == "--help") {
                println!("{}", driver_spawn::Options::USAGE);
                return ExitCode::SUCCESS;
            }
            let opts = match driver_spawn::Options::parse(rest) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("machine-bench: {e}\n\n{}", driver_spawn::Options::USAGE);
                    return ExitCode::from(2);
                }
            };
            println!("command: {}", args.join(" "));
            println!("driver:  {}", opts.driver.display());
            println!("host:    {}", host_line());
            println!();
            // The CLI's runtime: multi-threaded with two workers.
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("machine-bench: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(driver_spawn::run(&opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("machine-bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        "cli" => {
            let rest = &args[2..];
            if rest.iter().any(|a| a == "-h" || a == "--help") {
                println!("{}", cli_surface::Options::USAGE);
                return ExitCode::SUCCESS;
            }
            let opts = match cli_surface::Options::parse(rest) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("machine-bench: {e}\n\n{}", cli_surface::Options::USAGE);
                    return ExitCode::from(2);
                }
            };
            println!("command: {}", args.join(" "));
            println!("machine: {}", opts.machine.display());
            println!("host:    {}", host_line());
            match cli_surface::run(&opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("machine-bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        "provision" => {
            let rest = &args[2..];
            if rest.iter().any(|a| a == "-h" || a == "--help") {
                println!("{}", provision::Options::USAGE);
                return ExitCode::SUCCESS;
            }
            let opts = match provision::Options::parse(rest) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("machine-bench: {e}\n\n{}", provision::Options::USAGE);
                    return ExitCode::from(2);
                }
            };
            println!("command: {}", args.join(" "));
            println!("machine: {}", opts.machine.display());
            println!("host:    {}", host_line());
            match provision::run(&opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("machine-bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        other => {
            eprintln!("machine-bench: unknown subcommand {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
