//! `machine-bench cli`: the command surface as a user meets it — the real
//! `machine` binary run as a whole process, over stores of many machines.
//!
//! For each machine count a fresh temporary store (`MACHINE_STORAGE_PATH`)
//! is filled with that many machines of the `none` driver through
//! `machine create -d none --url tcp://127.0.0.1:PORT mI`, each with its own
//! port on which nothing listens (a Docker Machine user's stale endpoints:
//! anything that tried to reach them would get "connection refused" at
//! once). Once every store is filled, every measured command is run
//! `--runs` times over every store after 2 discarded warm-up runs,
//! round-robin (one run of each store and command per round) so that drift
//! and background load hit all rows alike. A run is timed from just before
//! the spawn until the process has exited and its stdout and stderr were
//! read to the end.
//!
//! Every run's output is checked (`ls` prints N+1 lines, `ls -q` N names,
//! `--format json` N objects, `url m1` the URL it was created with, …); a
//! wrong answer stops the benchmark with an error instead of a figure.

use std::collections::BTreeSet;
use std::error::Error;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::stats::{Summary, summarize};

type BoxError = Box<dyn Error + Send + Sync>;

/// Runs of each command done first and thrown away.
const WARMUP_RUNS: usize = 2;
/// The first port tried for the machines' URLs; below Linux's ephemeral
/// range (32768–60999), so outgoing connections do not take them.
const FIRST_PORT: u16 = 21_000;
/// The shell `machine env` is asked to speak (its output depends on it).
const SHELL: &str = "/bin/bash";

/// The subcommand's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) machine: PathBuf,
    pub(crate) runs: usize,
    pub(crate) counts: Vec<usize>,
}

impl Options {
    pub(crate) const USAGE: &'static str = "\
usage: machine-bench cli [--machine PATH] [--runs N] [--counts N,N,...]

  --machine PATH    the machine binary (default: `machine` next to this
                    executable; its drivers are found next to it)
  --runs N          timed runs of each command (default 30), after 2
                    warm-up runs
  --counts LIST     machine counts, one fresh store each (default 100,1000)";

    /// Parses the arguments after the subcommand name.
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut machine = None;
        let mut runs = 30;
        let mut counts = vec![100, 1000];
        crate::args::each(args, |flag, value| {
            let number = |v: &str| crate::args::positive(flag, v);
            match flag {
                "--machine" => machine = Some(PathBuf::from(value()?)),
                "--runs" => runs = number(&value()?)?,
                "--counts" => {
                    counts = value()?
                        .split(',')
                        .map(number)
                        .collect::<Result<Vec<_>, _>>()?;
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
            Ok(())
        })?;
        if counts
            .iter()
            .any(|&n| n > usize::from(u16::MAX - FIRST_PORT))
        {
            return Err(format!(
                "--counts: at most {} machines (one port each)",
                u16::MAX - FIRST_PORT
            ));
        }
        let machine = match machine {
            Some(m) => m,
            None => default_machine()?,
        };
        Ok(Self {
            machine,
            runs,
            counts,
        })
    }
}

/// `machine` in this executable's directory (`target/release`).
fn default_machine() -> Result<PathBuf, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find this executable's path: {e}; pass --machine"))?;
    let dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no parent directory; pass --machine", exe.display()))?;
    Ok(dir.join("machine"))
}

/// Targets from the issue: a command's median must not exceed `limit` over
/// stores of at most `up_to` machines (the tightest applicable one counts).
const TARGETS: &[(&str, usize, Duration)] = &[
    ("ls", 100, Duration::from_millis(50)),
    ("ls", 1000, Duration::from_millis(300)),
    ("ls -q", 1000, Duration::from_millis(50)),
    ("env m1", usize::MAX, Duration::from_millis(10)),
];

/// The target for a command over `n` machines, if the issue sets one.
fn target(label: &str, n: usize) -> Option<Duration> {
    TARGETS
        .iter()
        .filter(|(l, up_to, _)| *l == label && n <= *up_to)
        .min_by_key(|(_, up_to, _)| *up_to)
        .map(|(_, _, limit)| *limit)
}

/// What a machine in the store was made with.
#[derive(Debug, Clone)]
struct Made {
    name: String,
    url: String,
}

/// One measured command and how its output is checked.
#[derive(Debug, Clone, Copy)]
struct Case {
    label: &'static str,
    args: &'static [&'static str],
    check: fn(&str, &Fleet) -> Result<(), String>,
}

/// The machines of one store, for checking output.
#[derive(Debug)]
struct Fleet {
    machines: Vec<Made>,
    names: BTreeSet<String>,
}

impl Fleet {
    fn n(&self) -> usize {
        self.machines.len()
    }

    fn first(&self) -> &Made {
        &self.machines[0]
    }
}

fn line_count(out: &str, want: usize, what: &str) -> Result<(), String> {
    let got = out.lines().count();
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: {got} lines, expected {want}"))
    }
}

/// `ls` and `ls --filter driver=none`: a header and one `Running` row per
/// machine, each with its URL and no error.
fn check_table(out: &str, fleet: &Fleet) -> Result<(), String> {
    line_count(out, fleet.n() + 1, "table")?;
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default();
    if !header.starts_with("NAME") {
        return Err(format!("table: header {header:?}"));
    }
    let mut seen = BTreeSet::new();
    for line in lines {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // NAME ACTIVE DRIVER STATE URL [DOCKER]: no swarm, no errors, and
        // the Docker version is "Unknown" (a none machine has no certificates,
        // so it is not asked).
        match cols.as_slice() {
            [name, "-", "none", "Running", url]
            | [name, "-", "none", "Running", url, "Unknown"]
                if url.starts_with("tcp://127.0.0.1:") =>
            {
                seen.insert((*name).to_owned());
            }
            _ => return Err(format!("table: unexpected row {line:?}")),
        }
    }
    if seen != fleet.names {
        return Err("table: the rows do not name the machines created".into());
    }
    Ok(())
}

fn check_quiet(out: &str, fleet: &Fleet) -> Result<(), String> {
    line_count(out, fleet.n(), "ls -q")?;
    let seen: BTreeSet<String> = out.lines().map(str::to_owned).collect();
    if seen != fleet.names {
        return Err("ls -q: the names are not the machines created".into());
    }
    Ok(())
}

fn check_json(out: &str, fleet: &Fleet) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(out).map_err(|e| format!("ls --format json: not JSON: {e}"))?;
    let rows = value.as_array().ok_or("ls --format json: not an array")?;
    if rows.len() != fleet.n() {
        return Err(format!(
            "ls --format json: {} objects, expected {}",
            rows.len(),
            fleet.n()
        ));
    }
    for row in rows {
        if row["State"] != "Running" || row["DriverName"] != "none" {
            return Err(format!("ls --format json: unexpected object {row}"));
        }
    }
    Ok(())
}

fn check_inspect(out: &str, fleet: &Fleet) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(out).map_err(|e| format!("inspect: not JSON: {e}"))?;
    if value["Name"] != fleet.first().name.as_str() || value["DriverName"] != "none" {
        return Err(format!(
            "inspect: Name {} DriverName {}, expected {:?} and \"none\"",
            value["Name"],
            value["DriverName"],
            fleet.first().name
        ));
    }
    Ok(())
}

fn check_env(out: &str, fleet: &Fleet) -> Result<(), String> {
    let m = fleet.first();
    let want = format!("export DOCKER_HOST=\"{}\"", m.url);
    if !out.lines().any(|l| l == want) {
        return Err(format!("env: no line {want:?} in {out:?}"));
    }
    let name = format!("export DOCKER_MACHINE_NAME=\"{}\"", m.name);
    if !out.lines().any(|l| l == name) {
        return Err(format!("env: no line {name:?} in {out:?}"));
    }
    Ok(())
}

fn check_url(out: &str, fleet: &Fleet) -> Result<(), String> {
    if out.trim_end() == fleet.first().url {
        Ok(())
    } else {
        Err(format!(
            "url: {:?}, expected {:?}",
            out.trim_end(),
            fleet.first().url
        ))
    }
}

fn check_version(out: &str, _: &Fleet) -> Result<(), String> {
    if out.trim().is_empty() {
        Err("--version printed nothing".into())
    } else {
        Ok(())
    }
}

const CASES: &[Case] = &[
    Case {
        label: "ls",
        args: &["ls"],
        check: check_table,
    },
    Case {
        label: "ls -q",
        args: &["ls", "-q"],
        check: check_quiet,
    },
    Case {
        label: "ls --format json",
        args: &["ls", "--format", "json"],
        check: check_json,
    },
    Case {
        label: "ls --filter driver=none",
        args: &["ls", "--filter", "driver=none"],
        check: check_table,
    },
    Case {
        label: "inspect m1",
        args: &["inspect", "m1"],
        check: check_inspect,
    },
    Case {
        label: "env m1",
        args: &["env", "m1"],
        check: check_env,
    },
    Case {
        label: "url m1",
        args: &["url", "m1"],
        check: check_url,
    },
    Case {
        label: "--version (process floor)",
        args: &["--version"],
        check: check_version,
    },
];

/// A `machine` command over one store, with a clean environment: no
/// `MACHINE_*` or `DOCKER_*` variable of the caller's leaks in.
fn machine_command(machine: &Path, store: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(machine);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("MACHINE_") || k.starts_with("DOCKER_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("MACHINE_STORAGE_PATH", store)
        .env("SHELL", SHELL)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs a command to its end and times it, spawn to exit with all output read.
fn timed(mut cmd: Command) -> Result<(Duration, Output), BoxError> {
    let t0 = Instant::now();
    let out = cmd.output()?;
    let took = t0.elapsed();
    Ok((took, out))
}

/// Fails with the command's stderr unless it exited 0.
fn succeeded(what: &str, out: &Output) -> Result<String, BoxError> {
    if !out.status.success() {
        return Err(format!(
            "`{what}` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout.clone())
        .map_err(|_| format!("`{what}` printed something that is not UTF-8"))?)
}

/// `n` ports on 127.0.0.1 where a connection is refused right now.
fn refused_ports(n: usize) -> Result<Vec<u16>, BoxError> {
    let mut ports = Vec::with_capacity(n);
    let mut port = FIRST_PORT;
    while ports.len() < n {
        port = port
            .checked_add(1)
            .ok_or("ran out of ports on 127.0.0.1 where nothing listens")?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => ports.push(port),
            // Something listens (or filters): not a stale endpoint, skip it.
            _ => {}
        }
    }
    Ok(ports)
}

/// How filling a store went.
#[derive(Debug)]
struct Setup {
    wall: Duration,
    workers: usize,
    each: Vec<Duration>,
}

/// Fills `store` with `n` none machines, `m1`..`mN`, a create per process,
/// a few at a time (one per CPU).
fn fill_store(machine: &Path, store: &Path, n: usize) -> Result<(Fleet, Setup), BoxError> {
    let ports = refused_ports(n)?;
    let machines: Vec<Made> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| Made {
            name: format!("m{}", i + 1),
            url: format!("tcp://127.0.0.1:{port}"),
        })
        .collect();
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(n);
    let next = AtomicUsize::new(0);
    let each = Mutex::new(Vec::with_capacity(n));
    let failure: Mutex<Option<BoxError>> = Mutex::new(None);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n || failure.lock().is_ok_and(|f| f.is_some()) {
                        return;
                    }
                    let m = &machines[i];
                    let args = ["create", "-d", "none", "--url", &m.url, &m.name];
                    let result =
                        timed(machine_command(machine, store, &args)).and_then(|(took, out)| {
                            succeeded(&format!("machine {}", args.join(" ")), &out).map(|_| took)
                        });
                    match result {
                        Ok(took) => {
                            if let Ok(mut e) = each.lock() {
                                e.push(took);
                            }
                        }
                        Err(e) => {
                            if let Ok(mut f) = failure.lock() {
                                f.get_or_insert(e);
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    let wall = t0.elapsed();
    if let Some(e) = failure
        .into_inner()
        .map_err(|_| "a setup thread panicked")?
    {
        return Err(e);
    }
    let each = each.into_inner().map_err(|_| "a setup thread panicked")?;
    let names = machines.iter().map(|m| m.name.clone()).collect();
    Ok((
        Fleet { machines, names },
        Setup {
            wall,
            workers,
            each,
        },
    ))
}

/// One line of the results table.
#[derive(Debug)]
struct Measured {
    label: &'static str,
    n: usize,
    summary: Summary,
    target: Option<Duration>,
}

impl Measured {
    fn met(&self) -> Option<bool> {
        self.target.map(|t| self.summary.median <= t)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Renders rows of cells with aligned columns: the first left-aligned, the
/// others right-aligned.
fn align(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
            let pad = " ".repeat(w - c.chars().count());
            if i == 0 {
                line.push_str(c);
                line.push_str(&pad);
            } else {
                line.push_str("  ");
                line.push_str(&pad);
                line.push_str(c);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

fn render(results: &[Measured]) -> String {
    let mut rows = vec![
        [
            "command", "machines", "runs", "median", "p90", "min", "max", "target", "met",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for r in results {
        let s = &r.summary;
        rows.push(vec![
            r.label.to_owned(),
            r.n.to_string(),
            s.n.to_string(),
            ms(s.median),
            ms(s.p90),
            ms(s.min),
            ms(s.max),
            r.target
                .map_or_else(|| "-".to_owned(), |t| format!("≤ {}", ms(t))),
            match r.met() {
                None => "-".to_owned(),
                Some(true) => "yes".to_owned(),
                Some(false) => "NO".to_owned(),
            },
        ]);
    }
    align(&rows)
}

/// A filled store and what is in it.
#[derive(Debug)]
struct Prepared {
    n: usize,
    dir: tempfile::TempDir,
    fleet: Fleet,
}

/// Makes and fills the store for `n` machines, and says how that went.
fn prepare(opts: &Options, n: usize) -> Result<Prepared, BoxError> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("machine-bench-store-{n}-"))
        .tempdir()?;
    let path = dir.path();
    println!("{n} machines: store {}", path.display());
    let (fleet, setup) = fill_store(&opts.machine, path, n)?;
    let per = summarize(&setup.each).ok_or("no machine was created")?;
    println!(
        "  setup: {n} × `machine create -d none --url tcp://127.0.0.1:PORT mI`, {} at a time: {:.2} s wall; one create: median {} ms, p90 {} ms, max {} ms",
        setup.workers,
        setup.wall.as_secs_f64(),
        ms(per.median),
        ms(per.p90),
        ms(per.max),
    );
    println!(
        "  URLs {} .. {} (connection refused on each when checked)",
        fleet.first().url,
        fleet.machines.last().map_or("", |m| m.url.as_str())
    );
    for case in CASES {
        println!(
            "  measured: MACHINE_STORAGE_PATH={} SHELL={SHELL} {} {}",
            path.display(),
            opts.machine.display(),
            case.args.join(" ")
        );
    }
    println!();
    Ok(Prepared { n, dir, fleet })
}

/// Runs every case over every store: rounds of one run of each (store,
/// command) pair, so that drift and background load hit all rows alike.
fn measure(opts: &Options, stores: &[Prepared]) -> Result<Vec<Measured>, BoxError> {
    let mut samples: Vec<Vec<Vec<Duration>>> =
        vec![vec![Vec::with_capacity(opts.runs); CASES.len()]; stores.len()];
    for round in 0..WARMUP_RUNS + opts.runs {
        for (store, per_case) in stores.iter().zip(samples.iter_mut()) {
            for (case, times) in CASES.iter().zip(per_case.iter_mut()) {
                let what = format!("machine {}", case.args.join(" "));
                let cmd = machine_command(&opts.machine, store.dir.path(), case.args);
                let (took, out) = timed(cmd)?;
                let stdout = succeeded(&what, &out)?;
                (case.check)(&stdout, &store.fleet).map_err(|e| {
                    format!("wrong output from `{what}` over {} machines: {e}", store.n)
                })?;
                if round >= WARMUP_RUNS {
                    times.push(took);
                }
            }
        }
    }
    let mut results = Vec::new();
    for (store, per_case) in stores.iter().zip(&samples) {
        for (case, times) in CASES.iter().zip(per_case) {
            if let Some(summary) = summarize(times) {
                results.push(Measured {
                    label: case.label,
                    n: store.n,
                    summary,
                    target: target(case.label, store.n),
                });
            }
        }
    }
    Ok(results)
}

/// Runs the benchmark and prints its report.
pub(crate) fn run(opts: &Options) -> Result<(), BoxError> {
    if !opts.machine.is_file() {
        return Err(format!(
            "{} is not a file; build it (cargo build --release -p machine-cli -p machine-driver-none) or pass --machine",
            opts.machine.display()
        )
        .into());
    }
    let none = opts.machine.parent().map(|d| d.join("machine-driver-none"));
    if let Some(none) = none.filter(|p| p.is_file()) {
        println!("driver:  {}", none.display());
    } else {
        println!(
            "driver:  machine-driver-none is not next to the machine binary; the CLI will search PATH"
        );
    }
    println!();

    let stores = opts
        .counts
        .iter()
        .map(|&n| prepare(opts, n))
        .collect::<Result<Vec<_>, _>>()?;
    let results = measure(opts, &stores)?;
    print!("{}", render(&results));
    println!();
    for r in &results {
        if let (Some(t), Some(met)) = (r.target, r.met()) {
            println!(
                "target `machine {}` over {} machines, median ≤ {} ms: {} ({} ms)",
                r.label,
                r.n,
                ms(t),
                if met { "met" } else { "NOT met" },
                ms(r.summary.median)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn fleet(n: usize) -> Fleet {
        let machines: Vec<Made> = (1..=n)
            .map(|i| Made {
                name: format!("m{i}"),
                url: format!("tcp://127.0.0.1:{}", 21_000 + i),
            })
            .collect();
        let names = machines.iter().map(|m| m.name.clone()).collect();
        Fleet { machines, names }
    }

    #[test]
    fn parses_options() {
        let o = Options::parse(&args(&["--machine", "/x/machine"])).unwrap();
        assert_eq!(o.machine, PathBuf::from("/x/machine"));
        assert_eq!((o.runs, o.counts.clone()), (30, vec![100, 1000]));
        let o = Options::parse(&args(&["--machine=/m", "--runs=5", "--counts", "10, 20"])).unwrap();
        assert_eq!((o.runs, o.counts), (5, vec![10, 20]));
        assert!(Options::parse(&args(&["--machine=/m", "--counts", "10,0"])).is_err());
        assert!(Options::parse(&args(&["--machine=/m", "--runs"])).is_err());
        assert!(Options::parse(&args(&["--machine=/m", "--bogus"])).is_err());
    }

    #[test]
    fn targets_follow_the_issue() {
        let ms = Duration::from_millis;
        assert_eq!(target("ls", 100), Some(ms(50)));
        assert_eq!(target("ls", 1000), Some(ms(300)));
        assert_eq!(target("ls", 5000), None);
        assert_eq!(target("ls -q", 1000), Some(ms(50)));
        assert_eq!(target("ls -q", 100), Some(ms(50)));
        assert_eq!(target("env m1", 1000), Some(ms(10)));
        assert_eq!(target("inspect m1", 100), None);
    }

    #[test]
    fn checks_catch_wrong_output() {
        let f = fleet(2);
        let table = "NAME   ACTIVE   DRIVER   STATE     URL                     SWARM   DOCKER   ERRORS\n\
                     m1     -        none     Running   tcp://127.0.0.1:21001\n\
                     m2     -        none     Running   tcp://127.0.0.1:21002\n";
        check_table(table, &f).unwrap();
        assert!(check_table(&table.replace("Running", "Error  "), &f).is_err());
        assert!(check_table(table, &fleet(3)).is_err());
        check_quiet("m1\nm2\n", &f).unwrap();
        assert!(check_quiet("m1\n", &f).is_err());
        assert!(check_quiet("m1\nm3\n", &f).is_err());
        check_url("tcp://127.0.0.1:21001\n", &f).unwrap();
        assert!(check_url("tcp://127.0.0.1:21002\n", &f).is_err());
        let env =
            "export DOCKER_HOST=\"tcp://127.0.0.1:21001\"\nexport DOCKER_MACHINE_NAME=\"m1\"\n";
        check_env(env, &f).unwrap();
        assert!(check_env("", &f).is_err());
        check_json(
            r#"[{"State":"Running","DriverName":"none"},{"State":"Running","DriverName":"none"}]"#,
            &f,
        )
        .unwrap();
        assert!(check_json("[]", &f).is_err());
        check_inspect(r#"{"Name":"m1","DriverName":"none"}"#, &f).unwrap();
        assert!(check_inspect(r#"{"Name":"m2","DriverName":"none"}"#, &f).is_err());
    }

    #[test]
    fn renders_a_row_per_result() {
        let s = summarize(&[Duration::from_millis(12)]).unwrap();
        let text = render(&[Measured {
            label: "ls",
            n: 100,
            summary: s,
            target: Some(Duration::from_millis(50)),
        }]);
        assert!(text.starts_with("command"), "{text}");
        assert!(text.contains("12.00"), "{text}");
        assert!(text.contains("yes"), "{text}");
    }
}
