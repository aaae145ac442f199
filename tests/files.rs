//! The host's files vmc is handed: outputs replace only regular files, atomically and
//! never one of the command's inputs; inputs must be regular files and are read with a
//! bound, never blocking; standard output that cannot be written is an error (exit 2)
//! or, for a pipe whose reader has gone, a quiet end (exit 141), never a panic.
//!
//! Everything that could hang runs under `timeout -s KILL`, and everything that could
//! eat memory under `ulimit -v`.

mod support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{available, require, stderr, stdout, vmc, Scratch};

const VMC: &str = env!("CARGO_BIN_EXE_vmc");
/// What a refusal may take at most; a blocking read would take the whole timeout.
const QUICK: Duration = Duration::from_secs(10);

/// Runs vmc killed after 30 s, with at most 1 GB of address space, stdout to `out`.
fn vmc_bounded_to(args: &[&str], out: Stdio) -> (Output, Duration) {
    let start = Instant::now();
    let o = Command::new("timeout")
        .args([
            "-s",
            "KILL",
            "30",
            "sh",
            "-c",
            "ulimit -v 1000000; exec \"$0\" \"$@\"",
            VMC,
        ])
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::piped())
        .output()
        .expect("run vmc under timeout");
    (o, start.elapsed())
}

fn vmc_bounded(args: &[&str]) -> (Output, Duration) {
    vmc_bounded_to(args, Stdio::piped())
}

fn spec(name: &str) -> String {
    support::repo().join("specs").join(name).display().to_string()
}

fn probe_file(name: &str) -> String {
    support::repo().join("tests/hosts").join(name).display().to_string()
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().expect("mkfifo").success();
    assert!(ok, "mkfifo {}", path.display());
}

/// Temporary files left in `dir` (names starting with a dot).
fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// The document `compile -o -` prints for web.kdl on linux-6.9 (as copied to `s`).
fn web_document(spec_path: &str) -> Vec<u8> {
    let o = vmc(&["compile", spec_path, "--platform", "linux-6.9", "-o", "-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    o.stdout
}

/// A character device to write to: as root, a node of the same device made in `s` (so a
/// regression replaces that one, not the machine's); otherwise the real one, which an
/// unprivileged process cannot replace.
fn char_device(s: &Scratch, real: &str, major_minor: (&str, &str)) -> String {
    let node = s.path(Path::new(real).file_name().unwrap().to_str().unwrap());
    let made = Command::new("mknod")
        .arg(&node)
        .args(["c", major_minor.0, major_minor.1])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if made {
        node.display().to_string()
    } else {
        real.to_string()
    }
}

#[test]
fn output_on_a_character_device_writes_through_and_keeps_the_device() {
    let s = Scratch::new("files-devnull");
    let spec_path = s.write("web.kdl", fs::read(spec("web.kdl")).unwrap());
    let null = char_device(&s, "/dev/null", ("1", "3"));
    for args in [
        vec!["selftest-guest", "-o", &null],
        vec!["compile", &spec_path, "--platform", "linux-6.9", "-o", &null],
    ] {
        let (o, _) = vmc_bounded(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        let meta = fs::symlink_metadata(&null).unwrap();
        assert!(meta.file_type().is_char_device(), "{args:?} replaced {null}");
    }
    // Writing through reports the device's error: nothing is quietly lost.
    let full = char_device(&s, "/dev/full", ("1", "7"));
    let (o, _) = vmc_bounded(&["selftest-guest", "-o", &full]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(&format!("cannot write {full}")), "{}", stderr(&o));
    assert!(fs::symlink_metadata(&full).unwrap().file_type().is_char_device());
}

#[test]
fn output_on_a_fifo_is_written_through_to_its_reader() {
    let s = Scratch::new("files-fifo-out");
    let spec_path = s.write("web.kdl", fs::read(spec("web.kdl")).unwrap());
    let expected = web_document(&spec_path);
    let fifo = s.path("out.fifo");
    mkfifo(&fifo);
    let (tx, rx) = std::sync::mpsc::channel();
    let reader_path = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(fs::read(&reader_path));
    });
    let (o, _) = vmc_bounded(&[
        "compile",
        &spec_path,
        "--platform",
        "linux-6.9",
        "-o",
        &fifo.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let got = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the reader got the document");
    assert_eq!(got.unwrap(), expected);
    assert!(
        fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(),
        "still a FIFO"
    );
}

#[test]
fn output_through_a_symlink_keeps_the_link_and_replaces_the_file_it_names() {
    let s = Scratch::new("files-symlink-out");
    let spec_path = s.write("web.kdl", fs::read(spec("web.kdl")).unwrap());
    let expected = web_document(&spec_path);
    fs::create_dir(s.path("real")).unwrap();
    s.write("real/existing.abi", "old\n");
    let cases = [
        ("relative.abi", "real/existing.abi"),
        ("absolute.abi", &*s.path("real/existing.abi").display().to_string()),
        ("dangling.abi", "real/new.abi"),
        ("chain.abi", "relative.abi"),
    ];
    for (link, target) in cases {
        std::os::unix::fs::symlink(target, s.path(link)).unwrap();
    }
    for (link, target) in cases {
        s.write("real/existing.abi", "old\n");
        let link_path = s.path(link);
        let o = vmc(&[
            "compile",
            &spec_path,
            "--platform",
            "linux-6.9",
            "-o",
            &link_path.display().to_string(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{link}: {}", stderr(&o));
        let meta = fs::symlink_metadata(&link_path).unwrap();
        assert!(meta.file_type().is_symlink(), "{link} is still a link");
        assert_eq!(fs::read_link(&link_path).unwrap(), Path::new(target));
        assert_eq!(
            fs::read(&link_path).unwrap(),
            expected,
            "{link}: the named file holds the document"
        );
    }
    assert_eq!(
        fs::read(s.path("real/new.abi")).unwrap(),
        expected,
        "a dangling link's file is created"
    );
    assert!(leftovers(&s.0).is_empty() && leftovers(&s.path("real")).is_empty());
}

#[test]
fn an_output_that_is_one_of_the_inputs_is_refused_before_anything_is_written() {
    let s = Scratch::new("files-self-overwrite");
    let text = fs::read(spec("web.kdl")).unwrap();
    let spec_path = s.write("web.kdl", &text);
    fs::hard_link(s.path("web.kdl"), s.path("hard.kdl")).unwrap();
    std::os::unix::fs::symlink("web.kdl", s.path("link.kdl")).unwrap();
    let dir = s.0.display().to_string();
    let spellings = [
        spec_path.clone(),
        format!("{dir}/./web.kdl"),
        format!("{dir}/../{}/web.kdl", s.0.file_name().unwrap().to_string_lossy()),
        s.path("hard.kdl").display().to_string(),
        s.path("link.kdl").display().to_string(),
    ];
    let refused = |o: &Output, what: &str| {
        assert_eq!(o.status.code(), Some(2), "{what}: {}", stderr(o));
        assert!(
            stderr(o).contains("one of this command's inputs"),
            "{what}: {}",
            stderr(o)
        );
        assert!(stdout(o).is_empty(), "{what}: no hash printed");
    };
    for out in &spellings {
        let o = vmc(&["compile", &spec_path, "--platform", "linux-6.9", "-o", out]);
        refused(&o, out);
        assert_eq!(fs::read(s.path("web.kdl")).unwrap(), text, "{out}: the spec is intact");
    }
    // Relative spellings, from the spec's directory.
    for (spec_arg, out) in [
        ("web.kdl", "web.kdl"),
        ("./web.kdl", "web.kdl"),
        ("web.kdl", "./hard.kdl"),
    ] {
        let o = Command::new(VMC)
            .args(["compile", spec_arg, "--platform", "linux-6.9", "-o", out])
            .current_dir(&s.0)
            .output()
            .unwrap();
        refused(&o, &format!("{spec_arg} -o {out}"));
    }
    // The default output of a spec named `.abi` is the spec itself.
    let abi_spec = s.write("vm.abi", &text);
    let o = vmc(&["compile", &abi_spec, "--platform", "linux-6.9"]);
    refused(&o, "default output of vm.abi");
    assert_eq!(fs::read(&abi_spec).unwrap(), text);
    // Probe files of a pool, and platform files from --platform-path.
    let probe = s.write("host.json", fs::read(probe_file("new-6.9.json")).unwrap());
    let o = vmc(&["compile", &spec_path, "--pool", &probe, "-o", &probe]);
    refused(&o, "-o the pool's probe file");
    fs::create_dir(s.path("platforms")).unwrap();
    let platform = s.write(
        "platforms/acme-9.kdl",
        fs::read(support::repo().join("specs/platforms/acme-9.kdl")).unwrap(),
    );
    let platform_dir = s.path("platforms").display().to_string();
    let o = vmc(&[
        "compile",
        &spec_path,
        "--platform-path",
        &platform_dir,
        "--platform",
        "linux-6.9",
        "-o",
        &platform,
    ]);
    refused(&o, "-o a platform file");
    assert!(fs::read_to_string(&platform).unwrap().contains("acme-9"));
    assert!(leftovers(&s.0).is_empty(), "{:?}", leftovers(&s.0));
}

#[test]
fn a_directory_or_a_missing_directory_as_output_is_a_clear_error() {
    let s = Scratch::new("files-out-dir");
    let spec_path = s.write("web.kdl", fs::read(spec("web.kdl")).unwrap());
    let dir = s.0.display().to_string();
    let cases = [
        (dir.clone(), "is a directory".to_string()),
        (format!("{dir}/"), "is a directory".to_string()),
        (
            format!("{dir}/missing/out.abi"),
            format!("directory {dir}/missing does not exist"),
        ),
        (
            format!("{dir}/missing/"),
            format!("directory {dir}/missing/ does not exist"),
        ),
        (
            format!("{spec_path}/out.abi"),
            format!("{spec_path} is not a directory"),
        ),
    ];
    for (out, message) in &cases {
        let o = vmc(&["compile", &spec_path, "--platform", "linux-6.9", "-o", out]);
        assert_eq!(o.status.code(), Some(2), "{out}");
        assert!(stderr(&o).contains(message.as_str()), "{out}: {}", stderr(&o));
        let o = vmc(&["selftest-guest", "-o", out]);
        assert_eq!(o.status.code(), Some(2), "{out}");
        assert!(stderr(&o).contains(message.as_str()), "{out}: {}", stderr(&o));
    }
    assert!(!s.path("missing").exists());
}

#[test]
fn outputs_replace_regular_files_atomically_through_unpredictable_temporaries() {
    let s = Scratch::new("files-temp");
    let spec_path = s.write("web.kdl", fs::read(spec("web.kdl")).unwrap());
    let expected = web_document(&spec_path);
    let victim = s.write("victim", "must not change\n");
    // The temporary names of the past (`.NAME.tmp-PID`), planted for the next PIDs.
    let last_pid: u32 = fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .map(|t| t.trim().parse().unwrap())
        .unwrap_or(0);
    for pid in last_pid..last_pid + 300 {
        for name in ["web.abi", "out.abi"] {
            let _ = std::os::unix::fs::symlink(&victim, s.path(&format!(".{name}.tmp-{pid}")));
        }
    }
    let planted = leftovers(&s.0).len();
    // A new file gets 0644.
    let o = vmc(&["compile", &spec_path, "--platform", "linux-6.9"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let new = fs::metadata(s.path("web.abi")).unwrap();
    assert_eq!(new.permissions().mode() & 0o777, 0o644);
    assert_eq!(fs::read(s.path("web.abi")).unwrap(), expected);
    // An existing file keeps its mode, and is replaced (a new inode), not rewritten in place.
    let out = s.write("out.abi", "old\n");
    fs::set_permissions(&out, fs::Permissions::from_mode(0o600)).unwrap();
    let before = fs::metadata(&out).unwrap().ino();
    let o = vmc(&["compile", &spec_path, "--platform", "linux-6.9", "-o", &out]);
    assert!(o.status.success(), "{}", stderr(&o));
    let after = fs::metadata(&out).unwrap();
    assert_eq!(after.permissions().mode() & 0o777, 0o600);
    assert_ne!(after.ino(), before);
    assert_eq!(fs::read(&out).unwrap(), expected);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "must not change\n");
    assert_eq!(
        leftovers(&s.0).len(),
        planted,
        "no temporary left: {:?}",
        leftovers(&s.0)
    );
    // A failed compile leaves the existing file as it was.
    let bad = s.write("bad.kdl", "vm \"x\" { cpus 0 }\n");
    let o = vmc(&["compile", &bad, "--platform", "linux-6.9", "-o", &out]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(fs::read(&out).unwrap(), expected);
}

/// The non-regular files an input may be, each with the word its refusal names.
struct Hostile {
    _s: Scratch,
    _socket: std::os::unix::net::UnixListener,
    cases: Vec<(String, &'static str)>,
}

fn hostile_inputs(name: &str) -> Hostile {
    let s = Scratch::new(name);
    let fifo = s.path("input.fifo");
    mkfifo(&fifo);
    let socket_path = s.path("input.sock");
    let socket = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
    fs::create_dir(s.path("input.dir")).unwrap();
    let cases = vec![
        ("/dev/zero".to_string(), "a character device"),
        ("/dev/urandom".to_string(), "a character device"),
        (fifo.display().to_string(), "a FIFO"),
        (socket_path.display().to_string(), "a socket"),
        (s.path("input.dir").display().to_string(), "a directory"),
    ];
    Hostile {
        _s: s,
        _socket: socket,
        cases,
    }
}

fn assert_refused_quickly(args: &[&str], path: &str, kind: &str) {
    let (o, took) = vmc_bounded(args);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(path) && err.contains(kind), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert!(took < QUICK, "{args:?} took {took:?}");
}

#[test]
fn a_fifo_device_socket_or_directory_as_spec_document_or_probe_file_is_refused_quickly() {
    let h = hostile_inputs("files-hostile");
    let s = Scratch::new("files-hostile-docs");
    let doc = s.path("web.abi").display().to_string();
    assert!(
        vmc(&["compile", &spec("web.kdl"), "--platform", "linux-6.9", "-o", &doc])
            .status
            .success()
    );
    let out = s.path("out.abi").display().to_string();
    let probe = probe_file("new-6.9.json");
    for (path, kind) in &h.cases {
        let p = path.as_str();
        // As a spec.
        assert_refused_quickly(&["compile", p, "--platform", "linux-6.9", "-o", &out], p, kind);
        // As a document.
        for args in [
            vec!["show", p],
            vec!["hash", p],
            vec!["explain", p],
            vec!["diff", &doc, p],
            vec!["lower", p],
        ] {
            assert_refused_quickly(&args, p, kind);
        }
        // As a probe file.
        assert_refused_quickly(&["compile", &spec("web.kdl"), "--pool", &probe, p, "-o", &out], p, kind);
        assert_refused_quickly(&["place", &doc, p], p, kind);
    }
    assert!(!Path::new(&out).exists());
}

#[test]
fn a_fifo_or_device_among_the_platform_files_is_refused_quickly() {
    let s = Scratch::new("files-hostile-platforms");
    type Make<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, Make, &str); 4] = [
        ("fifo", &|p| mkfifo(p), "a FIFO"),
        (
            "zero",
            &|p| std::os::unix::fs::symlink("/dev/zero", p).unwrap(),
            "a character device",
        ),
        ("dir", &|p| fs::create_dir(p).unwrap(), "a directory"),
        (
            "socket",
            &|p| std::mem::forget(std::os::unix::net::UnixListener::bind(p).unwrap()),
            "a socket",
        ),
    ];
    for (name, make, kind) in cases {
        let dir = s.path(name);
        fs::create_dir(&dir).unwrap();
        let file = dir.join("x.kdl");
        make(&file);
        let dir = dir.display().to_string();
        let file = file.display().to_string();
        assert_refused_quickly(&["platforms", "--platform-path", &dir], &file, kind);
        assert_refused_quickly(
            &[
                "compile",
                &spec("web.kdl"),
                "--platform-path",
                &dir,
                "--platform",
                "linux-6.9",
                "-o",
                "-",
            ],
            &file,
            kind,
        );
    }
}

#[test]
fn an_oversized_input_is_refused_from_its_size_without_reading_it() {
    let s = Scratch::new("files-large");
    // 5 MiB of a valid spec's text, and sparse files far larger than the memory vmc may use.
    let mut text = fs::read_to_string(spec("web.kdl")).unwrap();
    while text.len() <= 5 << 20 {
        text.push_str("// padding padding padding padding padding padding padding padding\n");
    }
    let big = s.write("big.kdl", &text);
    for size in [8u64 << 30, 64 << 30] {
        let sparse = s.path(&format!("sparse-{size}.abi"));
        fs::File::create(&sparse).unwrap().set_len(size).unwrap();
        let sparse = sparse.display().to_string();
        for args in [
            vec!["show", &sparse],
            vec!["compile", &sparse, "--platform", "linux-6.9", "-o", "-"],
        ] {
            let (o, took) = vmc_bounded(&args);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
            assert!(
                stderr(&o).contains(&format!("it is {size} bytes; vmc reads at most 4194304 bytes")),
                "{}",
                stderr(&o)
            );
            assert!(took < QUICK);
        }
    }
    let (o, _) = vmc_bounded(&["compile", &big, "--platform", "linux-6.9", "-o", "-"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!("{big}: it is {} bytes; vmc reads at most", text.len())),
        "{}",
        stderr(&o)
    );
    // The limit is the one the compiler knows.
    assert_eq!(vmc_compiler::kdlread::MAX_INPUT_BYTES, 4194304);
}

#[test]
fn a_kernel_or_initrd_that_is_not_a_regular_file_within_guest_memory_is_refused_quickly() {
    require!(support::host_access());
    let h = hostile_inputs("files-boot-hostile");
    let s = Scratch::new("files-boot");
    let kernel = s.path("selftest.elf").display().to_string();
    assert!(vmc(&["selftest-guest", "-o", &kernel]).status.success());
    let sparse = s.path("huge.img");
    fs::File::create(&sparse).unwrap().set_len(16 << 30).unwrap();
    let mut cases: Vec<(String, &str)> = h.cases.clone();
    cases.push((
        sparse.display().to_string(),
        "more than the guest's memory (67108864 bytes)",
    ));
    let write_spec = |name: &str, kernel: &str, initrd: Option<&str>| {
        let initrd = initrd.map(|i| format!("        initrd \"{i}\"\n")).unwrap_or_default();
        s.write(
            name,
            format!(
                "vm \"st\" {{\n    cpu-model \"x86-64-v1\"\n    memory \"64MiB\"\n    boot {{\n        kernel \"{kernel}\"\n{initrd}        cmdline \"console=ttyS0\"\n    }}\n}}\n"
            ),
        )
    };
    for (path, kind) in &cases {
        let as_kernel = write_spec("kernel.kdl", path, None);
        let (o, took) = vmc_bounded(&["run", &as_kernel]);
        assert_eq!(o.status.code(), Some(2), "kernel {path}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("cannot read the kernel {path}: ")),
            "{}",
            stderr(&o)
        );
        assert!(stderr(&o).contains(kind), "{}", stderr(&o));
        assert!(took < QUICK, "kernel {path}: {took:?}");
        assert!(stdout(&o).is_empty(), "the guest must not start");
        let as_initrd = write_spec("initrd.kdl", &kernel, Some(path));
        let (o, took) = vmc_bounded(&["run", &as_initrd]);
        assert_eq!(o.status.code(), Some(2), "initrd {path}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("cannot read the initrd {path}: ")),
            "{}",
            stderr(&o)
        );
        assert!(stderr(&o).contains(kind), "{}", stderr(&o));
        assert!(took < QUICK, "initrd {path}: {took:?}");
    }
    // Within the bounds, the same guest boots.
    let ok = write_spec("ok.kdl", &kernel, Some(&kernel));
    let (o, _) = vmc_bounded(&["run", &ok]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).ends_with("selftest: pass\n"), "{}", stdout(&o));
}

/// Commands that print on stdout and need neither the host nor KVM.
fn printing_commands(s: &Scratch) -> Vec<Vec<String>> {
    let a = s.path("a.abi").display().to_string();
    let b = s.path("b.abi").display().to_string();
    for (out, platform) in [(&a, "linux-6.9"), (&b, "linux-5.15")] {
        assert!(vmc(&["compile", &spec("web.kdl"), "--platform", platform, "-o", out])
            .status
            .success());
    }
    let probe = probe_file("new-6.9.json");
    let fresh = s.path("fresh.abi").display().to_string();
    [
        vec!["compile", &spec("web.kdl"), "--platform", "linux-6.9", "-o", &fresh],
        vec!["compile", &spec("web.kdl"), "--platform", "linux-6.9", "-o", "-"],
        vec!["show", &a],
        vec!["show", "--json", &a],
        vec!["hash", &a],
        vec!["explain", &a],
        vec!["explain", &a, "host-uso"],
        vec!["diff", &a, &b],
        vec!["diff", &a, &a],
        vec!["lower", &a],
        vec!["lower", "--json", &a],
        vec!["platforms"],
        vec!["platforms", "--json"],
        vec!["properties"],
        vec!["properties", "host-uso"],
        vec!["machines"],
        vec!["machines", "microvm-1.0"],
        vec!["place", &a, &probe],
        vec!["place", "--json", &a, &probe],
        vec!["selftest-guest", "-o", "-"],
    ]
    .into_iter()
    .map(|args| args.into_iter().map(String::from).collect())
    .collect()
}

/// Commands that print on stdout and measure the host (root and /dev/kvm).
fn host_printing_commands(s: &Scratch) -> Vec<Vec<String>> {
    let a = s.path("a.abi").display().to_string();
    let kernel = s.path("selftest.elf").display().to_string();
    assert!(vmc(&["selftest-guest", "-o", &kernel]).status.success());
    let guest = s.write(
        "guest.kdl",
        "vm \"st\" {\n    cpu-model \"x86-64-v1\"\n    memory \"64MiB\"\n    boot {\n        kernel \"selftest.elf\"\n        cmdline \"console=ttyS0\"\n    }\n}\n",
    );
    let fresh = s.path("fresh-host.abi").display().to_string();
    [
        vec!["check", &a],
        vec!["probe"],
        vec!["probe", "--json"],
        vec!["platforms", "--host"],
        vec!["platforms", "--host", "--json"],
        vec!["compile", &spec("web.kdl"), "-o", &fresh],
        vec!["run", &guest],
    ]
    .into_iter()
    .map(|args| args.into_iter().map(String::from).collect())
    .collect()
}

/// Every printing command; with `host_access`, the ones that measure the host too.
fn all_printing_commands(s: &Scratch, host_access: bool) -> Vec<Vec<String>> {
    let mut commands = printing_commands(s);
    if host_access {
        commands.extend(host_printing_commands(s));
    }
    commands
}

#[test]
fn a_pipe_closed_by_its_reader_ends_every_command_quietly() {
    let s = Scratch::new("files-epipe");
    for args in all_printing_commands(&s, available!(support::host_access())) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let (o, _) = vmc_bounded_to(&args, writer.into());
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(141), "{args:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("error:"), "{args:?}: {err}");
    }
}

#[test]
fn standard_output_on_dev_full_is_an_error_with_exit_2_for_every_command() {
    let s = Scratch::new("files-full");
    for args in all_printing_commands(&s, available!(support::host_access())) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let full = fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let (o, _) = vmc_bounded_to(&args, full.into());
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("error: cannot write to standard output: No space left on device"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
