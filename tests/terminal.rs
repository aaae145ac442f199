//! Text from inputs never reaches the terminal raw. Every class of input that vmc echoes
//! (specs, documents, probe and platform files, their paths, command-line arguments) is
//! given control characters (an OSC that retitles the terminal, an erase, BEL, C1) and
//! bidirectional overrides; no message and no output may carry one of them raw, whether
//! colours are forced on or off, and the exit status is the command's usual one.

mod support;

use std::ffi::OsStr;
use std::process::{Command, Output};

use support::{repo, Scratch};

/// Retitles the terminal, rings its bell, then clears the screen.
const PWN: &str = "\u{1b}]0;PWNED\u{7}\u{1b}[2J";
/// The same, as a KDL string escape (the source text itself holds no control character).
const PWN_KDL: &str = r"\u{1b}]0;PWNED\u{7}\u{1b}[2J";
/// How vmc shows it.
const PWN_SHOWN: &str = r"\u{1b}]0;PWNED\u{7}\u{1b}[2J";

/// A character that must not reach a terminal raw (this test's own list: C0 but the
/// newline, DEL, C1, the bidirectional embeddings, overrides and isolates).
fn forbidden(c: char) -> bool {
    (c < ' ' && c != '\n')
        || ('\u{7f}'..='\u{9f}').contains(&c)
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

#[derive(Clone, Copy, Debug)]
enum Colour {
    /// `NO_COLOR=1`: miette's narrated reports.
    Narrated,
    /// Graphical reports without colour (not a terminal, nothing forced).
    Plain,
    /// Colours forced on (`FORCE_COLOR=1`, `CLICOLOR_FORCE=1`).
    Forced,
}

fn vmc_in(colour: Colour, args: &[&OsStr]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmc"));
    c.args(args);
    for var in ["NO_COLOR", "FORCE_COLOR", "CLICOLOR_FORCE", "CLICOLOR", "NO_GRAPHICS"] {
        c.env_remove(var);
    }
    match colour {
        Colour::Narrated => c.env("NO_COLOR", "1"),
        Colour::Plain => c.env("FORCE_COLOR", "0"),
        Colour::Forced => c.env("FORCE_COLOR", "1").env("CLICOLOR_FORCE", "1"),
    };
    c.output().expect("run vmc")
}

/// Removes SGR sequences (`ESC [ digits ; ... m`), the only ones colouring prints.
fn strip_sgr(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("\u{1b}[") {
        out += &rest[..i];
        let after = &rest[i + 2..];
        let params = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit() || c == ';').len();
        if after[params..].starts_with('m') {
            rest = &after[params + 1..];
        } else {
            // Not colouring: keep it, for the check below to find.
            out += "\u{1b}[";
            rest = after;
        }
    }
    out + rest
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `args` in every colour mode: same exit status (`code`), nothing raw on stdout or
/// stderr; with colours forced, only colouring sequences, and the same text once they
/// are removed. Returns stdout and stderr of the uncoloured graphical run.
fn assert_safe(case: &str, args: &[&OsStr], code: i32) -> (String, String) {
    let plain = vmc_in(Colour::Plain, args);
    let (out, err) = (text(&plain.stdout), text(&plain.stderr));
    assert_eq!(
        plain.status.code(),
        Some(code),
        "{case}: exit status\nstdout:\n{out}\nstderr:\n{err}"
    );
    for colour in [Colour::Narrated, Colour::Plain, Colour::Forced] {
        let o = vmc_in(colour, args);
        assert_eq!(o.status.code(), Some(code), "{case} ({colour:?}): exit status");
        let (o_out, o_err) = (text(&o.stdout), text(&o.stderr));
        let (checked_out, checked_err) = match colour {
            Colour::Forced => (strip_sgr(&o_out), strip_sgr(&o_err)),
            _ => (o_out.clone(), o_err.clone()),
        };
        for (stream, t) in [("stdout", &checked_out), ("stderr", &checked_err)] {
            if let Some(c) = t.chars().find(|&c| forbidden(c)) {
                panic!(
                    "{case} ({colour:?}): {stream} holds U+{:04X} raw:\n{}",
                    u32::from(c),
                    t.escape_debug()
                );
            }
        }
        if let Colour::Forced = colour {
            assert_eq!(
                checked_out, out,
                "{case}: coloured stdout differs from plain beyond its colours"
            );
            assert_eq!(
                checked_err, err,
                "{case}: coloured stderr differs from plain beyond its colours"
            );
        }
    }
    (out, err)
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// A valid document compiled for linux-6.9, written to `name` in the scratch directory.
fn document(s: &Scratch, name: &str) -> String {
    let spec = s.write(
        "base.kdl",
        "vm \"base\" {\n    cpu-model \"x86-64-v1\"\n    net \"net0\"\n}\n",
    );
    let out = s.path(name).display().to_string();
    compile_to(&spec, &out);
    out
}

/// Compiles `spec` for linux-6.9 into `out`, which must succeed.
fn compile_to(spec: &str, out: &str) {
    let o = vmc_in(
        Colour::Plain,
        &[
            os("compile"),
            os(spec),
            os("--platform"),
            os("linux-6.9"),
            os("-o"),
            os(out),
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn spec_errors_show_hostile_names_and_source_lines_escaped() {
    let s = Scratch::new("terminal-spec");
    // A property named with escapes: the message, the label and the source line.
    let escaped = s.write(
        "escaped.kdl",
        format!("vm \"a\" {{\n    net \"n\" {{\n        \"{PWN_KDL}\" #true\n    }}\n}}\n"),
    );
    let (_, err) = assert_safe(
        "property name",
        &[os("compile"), os(&escaped), os("--platform"), os("linux-6.9")],
        2,
    );
    assert!(
        err.contains(&format!("unknown virtio-net property `{PWN_SHOWN}`")),
        "{err}"
    );
    // Raw control characters and overrides in the text itself (KDL refuses them): the
    // snippet shows the line escaped, context lines included.
    let raw = s.write(
        "raw.kdl",
        format!("// {PWN} \u{202e}evil\u{202c}\nvm \"a\" {{\n    cpus \"\u{9b}2J\u{85}\"\n}}\n"),
    );
    let (_, err) = assert_safe(
        "raw source",
        &[os("compile"), os(&raw), os("--platform"), os("linux-6.9")],
        2,
    );
    // The first forbidden character is in the comment; its line is shown escaped.
    assert!(err.contains(r"\u{1b}]0;PWNED"), "{err}");
    // A device id, a TAP name and a command line holding control characters.
    let values = s.write(
        "values.kdl",
        format!(
            "vm \"a\" {{\n    boot {{\n        cmdline \"{PWN_KDL}\"\n        kernel \"k\\u{{202e}}\\u{{7}}\"\n    }}\n    net \"{PWN_KDL}\" {{\n        tap \"t\\u{{85}}\"\n    }}\n}}\n"
        ),
    );
    let (_, err) = assert_safe(
        "values",
        &[os("compile"), os(&values), os("--platform"), os("linux-6.9")],
        2,
    );
    assert!(err.contains(r"t\u{85}"), "{err}");
    // A spec whose file name is hostile, with an error inside: the snippet names it.
    let named = s.write(&format!("{PWN}\u{202e}.kdl"), "vm \"a\" { cpus \"two\" }\n");
    let (_, err) = assert_safe(
        "file name",
        &[os("compile"), os(&named), os("--platform"), os("linux-6.9")],
        2,
    );
    assert!(err.contains(&format!("{PWN_SHOWN}\\u{{202e}}.kdl")), "{err}");
}

#[test]
fn documents_with_hostile_content_are_refused_escaped() {
    let s = Scratch::new("terminal-document");
    let good = std::fs::read_to_string(document(&s, "good.abi")).unwrap();
    // An unknown node named with escapes; a raw override in a string; a name edited.
    let cases = [
        (
            "node name",
            good.replacen("format 1", &format!("format 1\n\"{PWN_KDL}\" 1"), 1),
        ),
        ("raw override", good.replacen("\"base\"", "\"ba\u{202e}se\u{2066}\"", 1)),
        ("edited name", good.replacen("\"net0\"", &format!("\"{PWN_KDL}\""), 1)),
    ];
    for (case, text) in cases {
        let path = s.write(&format!("{case}.abi"), text);
        for command in ["show", "hash", "explain", "check", "lower"] {
            assert_safe(&format!("{case}: {command}"), &[os(command), os(&path)], 2);
        }
        assert_safe(
            &format!("{case}: show --json"),
            &[os("show"), os("--json"), os(&path)],
            2,
        );
        assert_safe(&format!("{case}: diff"), &[os("diff"), os(&path), os(&path)], 2);
    }
    // Raw control characters in a comment: KDL 2.0 forbids them anywhere, so the
    // document is refused, and the message shows the line escaped.
    let path = s.write("comment.abi", format!("// {PWN}\u{9b}\u{202e}\n{good}"));
    for command in ["show", "hash", "explain", "lower"] {
        let (_, err) = assert_safe(&format!("comment: {command}"), &[os(command), os(&path)], 2);
        assert!(err.contains(r"\u{1b}]0;PWNED"), "{err}");
    }
    assert_safe("comment: diff", &[os("diff"), os(&path), os(&path)], 2);
}

#[test]
fn probe_and_platform_files_with_hostile_content_are_refused_escaped() {
    let s = Scratch::new("terminal-probe");
    let doc = document(&s, "vm.abi");
    let json = std::fs::read_to_string(repo().join("tests/hosts/new-6.9.json")).unwrap();
    let probes = [
        (
            "json key",
            "h.json",
            json.replacen("\"format\"", "\"\\u001b]0;PWNED\\u0007\": 1, \"format\"", 1),
        ),
        (
            "json feature",
            "h.json",
            json.replacen("\"apic\"", "\"ap\\u009b\\u202eic\"", 1),
        ),
        ("json raw", "h.json", json.replacen("rack2-new", "rack\u{1b}[2J", 1)),
        ("json name", "h.json", json.replacen("rack2-new", "rack\\u001b[2J", 1)),
        (
            "kdl feature",
            "h.kdl",
            format!("format 1\nplatform \"h\" {{\n    kernel \"6.9\"\n    cpu-features \"{PWN_KDL}\"\n}}\n"),
        ),
        (
            "kdl node",
            "h.kdl",
            format!("format 1\nplatform \"h\" {{\n    kernel \"6.9\"\n    \"{PWN_KDL}\" 1\n}}\n"),
        ),
        (
            "kdl raw",
            "h.kdl",
            format!("format 1\nplatform \"h\u{202e}\" {{\n    kernel \"6.9\" // {PWN}\n}}\n"),
        ),
    ];
    for (case, file, text) in probes {
        let path = s.write(file, &text);
        assert_safe(&format!("{case}: place"), &[os("place"), os(&doc), os(&path)], 2);
        let spec = s.write("pool.kdl", "vm \"p\" { cpu-model \"x86-64-v1\" }\n");
        assert_safe(
            &format!("{case}: compile --pool"),
            &[os("compile"), os(&spec), os("--pool"), os(&path), os("-o"), os("-")],
            2,
        );
        if file.ends_with(".kdl") {
            let dir = s.path(&format!("platforms-{}", case.replace(' ', "-")));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("p.kdl"), &text).unwrap();
            let dir = dir.display().to_string();
            assert_safe(
                &format!("{case}: platforms"),
                &[os("platforms"), os("--platform-path"), os(&dir)],
                2,
            );
        }
    }
    // A missing probe file and a missing platform directory, both with hostile names.
    let missing = s.path(&format!("{PWN}.json")).display().to_string();
    let (_, err) = assert_safe("missing probe", &[os("place"), os(&doc), os(&missing)], 2);
    assert!(err.contains(PWN_SHOWN), "{err}");
    let (_, err) = assert_safe(
        "missing dir",
        &[os("platforms"), os("--platform-path"), os(&missing)],
        2,
    );
    assert!(err.contains(PWN_SHOWN), "{err}");
}

#[test]
fn hostile_command_line_arguments_are_echoed_escaped() {
    let s = Scratch::new("terminal-args");
    let doc = document(&s, "vm.abi");
    let spec = s.write("vm.kdl", "vm \"a\" { cpu-model \"x86-64-v1\" }\n");
    let missing_spec = s.path("\u{1b}]0;x\u{7}.kdl").display().to_string();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("explain property", vec!["explain", &doc, PWN], PWN_SHOWN),
        (
            "compile missing spec",
            vec!["compile", &missing_spec],
            r"\u{1b}]0;x\u{7}.kdl",
        ),
        (
            "platform name",
            vec!["compile", &spec, "--platform", "\u{1b}[31m", "-o", "-"],
            r"\u{1b}[31m",
        ),
        ("lower target", vec!["lower", &doc, "--to", PWN], PWN_SHOWN),
        (
            "property name",
            vec!["properties", "\u{9b}\u{202e}x"],
            r"\u{9b}\u{202e}x",
        ),
        ("machine name", vec!["machines", PWN], PWN_SHOWN),
        ("subcommand", vec![PWN], PWN_SHOWN),
        (
            "extra argument",
            vec!["show", &doc, "\u{2066}\u{1b}[2J"],
            r"\u{2066}\u{1b}[2J",
        ),
        (
            "show missing",
            vec!["show", "/nonexistent/\u{85}\u{1b}[2J.abi"],
            r"\u{85}\u{1b}[2J",
        ),
    ];
    for (case, args, shown) in cases {
        let args: Vec<&OsStr> = args.iter().map(|a| os(a)).collect();
        let (_, err) = assert_safe(case, &args, 2);
        assert!(err.contains(shown), "{case}: `{shown}` not shown:\n{err}");
    }
    // Without a hostile argument, clap's errors are as before (coloured when forced).
    let o = vmc_in(Colour::Forced, &[os("show"), os("--bogus")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("\u{1b}["), "{}", text(&o.stderr));
}

#[test]
fn outputs_that_print_paths_and_names_escape_them() {
    let s = Scratch::new("terminal-outputs");
    let a = document(&s, &format!("a{PWN}.abi"));
    let spec = s.write(
        "b.kdl",
        "vm \"base\" {\n    cpu-model \"x86-64-v1\"\n    net \"net0\" { host-uso #false }\n}\n",
    );
    let b = s.path("b\u{202e}\u{85}.abi").display().to_string();
    compile_to(&spec, &b);
    // diff prints both paths.
    let (out, _) = assert_safe("diff", &[os("diff"), os(&a), os(&b)], 1);
    assert!(
        out.contains(&format!("--- {}", s.path(&format!("a{PWN_SHOWN}.abi")).display())),
        "{out}"
    );
    assert!(out.contains(r"b\u{202e}\u{85}.abi"), "{out}");
    // place prints each probe file's path, and the JSON keeps the same value.
    let probe = s.path(&format!("rack{PWN}.json"));
    std::fs::copy(repo().join("tests/hosts/new-6.9.json"), &probe).unwrap();
    let probe = probe.display().to_string();
    let (out, _) = assert_safe("place", &[os("place"), os(&a), os(&probe)], 0);
    assert!(
        out.contains(&format!("rack{PWN_SHOWN}.json (rack2-new): can run")),
        "{out}"
    );
    let (out, _) = assert_safe("place --json", &[os("place"), os("--json"), os(&a), os(&probe)], 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["file"], probe.as_str());
    // platforms prints the file each third-party platform came from.
    let dir = s.path(&format!("dir{PWN}"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(repo().join("specs/platforms/acme-9.kdl"), dir.join("acme-9.kdl")).unwrap();
    let dir = dir.display().to_string();
    let (out, _) = assert_safe("platforms", &[os("platforms"), os("--platform-path"), os(&dir)], 0);
    assert!(out.contains(&format!("dir{PWN_SHOWN}/acme-9.kdl")), "{out}");
    let (out, _) = assert_safe(
        "platforms --json",
        &[os("platforms"), os("--json"), os("--platform-path"), os(&dir)],
        0,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let acme = v.as_array().unwrap().iter().find(|p| p["name"] == "acme-9").unwrap();
    assert_eq!(acme["source"], format!("{dir}/acme-9.kdl").as_str());
    // compile names the spec and the output on stderr; -o - prints the document as is.
    let hostile_spec = s.write(&format!("c{PWN}.kdl"), "vm \"c\" { cpu-model \"x86-64-v1\" }\n");
    let out_path = s.path("c\u{9b}.abi").display().to_string();
    let (_, err) = assert_safe(
        "compile",
        &[
            os("compile"),
            os(&hostile_spec),
            os("--platform"),
            os("linux-6.9"),
            os("-o"),
            os(&out_path),
        ],
        0,
    );
    assert!(
        err.contains(&format!("c{PWN_SHOWN}.kdl")) && err.contains(r"c\u{9b}.abi"),
        "{err}"
    );
}

#[test]
fn values_that_documents_may_hold_print_escaped_and_keep_their_meaning() {
    let s = Scratch::new("terminal-values");
    // Paths and command lines may hold bidirectional characters (not control ones).
    let spec = s.write(
        "v.kdl",
        "vm \"v\" {\n    cpu-model \"x86-64-v1\"\n    boot {\n        kernel \"k\\u{202e}x\"\n        cmdline \"c\\u{2066}d\"\n    }\n}\n",
    );
    let doc = s.path("v.abi").display().to_string();
    compile_to(&spec, &doc);
    let kernel = s.path("k\u{202e}x").display().to_string();
    let (out, _) = assert_safe("show", &[os("show"), os(&doc)], 0);
    assert!(out.contains(r"k\u{202e}x"), "{out}");
    let (out, _) = assert_safe("show --json", &[os("show"), os("--json"), os(&doc)], 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["host"]["kernel"], kernel.as_str(), "{out}");
    assert_safe("explain", &[os("explain"), os(&doc)], 0);
    let (out, _) = assert_safe("lower --json", &[os("lower"), os("--json"), os(&doc)], 0);
    let args: Vec<String> = serde_json::from_str(&out).unwrap();
    assert!(args.contains(&kernel), "{out}");
    // The shell line quotes such arguments so that a shell reads them back as they are.
    let (out, _) = assert_safe("lower", &[os("lower"), os(&doc)], 0);
    let quoted = out.split_whitespace().find(|w| w.contains("202e")).unwrap();
    let echoed = Command::new("bash")
        .args(["-c", &format!("printf %s {quoted}")])
        .output()
        .expect("bash");
    assert_eq!(text(&echoed.stdout), kernel);
}

/// A problem on a very long line is placed in words: no snippet of the whole line, and
/// no renderer panic for a label past column 65,535.
#[test]
fn a_problem_far_along_a_line_is_placed_in_words() {
    let s = support::Scratch::new("terminal-long-line");
    let pad = " ".repeat(70_000);
    let spec = s.write("long.kdl", format!("vm \"a\" {{{pad}cpus 999 }}"));
    let doc = s.write("long.abi", format!("format 1\nabi {{{pad}zzz 1 }}"));
    for (args, expect) in [
        (
            vec!["compile", spec.as_str(), "--platform", "linux-6.9", "-o", "-"],
            "column 70014",
        ),
        (vec!["show", doc.as_str()], "column 70006"),
    ] {
        let out = support::vmc(&args);
        let err = support::stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(err.len() < 10_000, "{args:?}: {} bytes of stderr", err.len());
    }
}
