//! QEMU is the outside reference: for every example spec, the lowered QEMU command line
//! (`vmc lower --to qemu`) must make QEMU offer the guest exactly the virtio-net feature
//! bits the ABI's `device-features` lists, at the ABI's MMIO base, with the ABI's CPU
//! features, vCPU count and memory size.
//!
//! QEMU is started paused (`-S`, no guest code runs) inside a network namespace the test
//! creates, where QEMU makes the TAPs; it is asked over QMP (`x-query-virtio-status`,
//! `info qtree`, `qom-get`), then stopped, and the namespace deleted, even on failure.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use support::require;
use vmc_compiler::{cpu, lower, schema, AbiDocument, PlatformRegistry};

/// How long QEMU may take to open its QMP socket, and to answer one command.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// A network namespace and a QEMU process in it, both gone when dropped.

struct Netns(String);

impl Netns {
    fn create() -> Netns {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("vmc-qemu-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).output();
    }
}

struct Qemu {
    child: Child,
    socket: PathBuf,
    stderr: PathBuf,
}

impl Qemu {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// How a start ended: QEMU paused with QMP answering, or QEMU exited with this stderr.
enum Started {
    Running(Qemu, Qmp),
    Exited(String),
}

/// Starts `qemu-system-x86_64 ARGS -S -qmp …` in `ns`, bounded by [`START_TIMEOUT`].
fn start(ns: &Netns, args: &[String], scratch: &support::Scratch, tag: &str) -> Started {
    let socket = scratch.path(&format!("{tag}.qmp"));
    let stderr = scratch.path(&format!("{tag}.stderr"));
    let _ = std::fs::remove_file(&socket);
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.0, lower::QEMU_BINARY])
        .args(args)
        .arg("-S")
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", socket.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("spawn ip netns exec qemu-system-x86_64");
    let mut qemu = Qemu { child, socket, stderr };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(_)) = qemu.child.try_wait() {
            return Started::Exited(qemu.stderr());
        }
        if let Ok(stream) = UnixStream::connect(&qemu.socket) {
            match Qmp::handshake(stream) {
                Ok(qmp) => return Started::Running(qemu, qmp),
                // QEMU opens the socket before it builds the machine; a refused machine
                // closes it again. Give the exit a moment to be seen.
                Err(e) => {
                    let exit_deadline = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < exit_deadline {
                        if let Ok(Some(_)) = qemu.child.try_wait() {
                            return Started::Exited(qemu.stderr());
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    panic!("QMP handshake: {e}\n{}", qemu.stderr());
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "QEMU did not open its QMP socket within {START_TIMEOUT:?}\n{}",
            qemu.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// A small QMP client.

struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn handshake(stream: UnixStream) -> Result<Qmp, String> {
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("expected the QMP greeting, got {greeting}"));
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    fn read(&mut self) -> Result<Json, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("QMP connection closed".to_string()),
            Ok(_) => serde_json::from_str(&line).map_err(|e| format!("bad QMP message {line:?}: {e}")),
            Err(e) => Err(format!("QMP read: {e}")),
        }
    }

    /// Runs a command; its `return` value, or the error QEMU gave. Events are skipped.
    fn execute(&mut self, command: &str, arguments: Json) -> Result<Json, String> {
        let msg = json!({"execute": command, "arguments": arguments});
        writeln!(self.writer, "{msg}").map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let reply = self.read()?;
            if let Some(r) = reply.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = reply.get("error") {
                return Err(format!("{command}: {e}"));
            }
        }
    }

    fn run(&mut self, command: &str, arguments: Json) -> Json {
        self.execute(command, arguments).unwrap_or_else(|e| panic!("{e}"))
    }

    fn hmp(&mut self, command_line: &str) -> String {
        self.run("human-monitor-command", json!({"command-line": command_line}))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

// ---------------------------------------------------------------------------------------
// QEMU's feature names to bit numbers.

/// Feature names QEMU prints that vmc's schema has no property for.
const QEMU_ONLY_NAMES: &[(&str, u32)] = &[
    ("VHOST_F_LOG_ALL", 26),
    ("VIRTIO_F_BAD_FEATURE", 30),
    ("VHOST_USER_F_PROTOCOL_FEATURES", 30),
    ("VIRTIO_F_IOMMU_PLATFORM", 33),
    ("VIRTIO_F_IN_ORDER", 35),
    ("VIRTIO_F_ORDER_PLATFORM", 36),
    ("VIRTIO_F_SR_IOV", 37),
    ("VIRTIO_F_NOTIFICATION_DATA", 38),
    ("VIRTIO_NET_F_GUEST_RSC4", 41),
    ("VIRTIO_NET_F_GUEST_RSC6", 42),
    ("VIRTIO_NET_F_RSC_EXT", 61),
    ("VIRTIO_NET_F_STANDBY", 62),
    ("VIRTIO_NET_F_SPEED_DUPLEX", 63),
];

/// The bit of one `NAME: description` entry of `x-query-virtio-status`.
fn feature_bit(entry: &str) -> u32 {
    let (name, description) = entry.split_once(':').unwrap_or((entry, ""));
    let description = description.trim();
    // QEMU 10 prints the name GUEST_USO4 for bits 54 and 55; the description differs.
    if name == "VIRTIO_NET_F_GUEST_USO4" || name == "VIRTIO_NET_F_GUEST_USO6" {
        return match description {
            d if d.ends_with("USOv4") => 54,
            d if d.ends_with("USOv6") => 55,
            d => panic!("cannot tell bit 54 from 55 in {entry:?} ({d})"),
        };
    }
    if let Some((_, bit)) = QEMU_ONLY_NAMES.iter().find(|(n, _)| *n == name) {
        return *bit;
    }
    let short = name
        .strip_prefix("VIRTIO_NET_F_")
        .map(str::to_string)
        .or_else(|| name.strip_prefix("VIRTIO_RING_F_").map(|s| format!("RING_{s}")))
        .or_else(|| name.strip_prefix("VIRTIO_F_").map(str::to_string))
        .unwrap_or_else(|| panic!("QEMU reports a feature vmc cannot name: {entry:?}"));
    (0..64)
        .find(|&b| schema::feature_name(b) == Some(short.as_str()))
        .unwrap_or_else(|| panic!("QEMU reports a feature vmc cannot name: {entry:?}"))
}

/// The feature bits `x-query-virtio-status`'s `host-features` lists.
fn offered_bits(host_features: &Json) -> BTreeSet<u32> {
    let mut bits = BTreeSet::new();
    for key in ["transports", "dev-features"] {
        for entry in host_features[key].as_array().into_iter().flatten() {
            let entry = entry.as_str().expect("feature entries are strings");
            assert!(
                bits.insert(feature_bit(entry)),
                "QEMU lists a bit twice: {entry:?} in {host_features}"
            );
        }
    }
    let unknown = host_features["unknown-dev-features"].as_u64().unwrap_or(0);
    bits.extend((0..64).filter(|b| unknown & (1u64 << b) != 0));
    bits
}

fn describe(bits: &BTreeSet<u32>) -> String {
    bits.iter()
        .map(|b| format!("{b} {}", schema::feature_name(*b).unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `info qtree`: each virtio-net device id with the MMIO base of its transport.
fn device_bases(qtree: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut transport_base = None;
    for line in qtree.lines().map(str::trim) {
        if line.starts_with("dev: virtio-mmio,") {
            transport_base = None;
        } else if let Some(mmio) = line.strip_prefix("mmio ") {
            let base = mmio.split('/').next().unwrap_or_default();
            transport_base = u64::from_str_radix(base, 16).ok();
        } else if let Some(rest) = line.strip_prefix("dev: virtio-net-device, id \"") {
            let id = rest.trim_end_matches('"').to_string();
            out.push((
                id,
                transport_base.expect("a virtio-net device under a virtio-mmio transport with an mmio line"),
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------

/// The lowered arguments, without the boot files (the example specs name a kernel that
/// is not in the checkout; QEMU starts without one, and `-S` runs no guest code).
fn lowered_without_boot(doc: &AbiDocument) -> Vec<String> {
    let args = lower::qemu(doc).expect("lowering");
    let mut out = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if matches!(a.as_str(), "-kernel" | "-initrd" | "-append") {
            it.next();
        } else {
            out.push(a);
        }
    }
    out
}

/// The `-cpu` value without `enforce`.
fn without_enforce(args: &[String]) -> Vec<String> {
    args.iter()
        .map(|a| a.strip_suffix(",enforce").unwrap_or(a).to_string())
        .collect()
}

/// CPU features QEMU says the host cannot give (`warning: host doesn't support requested
/// feature: CPUID.01H:ECX.pni [bit 0]`), as QEMU flag names.
fn refused_cpu_flags(stderr: &str) -> BTreeSet<String> {
    stderr
        .lines()
        .filter_map(|l| l.split("host doesn't support requested feature: ").nth(1))
        .filter_map(|f| {
            // `CPUID.01H:ECX.sse4.1 [bit 19]`: the flag follows the register.
            let (_, flag) = f.split_once(':')?.1.split_once('.')?;
            flag.split(' ').next().map(str::to_string)
        })
        .collect()
}

/// One spec on one platform: start QEMU with the lowered command line and compare.
fn check_against_qemu(name: &str, doc: &AbiDocument, scratch: &support::Scratch, tag: &str) {
    let ns = Netns::create();
    let args = lowered_without_boot(doc);
    let abi_flags: BTreeSet<&str> = doc
        .abi
        .cpu
        .features
        .iter()
        .map(|f| cpu::feature(f).expect("known feature").qemu)
        .collect();

    // `enforce` makes QEMU refuse a CPU feature the host's KVM lacks. Such a host cannot
    // run the ABI (`vmc check` says so too); the virtio comparison then goes on without
    // `enforce`, and the CPU check allows exactly the features QEMU named.
    let (qemu, mut qmp, host_lacks) = match start(&ns, &args, scratch, tag) {
        Started::Running(q, m) => (q, m, BTreeSet::new()),
        Started::Exited(stderr) => {
            assert!(
                stderr.contains("Host doesn't support requested features"),
                "{name}: QEMU exited:\n{stderr}"
            );
            let lacks = refused_cpu_flags(&stderr);
            assert!(!lacks.is_empty(), "{name}: {stderr}");
            for flag in &lacks {
                assert!(
                    abi_flags.contains(flag.as_str()),
                    "{name}: QEMU refused `{flag}`, which the ABI does not ask for:\n{stderr}"
                );
            }
            eprintln!("NOTE {name}: this host's KVM lacks CPU features {lacks:?}; QEMU refused them (enforce); checking without enforce");
            match start(&ns, &without_enforce(&args), scratch, &format!("{tag}-noenforce")) {
                Started::Running(q, m) => (q, m, lacks),
                Started::Exited(stderr) => panic!("{name}: QEMU exited without enforce too:\n{stderr}"),
            }
        }
    };

    // virtio-net: the offered feature bits, exactly.
    let virtio = qmp.run("x-query-virtio", json!({}));
    let mut paths: Vec<(String, String)> = virtio
        .as_array()
        .expect("x-query-virtio returns a list")
        .iter()
        .filter(|d| d["name"] == "virtio-net")
        .map(|d| {
            let path = d["path"].as_str().unwrap().to_string();
            (path.rsplit('/').next().unwrap().to_string(), path)
        })
        .collect();
    paths.sort();
    let mut ids: Vec<String> = doc.abi.devices.iter().map(|d| d.id.clone()).collect();
    ids.sort();
    assert_eq!(
        paths.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        ids,
        "{name}: QEMU's virtio-net devices"
    );
    let bases = device_bases(&qmp.hmp("info qtree"));
    for device in &doc.abi.devices {
        let path = &paths.iter().find(|(id, _)| *id == device.id).unwrap().1;
        let status = qmp.run("x-query-virtio-status", json!({"path": path}));
        let offered = offered_bits(&status["host-features"]);
        let expected: BTreeSet<u32> = device.device_features.iter().copied().collect();
        assert!(
            offered == expected,
            "{name}: device `{}`: QEMU offers bits the ABI does not: [{}]; the ABI's bits QEMU does not offer: [{}]\nQEMU: {}",
            device.id,
            describe(&offered.difference(&expected).copied().collect()),
            describe(&expected.difference(&offered).copied().collect()),
            status["host-features"]
        );
        let base = bases.iter().find(|(id, _)| *id == device.id).map(|(_, b)| *b);
        assert_eq!(
            base,
            Some(device.mmio_base),
            "{name}: device `{}`'s MMIO base",
            device.id
        );
    }

    // vCPUs, memory and the CPU features vmc names.
    let cpus = qmp.run("query-cpus-fast", json!({}));
    let cpus = cpus.as_array().expect("query-cpus-fast returns a list");
    assert_eq!(cpus.len() as u64, doc.abi.cpu.count, "{name}: vCPU count");
    let memory = qmp.run("query-memory-size-summary", json!({}));
    assert_eq!(memory["base-memory"].as_u64(), Some(doc.abi.memory), "{name}: memory");
    let cpu_path = cpus[0]["qom-path"].as_str().expect("qom-path").to_string();
    for f in cpu::FEATURES {
        let has = qmp.run("qom-get", json!({"path": cpu_path, "property": f.qemu}));
        let wanted = abi_flags.contains(f.qemu) && !host_lacks.contains(f.qemu);
        assert_eq!(has, json!(wanted), "{name}: CPU feature {} (QEMU `{}`)", f.name, f.qemu);
    }

    let _ = qmp.execute("quit", json!({}));
    drop(qmp);
    let mut qemu = qemu;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && matches!(qemu.child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Ok(None) = qemu.child.try_wait() {
        eprintln!("NOTE {name}: QEMU did not quit within 10 s; killing it");
    }
    drop(qemu);
    drop(ns);
}

#[test]
fn qemu_offers_exactly_the_abi_device_features_for_every_spec() {
    require!(support::qemu());
    let registry = PlatformRegistry::builtin();
    let scratch = support::Scratch::new("qemu-features");
    let mut checked = Vec::new();
    for (stem, text) in support::example_specs() {
        // Every built-in platform: those without TAP USO (linux-5.15, …) and with it.
        for platform in registry.names() {
            let name = format!("{stem}@{platform}");
            let Ok(doc) = support::compile_named(&format!("specs/{stem}.kdl"), &text, platform, &registry) else {
                eprintln!("{name}: does not compile for this platform; skipped");
                continue;
            };
            eprintln!("{name}: {}", lower::shell_line(&lower::qemu(&doc).expect("lowering")));
            check_against_qemu(&name, &doc, &scratch, &name.replace('@', "-"));
            checked.push(name);
        }
    }
    eprintln!("checked against QEMU: {}", checked.join(", "));
    assert!(checked.iter().any(|n| n.ends_with("linux-5.15")) && checked.iter().any(|n| n.ends_with("linux-6.9")));
    assert!(checked.len() >= 4, "{checked:?}");
}

/// QEMU's own defaults would offer more than vmc: the pinning in the lowered command line
/// is what makes them equal. Dropping every explicit virtio property shows the difference.
#[test]
fn without_the_explicit_properties_qemu_would_offer_other_bits() {
    require!(support::qemu());
    let registry = PlatformRegistry::builtin();
    let text = std::fs::read_to_string(support::repo().join("specs/web.kdl")).unwrap();
    let doc = support::compile_named("specs/web.kdl", &text, "linux-5.15", &registry).unwrap();
    let scratch = support::Scratch::new("qemu-defaults");
    let ns = Netns::create();
    let args: Vec<String> = without_enforce(&lowered_without_boot(&doc))
        .into_iter()
        .map(|a| match a.strip_prefix("virtio-net-device,") {
            // Keep id, netdev and bus; drop every property.
            Some(rest) => format!(
                "virtio-net-device,{}",
                rest.split(',').take(3).collect::<Vec<_>>().join(",")
            ),
            None => a,
        })
        .collect();
    let (_qemu, mut qmp) = match start(&ns, &args, &scratch, "defaults") {
        Started::Running(q, m) => (q, m),
        Started::Exited(stderr) => panic!("QEMU exited:\n{stderr}"),
    };
    let status = qmp.run("x-query-virtio-status", json!({"path": "/machine/peripheral/net0"}));
    let offered = offered_bits(&status["host-features"]);
    let expected: BTreeSet<u32> = doc.abi.devices[0].device_features.iter().copied().collect();
    let extra: BTreeSet<u32> = offered.difference(&expected).copied().collect();
    eprintln!("QEMU 10 defaults add, over web@linux-5.15: [{}]", describe(&extra));
    eprintln!(
        "QEMU 10 defaults drop: [{}]",
        describe(&expected.difference(&offered).copied().collect())
    );
    assert!(
        !extra.is_empty(),
        "QEMU's defaults matched vmc's without pinning; the pinning test proves nothing"
    );
    let _ = qmp.execute("quit", json!({}));
}

// ---------------------------------------------------------------------------------------
// The self-test guest under both VMMs.

/// The guest's report lines that describe the device and what it negotiated: they must
/// be the same whichever VMM runs the ABI.
fn device_report(serial: &str) -> Vec<String> {
    serial
        .lines()
        .filter(|l| {
            [
                "selftest: cmdline",
                "selftest: mmio",
                "selftest: offered",
                "selftest: negotiated",
                "selftest: tx",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .map(str::to_string)
        .collect()
}

/// Runs `program args` in a fresh namespace holding up, persistent TAPs named `taps`
/// (so the guest's frames have somewhere to go); returns stdout and the exit code.
fn run_in_namespace(program: &str, args: &[String], taps: &[&str]) -> (String, Option<i32>) {
    let ns = Netns::create();
    for args in taps.iter().flat_map(|tap| {
        [
            vec!["tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"],
            vec!["link", "set", tap, "up"],
        ]
    }) {
        let o = Command::new("ip").args(["-n", &ns.0]).args(&args).output().expect("ip");
        assert!(
            o.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0, program])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{program} did not stop within 60 s\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains("selftest: pass"),
        "{program}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (stdout, out.status.code())
}

#[test]
fn the_self_test_guest_sees_the_same_device_under_qemu_and_vmc_run() {
    require!(support::qemu());
    let s = support::Scratch::new("qemu-vs-vmc");
    let o = support::vmc(&["selftest-guest", "-o", &s.path("selftest.elf").display().to_string()]);
    assert!(o.status.success(), "{}", support::stderr(&o));
    let spec = std::fs::read_to_string(support::repo().join("specs/selftest.kdl"))
        .unwrap()
        .replace("guest/selftest.elf", "selftest.elf");
    // And with a second device, of other properties, in the next slot.
    let two = spec.replacen(
        "    net \"net0\" {",
        "    net \"net1\" { tap \"vmc-st1\"; mrg-rxbuf #false; host-mtu 1500; }\n    net \"net0\" {",
        1,
    );
    let specs = [s.write("selftest.kdl", spec), s.write("selftest-two.kdl", two)];
    for (spec_path, platform) in specs.iter().flat_map(|p| ["linux-5.15", "linux-6.9"].map(|pl| (p, pl))) {
        let stem = std::path::Path::new(spec_path)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let abi = s.path(&format!("{stem}-{platform}.abi")).display().to_string();
        let o = support::vmc(&["compile", spec_path, "--platform", platform, "-o", &abi]);
        assert!(o.status.success(), "{}", support::stderr(&o));
        let doc = AbiDocument::from_kdl(&vmc_compiler::SourceFile::new(
            &abi,
            std::fs::read_to_string(&abi).unwrap(),
        ))
        .unwrap();
        let taps: Vec<&str> = doc.host.taps.iter().map(|(_, t)| t.as_str()).collect();

        let (under_vmc, code) = run_in_namespace(env!("CARGO_BIN_EXE_vmc"), &["run".to_string(), abi.clone()], &taps);
        assert_eq!(code, Some(0), "{under_vmc}");
        let (under_qemu, code) = run_in_namespace(lower::QEMU_BINARY, &lower::qemu(&doc).unwrap(), &taps);
        // QEMU's isa-debug-exit turns the guest's exit code 0 into (0 << 1) | 1.
        assert_eq!(code, Some(1), "{under_qemu}");

        let (a, b) = (device_report(&under_vmc), device_report(&under_qemu));
        assert!(a.iter().any(|l| l.starts_with("selftest: offered")), "{under_vmc}");
        assert_eq!(
            a.iter().filter(|l| l.starts_with("selftest: mmio")).count(),
            doc.abi.devices.len()
        );
        assert_eq!(
            a, b,
            "{platform}: the guest saw different devices\nvmc run:\n{under_vmc}\nQEMU:\n{under_qemu}"
        );
        // The CPU features vmc names are the same (other bits are each VMM's own: QEMU
        // mirrors CPUID.1:EDX into 0x80000001:EDX on AMD hosts, vmc leaves them clear).
        assert_eq!(
            support::guest_cpu_features(&under_vmc),
            support::guest_cpu_features(&under_qemu)
        );
        // The guest drives the first device it finds: the one in the top slot.
        let first = doc.abi.devices.iter().max_by_key(|d| d.mmio_base).unwrap();
        let offered: Vec<String> = first.device_features.iter().map(u32::to_string).collect();
        assert!(
            a.contains(&format!("selftest: offered {}", offered.join(" "))),
            "{under_vmc}"
        );
    }
}
