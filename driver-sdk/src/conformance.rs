//! The conformance test kit: runs any driver binary, in any language,
//! through the protocol's start-up, lifecycle and error cases, the way the
//! `machine` CLI will use it.
//!
//! ```no_run
//! # async fn t() {
//! use machine_driver_sdk::conformance::Kit;
//! // In a driver crate's integration test: env!("CARGO_BIN_EXE_machine-driver-NAME").
//! let report = Kit::new("target/debug/machine-driver-mine")
//!     .flag("mine-region", "local")
//!     .run()
//!     .await;
//! report.assert_passed();
//! # }
//! ```
//!
//! Checks that need a real provider (create, start, stop, remove) run only
//! when [`Kit::lifecycle`] is on (the default); turn it off for a driver
//! whose provider is not reachable from the test.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use machine_proto::client::{LaunchError, LaunchOptions, Plugin, Transport};
use machine_proto::handshake;
use machine_proto::v1::{self, create_event::Event, flag_value::Value};
use tonic::Code;

/// One check's name and outcome.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Result<(), String>,
}

/// Everything the kit found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.outcome.is_ok())
    }

    /// The checks that failed.
    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| c.outcome.is_err()).collect()
    }

    /// Panics with the failed checks, for use in tests.
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.passed(), "driver failed conformance:\n{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            match &c.outcome {
                Ok(()) => writeln!(f, "  ok    {}", c.name)?,
                Err(e) => writeln!(f, "  FAIL  {}: {e}", c.name)?,
            }
        }
        let failed = self.failures().len();
        write!(f, "{} passed, {failed} failed", self.checks.len() - failed)
    }
}

/// Configures and runs the checks against one driver binary.
#[derive(Debug, Clone)]
pub struct Kit {
    program: PathBuf,
    flags: HashMap<String, v1::FlagValue>,
    lifecycle: bool,
    call_timeout: Duration,
    env: Vec<(String, String)>,
    unprefixed: Vec<String>,
    adopts: bool,
    tcp: bool,
}

type Outcome = Result<(), String>;

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Outcome {
    if cond { Ok(()) } else { Err(msg()) }
}

impl Kit {
    pub fn new(program: impl AsRef<Path>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            flags: HashMap::new(),
            lifecycle: true,
            call_timeout: Duration::from_secs(120),
            env: Vec::new(),
            unprefixed: Vec::new(),
            adopts: false,
            tcp: true,
        }
    }

    /// A create flag value, as text (the driver parses numbers and booleans).
    pub fn flag(mut self, name: &str, value: &str) -> Self {
        self.flags.insert(
            name.to_owned(),
            v1::FlagValue {
                value: Some(Value::StringValue(value.to_owned())),
            },
        );
        self
    }

    /// Whether to create, drive and remove a real host (default on).
    pub fn lifecycle(mut self, on: bool) -> Self {
        self.lifecycle = on;
        self
    }

    /// The limit for one call; creating a VM may need minutes.
    pub fn call_timeout(mut self, limit: Duration) -> Self {
        self.call_timeout = limit;
        self
    }

    /// Flags allowed without the `<driver>-` prefix (the none driver's
    /// `--url`, kept for Docker Machine users).
    pub fn unprefixed_flags(mut self, names: &[&str]) -> Self {
        self.unprefixed = names.iter().map(|n| (*n).to_owned()).collect();
        self
    }

    /// The driver adopts hosts that exist without it (none, generic):
    /// removing forgets the host instead of destroying it, so the host need
    /// not be gone afterwards.
    pub fn adopts_existing_hosts(mut self, adopts: bool) -> Self {
        self.adopts = adopts;
        self
    }

    /// Whether to check the TCP transport (default on). Drivers built on
    /// hashicorp/go-plugin listen on unix sockets wherever they exist and
    /// ignore the request for TCP; turn this off for them.
    pub fn tcp_transport(mut self, check: bool) -> Self {
        self.tcp = check;
        self
    }

    /// Extra environment for the driver process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The provider name the binary's file name promises.
    fn expected_name(&self) -> String {
        let file = self
            .program
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        file.strip_prefix("machine-driver-")
            .unwrap_or(file)
            .to_owned()
    }

    async fn launch(
        &self,
        sockets: &Path,
        versions: &[u32],
        transport: Transport,
    ) -> Result<Plugin, LaunchError> {
        let mut opts = LaunchOptions::new(self.expected_name(), &self.program, sockets);
        opts.versions = versions.to_vec();
        opts.transport = transport;
        opts.env = self.env.iter().map(|(k, v)| (k.into(), v.into())).collect();
        Plugin::launch(opts).await
    }

    /// Runs every check and reports; never panics on a driver's fault.
    pub async fn run(&self) -> Report {
        let mut report = Report::default();
        let scratch = match tempfile::Builder::new()
            .prefix("mdc-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in("/tmp")
        {
            Ok(d) => d,
            Err(e) => {
                report.checks.push(Check {
                    name: "scratch directory",
                    outcome: Err(e.to_string()),
                });
                return report;
            }
        };
        let sockets = scratch.path().join("s");
        let _ = std::fs::create_dir(&sockets);

        report.checks.push(Check {
            name: "run by hand: explains itself and exits non-zero",
            outcome: self.check_cookie().await,
        });

        let plugin = match self
            .launch(&sockets, handshake::APP_PROTOCOL_VERSIONS, Transport::Unix)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                report.checks.push(Check {
                    name: "handshake",
                    outcome: Err(e.to_string()),
                });
                return report;
            }
        };
        report.checks.push(Check {
            name: "handshake",
            outcome: Ok(()),
        });
        report.checks.push(Check {
            name: "health service `plugin` is SERVING",
            outcome: plugin
                .check_health(Duration::from_secs(5))
                .await
                .map_err(|e| e.to_string()),
        });

        let mut session = Session {
            kit: self,
            plugin: &plugin,
            dir: scratch.path().join("machines"),
            info: None,
        };
        let checks: [(&'static str, Outcome); 4] = [
            ("GetInfo", session.check_info().await),
            ("GetCreateFlags", session.check_flags().await),
            (
                "unknown machine: NotFound state, idempotent Remove",
                session.check_unknown().await,
            ),
            (
                "request without a machine: INVALID_ARGUMENT",
                session.check_invalid().await,
            ),
        ];
        report.checks.extend(
            checks
                .into_iter()
                .map(|(name, outcome)| Check { name, outcome }),
        );
        report.checks.push(Check {
            name: "operations not announced: UNIMPLEMENTED",
            outcome: session.check_unsupported().await,
        });
        if self.lifecycle {
            report.checks.push(Check {
                name: "lifecycle: create, state, connection, stop/start/restart/kill, remove",
                outcome: session.check_lifecycle().await,
            });
        }

        report.checks.push(Check {
            name: "Shutdown call: exits promptly",
            outcome: check_shutdown(plugin).await,
        });
        report.checks.push(Check {
            name: "stdin closed: exits promptly",
            outcome: self.check_stdin_eof(&sockets).await,
        });
        report.checks.push(Check {
            name: "version negotiation: picks a version it speaks",
            outcome: self.check_negotiation(&sockets).await,
        });
        if self.tcp {
            report.checks.push(Check {
                name: "tcp transport: token required",
                outcome: self.check_tcp(&sockets).await,
            });
        }
        report
    }

    async fn check_cookie(&self) -> Outcome {
        let child = tokio::process::Command::new(&self.program)
            .env_remove(handshake::MAGIC_COOKIE_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(10), child)
            .await
            .map_err(|_| "still running 10s after being started by hand".to_owned())?
            .map_err(|e| format!("cannot run it: {e}"))?;
        ensure(!out.status.success(), || "exited 0".into())?;
        ensure(out.stdout.is_empty(), || {
            format!(
                "wrote to stdout: {:?}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        ensure(!out.stderr.is_empty(), || {
            "said nothing on stderr about what it is".into()
        })
    }

    async fn check_stdin_eof(&self, sockets: &Path) -> Outcome {
        let mut plugin = self
            .launch(sockets, handshake::APP_PROTOCOL_VERSIONS, Transport::Unix)
            .await
            .map_err(|e| e.to_string())?;
        plugin.close_stdin();
        let status = plugin.wait_exit(Duration::from_secs(5)).await;
        let result = ensure(status.is_some(), || {
            "still running 5s after its stdin was closed".into()
        });
        plugin.kill().await;
        result
    }

    async fn check_negotiation(&self, sockets: &Path) -> Outcome {
        let mut offered = handshake::APP_PROTOCOL_VERSIONS.to_vec();
        offered.push(9999);
        let plugin = self
            .launch(sockets, &offered, Transport::Unix)
            .await
            .map_err(|e| format!("offered {offered:?}: {e}"))?;
        let v = plugin.handshake().app_version;
        plugin.kill().await;
        ensure(handshake::APP_PROTOCOL_VERSIONS.contains(&v), || {
            format!("offered {offered:?}, it chose {v}")
        })?;
        // Offered only a version it cannot speak, it must still answer with
        // one it does, so the host can explain the mismatch.
        match self.launch(sockets, &[9999], Transport::Unix).await {
            Err(LaunchError::IncompatibleProtocol { driver, .. }) if driver != 9999 => Ok(()),
            Err(e) => Err(format!("offered only 9999: {e}")),
            Ok(p) => {
                p.kill().await;
                Err("offered only 9999, it claimed to speak it".into())
            }
        }
    }

    async fn check_tcp(&self, sockets: &Path) -> Outcome {
        let plugin = self
            .launch(sockets, handshake::APP_PROTOCOL_VERSIONS, Transport::Tcp)
            .await
            .map_err(|e| e.to_string())?;
        let result = async {
            let addr = match &plugin.handshake().address {
                handshake::Address::Tcp(a) => *a,
                other => return Err(format!("asked for tcp, listens on {other}")),
            };
            ensure(addr.ip().is_loopback(), || {
                format!("listens on {addr}, not on loopback")
            })?;
            plugin
                .driver()
                .get_info(v1::GetInfoRequest {})
                .await
                .map_err(|s| format!("GetInfo with the token: {}", s.message()))?;
            let bare = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            match v1::driver_client::DriverClient::new(bare)
                .get_info(v1::GetInfoRequest {})
                .await
            {
                Err(s) if s.code() == Code::Unauthenticated => Ok(()),
                Err(s) => Err(format!(
                    "GetInfo without the token: {:?} instead of UNAUTHENTICATED",
                    s.code()
                )),
                Ok(_) => Err("answered GetInfo without the token".into()),
            }
        }
        .await;
        plugin.shutdown(Duration::from_secs(2)).await;
        result
    }
}

async fn check_shutdown(plugin: Plugin) -> Outcome {
    let status = plugin.shutdown(Duration::from_secs(5)).await;
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!("exited with {s} after Shutdown")),
        None => Err("did not exit".into()),
    }
}

/// Checks that share one running driver.
struct Session<'a> {
    kit: &'a Kit,
    plugin: &'a Plugin,
    dir: PathBuf,
    info: Option<v1::GetInfoResponse>,
}

fn code_of(r: &Result<impl Sized, tonic::Status>) -> Option<Code> {
    r.as_ref().err().map(tonic::Status::code)
}

impl Session<'_> {
    fn machine(&self, name: &str, config: &str) -> v1::Machine {
        v1::Machine {
            name: name.to_owned(),
            dir: self.dir.join(name).to_string_lossy().into_owned(),
            config_json: config.to_owned(),
        }
    }

    fn req(&self, name: &str, config: &str) -> tonic::Request<v1::MachineRequest> {
        let mut r = tonic::Request::new(v1::MachineRequest {
            machine: Some(self.machine(name, config)),
        });
        r.set_timeout(self.kit.call_timeout);
        r
    }

    async fn check_info(&mut self) -> Outcome {
        let info = self
            .plugin
            .driver()
            .get_info(v1::GetInfoRequest {})
            .await
            .map_err(|s| s.message().to_owned())?
            .into_inner();
        let want = self.kit.expected_name();
        ensure(info.name == want, || {
            format!("calls itself {:?}, its binary promises {want:?}", info.name)
        })?;
        let semver = info.version.split(['-', '+']).next().unwrap_or_default();
        ensure(
            semver.split('.').count() == 3 && semver.split('.').all(|p| p.parse::<u64>().is_ok()),
            || format!("version {:?} is not semver", info.version),
        )?;
        let chosen = self.plugin.handshake().app_version;
        ensure(info.protocol_version == chosen, || {
            format!(
                "reports protocol {}, its handshake chose {chosen}",
                info.protocol_version
            )
        })?;
        ensure(!info.sdk_name.is_empty(), || "sdk_name is empty".into())?;
        self.info = Some(info);
        Ok(())
    }

    async fn check_flags(&self) -> Outcome {
        let flags = self
            .plugin
            .driver()
            .get_create_flags(v1::GetCreateFlagsRequest {})
            .await
            .map_err(|s| s.message().to_owned())?
            .into_inner()
            .flags;
        let mut seen = std::collections::HashSet::new();
        let prefix = format!("{}-", self.kit.expected_name());
        for f in &flags {
            ensure(seen.insert(&f.name), || {
                format!("flag {:?} declared twice", f.name)
            })?;
            ensure(
                !f.name.is_empty()
                    && f.name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                || {
                    format!(
                        "flag name {:?} is not lowercase letters, digits and '-'",
                        f.name
                    )
                },
            )?;
            ensure(
                f.name.starts_with(&prefix) || self.kit.unprefixed.contains(&f.name),
                || format!("flag {:?} does not start with {prefix:?}", f.name),
            )?;
            ensure(!f.usage.is_empty(), || {
                format!("flag {:?} has no usage text", f.name)
            })?;
            ensure(
                v1::FlagType::try_from(f.r#type).is_ok_and(|t| t != v1::FlagType::Unspecified),
                || format!("flag {:?} has no type", f.name),
            )?;
        }
        Ok(())
    }

    async fn check_unknown(&self) -> Outcome {
        let mut d = self.plugin.driver();
        let r = d.get_state(self.req("never-created", "")).await;
        match r {
            Ok(s) if s.get_ref().state() == v1::State::NotFound => {}
            Err(s) if s.code() == Code::NotFound => {}
            Ok(s) => {
                return Err(format!(
                    "GetState: {:?} instead of NOT_FOUND",
                    s.get_ref().state()
                ));
            }
            Err(s) => return Err(format!("GetState: {:?} {}", s.code(), s.message())),
        }
        d.remove(self.req("never-created", ""))
            .await
            .map(|_| ())
            .map_err(|s| {
                format!(
                    "Remove of a machine that does not exist failed: {}",
                    s.message()
                )
            })
    }

    async fn check_invalid(&self) -> Outcome {
        let r = self
            .plugin
            .driver()
            .get_state(v1::MachineRequest { machine: None })
            .await;
        ensure(code_of(&r) == Some(Code::InvalidArgument), || {
            format!("GetState without a machine: {:?}", code_of(&r))
        })
    }

    fn announced(&self, cap: v1::Capability) -> bool {
        self.info
            .as_ref()
            .is_some_and(|i| i.capabilities.contains(&(cap as i32)))
    }

    async fn check_unsupported(&self) -> Outcome {
        let mut d = self.plugin.driver();
        for cap in [
            v1::Capability::Start,
            v1::Capability::Stop,
            v1::Capability::Restart,
            v1::Capability::Kill,
        ] {
            if self.announced(cap) {
                continue;
            }
            let req = self.req("never-created", "");
            let r = match cap {
                v1::Capability::Start => d.start(req).await,
                v1::Capability::Stop => d.stop(req).await,
                v1::Capability::Restart => d.restart(req).await,
                _ => d.kill(req).await,
            };
            ensure(code_of(&r) == Some(Code::Unimplemented), || {
                format!("{cap:?} is not announced but answered {:?}", code_of(&r))
            })?;
        }
        Ok(())
    }

    /// The host's state; a NOT_FOUND error counts as the NotFound state, as
    /// for a machine that was never created.
    async fn state(&self, config: &str) -> Result<v1::State, String> {
        match self
            .plugin
            .driver()
            .get_state(self.req("conformance", config))
            .await
        {
            Ok(resp) => Ok(resp.get_ref().state()),
            Err(s) if s.code() == Code::NotFound => Ok(v1::State::NotFound),
            Err(s) => Err(format!("GetState: {}", s.message())),
        }
    }

    /// Waits (bounded by the call limit) for the host to settle in `want`.
    async fn expect_state(&self, config: &str, want: v1::State, after: &str) -> Outcome {
        let deadline = tokio::time::Instant::now() + self.kit.call_timeout;
        loop {
            let got = self.state(config).await?;
            if got == want {
                return Ok(());
            }
            let settling = matches!(got, v1::State::Starting | v1::State::Stopping);
            if !settling || tokio::time::Instant::now() >= deadline {
                return Err(format!("after {after}: state {got:?}, expected {want:?}"));
            }
            // A transitional state: ask again shortly.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn check_lifecycle(&self) -> Outcome {
        let mut d = self.plugin.driver();
        let create = v1::CreateRequest {
            machine: Some(self.machine("conformance", "")),
            flags: self.kit.flags.clone(),
            ssh_public_key: String::new(),
            ssh_private_key_path: self
                .dir
                .join("conformance/id_ed25519")
                .to_string_lossy()
                .into_owned(),
        };
        std::fs::create_dir_all(self.dir.join("conformance")).map_err(|e| e.to_string())?;
        d.pre_create_check(create.clone())
            .await
            .map_err(|s| format!("PreCreateCheck: {}", s.message()))?;
        let mut stream = d
            .create(create)
            .await
            .map_err(|s| format!("Create: {}", s.message()))?
            .into_inner();
        let mut config = None;
        while let Some(event) = stream
            .message()
            .await
            .map_err(|s| format!("Create: {}", s.message()))?
        {
            match event.event {
                Some(Event::Result(r)) => {
                    ensure(config.is_none(), || "Create sent a second result".into())?;
                    config = Some(r.config_json);
                }
                Some(Event::Progress(_)) => {
                    ensure(config.is_none(), || "progress after the result".into())?;
                }
                None => return Err("Create sent an empty event".into()),
            }
        }
        let mut config = config.ok_or("Create ended without a result")?;
        serde_json::from_str::<serde_json::Value>(&config)
            .map_err(|e| format!("Create's config is not JSON: {e}"))?;

        let result = self.drive(&mut d, &mut config).await;
        // Remove whatever happened above, so no host is left behind.
        let removed = d
            .remove(self.req("conformance", &config))
            .await
            .map_err(|s| format!("Remove: {}", s.message()));
        result?;
        removed?;
        if !self.kit.adopts {
            self.expect_state(&config, v1::State::NotFound, "Remove")
                .await?;
        }
        d.remove(self.req("conformance", &config))
            .await
            .map_err(|s| format!("second Remove (must succeed): {}", s.message()))?;
        Ok(())
    }

    async fn drive(
        &self,
        d: &mut v1::driver_client::DriverClient<machine_proto::client::PluginChannel>,
        config: &mut String,
    ) -> Outcome {
        self.expect_state(config, v1::State::Running, "Create")
            .await?;
        let conn = d
            .get_connection(self.req("conformance", config))
            .await
            .map_err(|s| format!("GetConnection: {}", s.message()))?
            .into_inner();
        // An empty ssh_host means a host without SSH (the none driver).
        let ssh_ok = if conn.ssh_host.is_empty() {
            conn.ssh_port == 0
        } else {
            conn.ssh_port > 0 && conn.ssh_port <= 65535
        };
        ensure(ssh_ok, || {
            format!(
                "GetConnection: ssh_host {:?} with ssh_port {}",
                conn.ssh_host, conn.ssh_port
            )
        })?;
        ensure(!conn.ip.is_empty(), || "GetConnection: empty ip".into())?;
        ensure(conn.docker_url.starts_with("tcp://"), || {
            format!(
                "GetConnection: docker_url {:?} is not tcp://",
                conn.docker_url
            )
        })?;
        let steps = [
            (v1::Capability::Stop, v1::State::Stopped),
            (v1::Capability::Start, v1::State::Running),
            (v1::Capability::Restart, v1::State::Running),
            (v1::Capability::Kill, v1::State::Stopped),
        ];
        for (cap, want) in steps {
            if !self.announced(cap) {
                continue;
            }
            let req = self.req("conformance", config);
            let resp = match cap {
                v1::Capability::Stop => d.stop(req).await,
                v1::Capability::Start => d.start(req).await,
                v1::Capability::Restart => d.restart(req).await,
                _ => d.kill(req).await,
            }
            .map_err(|s| format!("{cap:?}: {}", s.message()))?;
            if let Some(new) = resp.into_inner().config_json {
                *config = new;
            }
            self.expect_state(config, want, &format!("{cap:?}")).await?;
        }
        Ok(())
    }
}
