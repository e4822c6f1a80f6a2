//! `vboxmanage-standin`: a stand-in for `VBoxManage`, used only by the
//! tests of `machine-driver-virtualbox`, because VirtualBox cannot run on
//! the machines the tests run on.
//!
//! It answers the VBoxManage commands the driver uses with VirtualBox 7.0's
//! recorded output (`tests/fixtures/vbox70/`: field layout, quoting, error
//! lines and exit statuses), and keeps a model of VirtualBox in a JSON file
//! so that commands see each other's effects: registered VMs and their
//! settings, registered media and the files behind them, host-only
//! adapters, DHCP servers and their leases, VM states. It checks what real
//! VirtualBox checks where the driver depends on it (unknown options, a
//! running VM cannot be unregistered, a medium must exist to be attached,
//! the 6.1.28 host-only range rule, …).
//!
//! Its home is the directory it is invoked from (`argv[0]`'s directory, so
//! tests symlink it as `<dir>/VBoxManage`):
//!
//! - `standin.json`: the scenario (version, faults to inject, how many
//!   lookups before a lease appears, initial adapters and DHCP servers);
//! - `state.json`: the model, made from the scenario on the first call;
//! - `vboxmanage.log`: every invocation, one command line per line.
//!
//! What it does not model: the guest itself (a started VM "leases" an
//! address after a set number of `findlease` calls and "powers off" a set
//! number of `showvminfo` calls after the ACPI button), disk contents
//! (clones are file copies), and every option VBoxManage has.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

macro_rules! fixture {
    ($path:literal) => {
        include_str!(concat!("../fixtures/vbox70/", $path))
    };
}

/// The scenario a test sets up.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct Setup {
    version: String,
    /// The file with the allowed host-only ranges.
    networks_conf: Option<PathBuf>,
    fail: Vec<Fail>,
    /// `findlease` calls answered "not found" after `startvm`.
    lease_after: u32,
    /// `showvminfo` calls still answered "running" after the ACPI button.
    acpi_polls: u32,
    /// The guest ignores the ACPI button.
    ignore_acpi: bool,
    /// The capacity of an image the stand-in did not make.
    image_capacity_mb: u64,
    hostonlyifs: Vec<HostIf>,
    dhcpservers: Vec<Dhcp>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            version: "7.0.14r161095".into(),
            networks_conf: None,
            fail: Vec::new(),
            lease_after: 2,
            acpi_polls: 2,
            ignore_acpi: false,
            image_capacity_mb: 3584,
            hostonlyifs: Vec::new(),
            dhcpservers: Vec::new(),
        }
    }
}

/// Fail the `nth` call of a command (its first word) with recorded output.
#[derive(Debug, Deserialize)]
struct Fail {
    command: String,
    #[serde(default = "one")]
    nth: usize,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct HostIf {
    name: String,
    ip: String,
    mask: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Dhcp {
    network: String,
    ip: String,
    mask: String,
    lower: String,
    upper: String,
    enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lease {
    ip: String,
    network: String,
    misses_left: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Medium {
    uuid: String,
    format: String,
    capacity_mb: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Controller {
    name: String,
    kind: String,
    ports: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Vm {
    name: String,
    uuid: String,
    cfgfile: String,
    vmdir: String,
    state: String,
    acpi_left: u32,
    settings: BTreeMap<String, String>,
    natpf: Vec<String>,
    controllers: Vec<Controller>,
    /// `SATA-0-0` → medium path.
    storage: BTreeMap<String, String>,
    shared: Vec<(String, String)>,
}

/// The model of VirtualBox.
#[derive(Debug, Default, Serialize, Deserialize)]
struct World {
    vms: BTreeMap<String, Vm>,
    /// Registered media by path.
    media: BTreeMap<String, Medium>,
    hostonlyifs: Vec<HostIf>,
    dhcpservers: Vec<Dhcp>,
    /// By MAC, lower case with colons.
    leases: BTreeMap<String, Lease>,
    calls: BTreeMap<String, usize>,
    serial: u64,
}

/// What a run prints and how it exits.
#[derive(Debug, Default)]
struct Out {
    stdout: String,
    stderr: String,
    code: u8,
}

type Run = Result<Out, Out>;

fn ok(stdout: impl Into<String>) -> Run {
    Ok(Out {
        stdout: stdout.into(),
        ..Out::default()
    })
}

fn with_progress(stdout: impl Into<String>) -> Run {
    Ok(Out {
        stdout: stdout.into(),
        stderr: fixture!("progress.txt").into(),
        code: 0,
    })
}

/// A runtime error (exit status 1), from a recorded error.
fn error(template: &str, values: &[(&str, &str)]) -> Run {
    Err(Out {
        stderr: fill(template, values),
        code: 1,
        ..Out::default()
    })
}

/// A syntax error (exit status 2, RTEXITCODE_SYNTAX).
fn syntax(message: &str) -> Run {
    Err(Out {
        stderr: fill(fixture!("errors/syntax.txt"), &[("message", message)]),
        code: 2,
        ..Out::default()
    })
}

fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut text = template.to_owned();
    for (k, v) in values {
        text = text.replace(&format!("{{{k}}}"), v);
    }
    text
}

fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=.,:/@%+".contains(c))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// How many values an option takes.
#[derive(Debug, Clone, Copy)]
enum Arity {
    N(usize),
    /// `--uart1 off` or `--uart1 IO IRQ`.
    Uart,
    /// `--uartmode1 disconnected` or `--uartmode1 file PATH`.
    UartMode,
    /// `--natpf1 RULE` or `--natpf1 delete NAME`.
    Natpf,
}

/// Parsed options: each option's values (options may repeat), and the
/// positional arguments.
#[derive(Debug, Default)]
struct Opts {
    values: BTreeMap<String, Vec<Vec<String>>>,
    positional: Vec<String>,
}

impl Opts {
    fn parse(command: &str, args: &[String], spec: &[(&str, Arity)]) -> Result<Opts, Out> {
        let mut opts = Opts::default();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            i += 1;
            if !arg.starts_with("--") {
                opts.positional.push(arg.clone());
                continue;
            }
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (arg.as_str(), None),
            };
            let Some((_, arity)) = spec.iter().find(|(n, _)| *n == name) else {
                return Err(Out {
                    stderr: fill(
                        fixture!("errors/unknown-option.txt"),
                        &[("command", command), ("option", name)],
                    ),
                    code: 2,
                    ..Out::default()
                });
            };
            let mut values = Vec::new();
            if let Some(v) = inline {
                values.push(v);
            }
            let next = values.first().or(args.get(i)).cloned().unwrap_or_default();
            let want = match arity {
                Arity::N(n) => *n,
                Arity::Uart => {
                    if next == "off" {
                        1
                    } else {
                        2
                    }
                }
                Arity::UartMode => {
                    if next == "disconnected" {
                        1
                    } else {
                        2
                    }
                }
                Arity::Natpf => {
                    if next == "delete" {
                        2
                    } else {
                        1
                    }
                }
            };
            while values.len() < want {
                match args.get(i) {
                    Some(v) => {
                        values.push(v.clone());
                        i += 1;
                    }
                    None => {
                        return Err(
                            syntax(&format!("Missing value for option {name}")).unwrap_err()
                        );
                    }
                }
            }
            opts.values.entry(name.to_owned()).or_default().push(values);
        }
        Ok(opts)
    }

    fn one(&self, name: &str) -> Option<String> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .and_then(|v| v.first())
            .cloned()
    }

    fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

impl World {
    fn uuid(&mut self) -> String {
        self.serial += 1;
        format!("6f1b2c3d-7c3e-4d2a-9b1f-{:012x}", self.serial)
    }

    fn vm(&mut self, key: &str, command: &str) -> Result<&mut Vm, Out> {
        let name = self
            .vms
            .values()
            .find(|v| v.name == key || v.uuid == key)
            .map(|v| v.name.clone());
        match name {
            Some(n) => Ok(self.vms.get_mut(&n).expect("just found")),
            None => {
                let file = match command {
                    "showvminfo" => ("3160", "VBoxManageInfo.cpp"),
                    "controlvm" => ("289", "VBoxManageControlVM.cpp"),
                    "modifyvm" => ("677", "VBoxManageModifyVM.cpp"),
                    "storageattach" | "storagectl" => ("178", "VBoxManageStorageController.cpp"),
                    _ => ("154", "VBoxManageMisc.cpp"),
                };
                Err(error(
                    fixture!("errors/vm-not-found.txt"),
                    &[("name", key), ("line", file.0), ("file", file.1)],
                )
                .unwrap_err())
            }
        }
    }

    fn attached_to(&self, path: &str) -> Option<&Vm> {
        self.vms
            .values()
            .find(|vm| vm.storage.values().any(|p| p == path))
    }
}

fn is_active(state: &str) -> bool {
    !matches!(state, "poweroff" | "aborted" | "saved")
}

fn parse_mac(text: &str) -> Option<String> {
    let hex: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (hex.len() == 12
        && text
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '-'))
    .then(|| {
        hex.to_ascii_lowercase()
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":")
    })
}

fn ip(text: &str) -> Option<u32> {
    text.parse::<Ipv4Addr>().ok().map(u32::from)
}

/// The allowed host-only ranges, as VirtualBox ≥ 6.1.28 reads them.
fn range_allows(conf: &Path, addr: &str) -> bool {
    let Some(addr) = ip(addr) else {
        return false;
    };
    let ranges: Vec<String> = match std::fs::read_to_string(conf) {
        Ok(text) => text
            .lines()
            .filter_map(|l| l.trim().strip_prefix('*'))
            .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect(),
        Err(_) => vec!["192.168.56.0/21".into()],
    };
    ranges.iter().any(|r| {
        let Some((net, prefix)) = r.split_once('/') else {
            return false;
        };
        let (Some(net), Ok(prefix)) = (ip(net), prefix.parse::<u32>()) else {
            return false;
        };
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        addr & mask == net & mask
    })
}

fn version_at_least(version: &str, want: (u32, u32, u32)) -> bool {
    let nums: Vec<u32> = version
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .filter_map(|p| p.parse().ok())
        .collect();
    (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
        nums.get(2).copied().unwrap_or(0),
    ) >= want
}

fn medium_arg(opts: &Opts, command: &str) -> Result<String, Out> {
    let mut pos = opts
        .positional
        .iter()
        .filter(|p| !matches!(p.as_str(), "disk" | "dvd" | "floppy"));
    pos.next()
        .cloned()
        .ok_or_else(|| syntax(&format!("{command}: no medium given")).unwrap_err())
}

fn capacity_of(world: &World, setup: &Setup, path: &str) -> u64 {
    world
        .media
        .get(path)
        .map(|m| m.capacity_mb)
        .unwrap_or(setup.image_capacity_mb)
}

fn render_vm(vm: &Vm) -> String {
    let s = |k: &str, d: &str| vm.settings.get(k).cloned().unwrap_or_else(|| d.to_owned());
    let mut storage = String::new();
    for (i, c) in vm.controllers.iter().enumerate() {
        storage.push_str(&format!(
            "storagecontrollername{i}=\"{}\"\nstoragecontrollertype{i}=\"{}\"\nstoragecontrollerinstance{i}=\"0\"\n\
             storagecontrollermaxportcount{i}=\"30\"\nstoragecontrollerportcount{i}=\"{}\"\nstoragecontrollerbootable{i}=\"on\"\n",
            c.name, c.kind, c.ports
        ));
        for p in 0..c.ports {
            let key = format!("{}-{p}-0", c.name);
            match vm.storage.get(&key) {
                Some(path) => storage.push_str(&format!(
                    "\"{key}\"=\"{path}\"\n\"{}-ImageUUID-{p}-0\"=\"{}\"\n",
                    c.name, vm.uuid
                )),
                None => storage.push_str(&format!("\"{key}\"=\"none\"\n")),
            }
        }
    }
    let mut nics = String::new();
    for i in 1..=8 {
        let kind = s(&format!("nic{i}"), if i == 1 { "nat" } else { "none" });
        let mac = s(
            &format!("macaddress{i}"),
            &format!("080027{:06X}", (vm.uuid.len() as u32 * 7919 + i) & 0xFFFFFF),
        );
        let common = |nics: &mut String| {
            nics.push_str(&format!(
                "macaddress{i}=\"{mac}\"\ncableconnected{i}=\"{}\"\nnic{i}=\"{kind}\"\nnictype{i}=\"{}\"\nnicspeed{i}=\"0\"\n",
                s(&format!("cableconnected{i}"), "on"),
                s(&format!("nictype{i}"), "82540EM"),
            ));
        };
        match kind.as_str() {
            "nat" => {
                nics.push_str(&format!("natnet{i}=\"nat\"\n"));
                common(&mut nics);
                nics.push_str("mtu=\"0\"\nsockSnd=\"64\"\nsockRcv=\"64\"\ntcpWndSnd=\"64\"\ntcpWndRcv=\"64\"\n");
                if i == 1 {
                    for (k, rule) in vm.natpf.iter().enumerate() {
                        nics.push_str(&format!("Forwarding({k})=\"{rule}\"\n"));
                    }
                }
            }
            "hostonly" => {
                nics.push_str(&format!(
                    "hostonlyadapter{i}=\"{}\"\n",
                    s(&format!("hostonlyadapter{i}"), "")
                ));
                common(&mut nics);
            }
            _ => nics.push_str(&format!("nic{i}=\"none\"\n")),
        }
    }
    let uart = match vm.settings.get("uart1") {
        Some(u) if u != "off" => {
            let (io, irq) = u.split_once(' ').unwrap_or((u.as_str(), "4"));
            let io = u32::from_str_radix(io.trim_start_matches("0x").trim_start_matches("0X"), 16)
                .unwrap_or(0x3f8);
            format!(
                "uart1=\"0x{io:04x},{irq}\"\nuartmode1=\"{}\"\nuarttype1=\"16550A\"\n",
                s("uartmode1", "disconnected").replacen(' ', ",", 1)
            )
        }
        _ => "uart1=\"off\"\n".to_owned(),
    };
    let mut shared = String::new();
    for (k, (name, path)) in vm.shared.iter().enumerate() {
        shared.push_str(&format!(
            "SharedFolderNameMachineMapping{n}=\"{name}\"\nSharedFolderPathMachineMapping{n}=\"{path}\"\n",
            n = k + 1
        ));
    }
    fill(
        fixture!("showvminfo-machinereadable.txt"),
        &[
            ("name", &vm.name),
            ("uuid", &vm.uuid),
            ("cfgfile", &vm.cfgfile),
            ("vmdir", &vm.vmdir),
            ("memory", &s("memory", "128")),
            ("cpus", &s("cpus", "1")),
            ("boot1", &s("boot1", "floppy")),
            ("boot2", &s("boot2", "dvd")),
            ("boot3", &s("boot3", "disk")),
            ("boot4", &s("boot4", "none")),
            ("acpi", &s("acpi", "on")),
            ("ioapic", &s("ioapic", "on")),
            ("rtcuseutc", &s("rtcuseutc", "off")),
            ("state", &vm.state),
            ("statetime", "2024-05-14T09:12:31.000000000"),
            ("storage", &storage),
            ("nics", &nics),
            ("uart", &uart),
            ("shared", &shared),
        ],
    )
}

const ON_OFF: &[&str] = &["on", "off"];
const NIC_TYPES: &[&str] = &[
    "Am79C970A",
    "Am79C973",
    "Am79C960",
    "82540EM",
    "82543GC",
    "82545EM",
    "virtio",
];

fn modifyvm(world: &mut World, args: &[String]) -> Run {
    let mut spec: Vec<(String, Arity)> = [
        "--cpus",
        "--memory",
        "--acpi",
        "--ioapic",
        "--rtcuseutc",
        "--boot1",
        "--boot2",
        "--boot3",
        "--boot4",
        "--ostype",
        "--description",
        "--pae",
        "--hwvirtex",
        "--nestedpaging",
        "--vtxvpid",
        "--firmware",
        "--audio-driver",
        "--graphicscontroller",
        "--vram",
    ]
    .iter()
    .map(|n| (n.to_string(), Arity::N(1)))
    .collect();
    for i in 1..=8 {
        for opt in [
            "nic",
            "nictype",
            "cableconnected",
            "macaddress",
            "hostonlyadapter",
            "nicpromisc",
            "natdnsproxy",
            "natdnshostresolver",
        ] {
            spec.push((format!("--{opt}{i}"), Arity::N(1)));
        }
        spec.push((format!("--natpf{i}"), Arity::Natpf));
    }
    spec.push(("--uart1".into(), Arity::Uart));
    spec.push(("--uartmode1".into(), Arity::UartMode));
    let spec: Vec<(&str, Arity)> = spec.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let opts = Opts::parse("modifyvm", args, &spec)?;
    let Some(key) = opts.positional.first() else {
        return syntax("Not enough parameters");
    };
    let vm = world.vm(key, "modifyvm")?;
    if is_active(&vm.state) {
        return error(fixture!("errors/session-locked.txt"), &[("name", &vm.name)]);
    }
    // Check everything before changing anything, as VBoxManage does per option.
    for (name, uses) in &opts.values {
        let key = name.trim_start_matches("--");
        for v in uses {
            let bad = |what: &str| {
                syntax(&format!(
                    "Invalid {what} '{}' for option {name}",
                    v.join(" ")
                ))
            };
            let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
            match base {
                "acpi" | "ioapic" | "rtcuseutc" | "pae" | "hwvirtex" | "nestedpaging"
                | "vtxvpid" | "cableconnected" | "natdnsproxy" | "natdnshostresolver"
                    if !ON_OFF.contains(&v[0].as_str()) =>
                {
                    return bad("value");
                }
                "cpus" | "memory" if v[0].parse::<u32>().is_err() => return bad("number"),
                "nictype" if !NIC_TYPES.iter().any(|t| t.eq_ignore_ascii_case(&v[0])) => {
                    return bad("NIC type");
                }
                "nic"
                    if ![
                        "none",
                        "null",
                        "nat",
                        "bridged",
                        "intnet",
                        "hostonly",
                        "natnetwork",
                    ]
                    .contains(&v[0].as_str()) =>
                {
                    return bad("type");
                }
                "nicpromisc" if !["deny", "allow-vms", "allow-all"].contains(&v[0].as_str()) => {
                    return bad("promiscuous mode");
                }
                "macaddress"
                    if v[0] != "auto" && (v[0].len() != 12 || parse_mac(&v[0]).is_none()) =>
                {
                    return bad("MAC address");
                }
                "boot" if !["none", "floppy", "dvd", "disk", "net"].contains(&v[0].as_str()) => {
                    return bad("boot device");
                }
                "natpf" if v[0] != "delete" && v[0].split(',').count() != 6 => {
                    return bad("NAT port-forwarding rule");
                }
                "uartmode"
                    if ![
                        "disconnected",
                        "file",
                        "server",
                        "client",
                        "tcpserver",
                        "tcpclient",
                    ]
                    .contains(&v[0].as_str()) =>
                {
                    return bad("UART mode");
                }
                _ => {}
            }
        }
    }
    for (name, uses) in opts.values {
        let key = name.trim_start_matches("--").to_owned();
        for v in uses {
            if key.starts_with("natpf") {
                if v[0] == "delete" {
                    let before = vm.natpf.len();
                    vm.natpf.retain(|r| !r.starts_with(&format!("{},", v[1])));
                    if vm.natpf.len() == before {
                        return error(
                            fixture!("errors/syntax.txt"),
                            &[("message", "A NAT rule of this name does not exist")],
                        );
                    }
                } else {
                    let rule_name = v[0].split(',').next().unwrap_or_default().to_owned();
                    if vm
                        .natpf
                        .iter()
                        .any(|r| r.starts_with(&format!("{rule_name},")))
                    {
                        return error(
                            fixture!("errors/syntax.txt"),
                            &[("message", "A NAT rule of this name already exists")],
                        );
                    }
                    vm.natpf.push(v[0].clone());
                }
            } else {
                vm.settings.insert(key.clone(), v.join(" "));
            }
        }
    }
    ok("")
}

fn run(setup: &Setup, world: &mut World, args: &[String]) -> Run {
    let Some(command) = args.first().map(String::as_str) else {
        return syntax("No command given");
    };
    let rest = &args[1..];
    let calls = world.calls.entry(command.to_owned()).or_default();
    *calls += 1;
    let nth = *calls;
    if let Some(f) = setup
        .fail
        .iter()
        .find(|f| f.command == command && f.nth == nth)
    {
        let medium = rest
            .iter()
            .position(|a| a == "--medium")
            .and_then(|i| rest.get(i + 1))
            .cloned()
            .unwrap_or_default();
        let name = rest.first().cloned().unwrap_or_default();
        let vmdir = world
            .vms
            .get(&name)
            .map(|v| v.vmdir.clone())
            .unwrap_or_default();
        let template = match f.command.as_str() {
            "storageattach" => fixture!("errors/fail-storageattach.txt"),
            "startvm" => fixture!("errors/fail-startvm.txt"),
            _ => fixture!("errors/fail-generic.txt"),
        };
        return error(
            template,
            &[
                ("medium", &medium),
                ("name", &name),
                ("vmdir", &vmdir),
                ("command", command),
            ],
        );
    }
    match command {
        "--version" | "-v" | "-version" => ok(format!("{}\n", setup.version)),
        "list" => match rest.first().map(String::as_str) {
            Some("hostonlyifs") => ok(world
                .hostonlyifs
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    fill(
                        fixture!("list-hostonlyifs.txt"),
                        &[
                            ("name", &h.name),
                            (
                                "guid",
                                &format!("786f6276-656e-4{i:03}-8000-0a002700000{i}"),
                            ),
                            ("ip", &h.ip),
                            ("mask", &h.mask),
                            ("index", &i.to_string()),
                        ],
                    )
                })
                .collect::<String>()),
            Some("dhcpservers") => ok(world
                .dhcpservers
                .iter()
                .map(|d| {
                    fill(
                        fixture!("list-dhcpservers.txt"),
                        &[
                            ("network", &d.network),
                            ("ip", &d.ip),
                            ("lower", &d.lower),
                            ("upper", &d.upper),
                            ("mask", &d.mask),
                            ("enabled", if d.enabled { "Yes" } else { "No" }),
                        ],
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")),
            Some("vms") => ok(world
                .vms
                .values()
                .map(|v| format!("\"{}\" {{{}}}\n", v.name, v.uuid))
                .collect::<String>()),
            Some(other) => syntax(&format!("Invalid parameter '{other}'")),
            None => syntax("Missing subcommand for \"list\" command."),
        },
        "showvminfo" => {
            let opts = Opts::parse(
                command,
                rest,
                &[
                    ("--machinereadable", Arity::N(0)),
                    ("--details", Arity::N(0)),
                ],
            )?;
            if !opts.has("--machinereadable") {
                return syntax("the stand-in only knows --machinereadable");
            }
            let key = opts.positional.first().cloned().unwrap_or_default();
            let vm = world.vm(&key, command)?;
            if vm.acpi_left > 0 {
                vm.acpi_left -= 1;
                if vm.acpi_left == 0 {
                    vm.state = "poweroff".into();
                }
            }
            ok(render_vm(vm))
        }
        "createvm" => {
            let opts = Opts::parse(
                command,
                rest,
                &[
                    ("--name", Arity::N(1)),
                    ("--basefolder", Arity::N(1)),
                    ("--ostype", Arity::N(1)),
                    ("--register", Arity::N(0)),
                    ("--default", Arity::N(0)),
                    ("--uuid", Arity::N(1)),
                    ("--groups", Arity::N(1)),
                ],
            )?;
            let Some(name) = opts.one("--name") else {
                return syntax("Parameter --name is required");
            };
            let base = opts
                .one("--basefolder")
                .unwrap_or_else(|| "/root/VirtualBox VMs".into());
            let vmdir = Path::new(&base).join(&name);
            let cfgfile = vmdir.join(format!("{name}.vbox"));
            let cfg = cfgfile.to_string_lossy().into_owned();
            if cfgfile.exists() || world.vms.contains_key(&name) {
                return error(
                    fixture!("errors/settings-file-exists.txt"),
                    &[("cfgfile", &cfg)],
                );
            }
            let uuid = world.uuid();
            if std::fs::create_dir_all(&vmdir)
                .and_then(|()| {
                    std::fs::write(
                        &cfgfile,
                        format!("<?xml version=\"1.0\"?>\n<VirtualBox><Machine uuid=\"{{{uuid}}}\" name=\"{name}\"/></VirtualBox>\n"),
                    )
                })
                .is_err()
            {
                return syntax(&format!("Could not create the VM folder '{}'", vmdir.display()));
            }
            if opts.has("--register") {
                world.vms.insert(
                    name.clone(),
                    Vm {
                        name: name.clone(),
                        uuid: uuid.clone(),
                        cfgfile: cfg.clone(),
                        vmdir: vmdir.to_string_lossy().into_owned(),
                        state: "poweroff".into(),
                        ..Vm::default()
                    },
                );
            }
            ok(fill(
                fixture!("createvm.txt"),
                &[("name", &name), ("uuid", &uuid), ("cfgfile", &cfg)],
            ))
        }
        "modifyvm" => modifyvm(world, rest),
        "storagectl" => {
            let opts = Opts::parse(
                command,
                rest,
                &[
                    ("--name", Arity::N(1)),
                    ("--add", Arity::N(1)),
                    ("--controller", Arity::N(1)),
                    ("--portcount", Arity::N(1)),
                    ("--hostiocache", Arity::N(1)),
                    ("--bootable", Arity::N(1)),
                ],
            )?;
            let key = opts.positional.first().cloned().unwrap_or_default();
            let (Some(name), Some(_bus)) = (opts.one("--name"), opts.one("--add")) else {
                return syntax("storagectl: --name and --add are required");
            };
            let vm = world.vm(&key, command)?;
            vm.controllers.push(Controller {
                name,
                kind: opts
                    .one("--controller")
                    .unwrap_or_else(|| "IntelAhci".into()),
                ports: opts
                    .one("--portcount")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(30),
            });
            ok("")
        }
        "storageattach" => {
            let opts = Opts::parse(
                command,
                rest,
                &[
                    ("--storagectl", Arity::N(1)),
                    ("--port", Arity::N(1)),
                    ("--device", Arity::N(1)),
                    ("--type", Arity::N(1)),
                    ("--medium", Arity::N(1)),
                ],
            )?;
            let key = opts.positional.first().cloned().unwrap_or_default();
            let (Some(ctl), Some(port), Some(medium)) = (
                opts.one("--storagectl"),
                opts.one("--port"),
                opts.one("--medium"),
            ) else {
                return syntax("storageattach: --storagectl, --port and --medium are required");
            };
            let device = opts.one("--device").unwrap_or_else(|| "0".into());
            if !Path::new(&medium).is_file() {
                return error(
                    fixture!("errors/medium-not-found.txt"),
                    &[("path", &medium)],
                );
            }
            let capacity = capacity_of(world, setup, &medium);
            let uuid = world.uuid();
            let vm = world.vm(&key, command)?;
            if !vm.controllers.iter().any(|c| c.name == ctl) {
                return syntax(&format!("Could not find a controller named '{ctl}'"));
            }
            vm.storage
                .insert(format!("{ctl}-{port}-{device}"), medium.clone());
            world.media.entry(medium).or_insert(Medium {
                uuid,
                format: "VDI".into(),
                capacity_mb: capacity,
            });
            ok("")
        }
        "clonemedium" | "clonehd" => {
            let opts = Opts::parse(
                command,
                rest,
                &[
                    ("--format", Arity::N(1)),
                    ("--variant", Arity::N(1)),
                    ("--existing", Arity::N(0)),
                ],
            )?;
            let paths: Vec<&String> = opts
                .positional
                .iter()
                .filter(|p| !matches!(p.as_str(), "disk" | "dvd" | "floppy"))
                .collect();
            let [src, dst] = paths[..] else {
                return syntax("clonemedium: give the source and the target");
            };
            if !Path::new(src).is_file() {
                return error(fixture!("errors/medium-not-found.txt"), &[("path", src)]);
            }
            if Path::new(dst).exists() {
                return error(fixture!("errors/medium-exists.txt"), &[("path", dst)]);
            }
            if std::fs::copy(src, dst).is_err() {
                return syntax(&format!("Cannot create '{dst}'"));
            }
            let capacity = capacity_of(world, setup, src);
            let format = opts.one("--format").unwrap_or_else(|| "VDI".into());
            // Opening the source registers it, as in VirtualBox.
            if !world.media.contains_key(src.as_str()) {
                let uuid = world.uuid();
                world.media.insert(
                    src.clone(),
                    Medium {
                        uuid,
                        format: "VMDK".into(),
                        capacity_mb: capacity,
                    },
                );
            }
            let uuid = world.uuid();
            world.media.insert(
                dst.clone(),
                Medium {
                    uuid: uuid.clone(),
                    format: format.clone(),
                    capacity_mb: capacity,
                },
            );
            with_progress(fill(
                fixture!("clonemedium.txt"),
                &[("format", &format), ("uuid", &uuid)],
            ))
        }
        "closemedium" => {
            let opts = Opts::parse(command, rest, &[("--delete", Arity::N(0))])?;
            let path = medium_arg(&opts, command)?;
            if let Some(vm) = world.attached_to(&path) {
                let _ = vm;
                return error(fixture!("errors/medium-attached.txt"), &[("path", &path)]);
            }
            if !world.media.contains_key(&path) && !Path::new(&path).exists() {
                return error(fixture!("errors/medium-not-found.txt"), &[("path", &path)]);
            }
            world.media.remove(&path);
            if opts.has("--delete") {
                let _ = std::fs::remove_file(&path);
                return with_progress("");
            }
            ok("")
        }
        "showmediuminfo" | "showhdinfo" => {
            let opts = Opts::parse(command, rest, &[])?;
            let path = medium_arg(&opts, command)?;
            if !Path::new(&path).is_file() {
                return error(fixture!("errors/medium-not-found.txt"), &[("path", &path)]);
            }
            let medium = world.media.get(&path).cloned().unwrap_or(Medium {
                uuid: "00000000-0000-0000-0000-000000000000".into(),
                format: "VDI".into(),
                capacity_mb: setup.image_capacity_mb,
            });
            let inuse = world
                .attached_to(&path)
                .map(|vm| format!("In use by VMs:  {} (UUID: {})\n", vm.name, vm.uuid))
                .unwrap_or_default();
            let text = fill(
                fixture!("showmediuminfo.txt"),
                &[
                    ("uuid", &medium.uuid),
                    ("path", &path),
                    ("format", &medium.format),
                    ("capacity", &medium.capacity_mb.to_string()),
                    ("ondisk", "2"),
                    ("inuse", &inuse),
                ],
            );
            ok(text.trim_end().to_owned() + "\n")
        }
        "modifymedium" | "modifyhd" => {
            let opts = Opts::parse(
                command,
                rest,
                &[("--resize", Arity::N(1)), ("--compact", Arity::N(0))],
            )?;
            let path = medium_arg(&opts, command)?;
            if !Path::new(&path).is_file() {
                return error(fixture!("errors/medium-not-found.txt"), &[("path", &path)]);
            }
            let Some(new) = opts.one("--resize").and_then(|v| v.parse::<u64>().ok()) else {
                return syntax("modifymedium: the stand-in only knows --resize MB");
            };
            let capacity = capacity_of(world, setup, &path);
            if new < capacity {
                return error(
                    fixture!("errors/resize-shrink.txt"),
                    &[("path", &path), ("new", &(new * 1024 * 1024).to_string())],
                );
            }
            let uuid = world.uuid();
            world
                .media
                .entry(path)
                .or_insert(Medium {
                    uuid,
                    format: "VDI".into(),
                    capacity_mb: capacity,
                })
                .capacity_mb = new;
            with_progress("")
        }
        "convertfromraw" => {
            let opts = Opts::parse(
                command,
                rest,
                &[
                    ("--format", Arity::N(1)),
                    ("--variant", Arity::N(1)),
                    ("--uuid", Arity::N(1)),
                ],
            )?;
            let [src, dst] = &opts.positional[..] else {
                return syntax("convertfromraw: give the raw file and the target");
            };
            let Ok(meta) = std::fs::metadata(src) else {
                return syntax(&format!("Cannot open file '{src}': VERR_FILE_NOT_FOUND"));
            };
            if Path::new(dst).exists() {
                return syntax(&format!(
                    "Cannot create the disk image \"{dst}\": VERR_ALREADY_EXISTS"
                ));
            }
            if std::fs::copy(src, dst).is_err() {
                return syntax(&format!("Cannot create the disk image \"{dst}\""));
            }
            // Not registered: convertfromraw works on files, not media.
            let bytes = meta.len();
            ok(fill(
                fixture!("convertfromraw.txt"),
                &[
                    ("src", src),
                    ("dst", dst),
                    ("bytes", &bytes.to_string()),
                    ("mb", &bytes.div_ceil(1024 * 1024).to_string()),
                ],
            ))
        }
        "startvm" => {
            let opts = Opts::parse(command, rest, &[("--type", Arity::N(1))])?;
            let key = opts.positional.first().cloned().unwrap_or_default();
            let ui = opts.one("--type").unwrap_or_else(|| "gui".into());
            if !["gui", "sdl", "headless", "separate"].contains(&ui.as_str()) {
                return syntax(&format!("Invalid session type '{ui}'"));
            }
            let ifs = world.hostonlyifs.clone();
            let servers = world.dhcpservers.clone();
            let taken: Vec<String> = world.leases.values().map(|l| l.ip.clone()).collect();
            let vm = world.vm(&key, command)?;
            if is_active(&vm.state) {
                return error(fixture!("errors/session-locked.txt"), &[("name", &vm.name)]);
            }
            for path in vm.storage.values() {
                if !Path::new(path).is_file() {
                    return error(fixture!("errors/medium-not-found.txt"), &[("path", path)]);
                }
            }
            let mut lease = None;
            if vm.settings.get("nic2").map(String::as_str) == Some("hostonly") {
                let adapter = vm
                    .settings
                    .get("hostonlyadapter2")
                    .cloned()
                    .unwrap_or_default();
                if !ifs.iter().any(|i| i.name == adapter) {
                    return error(
                        fixture!("errors/syntax.txt"),
                        &[(
                            "message",
                            &format!(
                                "Nonexistent host networking interface, name '{adapter}' (VERR_INTERNAL_ERROR)"
                            ),
                        )],
                    );
                }
                let network = format!("HostInterfaceNetworking-{adapter}");
                let mac = vm.settings.get("macaddress2").and_then(|m| parse_mac(m));
                if let (Some(server), Some(mac)) = (
                    servers.iter().find(|s| s.network == network && s.enabled),
                    mac,
                ) {
                    let (lo, hi) = (
                        ip(&server.lower).unwrap_or(0),
                        ip(&server.upper).unwrap_or(0),
                    );
                    let free = (lo..=hi)
                        .map(|a| Ipv4Addr::from(a).to_string())
                        .find(|a| !taken.contains(a));
                    if let Some(addr) = free {
                        lease = Some((mac, addr, network));
                    }
                }
            }
            vm.state = "running".into();
            vm.acpi_left = 0;
            let logs = Path::new(&vm.vmdir).join("Logs");
            let _ = std::fs::create_dir_all(&logs);
            let _ = std::fs::write(
                logs.join("VBox.log"),
                "00:00:00.000000 VirtualBox VM 7.0.14 r161095 linux.amd64 (stand-in)\n",
            );
            let name = vm.name.clone();
            if let Some((mac, addr, network)) = lease {
                let keep = world.leases.get(&mac).map(|l| l.ip.clone());
                world.leases.insert(
                    mac,
                    Lease {
                        ip: keep.unwrap_or(addr),
                        network,
                        misses_left: setup.lease_after,
                    },
                );
            }
            ok(fill(fixture!("startvm.txt"), &[("name", &name)]))
        }
        "controlvm" => {
            let [key, action, ..] = rest else {
                return syntax("Not enough parameters");
            };
            let ignore = setup.ignore_acpi;
            let polls = setup.acpi_polls.max(1);
            let vm = world.vm(key, command)?;
            if !is_active(&vm.state) {
                return error(fixture!("errors/not-running.txt"), &[("name", &vm.name)]);
            }
            match action.as_str() {
                "poweroff" => {
                    vm.state = "poweroff".into();
                    vm.acpi_left = 0;
                    with_progress("")
                }
                "acpipowerbutton" => {
                    if !ignore && vm.acpi_left == 0 {
                        vm.acpi_left = polls;
                    }
                    ok("")
                }
                "pause" => {
                    vm.state = "paused".into();
                    ok("")
                }
                "resume" => {
                    vm.state = "running".into();
                    ok("")
                }
                other => syntax(&format!("Invalid parameter '{other}'")),
            }
        }
        "unregistervm" => {
            let opts = Opts::parse(
                command,
                rest,
                &[("--delete", Arity::N(0)), ("--delete-all", Arity::N(0))],
            )?;
            let key = opts.positional.first().cloned().unwrap_or_default();
            let vm = world.vm(&key, command)?.clone();
            if is_active(&vm.state) {
                return error(
                    fixture!("errors/unregister-locked.txt"),
                    &[("name", &vm.name)],
                );
            }
            world.vms.remove(&vm.name);
            if opts.has("--delete") || opts.has("--delete-all") {
                for path in vm.storage.values() {
                    world.media.remove(path);
                    let _ = std::fs::remove_file(path);
                }
                let _ = std::fs::remove_file(&vm.cfgfile);
                let _ = std::fs::remove_file(format!("{}-prev", vm.cfgfile));
                let _ = std::fs::remove_dir_all(Path::new(&vm.vmdir).join("Logs"));
                let _ = std::fs::remove_dir(&vm.vmdir);
                return with_progress("");
            }
            ok("")
        }
        "hostonlyif" => match rest.first().map(String::as_str) {
            Some("create") => {
                let index = (0..)
                    .find(|i| {
                        !world
                            .hostonlyifs
                            .iter()
                            .any(|h| h.name == format!("vboxnet{i}"))
                    })
                    .unwrap_or(0);
                let name = format!("vboxnet{index}");
                world.hostonlyifs.push(HostIf {
                    name: name.clone(),
                    ip: format!("192.168.{}.1", 56 + index),
                    mask: "255.255.255.0".into(),
                });
                with_progress(fill(fixture!("hostonlyif-create.txt"), &[("name", &name)]))
            }
            Some("ipconfig") => {
                let opts = Opts::parse(
                    command,
                    &rest[1..],
                    &[
                        ("--ip", Arity::N(1)),
                        ("--netmask", Arity::N(1)),
                        ("--dhcp", Arity::N(0)),
                    ],
                )?;
                let name = opts.positional.first().cloned().unwrap_or_default();
                let Some(pos) = world.hostonlyifs.iter().position(|h| h.name == name) else {
                    return syntax(&format!("Could not find interface '{name}'"));
                };
                let (Some(addr), mask) = (opts.one("--ip"), opts.one("--netmask")) else {
                    return syntax("ipconfig: --ip is required");
                };
                let conf = setup
                    .networks_conf
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/etc/vbox/networks.conf"));
                if version_at_least(&setup.version, (6, 1, 28)) && !range_allows(&conf, &addr) {
                    return error(fixture!("errors/access-denied.txt"), &[]);
                }
                let h = &mut world.hostonlyifs[pos];
                h.ip = addr;
                h.mask = mask.unwrap_or_else(|| "255.255.255.0".into());
                ok("")
            }
            Some("remove") => {
                let name = rest.get(1).cloned().unwrap_or_default();
                let before = world.hostonlyifs.len();
                world.hostonlyifs.retain(|h| h.name != name);
                if world.hostonlyifs.len() == before {
                    return syntax(&format!("Could not find interface '{name}'"));
                }
                with_progress("")
            }
            _ => syntax("Invalid parameter"),
        },
        "dhcpserver" => {
            let sub = rest.first().cloned().unwrap_or_default();
            let opts = Opts::parse(
                command,
                rest.get(1..).unwrap_or_default(),
                &[
                    ("--network", Arity::N(1)),
                    ("--netname", Arity::N(1)),
                    ("--interface", Arity::N(1)),
                    ("--ifname", Arity::N(1)),
                    ("--server-ip", Arity::N(1)),
                    ("--ip", Arity::N(1)),
                    ("--netmask", Arity::N(1)),
                    ("--lower-ip", Arity::N(1)),
                    ("--lowerip", Arity::N(1)),
                    ("--upper-ip", Arity::N(1)),
                    ("--upperip", Arity::N(1)),
                    ("--enable", Arity::N(0)),
                    ("--disable", Arity::N(0)),
                    ("--mac-address", Arity::N(1)),
                ],
            )?;
            let network = match (
                opts.one("--network").or(opts.one("--netname")),
                opts.one("--interface").or(opts.one("--ifname")),
            ) {
                (Some(n), None) => n,
                (None, Some(i)) => format!("HostInterfaceNetworking-{i}"),
                _ => {
                    return syntax(
                        "You need to specify either --network or --interface to identify the DHCP server",
                    );
                }
            };
            let pos = world.dhcpservers.iter().position(|d| d.network == network);
            let get = |a: &str, b: &str| opts.one(a).or(opts.one(b));
            match sub.as_str() {
                "add" | "modify" => {
                    let fields = (
                        get("--server-ip", "--ip"),
                        opts.one("--netmask"),
                        get("--lower-ip", "--lowerip"),
                        get("--upper-ip", "--upperip"),
                    );
                    let enabled = if opts.has("--enable") {
                        Some(true)
                    } else if opts.has("--disable") {
                        Some(false)
                    } else {
                        None
                    };
                    match (sub.as_str(), pos) {
                        ("add", Some(_)) => error(
                            fixture!("errors/syntax.txt"),
                            &[("message", "DHCP server already exists")],
                        ),
                        ("add", None) => {
                            let (Some(ip), Some(mask), Some(lower), Some(upper)) = fields else {
                                return syntax(
                                    "Missing required option: --server-ip, --netmask, --lower-ip, --upper-ip",
                                );
                            };
                            world.dhcpservers.push(Dhcp {
                                network,
                                ip,
                                mask,
                                lower,
                                upper,
                                enabled: enabled.unwrap_or(false),
                            });
                            ok("")
                        }
                        (_, None) => error(fixture!("errors/dhcpserver-not-found.txt"), &[]),
                        (_, Some(p)) => {
                            let d = &mut world.dhcpservers[p];
                            let (ip, mask, lower, upper) = fields;
                            if let Some(v) = ip {
                                d.ip = v;
                            }
                            if let Some(v) = mask {
                                d.mask = v;
                            }
                            if let Some(v) = lower {
                                d.lower = v;
                            }
                            if let Some(v) = upper {
                                d.upper = v;
                            }
                            if let Some(e) = enabled {
                                d.enabled = e;
                            }
                            ok("")
                        }
                    }
                }
                "remove" => match pos {
                    Some(p) => {
                        world.dhcpservers.remove(p);
                        ok("")
                    }
                    None => error(fixture!("errors/dhcpserver-not-found.txt"), &[]),
                },
                "findlease" => {
                    if pos.is_none() {
                        return error(fixture!("errors/dhcpserver-not-found.txt"), &[]);
                    }
                    let Some(mac) = opts.one("--mac-address").and_then(|m| parse_mac(&m)) else {
                        return syntax("You need to specify a MAC address too look for");
                    };
                    match world.leases.get_mut(&mac) {
                        Some(l) if l.network == network && l.misses_left == 0 => ok(fill(
                            fixture!("dhcpserver-findlease.txt"),
                            &[("ip", &l.ip), ("mac", &mac)],
                        )),
                        Some(l) if l.network == network => {
                            l.misses_left -= 1;
                            error(fixture!("errors/lease-not-found.txt"), &[("mac", &mac)])
                        }
                        _ => error(fixture!("errors/lease-not-found.txt"), &[("mac", &mac)]),
                    }
                }
                other => syntax(&format!("Unknown subcommand '{other}'")),
            }
        }
        "sharedfolder" => {
            if rest.first().map(String::as_str) != Some("add") {
                return syntax("the stand-in only knows `sharedfolder add`");
            }
            let opts = Opts::parse(
                command,
                &rest[1..],
                &[
                    ("--name", Arity::N(1)),
                    ("--hostpath", Arity::N(1)),
                    ("--automount", Arity::N(0)),
                    ("--auto-mount-point", Arity::N(1)),
                    ("--readonly", Arity::N(0)),
                    ("--transient", Arity::N(0)),
                ],
            )?;
            let key = opts.positional.first().cloned().unwrap_or_default();
            let (Some(name), Some(path)) = (opts.one("--name"), opts.one("--hostpath")) else {
                return syntax("sharedfolder add: --name and --hostpath are required");
            };
            world.vm(&key, command)?.shared.push((name, path));
            ok("")
        }
        "setextradata" => {
            let [key, _name, ..] = rest else {
                return syntax("Not enough parameters");
            };
            if key != "global" {
                world.vm(key, command)?;
            }
            ok("")
        }
        other => syntax(&format!("Invalid command '{other}'")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // argv[0], not the resolved executable: tests symlink the stand-in
    // into a directory of their own.
    let home = Path::new(&args[0])
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."));
    let rest = &args[1..];

    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(home.join("state.lock"))
        .and_then(|f| f.lock().map(|()| f));
    let Ok(_lock) = lock else {
        eprintln!("vboxmanage-standin: cannot lock {}", home.display());
        return ExitCode::from(1);
    };
    if let Ok(mut log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("vboxmanage.log"))
    {
        let line: Vec<String> = rest.iter().map(|a| quote(a)).collect();
        let _ = writeln!(log, "{}", line.join(" "));
    }
    let setup: Setup = std::fs::read_to_string(home.join("standin.json"))
        .ok()
        .map(|t| serde_json::from_str(&t).expect("standin.json is a stand-in scenario"))
        .unwrap_or_default();
    let state = home.join("state.json");
    let mut world: World = match std::fs::read_to_string(&state) {
        Ok(t) => serde_json::from_str(&t).expect("state.json is the stand-in's model"),
        Err(_) => World {
            hostonlyifs: setup.hostonlyifs.clone(),
            dhcpservers: setup.dhcpservers.clone(),
            ..World::default()
        },
    };
    let out = run(&setup, &mut world, rest).unwrap_or_else(|e| e);
    // Atomically: the driver kills a VBoxManage whose call it drops, and
    // VirtualBox's state (kept by VBoxSVC) never depends on that client.
    let tmp = home.join(format!("state.json.{}", std::process::id()));
    std::fs::write(
        &tmp,
        serde_json::to_string_pretty(&world).expect("serializable"),
    )
    .and_then(|()| std::fs::rename(&tmp, &state))
    .expect("the stand-in's state is writable");
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    ExitCode::from(out.code)
}
