//! `machine-bench provision`: provisioning Docker over SSH and the
//! `container` driver, with the real release binaries (`machine`,
//! `machine-driver-generic`, `machine-driver-container`) on real hosts.
//!
//! 1. **Re-provisioning a host that has Docker.** One test host (a systemd +
//!    sshd container from `integration/hosts/setup.sh`'s Docker image, see
//!    `machine_integration::hosts`) is adopted once with
//!    `machine create -d generic … --engine-install-method none` (timed),
//!    then `machine provision NAME` is timed `--runs` times: SSH,
//!    os-release, hostname, certificates, drop-in, restart, and the wait for
//!    Docker's TLS API.
//! 2. **`machine env NAME` and `machine ls`** on that provisioned machine,
//!    `--env-runs` times each after 2 discarded warm-up runs (`ls` asks the
//!    daemon for its version over TLS), alternating with `machine --version`
//!    as the floor (a process that starts no driver) and, when
//!    `machine-driver-none` was built, `machine env` of a `none`-driver
//!    machine in a store of its own (a driver that asks no provider).
//! 3. **The container driver**: `machine create -d container
//!    --container-image IMAGE NAME` end to end, `--creates` times, each
//!    followed by a timed `machine rm -y NAME`; then `--at-once` creates
//!    started together, `--rounds` times, timed from the first spawn until
//!    the last process has exited.
//!
//! Every run is a whole `machine` process timed from just before the spawn
//! until it has exited and its output was read to the end. Its stderr is
//! read line by line as it arrives, so each progress line gets the time it
//! appeared; the "where the time goes" tables show, per line, the time since
//! the line before it (the median over the runs), which is finer than the
//! tenths of a second `machine` prints after each step.
//!
//! Everything runs in a fresh temporary store (`MACHINE_STORAGE_PATH`).
//! Machines are removed with `machine rm -y` as the benchmark goes; on any
//! failure a guard removes what is left (`machine rm -y -f`, then any
//! container of the driver still labelled with this store) and the test host
//! is removed when it is dropped.

use std::collections::BTreeSet;
use std::error::Error;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use machine_integration::hosts::{self, Image, TestHost};

use crate::stats::{Table, Unit, summarize};

type BoxError = Box<dyn Error + Send + Sync>;

/// Runs of `env` and `ls` done first and thrown away.
const WARMUP_RUNS: usize = 2;
/// The longest any single `machine` command may take before it is killed.
const COMMAND_LIMIT: Duration = Duration::from_secs(600);
/// The label the container driver puts on its containers, with the store.
const STORE_LABEL: &str = "io.machine.store";

/// `MACHINE_LOG` for the `--debug-log` runs: the CLI's and drivers' debug
/// lines without the HTTP/2 and gRPC transport's frame-by-frame chatter.
const DEBUG_LOG: &str = "debug,h2=info,hyper=info,hyper_util=info,tower=info,tonic=info";

/// Targets from the issues.
const PROVISION_TARGET: Duration = Duration::from_secs(2);
const ENV_TARGET: Duration = Duration::from_millis(10);
const CONTAINER_CREATE_TARGET: Duration = Duration::from_secs(15);
const AT_ONCE_FACTOR: f64 = 2.0;
/// Docker Machine 0.16.2's `provision` on the same kind of host, from
/// `/work/shared/TESTBED.md` (not re-measured here).
const BASELINE: &str = "Docker Machine 0.16.2: `provision` of the same kind of host took about 8 s, \
     and only after a hand-made /usr/bin/dockerd symlink (it hard-codes that path); \
     from TESTBED.md, not re-measured";

/// The subcommand's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) machine: PathBuf,
    pub(crate) runs: usize,
    pub(crate) env_runs: usize,
    pub(crate) creates: usize,
    pub(crate) at_once: usize,
    pub(crate) rounds: usize,
    pub(crate) generic: bool,
    pub(crate) container: bool,
    pub(crate) debug_log: bool,
}

impl Options {
    pub(crate) const USAGE: &'static str = "\
usage: machine-bench provision [--machine PATH] [--runs N] [--env-runs N]
                               [--creates N] [--at-once N] [--rounds N]
                               [--skip-generic] [--skip-container] [--debug-log]

  --machine PATH    the machine binary (default: `machine` next to this
                    executable; machine-driver-generic and
                    machine-driver-container must be next to it)
  --runs N          timed `machine provision` runs (default 10)
  --env-runs N      timed `machine env` and `machine ls` runs (default 30),
                    after 2 warm-up runs
  --creates N       sequential container-driver creates (default 3)
  --at-once N       creates started together (default 5)
  --rounds N        rounds of creates started together (default 2)
  --skip-generic    leave out the generic-driver part (1 and 2)
  --skip-container  leave out the container-driver part (3)
  --debug-log       also run one provision and one container create with
                    MACHINE_LOG=debug (untimed; without
                    the HTTP/2 transport's lines) and print their stderr with
                    the time each line appeared

Needs root, a running dockerd and the test host images
(`bash integration/hosts/setup.sh`).";

    /// Parses the arguments after the subcommand name.
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut machine = None;
        let mut opts = Options {
            machine: PathBuf::new(),
            runs: 10,
            env_runs: 30,
            creates: 3,
            at_once: 5,
            rounds: 2,
            generic: true,
            container: true,
            debug_log: false,
        };
        crate::args::each(args, |flag, value| {
            let number = |v: String| crate::args::positive(flag, &v);
            match flag {
                "--machine" => machine = Some(PathBuf::from(value()?)),
                "--runs" => opts.runs = number(value()?)?,
                "--env-runs" => opts.env_runs = number(value()?)?,
                "--creates" => opts.creates = number(value()?)?,
                "--at-once" => opts.at_once = number(value()?)?,
                "--rounds" => opts.rounds = number(value()?)?,
                "--skip-generic" => opts.generic = false,
                "--skip-container" => opts.container = false,
                "--debug-log" => opts.debug_log = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
            Ok(())
        })?;
        opts.machine = match machine {
            Some(m) => m,
            None => {
                let exe = std::env::current_exe()
                    .map_err(|e| format!("cannot find this executable's path: {e}"))?;
                exe.parent()
                    .ok_or("this executable has no parent directory; pass --machine")?
                    .join("machine")
            }
        };
        Ok(opts)
    }
}

/// One finished `machine` process.
#[derive(Debug)]
struct Run {
    took: Duration,
    status: ExitStatus,
    stdout: String,
    /// stderr, line by line, with the time each line arrived (from spawn).
    stderr: Vec<(Duration, String)>,
}

impl Run {
    fn stderr_text(&self) -> String {
        self.stderr
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The run, or an error with its stderr unless it exited 0.
    fn ok(self, what: &str) -> Result<Run, BoxError> {
        if self.status.success() {
            Ok(self)
        } else {
            Err(format!(
                "`{what}` failed ({}) after {:.2} s:\n{}",
                self.status,
                self.took.as_secs_f64(),
                self.stderr_text()
            )
            .into())
        }
    }

    /// stderr with the time each line appeared, for the report.
    fn timestamped(&self) -> String {
        let mut out = String::new();
        for (t, line) in &self.stderr {
            out.push_str(&format!("  {:>8.3} s  {line}\n", t.as_secs_f64()));
        }
        out.push_str(&format!(
            "  {:>8.3} s  (exit: {})\n",
            self.took.as_secs_f64(),
            self.status
        ));
        out
    }
}

/// How to run `machine` in the benchmark's store.
#[derive(Debug)]
struct Machine {
    bin: PathBuf,
    store: PathBuf,
}

impl Machine {
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("MACHINE_STORAGE_PATH", &self.store)
            .env("NO_COLOR", "1")
            .env("SHELL", "/bin/bash")
            .env_remove("MACHINE_LOG")
            .env_remove("MACHINE_DEBUG")
            .env_remove("MACHINE_FAULT")
            .env_remove("MACHINE_DRIVER_TRANSPORT")
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `machine ARGS` to the end, timing it and stamping stderr lines.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Run, BoxError> {
        let mut cmd = self.command(args, env);
        let t0 = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        let pid = child.id();
        let mut out_pipe = child.stdout.take().ok_or("no stdout pipe")?;
        let err_pipe = child.stderr.take().ok_or("no stderr pipe")?;
        // A hung command is killed rather than hanging the benchmark.
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(COMMAND_LIMIT) == Err(mpsc::RecvTimeoutError::Timeout) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        });
        let err_reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(err_pipe).lines() {
                let Ok(line) = line else { break };
                lines.push((t0.elapsed(), line));
            }
            lines
        });
        let mut stdout = String::new();
        let read = out_pipe.read_to_string(&mut stdout);
        let status = child.wait();
        let stderr = err_reader.join().unwrap_or_default();
        let took = t0.elapsed();
        let _ = done_tx.send(());
        let _ = watchdog.join();
        read.map_err(|e| format!("reading the output of machine {}: {e}", args.join(" ")))?;
        let status = status?;
        if took >= COMMAND_LIMIT {
            return Err(format!(
                "machine {} took longer than {COMMAND_LIMIT:?} and was killed",
                args.join(" ")
            )
            .into());
        }
        Ok(Run {
            took,
            status,
            stdout,
            stderr,
        })
    }
}

/// Removes what the benchmark made if it stops early: every machine still
/// registered (`machine rm -y -f`), then any container of the container
/// driver still labelled with this store, with its volume.
#[derive(Debug)]
struct Cleanup<'a> {
    machine: &'a Machine,
    names: Mutex<BTreeSet<String>>,
}

impl<'a> Cleanup<'a> {
    fn new(machine: &'a Machine) -> Self {
        Self {
            machine,
            names: Mutex::new(BTreeSet::new()),
        }
    }

    fn add(&self, name: &str) {
        if let Ok(mut names) = self.names.lock() {
            names.insert(name.to_owned());
        }
    }

    fn removed(&self, name: &str) {
        if let Ok(mut names) = self.names.lock() {
            names.remove(name);
        }
    }

    /// Containers of the container driver that belong to this store.
    fn leftover_containers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "--all", "--format", "{{.Names}}", "--filter"])
            .arg(format!(
                "label={STORE_LABEL}={}",
                self.machine.store.display()
            ))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let names: Vec<String> = self
            .names
            .lock()
            .map(|n| n.iter().cloned().collect())
            .unwrap_or_default();
        if !names.is_empty() {
            eprintln!("machine-bench: removing machines left behind: {names:?}");
            let mut args = vec!["rm", "-y", "-f"];
            args.extend(names.iter().map(String::as_str));
            if let Err(e) = self.machine.run(&args, &[]) {
                eprintln!("machine-bench: {e}");
            }
        }
        for container in self.leftover_containers() {
            eprintln!("machine-bench: removing container left behind: {container}");
            let _ = Command::new("docker")
                .args(["rm", "--force", "--volumes", &container])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("docker")
                .args(["volume", "rm", "--force", &format!("{container}-docker")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A progress line without the step time `machine` appends, e.g. `(1.2s)`.
fn strip_took(line: &str) -> &str {
    let trimmed = line.trim_end();
    if let Some(open) = trimmed.rfind(" (")
        && trimmed.ends_with("s)")
        && trimmed[open + 2..trimmed.len() - 2].parse::<f64>().is_ok()
    {
        return &trimmed[..open];
    }
    trimmed
}

/// Adds a "where the time goes" section: for each stderr line (by position;
/// all runs print the same sequence), the time since the line before it.
/// Runs whose lines differ in number from the first run's are left out.
fn breakdown(table: &mut Table, title: &str, runs: &[&Run]) {
    let Some(first) = runs.first() else { return };
    let same: Vec<&Run> = runs
        .iter()
        .copied()
        .filter(|r| r.stderr.len() == first.stderr.len())
        .collect();
    let left_out = runs.len() - same.len();
    let mut title = title.to_owned();
    if left_out > 0 {
        title.push_str(&format!(" ({left_out} run(s) with other output left out)"));
    }
    table.section(title);
    for (i, (_, line)) in first.stderr.iter().enumerate() {
        let gaps: Vec<Duration> = same
            .iter()
            .map(|r| {
                let prev = if i == 0 {
                    Duration::ZERO
                } else {
                    r.stderr[i - 1].0
                };
                r.stderr[i].0.saturating_sub(prev)
            })
            .collect();
        let stripped = strip_took(line);
        let mut label: String = stripped.chars().take(60).collect();
        if stripped.len() < line.trim_end().len() {
            // The line that ends a step: the gap is the step's own time.
            label.push_str(" ✓");
        }
        if i == 0 {
            label = format!("spawn → {label}");
        }
        table.row(label, Unit::Ms, &gaps);
    }
    let tail: Vec<Duration> = same
        .iter()
        .map(|r| {
            let last = r.stderr.last().map_or(Duration::ZERO, |(t, _)| *t);
            r.took.saturating_sub(last)
        })
        .collect();
    table.row("last line → exit", Unit::Ms, &tail);
}

fn median(samples: &[Duration]) -> Option<Duration> {
    summarize(samples).map(|s| s.median)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// One line of the targets table.
#[derive(Debug)]
struct Verdict {
    what: String,
    figure: String,
    target: String,
    met: bool,
}

/// What part 1 and 2 found.
#[derive(Debug, Default)]
struct GenericFigures {
    host_ready: Duration,
    create: Vec<Duration>,
    provision: Vec<Duration>,
    env: Vec<Duration>,
    ls: Vec<Duration>,
    /// `machine --version`: the process's own start and exit, no driver.
    version: Vec<Duration>,
    /// `machine env` of a `none`-driver machine, for comparison.
    env_none: Vec<Duration>,
    rm: Vec<Duration>,
}

/// The generic-driver part: adopt a host with Docker, re-provision it,
/// then `env` and `ls` on it.
fn generic_part(
    opts: &Options,
    m: &Machine,
    cleanup: &Cleanup<'_>,
    keys: &Path,
    table: &mut Table,
    details: &mut Table,
    samples: &mut String,
) -> Result<GenericFigures, BoxError> {
    let mut fig = GenericFigures::default();
    let (key, public) = hosts::test_key_pair(keys);
    let key = key.to_str().ok_or("key path is not UTF-8")?.to_owned();
    println!("starting a test host from {} …", Image::Docker.name());
    let host = TestHost::start(Image::Docker, &public);
    fig.host_ready = host.ready_after;
    println!(
        "  {} ready (SSH banner) after {}; ssh 127.0.0.1:{}, docker port {}",
        host.container,
        secs(host.ready_after),
        host.ssh_port,
        host.docker_port
    );

    let name = "bp";
    let ssh_port = host.ssh_port.to_string();
    let docker_port = host.docker_port.to_string();
    let create_args = [
        "create",
        "-d",
        "generic",
        "--generic-ip-address",
        "127.0.0.1",
        "--generic-ssh-port",
        &ssh_port,
        "--generic-ssh-key",
        &key,
        "--generic-engine-port",
        &docker_port,
        "--engine-install-method",
        "none",
        name,
    ];
    let what = format!("machine {}", create_args.join(" "));
    println!("{what}");
    cleanup.add(name);
    let create = m.run(&create_args, &[])?.ok(&what)?;
    fig.create.push(create.took);
    println!("  {}", secs(create.took));

    let what = format!("machine provision {name}");
    let mut runs = Vec::with_capacity(opts.runs);
    print!("{what} ×{}:", opts.runs);
    for _ in 0..opts.runs {
        let run = m.run(&["provision", name], &[])?.ok(&what)?;
        if !run.stderr_text().contains("answers over mutual TLS") {
            return Err(format!(
                "`{what}` did not report Docker answering:\n{}",
                run.stderr_text()
            )
            .into());
        }
        print!(" {:.2}", run.took.as_secs_f64());
        let _ = std::io::stdout().flush();
        fig.provision.push(run.took);
        runs.push(run);
    }
    println!(" s");

    // For comparison, `env` of a machine of the `none` driver (no provider
    // to ask), in a store of its own so that `ls` above still sees one
    // machine; only when that driver was built.
    let none_bin = m.bin.with_file_name("machine-driver-none");
    let none_store = tempfile::Builder::new()
        .prefix("machine-bench-none-")
        .tempdir()?;
    let none = Machine {
        bin: m.bin.clone(),
        store: none_store.path().to_owned(),
    };
    let none_url = format!("tcp://127.0.0.1:{docker_port}");
    let with_none = none_bin.is_file();
    if !with_none {
        println!(
            "({} is not built: no `env` row for a `none` machine)",
            none_bin.display()
        );
    }
    if with_none {
        none.run(&["create", "-d", "none", "--url", &none_url, "bn"], &[])?
            .ok("machine create -d none")?;
    }

    let env_args = ["env", name];
    let ls_args = ["ls"];
    for i in 0..WARMUP_RUNS + opts.env_runs {
        // Alternate, so drift hits all of them alike.
        let env = m.run(&env_args, &[])?.ok("machine env")?;
        if !env.stdout.contains("DOCKER_HOST=") || !env.stdout.contains(&docker_port) {
            return Err(format!("`machine env {name}` printed:\n{}", env.stdout).into());
        }
        let ls = m.run(&ls_args, &[])?.ok("machine ls")?;
        let row = ls.stdout.lines().nth(1).unwrap_or_default();
        if !(row.starts_with(name) && row.contains("Running") && row.contains(" v")) {
            return Err(format!(
                "`machine ls` shows no running machine with a Docker version:\n{}",
                ls.stdout
            )
            .into());
        }
        let version = m.run(&["--version"], &[])?.ok("machine --version")?;
        let env_none = if with_none {
            let run = none.run(&["env", "bn"], &[])?.ok("machine env bn")?;
            if !run.stdout.contains(&none_url) {
                return Err(format!("`machine env bn` printed:\n{}", run.stdout).into());
            }
            Some(run.took)
        } else {
            None
        };
        if i >= WARMUP_RUNS {
            fig.env.push(env.took);
            fig.ls.push(ls.took);
            fig.version.push(version.took);
            fig.env_none.extend(env_none);
        }
    }
    drop(none_store);

    let debug_run = if opts.debug_log {
        Some(m.run(&["provision", name], &[("MACHINE_LOG", DEBUG_LOG)])?)
    } else {
        None
    };

    let rm = m.run(&["rm", "-y", name], &[])?.ok("machine rm -y")?;
    cleanup.removed(name);
    fig.rm.push(rm.took);
    drop(host);

    table.section(format!(
        "generic driver, one host from the Docker image (host: SSH banner after {})",
        secs(fig.host_ready)
    ));
    table.row(
        "create -d generic … --engine-install-method none",
        Unit::Ms,
        &fig.create,
    );
    table.row("provision (host has Docker)", Unit::Ms, &fig.provision);
    table.row("env NAME", Unit::Ms, &fig.env);
    table.row("ls (1 machine, version over TLS)", Unit::Ms, &fig.ls);
    table.row(
        "env NAME of a `none` machine (own store)",
        Unit::Ms,
        &fig.env_none,
    );
    table.row(
        "--version (process start, no driver)",
        Unit::Ms,
        &fig.version,
    );
    table.row("rm -y NAME", Unit::Ms, &fig.rm);

    breakdown(
        details,
        "where the time goes: create -d generic (1 run; ms since the line before)",
        &[&create],
    );
    let refs: Vec<&Run> = runs.iter().collect();
    breakdown(
        details,
        &format!(
            "where the time goes: provision ({} runs; ms since the line before)",
            runs.len()
        ),
        &refs,
    );
    if let Some(run) = runs.get(runs.len() / 2) {
        samples.push_str(&format!(
            "\nstderr of one `machine provision {name}` (time each line appeared):\n{}",
            run.timestamped()
        ));
    }
    samples.push_str(&format!(
        "\nstderr of `{}` (time each line appeared):\n{}",
        create_args.join(" "),
        create.timestamped()
    ));
    if let Some(run) = debug_run {
        samples.push_str(&format!(
            "\nstderr of `MACHINE_LOG={DEBUG_LOG} machine provision {name}` (untimed in the table):\n{}",
            run.timestamped()
        ));
    }
    Ok(fig)
}

/// Prints the floor that CPU time puts under "N at once vs one": N creates
/// need at least N × (CPU per create) ÷ (cores) of wall time, so the ratio
/// is at least N ÷ cores × (cores one create keeps busy).
fn at_once_bound(n: usize, one: Duration, cpu: &[Duration]) {
    let Some(cpu) = median(cpu) else { return };
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let busy = cpu.as_secs_f64() / one.as_secs_f64();
    println!(
        "one create: {} of host CPU in {} of wall time, {busy:.2} cores busy on average;\n\
         so {n} at once on {cores} cores take at least {n} × {} ÷ {cores} = {}, {:.2}× one",
        secs(cpu),
        secs(one),
        secs(cpu),
        secs(cpu * n as u32 / cores as u32),
        n as f64 / cores as f64 * busy,
    );
}

/// What part 3 found.
#[derive(Debug, Default)]
struct ContainerFigures {
    create: Vec<Duration>,
    /// CPU time the whole host spent during each sequential create.
    create_cpu: Vec<Duration>,
    rm: Vec<Duration>,
    at_once_wall: Vec<Duration>,
    /// CPU time the whole host spent during each round, per create.
    at_once_cpu: Vec<Duration>,
    at_once_each: Vec<Duration>,
    at_once_rm: Vec<Duration>,
}

/// CPU time the whole host has spent busy since boot (`/proc/stat`: user,
/// nice, system, irq and softirq; not idle, iowait, or steal, which is
/// the hypervisor's use of the CPU, not ours). The
/// difference over a create is what the create cost: the CLI, the driver,
/// the engine making the container, and everything in the container.
fn host_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let busy = [0, 1, 2, 5, 6]
        .iter()
        .filter_map(|i| f.get(*i))
        .sum::<u64>();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    Some(Duration::from_secs_f64(busy as f64 / hz as f64))
}

/// CPU time spent busy while `f` ran.
fn busy_during<T>(f: impl FnOnce() -> T) -> (T, Option<Duration>) {
    let before = host_busy();
    let out = f();
    let spent = host_busy()
        .zip(before)
        .map(|(after, before)| after.saturating_sub(before));
    (out, spent)
}

/// The container-driver part: sequential creates, then creates at once.
fn container_part(
    opts: &Options,
    m: &Machine,
    cleanup: &Cleanup<'_>,
    table: &mut Table,
    details: &mut Table,
    samples: &mut String,
) -> Result<ContainerFigures, BoxError> {
    let mut fig = ContainerFigures::default();
    let image = Image::Docker.name();
    let mut creates = Vec::new();
    for i in 1..=opts.creates {
        let name = format!("bc{i}");
        let args = [
            "create",
            "-d",
            "container",
            "--container-image",
            &image,
            &name,
        ];
        let what = format!("machine {}", args.join(" "));
        cleanup.add(&name);
        let (run, cpu) = busy_during(|| m.run(&args, &[]));
        let run = run?.ok(&what)?;
        fig.create_cpu.extend(cpu);
        let rm = m.run(&["rm", "-y", &name], &[])?.ok("machine rm -y")?;
        cleanup.removed(&name);
        println!("{what}: {}  (rm -y: {})", secs(run.took), secs(rm.took));
        fig.create.push(run.took);
        fig.rm.push(rm.took);
        creates.push(run);
    }

    let mut at_once_runs = Vec::new();
    for round in 1..=opts.rounds {
        let names: Vec<String> = (1..=opts.at_once)
            .map(|i| format!("bp{round}x{i}"))
            .collect();
        for n in &names {
            cleanup.add(n);
        }
        let t0 = Instant::now();
        let (results, cpu) = busy_during(|| -> Vec<Result<Run, BoxError>> {
            std::thread::scope(|s| {
                let handles: Vec<_> = names
                    .iter()
                    .map(|n| {
                        let image = &image;
                        s.spawn(move || {
                            m.run(
                                &["create", "-d", "container", "--container-image", image, n],
                                &[],
                            )
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
                    .collect()
            })
        });
        let wall = t0.elapsed();
        fig.at_once_cpu.extend(cpu.map(|c| c / opts.at_once as u32));
        let mut round_runs = Vec::new();
        let mut failure = None;
        for (n, r) in names.iter().zip(results) {
            match r.and_then(|r| r.ok(&format!("machine create -d container … {n}"))) {
                Ok(run) => round_runs.push(run),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let mut rm_args = vec!["rm", "-y"];
        rm_args.extend(names.iter().map(String::as_str));
        let rm = m.run(&rm_args, &[])?.ok("machine rm -y (all)")?;
        for n in &names {
            cleanup.removed(n);
        }
        println!(
            "{} × machine create -d container at once, round {round}: {} wall, each {}  (rm -y of all: {})",
            opts.at_once,
            secs(wall),
            round_runs
                .iter()
                .map(|r| format!("{:.2}", r.took.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" "),
            secs(rm.took)
        );
        fig.at_once_wall.push(wall);
        fig.at_once_each.extend(round_runs.iter().map(|r| r.took));
        fig.at_once_rm.push(rm.took);
        at_once_runs.extend(round_runs);
    }

    let debug_run = if opts.debug_log {
        let name = "bcdebug";
        cleanup.add(name);
        let run = m.run(
            &[
                "create",
                "-d",
                "container",
                "--container-image",
                &image,
                name,
            ],
            &[("MACHINE_LOG", DEBUG_LOG)],
        )?;
        m.run(&["rm", "-y", "-f", name], &[])?.ok("machine rm -y")?;
        cleanup.removed(name);
        Some(run)
    } else {
        None
    };

    let left = cleanup.leftover_containers();
    if !left.is_empty() {
        return Err(format!("`machine rm -y` left containers behind: {left:?}").into());
    }

    table.section(format!("container driver, image {image}"));
    table.row("create -d container (sequential)", Unit::Ms, &fig.create);
    table.row(
        "  host CPU time per create (sequential)",
        Unit::Ms,
        &fig.create_cpu,
    );
    table.row("rm -y NAME (sequential)", Unit::Ms, &fig.rm);
    table.row(
        format!("{} creates at once: wall until all done", opts.at_once),
        Unit::Ms,
        &fig.at_once_wall,
    );
    table.row(
        format!("  host CPU time per create, {} at once", opts.at_once),
        Unit::Ms,
        &fig.at_once_cpu,
    );
    table.row(
        format!("{} creates at once: each process", opts.at_once),
        Unit::Ms,
        &fig.at_once_each,
    );
    table.row(
        format!("rm -y of the {} at once", opts.at_once),
        Unit::Ms,
        &fig.at_once_rm,
    );

    let refs: Vec<&Run> = creates.iter().collect();
    breakdown(
        details,
        &format!(
            "where the time goes: create -d container, sequential ({} runs)",
            refs.len()
        ),
        &refs,
    );
    let refs: Vec<&Run> = at_once_runs.iter().collect();
    breakdown(
        details,
        &format!(
            "where the time goes: create -d container, {} at once ({} processes)",
            opts.at_once,
            refs.len()
        ),
        &refs,
    );
    if let Some(run) = creates.get(creates.len() / 2) {
        samples.push_str(&format!(
            "\nstderr of one sequential `machine create -d container` (time each line appeared):\n{}",
            run.timestamped()
        ));
    }
    if let Some(run) = at_once_runs.iter().max_by_key(|r| r.took) {
        samples.push_str(&format!(
            "\nstderr of the slowest of the creates at once:\n{}",
            run.timestamped()
        ));
    }
    if let Some(run) = debug_run {
        samples.push_str(&format!(
            "\nstderr of `MACHINE_LOG={DEBUG_LOG} machine create -d container` (untimed in the table):\n{}",
            run.timestamped()
        ));
    }
    Ok(fig)
}

/// Runs the benchmark and prints its report.
pub(crate) fn run(opts: &Options) -> Result<(), BoxError> {
    let bin_dir = opts
        .machine
        .parent()
        .ok_or("the machine binary's path has no directory")?;
    for bin in [
        opts.machine.clone(),
        bin_dir.join("machine-driver-generic"),
        bin_dir.join("machine-driver-container"),
    ] {
        if !bin.is_file() {
            return Err(format!(
                "{} is missing: cargo build --release -p machine-cli -p machine-driver-generic -p machine-driver-container",
                bin.display()
            )
            .into());
        }
    }
    // The images must exist before anything is started (this panics with a
    // hint to run the setup script otherwise).
    let image = std::panic::catch_unwind(|| Image::Docker.name())
        .map_err(|_| "no test host image: run `bash integration/hosts/setup.sh`")?;
    println!("image:   {image}");

    let store = tempfile::Builder::new()
        .prefix("machine-bench-provision-")
        .tempdir()?;
    let keys = tempfile::Builder::new()
        .prefix("machine-bench-keys-")
        .tempdir()?;
    let m = Machine {
        bin: opts.machine.clone(),
        store: store.path().to_owned(),
    };
    println!("store:   {}", m.store.display());
    println!();

    let mut table = Table::default();
    let mut details = Table::default();
    let mut samples = String::new();
    let mut verdicts = Vec::new();
    {
        let cleanup = Cleanup::new(&m);
        if opts.generic {
            let g = generic_part(
                opts,
                &m,
                &cleanup,
                keys.path(),
                &mut table,
                &mut details,
                &mut samples,
            )?;
            if let Some(p) = median(&g.provision) {
                verdicts.push(Verdict {
                    what: "provision a host that has Docker (median)".into(),
                    figure: secs(p),
                    target: format!("≤ {}", secs(PROVISION_TARGET)),
                    met: p <= PROVISION_TARGET,
                });
            }
            if let Some(e) = median(&g.env) {
                verdicts.push(Verdict {
                    what: "env NAME on a provisioned machine (median)".into(),
                    figure: millis(e),
                    target: format!("≤ {}", millis(ENV_TARGET)),
                    met: e <= ENV_TARGET,
                });
            }
        }
        if opts.container {
            println!();
            let c = container_part(opts, &m, &cleanup, &mut table, &mut details, &mut samples)?;
            if let (Some(one), Some(max)) = (median(&c.create), summarize(&c.create).map(|s| s.max))
            {
                verdicts.push(Verdict {
                    what: "container create → provisioned (median)".into(),
                    figure: format!("{} (max {})", secs(one), secs(max)),
                    target: format!("≤ {}", secs(CONTAINER_CREATE_TARGET)),
                    met: one <= CONTAINER_CREATE_TARGET,
                });
                if let Some(worst) = c.at_once_wall.iter().max() {
                    let ratio = worst.as_secs_f64() / one.as_secs_f64();
                    verdicts.push(Verdict {
                        what: format!("{} creates at once vs one (slowest round)", opts.at_once),
                        figure: format!("{} = {ratio:.2}× one", secs(*worst)),
                        target: format!("≤ {AT_ONCE_FACTOR}×"),
                        met: ratio <= AT_ONCE_FACTOR,
                    });
                }
                at_once_bound(opts.at_once, one, &c.create_cpu);
            }
        }
    }

    println!();
    print!("{}", table.render());
    println!();
    print!("{}", details.render());
    print!("{samples}");
    println!();
    println!("targets:");
    let w = verdicts
        .iter()
        .map(|v| v.what.chars().count())
        .max()
        .unwrap_or(0);
    let fw = verdicts
        .iter()
        .map(|v| v.figure.chars().count())
        .max()
        .unwrap_or(0);
    for v in &verdicts {
        println!(
            "  {:<w$}  {:>fw$}  {:<10}  {}",
            v.what,
            v.figure,
            v.target,
            if v.met { "met" } else { "MISSED" }
        );
    }
    println!();
    println!("baseline: {BASELINE}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_step_times() {
        assert_eq!(strip_took("==> SSH is up (0.1s)"), "==> SSH is up");
        assert_eq!(
            strip_took("==> Docker is up on `bp` (12.0s)"),
            "==> Docker is up on `bp`"
        );
        assert_eq!(
            strip_took("==> Checking for Docker"),
            "==> Checking for Docker"
        );
        assert_eq!(
            strip_took("    Debian (debian provisioner)"),
            "    Debian (debian provisioner)"
        );
    }

    #[test]
    fn parses_options() {
        let args: Vec<String> = ["--runs", "3", "--skip-container", "--machine=/x/machine"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let o = Options::parse(&args).unwrap();
        assert_eq!(o.runs, 3);
        assert!(!o.container && o.generic);
        assert_eq!(o.machine, PathBuf::from("/x/machine"));
        assert!(Options::parse(&["--runs".to_owned(), "0".to_owned()]).is_err());
    }
}
