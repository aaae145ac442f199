//! Hostile inputs to every reader, through the `vmc` binary: whatever nests, however
//! deep, up to the 4 MiB input limit, each command ends with exit 2 and a message, not
//! a signal; long inheritance chains resolve in linear time. Every run is bounded: a
//! timeout kills it, and `ulimit -v` caps its memory.

mod support;

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::Scratch;
use vmc_compiler::kdlread::MAX_INPUT_BYTES;

/// Generous for a debug build of a 4 MiB input on a busy machine.
const TIMEOUT: Duration = Duration::from_secs(240);
/// Address space for one run, in KiB.
const MEMORY_KIB: u64 = 4 << 20;

struct Run {
    /// Where its standard output went.
    out: std::path::PathBuf,
    code: Option<i32>,
    signal: Option<i32>,
    stderr: String,
    elapsed: Duration,
}

/// Runs `vmc args` under [`TIMEOUT`] and [`MEMORY_KIB`], its output in files.
static RUNS: AtomicUsize = AtomicUsize::new(0);

fn vmc_bounded(s: &Scratch, args: &[&str], timeout: Duration) -> Run {
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let (out, err) = (s.path(&format!("run{n}.out")), s.path(&format!("run{n}.err")));
    let start = Instant::now();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {MEMORY_KIB} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_vmc"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .expect("run vmc");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vmc {} ran for over {timeout:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = String::from_utf8_lossy(&std::fs::read(&err).unwrap()).into_owned();
    Run {
        out,
        code: status.code(),
        signal: status.signal(),
        stderr,
        elapsed: start.elapsed(),
    }
}

/// The run ended by itself with exit 2, saying `expect`.
fn assert_refused(run: &Run, what: &str, expect: &str) {
    assert_eq!(run.signal, None, "{what}: killed by signal {:?}", run.signal);
    // The message lines, not the source lines they quote (which may be megabytes long).
    let tail: String = run
        .stderr
        .lines()
        .filter(|l| !l.contains(" │ "))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(run.code, Some(2), "{what}: exit {:?}, stderr:\n{tail}", run.code);
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("stack overflow"),
        "{what}: {tail}"
    );
    assert!(
        run.stderr.contains(expect),
        "{what}: expected `{expect}`, stderr:\n{tail}"
    );
}

/// As many copies of `unit` as fit in `budget` bytes.
fn fill(unit: &str, budget: usize) -> String {
    unit.repeat(budget / unit.len())
}

const MIB: usize = 1 << 20;

/// Texts that nest (or recover from errors) once per few bytes: each one crashed, or
/// would crash, a recursive parser. `(name, text, what the message says)`.
fn deep_texts(size: usize) -> Vec<(String, String, &'static str)> {
    let half = size / 2;
    let literal: Vec<(&str, String, &'static str)> = vec![
        ("comments", fill("/*", half) + &fill("*/", half), "no `vm` node"),
        ("comments-unclosed", fill("/*", size), "never closed"),
        (
            "comment-stars",
            format!("a /*{}*/", fill("*", size - 10)),
            "unknown top-level node `a`",
        ),
        (
            "comment-slashes",
            format!("a /*{}*/", fill("x/ ", size - 10)),
            "unknown top-level node `a`",
        ),
        ("blocks", fill("a {", size), "nesting deeper than 16"),
        (
            "blocks-no-names",
            format!("a {}", fill("{", size - 2)),
            "needs a node name",
        ),
        ("json-like", fill("{", size), "is JSON (or meant to be), not KDL"),
        (
            "blocks-commented",
            format!("a {}", fill("/-{ b ", size)),
            "nesting deeper than 16",
        ),
        ("nodes-commented", fill("/-a {", size), "nesting deeper than 16"),
        ("closers", fill("}", size), "unexpected `}`"),
        (
            "recoveries",
            format!("a 1{}", fill("=1", size - 4)),
            "cannot be a property name",
        ),
        (
            "slashdash-chain",
            format!("a {}1", fill("/- ", size - 4)),
            "cannot comment out another `/-`",
        ),
        (
            "slashdash-entries",
            format!("vm \"a\" {}1", fill("/-1 ", size - 10)),
            "takes exactly one value (line 1, column",
        ),
        (
            "types",
            format!("a {}", fill("(", size)),
            "where a type name was expected",
        ),
        (
            "type-chain",
            format!("a {}1", fill("(t)", size - 4)),
            "a second type annotation",
        ),
        (
            "brace-after-bad-value",
            format!("a x\"{}", fill("{", size - 5)),
            "without a space",
        ),
        (
            "brace-in-strings",
            format!("a \"{}\"\n{}", fill("{", half), fill("b {", half - 10)),
            "nesting deeper",
        ),
        (
            "brace-in-raw",
            format!("a ##\"{}\"##\n{}", fill("{\"#", half), fill("b {", half - 10)),
            "nesting deeper",
        ),
        (
            "brace-in-multiline",
            format!("a \"\"\"\n{}\n\"\"\"\n{}", fill("{", half), fill("b {", half - 20)),
            "nesting deeper",
        ),
        ("continuations", format!("vm{}", fill(" \\\n", size - 4)), "has no name"),
        (
            "strings",
            format!("a \"{}\"", fill("x", size - 5)),
            "unknown top-level node `a`",
        ),
        (
            "multiline-lines",
            format!("a \"\"\"\n{}  \"\"\"", fill("  x\n", size - 12)),
            "unknown top-level node",
        ),
        (
            "entries",
            format!("a{}", fill(" 1", size - 2)),
            "unknown top-level node `a`",
        ),
    ];
    let mut cases: Vec<(String, String, &'static str)> = literal
        .into_iter()
        .map(|(name, text, expect)| (name.to_string(), text, expect))
        .collect();
    // A line comment ends at every KDL newline: the nesting after it is seen.
    for (name, newline) in [
        ("cr", "\r"),
        ("lf", "\n"),
        ("crlf", "\r\n"),
        ("nel", "\u{85}"),
        ("vt", "\u{b}"),
        ("ff", "\u{c}"),
        ("ls", "\u{2028}"),
        ("ps", "\u{2029}"),
    ] {
        cases.push((
            format!("comment-{name}"),
            format!("// comment{newline}{}", fill("a {", size - 16)),
            "nesting deeper than 16",
        ));
    }
    for (name, text, _) in &cases {
        assert!(text.len() <= MAX_INPUT_BYTES, "{name}: {} bytes", text.len());
    }
    cases
}

/// A compiled document, for the commands that read one before their other inputs.
fn compiled(s: &Scratch) -> String {
    let spec = s.write(
        "ok.kdl",
        "vm \"ok\" {\n    memory \"64MiB\"\n    boot { kernel \"k\" }\n}\n",
    );
    let out = s.path("ok.abi").display().to_string();
    let run = vmc_bounded(s, &["compile", &spec, "--platform", "linux-6.9", "-o", &out], TIMEOUT);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    out
}

#[test]
fn a_spec_of_any_depth_is_refused_with_a_message() {
    let s = Scratch::new("hostile-spec");
    // A quarter MiB nests far deeper than any stack allows (5,000 `/*` crashed the
    // parser before); the size limit itself is the next test's.
    for (name, text, expect) in deep_texts(MIB / 4) {
        let path = s.write(&format!("{name}.kdl"), &text);
        let run = vmc_bounded(&s, &["compile", &path, "--platform", "linux-6.9", "-o", "-"], TIMEOUT);
        assert_refused(&run, &format!("compile {name}"), expect);
    }
}

#[test]
fn at_the_size_limit_nothing_nests_past_the_check() {
    let s = Scratch::new("hostile-limit");
    for (name, text, expect) in deep_texts(MAX_INPUT_BYTES - 64) {
        if !["comments", "comment-cr", "slashdash-chain"].contains(&name.as_str()) {
            continue;
        }
        let path = s.write(&format!("{name}.kdl"), &text);
        let run = vmc_bounded(&s, &["compile", &path, "--platform", "linux-6.9", "-o", "-"], TIMEOUT);
        assert_refused(&run, &format!("compile {name} ({} bytes)", text.len()), expect);
        eprintln!(
            "{name}: {} bytes refused in {:.1} s",
            text.len(),
            run.elapsed.as_secs_f64()
        );
    }
}

#[test]
fn every_reader_refuses_deep_text_with_a_message() {
    let s = Scratch::new("hostile-readers");
    let doc = compiled(&s);
    let platforms = s.0.join("platforms");
    std::fs::create_dir_all(&platforms).unwrap();
    let deep = [
        ("comments", format!("{}{}", fill("/*", 50_000), fill("*/", 50_000)), ""),
        (
            "comment-cr",
            format!("// c\r{}", fill("a {", 150_000)),
            "nesting deeper than 16",
        ),
        (
            "blocks-commented",
            format!("a {}", fill("/-{ b ", 150_000)),
            "nesting deeper than 16",
        ),
        ("closers", fill("}", 150_000), "unexpected `}`"),
    ];
    for (name, text, expect) in deep {
        let file = s.write(&format!("{name}.abi"), &text);
        for command in ["show", "check", "hash", "explain", "run"] {
            let run = vmc_bounded(&s, &[command, &file], TIMEOUT);
            assert_refused(&run, &format!("{command} {name}"), expect);
        }
        // A spec given to `run` is compiled for this host first.
        let spec = s.write(&format!("{name}-spec.kdl"), &text);
        let run = vmc_bounded(&s, &["run", &spec], TIMEOUT);
        assert_refused(&run, &format!("run {name}.kdl"), expect);
        let probe = s.write(&format!("{name}-probe.kdl"), &text);
        let run = vmc_bounded(&s, &["place", &doc, &probe], TIMEOUT);
        assert_refused(&run, &format!("place {name}"), expect);
        let platform = platforms.join(format!("{name}.kdl"));
        std::fs::write(&platform, &text).unwrap();
        let dir = platforms.display().to_string();
        let run = vmc_bounded(
            &s,
            &[
                "compile",
                &s.write("spec.kdl", "vm \"a\" {}"),
                "--platform",
                "linux-6.9",
                "--platform-path",
                &dir,
                "-o",
                "-",
            ],
            TIMEOUT,
        );
        assert_refused(&run, &format!("compile --platform-path {name}"), expect);
        std::fs::remove_file(&platform).unwrap();
    }
}

#[test]
fn deep_json_probe_files_stop_at_the_json_parsers_limit() {
    let s = Scratch::new("hostile-json");
    let doc = compiled(&s);
    let half = MIB / 2;
    for (name, text) in [
        ("arrays", fill("[", MIB)),
        ("arrays-closed", fill("[", half) + &fill("]", half)),
        ("objects", fill("{\"a\":", MIB)),
        (
            "objects-closed",
            format!("{}1{}", fill("{\"a\":", half), fill("}", half / 5)),
        ),
    ] {
        let probe = s.write(&format!("{name}.json"), &text);
        let run = vmc_bounded(&s, &["place", &doc, &probe], TIMEOUT);
        assert_refused(&run, &format!("place {name}.json"), "recursion limit exceeded");
        // Named otherwise, it is JSON where KDL belongs, and said so.
        let kdl = s.write(&format!("{name}.kdl"), &text);
        let run = vmc_bounded(&s, &["place", &doc, &kdl], TIMEOUT);
        assert_refused(&run, &format!("place {name}.kdl"), "is JSON (or meant to be), not KDL");
    }
}

/// `platform "pN" { inherits "pN-1" }`, `n` of them in `dir/chain.kdl`, from `root`.
fn chain(dir: &Path, n: usize, root: &str) {
    let mut text = format!("platform p0{{inherits {root}}}\n");
    for i in 1..n {
        text += &format!("platform p{i}{{inherits p{}}}\n", i - 1);
    }
    assert!(text.len() <= MAX_INPUT_BYTES, "{n} platforms take {} bytes", text.len());
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("chain.kdl"), text).unwrap();
}

#[test]
fn an_inheritance_chain_resolves_in_linear_time() {
    let s = Scratch::new("hostile-chain");
    let spec = s.write("spec.kdl", "vm \"a\" {\n    memory \"64MiB\"\n}\n");
    let mut times = Vec::new();
    for n in [2_000, 20_000] {
        let dir = s.0.join(format!("chain-{n}"));
        chain(&dir, n, "linux-6.9");
        let last = format!("p{}", n - 1);
        // Quadratic resolution took 14 s for 4,000; 20,000 did not finish.
        let run = vmc_bounded(
            &s,
            &[
                "compile",
                &spec,
                "--platform-path",
                &dir.display().to_string(),
                "--platform",
                &last,
                "-o",
                "-",
            ],
            TIMEOUT,
        );
        assert_eq!(run.code, Some(0), "{n}: {}", run.stderr);
        times.push((n, run.elapsed));
    }
    for (n, t) in &times {
        eprintln!("a chain of {n} platforms: compiled in {:.2} s", t.as_secs_f64());
    }
    let ratio = times[1].1.as_secs_f64() / times[0].1.as_secs_f64();
    eprintln!("20,000 / 2,000: {ratio:.1}x the time for 10x the platforms");
    // Quadratic would be 100x; startup and reading make small runs relatively slow.
    assert!(ratio < 30.0, "{ratio:.1}x");
    assert!(times[1].1 < Duration::from_secs(60), "20,000 took {:?}", times[1].1);
}

#[test]
fn an_inheritance_cycle_of_any_length_is_one_message() {
    let s = Scratch::new("hostile-cycle");
    let dir = s.0.join("cycle");
    std::fs::create_dir_all(&dir).unwrap();
    let n = 50_000;
    let text: String = (0..n)
        .map(|i| format!("platform p{i}{{inherits p{}}}\n", (i + 1) % n))
        .collect();
    std::fs::write(dir.join("cycle.kdl"), text).unwrap();
    let run = vmc_bounded(
        &s,
        &["platforms", "--platform-path", &dir.display().to_string()],
        TIMEOUT,
    );
    assert_refused(&run, "cycle", "platforms inherit from each other in a cycle: p0 -> p1 -> p2 -> p3 -> p4 -> ... (49991 more) ... -> p49996 -> p49997 -> p49998 -> p49999 -> p0");
    assert_eq!(run.stderr.matches("vmc::platform::cycle").count(), 1, "{}", run.stderr);
}

#[test]
fn many_problems_in_one_input_are_cut_short_not_rendered_for_minutes() {
    let s = Scratch::new("hostile-flood");
    let unknown: String = (0..50_000).map(|i| format!("cpuz{i} 1\n")).collect();
    let path = s.write("unknown.kdl", format!("vm \"a\" {{\n{unknown}}}\n"));
    let run = vmc_bounded(&s, &["compile", &path, "--platform", "linux-6.9", "-o", "-"], TIMEOUT);
    assert_refused(
        &run,
        "unknown settings",
        "... and 49950 more problems like these, not shown",
    );
    assert_eq!(run.stderr.matches("vmc::spec::unknown-node").count(), 50);
    // Each repeat names where the first one is, which costs a read of the text up to it.
    let path = s.write("repeats.kdl", format!("vm \"a\" {{\n{}}}\n", fill("cpus 1\n", MIB / 2)));
    let run = vmc_bounded(&s, &["compile", &path, "--platform", "linux-6.9", "-o", "-"], TIMEOUT);
    assert_refused(&run, "repeated settings", "more problems like these, not shown");
    assert_eq!(run.stderr.matches("vmc::spec::duplicate-setting").count(), 50);
    let path = s.write(
        "repeats-platform.kdl",
        format!("platform \"p\" {{\n{}}}\n", fill("n 1\n", MIB / 2)),
    );
    let run = vmc_bounded(&s, &["place", &compiled(&s), &path], TIMEOUT);
    assert_refused(
        &run,
        "repeated platform settings",
        "more problems like these, not shown",
    );
    eprintln!(
        "{} repeated nodes refused in {:.1} s",
        MIB / 2 / 4,
        run.elapsed.as_secs_f64()
    );
}

#[test]
fn a_wrong_input_is_named_with_what_to_write_instead() {
    let s = Scratch::new("hostile-messages");
    let doc = compiled(&s);
    let json = s.path("ok.json").display().to_string();
    let run = vmc_bounded(&s, &["show", &doc, "--json"], TIMEOUT);
    assert_eq!(run.code, Some(0));
    std::fs::copy(&run.out, &json).unwrap();
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            vec![
                "compile".into(),
                s.write("kdl1.kdl", "vm \"a\" {\n    net \"n\" { host-uso true }\n}\n"),
            ],
            "bare `true` is KDL 1; KDL 2.0 writes it `#true`",
            "write `#true`",
        ),
        (
            vec![
                "compile".into(),
                s.write("half.kdl", "vm \"a\" {\n    memory \"0.5GiB\"\n}\n"),
            ],
            "sizes are whole numbers of a unit",
            "write \"512MiB\"",
        ),
        (
            vec!["compile".into(), s.write("float.kdl", "vm \"a\" {\n    cpus 2.0\n}\n")],
            "`cpus` takes a whole number, not `2.0`",
            "`cpus 2`",
        ),
        (
            vec![
                "compile".into(),
                s.write("unit.kdl", "vm \"a\" {\n    memory 512MiB\n}\n"),
            ],
            "`512MiB` is not a number",
            "a number with a unit is a string: write \"512MiB\"",
        ),
        (
            vec!["compile".into(), s.write("doc.kdl", std::fs::read(&doc).unwrap())],
            "is an ABI document (already compiled), not a VM spec",
            "`vmc show",
        ),
        (
            vec!["compile".into(), json.clone()],
            "is JSON, not KDL: expected a VM spec",
            "`vmc show --json` output",
        ),
        (
            vec!["show".into(), json.clone()],
            "is JSON, not KDL: expected an ABI document",
            "the .abi file `vmc compile` wrote",
        ),
        (
            vec!["place".into(), doc.clone(), s.write("spec-as-probe.kdl", "vm \"a\" {}")],
            "is a VM spec, not a platform or probe file",
            "vmc compile SPEC",
        ),
        (
            vec!["place".into(), doc.clone(), json.clone()],
            "is `vmc show --json` output (an ABI document), not a probe file",
            "`vmc place DOC PROBE...` takes the ABI document (the .abi file) first",
        ),
    ];
    for (args, message, help) in cases {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        if args[0] == "compile" {
            args.extend(["--platform", "linux-6.9", "-o", "-"]);
        }
        let run = vmc_bounded(&s, &args, TIMEOUT);
        assert_refused(&run, &args.join(" "), message);
        assert!(
            run.stderr.contains(help),
            "{}: no `{help}` in\n{}",
            args.join(" "),
            run.stderr
        );
    }
}
