//! Snapshots and live migration, end to end with `vmc run`: the self-test guest in count
//! mode (`specs/selftest-count.kdl`) prints `selftest: count N` for N = 1, 2, 3, …, so
//! the output of the VM before and after a restore or a migration, put together, must
//! be 1, 2, 3, … with no gap and no repeat. Two hosts are two network namespaces joined
//! by a veth pair; each VM's TAP is made by vmc inside its own namespace.
//!
//! Needs root and /dev/kvm: skipped with a reason by hand without them, failed under CI.

#[path = "../runtime/tests/common/mod.rs"]
mod common;
mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use common::NetNs;
use support::vmm::{counts, last_count, Vmm, LIMIT};
use support::{require, stderr, stdout, vmc, Scratch};
use vmc_runtime::migration::{Answer, Header, RecordWriter, STREAM_MAGIC};

/// The counts are 1, 2, 3, … n.
fn assert_continuous(text: &str, at_least: u64) {
    let seen = counts(text);
    for (i, &n) in seen.iter().enumerate() {
        assert_eq!(
            n,
            i as u64 + 1,
            "count {} follows {:?}",
            n,
            &seen[i.saturating_sub(3)..i]
        );
    }
    assert!(
        seen.len() as u64 >= at_least,
        "only {} counts, at least {at_least} expected",
        seen.len()
    );
}

/// The count-mode spec compiled for `platform` (and `cpu_model`, if given).
fn count_abi(s: &Scratch, platform: &str, cpu_model: Option<&str>) -> String {
    let guest = s.path("selftest.elf");
    if !guest.exists() {
        let o = vmc(&["selftest-guest", "-o", &guest.display().to_string()]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let mut spec = std::fs::read_to_string(support::repo().join("specs/selftest-count.kdl"))
        .unwrap()
        .replace("guest/selftest.elf", "selftest.elf");
    if let Some(model) = cpu_model {
        spec = spec.replace("cpu-model \"x86-64-v1\"", &format!("cpu-model \"{model}\""));
    }
    let name = format!("count-{platform}{}", cpu_model.unwrap_or(""));
    let spec_path = s.write(&format!("{name}.kdl"), spec);
    let abi = s.path(&format!("{name}.abi")).display().to_string();
    let o = vmc(&["compile", &spec_path, "--platform", platform, "-o", &abi]);
    assert!(o.status.success(), "{}", stderr(&o));
    abi
}

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "stdout:\n{}\nstderr:\n{}", stdout(o), stderr(o));
    stdout(o)
}

fn failed(o: &std::process::Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(2),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
    stderr(o)
}

/// A snapshot of a paused VM, restored: the count goes on where it stopped. Then every
/// kind of bad snapshot is refused with a clear message before the guest runs.
#[test]
fn a_restored_snapshot_continues_the_count_and_bad_snapshots_are_refused() {
    require!(support::host_access());
    let s = Scratch::new("snapshot");
    let abi = abi_for_69(&s);
    let ns = NetNs::create();
    let sock = s.path("api.sock").display().to_string();
    let snap = s.path("vm.snap").display().to_string();

    let mut source = Vmm::start(ns.name(), &[&abi, "--api-sock", &sock]);
    source.wait_for_count(40);
    assert_eq!(ok(&vmc(&["pause", &sock])).trim(), "paused");
    let status = ok(&vmc(&["status", &sock]));
    assert!(status.starts_with("paused blake3:"), "{status}");
    // A snapshot into a directory that does not exist: refused, the VM unharmed.
    let e = failed(&vmc(&[
        "snapshot",
        &sock,
        "-o",
        &s.path("none/vm.snap").display().to_string(),
    ]));
    assert!(e.contains("does not exist"), "{e}");
    let o = vmc(&["snapshot", &sock, "-o", &snap]);
    assert!(stderr(&o).contains("wrote the snapshot"), "{}", stderr(&o));
    ok(&o);
    // Paused: nothing more was printed while the snapshot was written.
    let before = source.out();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(source.out(), before, "the guest ran while paused");
    source.terminate();
    assert_eq!(source.wait(), Some(128 + libc::SIGTERM));
    let before = source.out();
    assert!(!s.path("api.sock").exists(), "the control socket is removed at the end");

    let mut restored = Vmm::start(ns.name(), &[&abi, "--restore", &snap]);
    let stopped_at = last_count(&before);
    restored.wait_for_count(stopped_at + 30);
    restored.terminate();
    restored.wait();
    assert!(restored.err().contains("restored"), "{}", restored.err());
    assert_continuous(&(before + &restored.out()), stopped_at + 30);

    // Bad snapshots: each refused naming why, nothing run (no count printed).
    let good = std::fs::read(&snap).unwrap();
    let bad = |name: &str, bytes: &[u8]| s.write(name, bytes);
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let mut later = good.clone();
    later[8] = 2;
    let fifo = s.path("fifo.snap");
    common::run("mkfifo", &[&fifo.display().to_string()]);
    let abi_515 = count_abi(&s, "linux-5.15", None);
    let cases: Vec<(String, String, &[&str])> = vec![
        (
            bad("truncated.snap", &good[..good.len() / 3]),
            abi.clone(),
            &["truncated"],
        ),
        (bad("flipped.snap", &flipped), abi.clone(), &["corrupted"]),
        (
            s.path("selftest.elf").display().to_string(),
            abi.clone(),
            &["not a vmc snapshot"],
        ),
        (
            bad("later.snap", &later),
            abi.clone(),
            &["format version 2", "newer vmc"],
        ),
        (fifo.display().to_string(), abi.clone(), &["FIFO", "not a regular file"]),
        (
            s.path("missing.snap").display().to_string(),
            abi.clone(),
            &["cannot read the snapshot"],
        ),
        (
            snap.clone(),
            abi_515,
            &[
                "nothing was restored",
                "devices.net0.host-uso: #true (platform linux-6.9) -> #false (platform linux-5.15)",
            ],
        ),
    ];
    for (file, document, expected) in &cases {
        let mut vmm = Vmm::start(ns.name(), &[document, "--restore", file]);
        assert_eq!(vmm.wait(), Some(2), "{file}: {}", vmm.both());
        for e in *expected {
            assert!(vmm.err().contains(e), "{file}: no `{e}` in\n{}", vmm.err());
        }
        assert!(counts(&vmm.out()).is_empty(), "{file}: the guest ran");
    }
}

fn abi_for_69(s: &Scratch) -> String {
    count_abi(s, "linux-6.9", None)
}

/// Two vCPUs (the second waits for its start-up IPI, as the self-test guest never starts
/// it): a snapshot taken while the guest runs restores every vCPU, and the count goes on.
#[test]
fn a_two_vcpu_snapshot_restores_both_vcpus() {
    require!(support::host_access());
    let s = Scratch::new("snapshot-2cpu");
    let one = abi_for_69(&s);
    let spec = s.path("count-linux-6.9.kdl");
    let text = std::fs::read_to_string(&spec).unwrap();
    let spec2 = s.write(
        "count-2cpu.kdl",
        text.replace("memory \"64MiB\"", "memory \"64MiB\"\n    cpus 2"),
    );
    let abi = s.path("count-2cpu.abi").display().to_string();
    ok(&vmc(&["compile", &spec2, "--platform", "linux-6.9", "-o", &abi]));
    assert_ne!(stdout(&vmc(&["hash", &abi])), stdout(&vmc(&["hash", &one])), "2 vCPUs");
    let ns = NetNs::create();
    let sock = s.path("api.sock").display().to_string();
    let snap = s.path("vm.snap").display().to_string();
    let mut source = Vmm::start(ns.name(), &[&abi, "--api-sock", &sock]);
    source.wait_for_count(20);
    let status: serde_json::Value = serde_json::from_str(&ok(&vmc(&["status", &sock, "--json"]))).unwrap();
    assert_eq!(status["vcpus"], 2, "{status}");
    ok(&vmc(&["snapshot", &sock, "-o", &snap]));
    let taken_after = last_count(&source.out());
    source.terminate();
    source.wait();
    let mut restored = Vmm::start(ns.name(), &[&abi, "--restore", &snap]);
    restored.wait_for_count(taken_after + 20);
    restored.terminate();
    restored.wait();
    let resumed: Vec<u64> = counts(&restored.out());
    // The snapshot was taken at some count no later than `taken_after`: the restored
    // guest goes on from the one after it, without a gap.
    assert!(resumed[0] <= taken_after + 1, "{resumed:?}");
    for pair in resumed.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "{resumed:?}");
    }
}

/// Two hosts: namespaces `a` (10.77.0.1) and `b` (10.77.0.2) joined by a veth pair.
fn two_hosts() -> (NetNs, NetNs) {
    let (a, b) = (NetNs::create(), NetNs::create());
    a.ip(&[
        "link",
        "add",
        "mig0",
        "type",
        "veth",
        "peer",
        "name",
        "mig1",
        "netns",
        b.name(),
    ]);
    a.ip(&["addr", "add", "10.77.0.1/24", "dev", "mig0"]);
    b.ip(&["addr", "add", "10.77.0.2/24", "dev", "mig1"]);
    for (ns, dev) in [(&a, "mig0"), (&b, "mig1")] {
        ns.ip(&["link", "set", dev, "up"]);
        ns.ip(&["link", "set", "lo", "up"]);
    }
    (a, b)
}

/// Equal hashes over TCP: the count continues on the destination, the source exits 0,
/// and `vmc migrate` reports what it did.
#[test]
fn a_live_migration_over_tcp_continues_the_count_on_the_destination() {
    require!(support::host_access());
    let s = Scratch::new("migrate");
    let abi = abi_for_69(&s);
    let (a, b) = two_hosts();
    let sock = s.path("api.sock").display().to_string();
    let mut destination = Vmm::start(b.name(), &[&abi, "--incoming", "tcp:10.77.0.2:4444"]);
    destination.wait_until("listening", |_, err| err.contains("waiting for a migration"));
    let mut source = Vmm::start(a.name(), &[&abi, "--api-sock", &sock]);
    source.wait_for_count(40);

    // A downtime limit of 0: pre-copy goes on until a round finds nothing written (or
    // 12 rounds), so the dirty log carries the guest's writes over several rounds.
    let report = ok(&vmc(&[
        "migrate",
        &sock,
        "--to",
        "tcp:10.77.0.2:4444",
        "--downtime-limit",
        "0",
    ]));
    assert!(report.starts_with("migrated to tcp:10.77.0.2:4444: "), "{report}");
    let rounds: u32 = report
        .split(" in ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rounds in {report}"));
    assert!(rounds > 1, "{report}");
    for part in ["bytes sent", "pre-copy rounds", "downtime", "total"] {
        assert!(report.contains(part), "{report}");
    }
    assert_eq!(source.wait(), Some(0), "{}", source.both());
    assert!(
        source.err().contains("it runs on the destination now"),
        "{}",
        source.err()
    );
    let moved_at = last_count(&source.out());
    destination.wait_for_count(moved_at + 30);
    destination.terminate();
    destination.wait();
    assert!(
        destination.err().contains("migration received"),
        "{}",
        destination.err()
    );
    assert_continuous(&(source.out() + &destination.out()), moved_at + 30);
}

/// A source compiled for linux-6.9 and a destination for linux-5.15: refused before any
/// memory moves, both sides naming host-uso, and the source goes on counting.
#[test]
fn a_migration_to_a_different_abi_is_refused_and_the_source_keeps_running() {
    require!(support::host_access());
    let s = Scratch::new("migrate-refused");
    let (abi_69, abi_515) = (abi_for_69(&s), count_abi(&s, "linux-5.15", None));
    let (a, b) = two_hosts();
    let sock = s.path("api.sock").display().to_string();
    let mut destination = Vmm::start(b.name(), &[&abi_515, "--incoming", "tcp:10.77.0.2:4444"]);
    destination.wait_until("listening", |_, err| err.contains("waiting for a migration"));
    let mut source = Vmm::start(a.name(), &[&abi_69, "--api-sock", &sock]);
    source.wait_for_count(20);

    let line = "devices.net0.host-uso: #true (platform linux-6.9) -> #false (platform linux-5.15)";
    let e = failed(&vmc(&["migrate", &sock, "--to", "tcp:10.77.0.2:4444"]));
    assert!(
        e.contains("migration refused") && e.contains("no state was sent"),
        "{e}"
    );
    assert!(e.contains(line), "{e}");
    assert_eq!(destination.wait(), Some(2), "{}", destination.both());
    assert!(destination.err().contains(line), "{}", destination.err());
    assert!(
        destination.err().contains("nothing was received"),
        "{}",
        destination.err()
    );

    let status = ok(&vmc(&["status", &sock]));
    assert!(status.starts_with("running "), "{status}");
    let refused_at = last_count(&source.out());
    source.wait_for_count(refused_at + 30);
    source.terminate();
    assert_eq!(source.wait(), Some(128 + libc::SIGTERM));
    assert_continuous(&source.out(), refused_at + 30);
}

/// Faults around a migration: a destination that hangs up at once or in the middle of
/// memory, a second migration while one is under way, a typo in the address; a
/// destination fed garbage, a later format version, or a document this host cannot run.
/// The source keeps counting through all of its failures.
#[test]
fn migration_faults_leave_the_source_running_and_are_named() {
    require!(support::host_access());
    let s = Scratch::new("migrate-faults");
    let abi = abi_for_69(&s);
    let ns = NetNs::create();
    let sock = s.path("api.sock").display().to_string();
    let mut source = Vmm::start(ns.name(), &[&abi, "--api-sock", &sock]);
    source.wait_for_count(20);
    let still_counting = |source: &mut Vmm| {
        let now = last_count(&source.out());
        source.wait_for_count(now + 10);
        let status = ok(&vmc(&["status", &sock]));
        assert!(status.starts_with("running "), "{status}");
    };

    // A destination that hangs up as soon as it is reached.
    let fake = s.path("fake.sock");
    let to = format!("unix:{}", fake.display());
    let listener = UnixListener::bind(&fake).unwrap();
    let hang_up = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        drop(stream);
        listener
    });
    let e = failed(&vmc(&["migrate", &sock, "--to", &to]));
    assert!(e.contains("the answer from") || e.contains("connection"), "{e}");
    let listener = hang_up.join().unwrap();
    still_counting(&mut source);

    // One that accepts, then hangs up after the first megabyte of memory.
    let midway = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut header = vec![0u8; 4096];
        let _ = stream.read(&mut header);
        let mut w = RecordWriter::start(stream.try_clone().unwrap(), STREAM_MAGIC).unwrap();
        w.answer(&Answer {
            accepted: true,
            abi_hash: String::new(),
            document: String::new(),
            reason: String::new(),
        })
        .unwrap();
        let mut sink = vec![0u8; 1 << 20];
        let _ = stream.read_exact(&mut sink);
        drop(stream);
        listener
    });
    let e = failed(&vmc(&["migrate", &sock, "--to", &to]));
    assert!(e.contains("migration connection failed"), "{e}");
    let listener = midway.join().unwrap();
    still_counting(&mut source);

    // A second migration while one waits for its answer: refused as busy.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holding = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let _ = released.recv();
        drop(stream);
    });
    let first = {
        let (sock, to) = (sock.clone(), to.clone());
        std::thread::spawn(move || vmc(&["migrate", &sock, "--to", &to]))
    };
    let deadline = Instant::now() + LIMIT;
    while !ok(&vmc(&["status", &sock])).starts_with("migrating") {
        assert!(Instant::now() < deadline, "the first migration never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let e = failed(&vmc(&["migrate", &sock, "--to", &to]));
    assert!(e.contains("busy"), "{e}");
    release.send(()).unwrap();
    holding.join().unwrap();
    failed(&first.join().unwrap());
    still_counting(&mut source);

    // A typo in the address is named before the VM is asked.
    let e = failed(&vmc(&["migrate", &sock, "--to", "tcp:nowhere"]));
    assert!(e.contains("not a migration address"), "{e}");

    // Destinations fed garbage, or a later format version: refused, naming it. They
    // run on another host, with a TAP of their own.
    let other = NetNs::create();
    for (name, bytes, expected) in [
        (
            "garbage",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            "not a vmc migration stream",
        ),
        ("later", [&STREAM_MAGIC[..], &[9, 0, 0, 0]].concat(), "format version 9"),
        ("cut", STREAM_MAGIC[..5].to_vec(), "not a vmc migration stream"),
    ] {
        let address = s.path(&format!("{name}.sock"));
        let mut destination = Vmm::start(
            other.name(),
            &[&abi, "--incoming", &format!("unix:{}", address.display())],
        );
        destination.wait_until("listening", |_, err| err.contains("waiting for a migration"));
        let mut stream = std::os::unix::net::UnixStream::connect(&address).unwrap();
        let _ = stream.write_all(&bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        assert_eq!(destination.wait(), Some(2), "{name}: {}", destination.both());
        assert!(destination.err().contains(expected), "{name}: {}", destination.err());
        assert!(!address.exists(), "{name}: the listening socket is removed");
    }

    // A source that hangs up in the middle of memory, after an accepted header: the
    // destination refuses to start a guest from half a state.
    let address = s.path("midway.sock");
    let mut destination = Vmm::start(
        other.name(),
        &[&abi, "--incoming", &format!("unix:{}", address.display())],
    );
    destination.wait_until("listening", |_, err| err.contains("waiting for a migration"));
    let stream = std::os::unix::net::UnixStream::connect(&address).unwrap();
    let mut w = RecordWriter::start(stream.try_clone().unwrap(), STREAM_MAGIC).unwrap();
    w.header(&Header {
        abi_hash: stdout(&vmc(&["hash", &abi])).trim().to_string(),
        document: std::fs::read_to_string(&abi).unwrap(),
        memory_bytes: 64 << 20,
    })
    .unwrap();
    w.memory(0x10_0000, &[0u8; 4096]).unwrap();
    w.flush().unwrap();
    drop(w);
    // Hung up for sending; still there to hear the answer.
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(destination.wait(), Some(2), "{}", destination.both());
    drop(stream);
    assert!(destination.err().contains("truncated"), "{}", destination.err());
    assert!(counts(&destination.out()).is_empty(), "a guest ran from half a state");

    // A destination whose host cannot run its own document never listens: AVX-512
    // (x86-64-v4), which `vmc check` says this host lacks.
    let abi_v4 = count_abi(&s, "linux-6.9", Some("x86-64-v4"));
    let check = vmc(&["check", &abi_v4]);
    if check.status.code() == Some(1) {
        let mut destination = Vmm::start(other.name(), &[&abi_v4, "--incoming", "tcp:127.0.0.1:4445"]);
        assert_eq!(destination.wait(), Some(2));
        assert!(
            destination.err().contains("this host cannot run this ABI"),
            "{}",
            destination.err()
        );
        assert!(
            !destination.err().contains("waiting for a migration"),
            "{}",
            destination.err()
        );
    } else {
        // Said, not silent: on a host with AVX-512 this one case has nothing to refuse.
        eprintln!("NOTE: this host runs x86-64-v4, so the lacking-destination case was not exercised");
    }

    source.terminate();
    source.wait();
    assert_continuous(&source.out(), 40);
}

/// Where a relay between the two sides cuts the hand-over.
#[derive(Clone, Copy, PartialEq)]
enum Cut {
    /// After the destination's acknowledgement reached the source, before the source's
    /// go-ahead reaches the destination.
    BeforeGoAhead,
    /// After the go-ahead reached the destination, before its confirmation comes back.
    BeforeConfirmation,
}

/// A relay from `listener` (the source connects) to `destination`, copying the stream
/// record by record each way, that breaks both connections at `cut`.
fn cutting_relay(listener: UnixListener, destination: std::path::PathBuf, cut: Cut) -> std::thread::JoinHandle<()> {
    use std::net::Shutdown;
    use std::os::unix::net::UnixStream;
    std::thread::spawn(move || {
        let (from_source, _) = listener.accept().unwrap();
        let to_destination = UnixStream::connect(&destination).unwrap();
        let streams = std::sync::Arc::new([from_source.try_clone().unwrap(), to_destination.try_clone().unwrap()]);
        let cut_all = move || {
            for s in streams.iter() {
                let _ = s.shutdown(Shutdown::Both);
            }
        };
        // Copies the magic and version, then whole records, and calls `each` with every
        // record's kind once it is through (`false`: stop here, forwarding nothing more).
        fn copy(mut from: UnixStream, mut to: UnixStream, mut each: impl FnMut(u8) -> bool) {
            let mut head = [0u8; 12];
            if from.read_exact(&mut head).is_err() || to.write_all(&head).is_err() {
                return;
            }
            loop {
                let mut kind = [0u8; 5];
                if from.read_exact(&mut kind).is_err() {
                    return;
                }
                let len = u32::from_le_bytes(kind[1..5].try_into().unwrap()) as usize;
                let mut payload = vec![0u8; len];
                if from.read_exact(&mut payload).is_err() {
                    return;
                }
                if !each(kind[0]) {
                    return;
                }
                if to.write_all(&kind).is_err() || to.write_all(&payload).is_err() {
                    return;
                }
            }
        }
        let up = {
            let (from, to) = (from_source.try_clone().unwrap(), to_destination.try_clone().unwrap());
            let cut_all = cut_all.clone();
            // The source's go-ahead (the record after its end record) is swallowed and
            // both connections cut.
            let mut ended = false;
            std::thread::spawn(move || {
                copy(from, to, |kind| {
                    if cut == Cut::BeforeGoAhead && ended {
                        cut_all();
                        return false;
                    }
                    ended |= kind == b'E';
                    true
                })
            })
        };
        // The destination's confirmation (its second acknowledgement) is swallowed and
        // both connections cut.
        let mut acks = 0;
        copy(to_destination, from_source, |kind| {
            acks += usize::from(kind == b'K');
            if cut == Cut::BeforeConfirmation && acks == 2 {
                cut_all();
                return false;
            }
            true
        });
        cut_all();
        let _ = up.join();
    })
}

/// A hand-over cut at its two delicate moments never leaves the guest running twice: cut
/// before the go-ahead, the destination starts nothing and the source, which cannot
/// tell, keeps its guest paused; cut after it, the destination runs the guest and the
/// source keeps its copy paused. `vmc resume` on the source then continues the count
/// only in the first case, where nothing else runs it.
#[test]
fn a_hand_over_cut_short_never_runs_the_guest_twice() {
    require!(support::host_access());
    for cut in [Cut::BeforeGoAhead, Cut::BeforeConfirmation] {
        let s = Scratch::new(if cut == Cut::BeforeGoAhead {
            "handover-go"
        } else {
            "handover-confirm"
        });
        let abi = abi_for_69(&s);
        let (a, b) = two_hosts();
        let sock = s.path("api.sock").display().to_string();
        let incoming = s.path("in.sock");
        let relay = s.path("relay.sock");
        let mut destination = Vmm::start(b.name(), &[&abi, "--incoming", &format!("unix:{}", incoming.display())]);
        destination.wait_until("listening", |_, err| err.contains("waiting for a migration"));
        let mut source = Vmm::start(a.name(), &[&abi, "--api-sock", &sock]);
        source.wait_for_count(20);
        let relaying = cutting_relay(UnixListener::bind(&relay).unwrap(), incoming.clone(), cut);

        let e = failed(&vmc(&["migrate", &sock, "--to", &format!("unix:{}", relay.display())]));
        relaying.join().unwrap();
        assert!(e.contains("did not confirm"), "{e}");
        assert!(e.contains("stays paused here"), "{e}");
        let status = ok(&vmc(&["status", &sock]));
        assert!(status.starts_with("paused "), "{status}");
        let paused_at = last_count(&source.out());
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(last_count(&source.out()), paused_at, "the source's guest stays paused");

        match cut {
            Cut::BeforeGoAhead => {
                assert_eq!(destination.wait(), Some(2), "{}", destination.both());
                assert!(
                    destination.err().contains("did not give the go-ahead"),
                    "{}",
                    destination.err()
                );
                assert!(counts(&destination.out()).is_empty(), "the destination ran the guest");
                // Nothing runs it anywhere: the operator resumes it at the source.
                ok(&vmc(&["resume", &sock]));
                source.wait_for_count(paused_at + 10);
                source.terminate();
                source.wait();
                assert_continuous(&source.out(), paused_at + 10);
            }
            Cut::BeforeConfirmation => {
                // The destination had the go-ahead: it runs the guest, from where the
                // source stopped, while the source's copy stays paused.
                destination.wait_for_count(paused_at + 10);
                assert_eq!(last_count(&source.out()), paused_at, "both sides ran the guest");
                destination.terminate();
                destination.wait();
                source.terminate();
                source.wait();
                assert_continuous(&(source.out() + &destination.out()), paused_at + 10);
            }
        }
    }
}
