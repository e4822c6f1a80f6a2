//! `machine-bench driver-spawn`: how long a driver takes from spawn to its
//! first answer, and what single calls cost once it runs.
//!
//! Four measurements, each printed as a row of median/p90/min/max/mean:
//!
//! 1. spawn→ready: [`Plugin::launch`] (spawn, handshake line, connect) plus
//!    GetInfo, and the same with the health check in between as the CLI
//!    does it; the two are run alternately so drift hits both alike. Each
//!    run gets a fresh private socket directory and the driver is shut down
//!    afterwards (shutdown is timed separately, never counted in start-up).
//!    A `--version` exec of the same binary (no async runtime, no socket) is
//!    the floor a process start costs on this machine, and a hand-made spawn
//!    that stops at the handshake line (no connect, no call) splits launch
//!    into the driver's own start-up and the host's connect.
//! 2. sequential GetInfo calls on one connection;
//! 3. sequential GetState calls (a machine with a temp dir, config "");
//! 4. concurrent GetState calls, many machines at once for several rounds,
//!    since `machine ls` asks every machine's state at the same time.

use std::error::Error;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use machine_proto::client::{LaunchOptions, Plugin};
use machine_proto::v1::{GetInfoRequest, Machine, MachineRequest};

use crate::stats::{Table, Unit};

type BoxError = Box<dyn Error + Send + Sync>;

/// How long a driver may take to start or answer before the run fails.
const LIMIT: Duration = Duration::from_secs(10);
/// How long a driver gets to exit after the Shutdown call.
const GRACE: Duration = Duration::from_secs(2);
/// Runs of each kind done first and thrown away.
const WARMUP_RUNS: usize = 2;

/// The subcommand's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) driver: PathBuf,
    pub(crate) runs: usize,
    pub(crate) calls: usize,
    pub(crate) concurrent: usize,
    pub(crate) rounds: usize,
}

impl Options {
    pub(crate) const USAGE: &'static str = "\
usage: machine-bench driver-spawn [--driver PATH] [--runs N] [--calls N]
                                  [--concurrent N] [--rounds N]

  --driver PATH     driver binary (default: machine-driver-fault next to
                    this executable)
  --runs N          spawn→ready runs of each kind (default 50)
  --calls N         sequential GetInfo and GetState calls (default 1000)
  --concurrent N    machines queried at once (default 100)
  --rounds N        rounds of concurrent GetState calls (default 10)";

    /// Parses the arguments after the subcommand name.
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut driver = None;
        let mut runs = 50;
        let mut calls = 1000;
        let mut concurrent = 100;
        let mut rounds = 10;
        crate::args::each(args, |flag, value| {
            let number = |v: String| crate::args::positive(flag, &v);
            match flag {
                "--driver" => driver = Some(PathBuf::from(value()?)),
                "--runs" => runs = number(value()?)?,
                "--calls" => calls = number(value()?)?,
                "--concurrent" => concurrent = number(value()?)?,
                "--rounds" => rounds = number(value()?)?,
                other => return Err(format!("unknown argument {other:?}")),
            }
            Ok(())
        })?;
        let driver = match driver {
            Some(d) => d,
            None => default_driver()?,
        };
        Ok(Self {
            driver,
            runs,
            calls,
            concurrent,
            rounds,
        })
    }
}

/// `machine-driver-fault` in this executable's directory (`target/release`).
fn default_driver() -> Result<PathBuf, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find this executable's path: {e}; pass --driver"))?;
    let dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no parent directory; pass --driver", exe.display()))?;
    Ok(dir.join("machine-driver-fault"))
}

/// A private (0700) directory under /tmp, removed on drop.
#[derive(Debug)]
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new(what: &str) -> std::io::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!(
            "/tmp/machine-bench-{}-{what}-{n}",
            std::process::id()
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        // The umask may have taken bits away; make it exactly 0700.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The times of one spawn→ready run, from just before [`Plugin::launch`].
#[derive(Debug, Clone, Copy)]
struct SpawnRun {
    /// Launch returned: spawned, handshake line read, connected.
    launched: Duration,
    /// Health check answered (same as `launched` without one).
    healthy: Duration,
    /// GetInfo answered: the driver is ready.
    ready: Duration,
    /// Shutdown call until the process ended (not part of start-up).
    shutdown: Duration,
}

async fn spawn_once(driver: &Path, health: bool) -> Result<SpawnRun, BoxError> {
    let dir = PrivateDir::new("sock")?;
    let mut opts = LaunchOptions::new("fault", driver, dir.path());
    opts.start_timeout = LIMIT;

    let t0 = Instant::now();
    let plugin = Plugin::launch(opts).await?;
    let launched = t0.elapsed();
    if health {
        plugin.check_health(LIMIT).await?;
    }
    let healthy = t0.elapsed();
    let mut client = plugin.driver();
    let info = tokio::time::timeout(LIMIT, client.get_info(GetInfoRequest {}))
        .await
        .map_err(|_| "GetInfo timed out")??
        .into_inner();
    let ready = t0.elapsed();
    drop(client);
    if info.name != "fault" {
        return Err(format!("the driver calls itself {:?}, not \"fault\"", info.name).into());
    }

    let t1 = Instant::now();
    let status = plugin.shutdown(GRACE).await;
    let shutdown = t1.elapsed();
    if status.is_none() {
        return Err("the driver did not exit after shutdown".into());
    }
    Ok(SpawnRun {
        launched,
        healthy,
        ready,
        shutdown,
    })
}

/// Spawn until the handshake line is read, by hand (no [`Plugin`], no
/// connect): the driver's own start-up, runtime and bind included. With
/// `fork`, a no-op `pre_exec` hook makes the standard library fork instead
/// of using `posix_spawn` (vfork), as [`Plugin::launch`]'s hook does.
async fn raw_handshake(driver: &Path, fork: bool) -> Result<Duration, BoxError> {
    use machine_proto::handshake::{
        APP_PROTOCOL_VERSIONS, ENV_PROTOCOL_VERSIONS, ENV_TOKEN, ENV_TRANSPORT,
        ENV_UNIX_SOCKET_DIR, Handshake, MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE, format_versions,
    };
    use tokio::io::AsyncBufReadExt as _;

    let dir = PrivateDir::new("sock")?;
    let t0 = Instant::now();
    let mut cmd = tokio::process::Command::new(driver);
    if fork {
        // SAFETY: the hook does nothing, so nothing unsafe runs between fork
        // and exec.
        unsafe {
            cmd.pre_exec(|| Ok(()));
        }
    }
    let mut child = cmd
        .env(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)
        .env(
            ENV_PROTOCOL_VERSIONS,
            format_versions(APP_PROTOCOL_VERSIONS),
        )
        .env(ENV_UNIX_SOCKET_DIR, dir.path())
        .env_remove(ENV_TRANSPORT)
        .env_remove(ENV_TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("stdout is not piped")?;
    let mut line = String::new();
    tokio::time::timeout(
        LIMIT,
        tokio::io::BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .map_err(|_| "no handshake line")??;
    let took = t0.elapsed();
    // Closing stdin tells the driver the host is gone; it exits.
    drop(child.stdin.take());
    let exited = tokio::time::timeout(GRACE, child.wait()).await;
    if exited.is_err() {
        child.kill().await?;
    }
    Handshake::parse(&line).map_err(|e| format!("bad handshake line {line:?}: {e}"))?;
    Ok(took)
}

/// A process start with no runtime and no socket: `DRIVER --version`.
async fn exec_version(driver: &Path) -> Result<Duration, BoxError> {
    let t0 = Instant::now();
    let status = tokio::process::Command::new(driver)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await?;
    let took = t0.elapsed();
    if !status.success() {
        return Err(format!("{} --version failed: {status}", driver.display()).into());
    }
    Ok(took)
}

fn machine(name: String, dir: &Path) -> MachineRequest {
    MachineRequest {
        machine: Some(Machine {
            name,
            dir: dir.display().to_string(),
            config_json: String::new(),
        }),
    }
}

/// Runs the benchmark and prints its table.
pub(crate) async fn run(opts: &Options) -> Result<(), BoxError> {
    if !opts.driver.is_file() {
        return Err(format!(
            "driver {} not found; build it with `cargo build --release -p machine-driver-fault` or pass --driver",
            opts.driver.display()
        )
        .into());
    }
    let mut table = Table::default();

    // 1. Spawn → ready.
    eprintln!(
        "spawn→ready: {} warm-up + {} runs of each kind…",
        WARMUP_RUNS, opts.runs
    );
    let mut exec = Vec::new();
    let mut raw = Vec::new();
    let mut raw_fork = Vec::new();
    let mut launch = Vec::new();
    let mut ready = Vec::new();
    let mut cli_launch = Vec::new();
    let mut cli_health = Vec::new();
    let mut cli_info = Vec::new();
    let mut cli_ready = Vec::new();
    let mut shutdown = Vec::new();
    for i in 0..WARMUP_RUNS + opts.runs {
        let counted = i >= WARMUP_RUNS;
        let v = exec_version(&opts.driver).await?;
        let h = raw_handshake(&opts.driver, false).await?;
        let hf = raw_handshake(&opts.driver, true).await?;
        let a = spawn_once(&opts.driver, false).await?;
        let b = spawn_once(&opts.driver, true).await?;
        if counted {
            exec.push(v);
            raw.push(h);
            raw_fork.push(hf);
            launch.push(a.launched);
            ready.push(a.ready);
            cli_launch.push(b.launched);
            cli_health.push(b.healthy - b.launched);
            cli_info.push(b.ready - b.healthy);
            cli_ready.push(b.ready);
            shutdown.push(a.shutdown);
            shutdown.push(b.shutdown);
        }
    }
    table.section(format!(
        "spawn→ready, {} runs each (fresh process and socket dir per run)",
        opts.runs
    ));
    table.row("launch + GetInfo (spawn→ready)", Unit::Ms, &ready);
    table.row(
        "  of which launch (spawn, handshake, connect)",
        Unit::Ms,
        &launch,
    );
    table.row(
        "launch + health + GetInfo (as the CLI)",
        Unit::Ms,
        &cli_ready,
    );
    table.row("  of which launch", Unit::Ms, &cli_launch);
    table.row("  of which health check", Unit::Ms, &cli_health);
    table.row("  of which GetInfo", Unit::Ms, &cli_info);
    table.row("floor: exec `driver --version` to exit", Unit::Ms, &exec);
    table.row("spawn→handshake line, by hand (no connect)", Unit::Ms, &raw);
    table.row("  the same, forked (a pre_exec hook)", Unit::Ms, &raw_fork);
    table.row("shutdown (not counted above)", Unit::Ms, &shutdown);

    // 2-4. Calls on one running driver.
    eprintln!(
        "calls: {} GetInfo, {} GetState, {} rounds of {} concurrent GetState…",
        opts.calls, opts.calls, opts.rounds, opts.concurrent
    );
    let sock = PrivateDir::new("sock")?;
    let store = PrivateDir::new("store")?;
    let mut launch_opts = LaunchOptions::new("fault", &opts.driver, sock.path());
    launch_opts.start_timeout = LIMIT;
    let plugin = Plugin::launch(launch_opts).await?;
    plugin.check_health(LIMIT).await?;
    let mut client = plugin.driver();
    let warmup = (opts.calls / 10).max(10);

    let mut info_calls = Vec::with_capacity(opts.calls);
    for i in 0..warmup + opts.calls {
        let t0 = Instant::now();
        client.get_info(GetInfoRequest {}).await?;
        if i >= warmup {
            info_calls.push(t0.elapsed());
        }
    }

    let one_dir = store.path().join("bench-0");
    std::fs::create_dir(&one_dir)?;
    let mut state_calls = Vec::with_capacity(opts.calls);
    for i in 0..warmup + opts.calls {
        let req = machine("bench-0".to_owned(), &one_dir);
        let t0 = Instant::now();
        client.get_state(req).await?;
        if i >= warmup {
            state_calls.push(t0.elapsed());
        }
    }

    let mut dirs = Vec::with_capacity(opts.concurrent);
    for m in 0..opts.concurrent {
        let dir = store.path().join(format!("m-{m}"));
        std::fs::create_dir_all(&dir)?;
        dirs.push(dir);
    }
    let mut round_times = Vec::with_capacity(opts.rounds);
    let mut concurrent_calls = Vec::with_capacity(opts.rounds * opts.concurrent);
    // One round first, thrown away, to open the concurrent streams' path.
    for round in 0..=opts.rounds {
        let t0 = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for (m, dir) in dirs.iter().enumerate() {
            let mut client = client.clone();
            let req = machine(format!("m-{m}"), dir);
            set.spawn(async move {
                let t = Instant::now();
                let resp = client.get_state(req).await;
                resp.map(|_| t.elapsed())
            });
        }
        let mut took = Vec::with_capacity(dirs.len());
        while let Some(joined) = set.join_next().await {
            took.push(joined??);
        }
        let whole = t0.elapsed();
        if round > 0 {
            round_times.push(whole);
            concurrent_calls.extend(took);
        }
    }
    let per_call: Vec<Duration> = round_times
        .iter()
        .map(|d| *d / u32::try_from(opts.concurrent).unwrap_or(u32::MAX))
        .collect();
    drop(client);
    plugin.shutdown(GRACE).await;
    drop(store);
    drop(sock);

    table.section(format!(
        "sequential calls on one connection, {} each",
        opts.calls
    ));
    table.row("GetInfo", Unit::Us, &info_calls);
    table.row(
        "GetState (machine with no state file)",
        Unit::Us,
        &state_calls,
    );
    table.section(format!(
        "concurrent GetState, {} machines at once, {} rounds",
        opts.concurrent, opts.rounds
    ));
    table.row("one call, issue→answer", Unit::Us, &concurrent_calls);
    table.row(
        format!("whole round ({} calls)", opts.concurrent),
        Unit::Us,
        &round_times,
    );
    table.row("whole round / calls", Unit::Us, &per_call);

    println!("{}", table.render().trim_end());
    let median = crate::stats::summarize(&ready).map(|s| s.median);
    if let Some(m) = median {
        let ms = m.as_secs_f64() * 1e3;
        let verdict = if ms <= 10.0 { "met" } else { "NOT met" };
        println!();
        println!("target spawn→ready median ≤ 10 ms: {verdict} ({ms:.2} ms)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_options() {
        let o = Options::parse(&args(&[
            "--driver",
            "/bin/d",
            "--runs=3",
            "--calls",
            "7",
            "--concurrent",
            "5",
            "--rounds=2",
        ]))
        .unwrap();
        assert_eq!(o.driver, PathBuf::from("/bin/d"));
        assert_eq!((o.runs, o.calls, o.concurrent, o.rounds), (3, 7, 5, 2));
        let d = Options::parse(&args(&["--driver=/x"])).unwrap();
        assert_eq!(
            (d.runs, d.calls, d.concurrent, d.rounds),
            (50, 1000, 100, 10)
        );
        assert!(Options::parse(&args(&["--runs"])).is_err());
        assert!(Options::parse(&args(&["--runs", "0"])).is_err());
        assert!(Options::parse(&args(&["--bogus"])).is_err());
        let default = Options::parse(&[]).unwrap();
        assert!(default.driver.ends_with("machine-driver-fault"));
    }

    #[test]
    fn private_dir_is_0700_and_removed() {
        let dir = PrivateDir::new("test").unwrap();
        let path = dir.path().to_owned();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(dir);
        assert!(!path.exists());
    }
}
