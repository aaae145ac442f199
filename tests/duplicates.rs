//! Nothing vmc reads may say one thing twice: a platform file, a KDL probe file and a JSON
//! probe file with a repeated node or key are refused (exit 2), naming what is repeated
//! and both places, and nothing is written. Without the refusal, the later value would
//! quietly win and change a platform, or the host a pool is compiled for.

mod support;

use std::path::Path;

use support::{stderr, stdout, vmc, Scratch};

fn spec(name: &str) -> String {
    support::repo().join("specs").join(name).display().to_string()
}

fn host(name: &str) -> String {
    support::repo().join("tests/hosts").join(name).display().to_string()
}

/// Every file under `dir`, so a test can say that a refused command wrote nothing.
fn listing(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .flat_map(|e| {
            if e.path().is_dir() {
                listing(&e.path())
            } else {
                vec![e.path().display().to_string()]
            }
        })
        .collect();
    out.sort();
    out
}

/// Runs vmc and checks the refusal: exit 2, "duplicate" and every expected fragment on
/// stderr, nothing on stdout, no file written in the scratch directory.
fn refused(s: &Scratch, args: &[&str], expected: &[&str]) {
    let before = listing(&s.0);
    let o = vmc(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}\n{err}");
    assert!(err.contains("duplicate"), "{args:?}\n{err}");
    for fragment in expected {
        assert!(err.contains(fragment), "{args:?}: expected {fragment:?} in\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(stdout(&o), "", "{args:?}");
    assert_eq!(listing(&s.0), before, "{args:?} wrote a file");
}

/// A platform directory with one file per (name, text).
fn platform_dir(s: &Scratch, dir: &str, files: &[(&str, &str)]) -> String {
    let path = s.path(dir);
    std::fs::create_dir_all(&path).unwrap();
    for (name, text) in files {
        std::fs::write(path.join(name), text).unwrap();
    }
    path.display().to_string()
}

#[test]
fn a_platform_file_with_a_repeated_node_is_refused_naming_both_places() {
    let cases: &[(&str, &[&str])] = &[
        (
            "platform \"acme\" {\n    inherits \"linux-6.1\"\n    kernel \"6.1\"\n    kernel \"6.2\"\n}\n",
            &["`kernel`", "`platform \"acme\"`", "line 3, column 5", "line 4, column 5"],
        ),
        (
            "platform \"acme\" {\n    inherits \"linux-6.1\"\n    tap-offloads \"uso4\" \"uso6\"\n    tap-offloads \"uso4\"\n}\n",
            &["`tap-offloads`", "line 3, column 5", "line 4, column 5"],
        ),
        (
            "platform \"acme\" {\n    inherits \"linux-5.10\"\n    inherits \"linux-6.9\"\n}\n",
            &["`inherits`", "line 2, column 5", "line 3, column 5"],
        ),
        (
            "platform \"acme\" {\n  inherits \"linux-6.1\"\n  kvm-capabilities \"irqchip\"\n  description \"a\"\n  kvm-capabilities \"pit2\"\n}\n",
            &["`kvm-capabilities`", "line 3, column 3", "line 5, column 3"],
        ),
        (
            "format 1\nformat 1\nplatform \"acme\" { inherits \"linux-6.1\"; }\n",
            &["`format`", "the platform file", "line 1, column 1", "line 2, column 1"],
        ),
        (
            "platform \"acme\" {\n    inherits \"linux-6.1\"\n}\nplatform \"acme\" {\n    inherits \"linux-6.9\"\n}\n",
            &["`platform \"acme\"`", "line 1, column 1", "line 4, column 1"],
        ),
        (
            "platform \"acme\" {\n    inherits \"linux-6.1\" from=\"a\" from=\"b\"\n}\n",
            &["property `from`", "line 2, column 26", "line 2, column 35"],
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let s = Scratch::new(&format!("dup-platform-{i}"));
        let dir = platform_dir(&s, "platforms", &[("acme.kdl", text)]);
        platform_dir_refused(&s, &dir, expected);
    }
}

#[test]
fn a_platform_defined_in_two_files_is_refused_naming_both_files() {
    let s = Scratch::new("dup-platform-files");
    let dir = platform_dir(
        &s,
        "platforms",
        &[
            ("a.kdl", "platform \"acme\" {\n    inherits \"linux-6.1\"\n}\n"),
            (
                "b.kdl",
                "// the same name again\nplatform \"acme\" {\n    inherits \"linux-6.9\"\n}\n",
            ),
        ],
    );
    let a = format!("{dir}/a.kdl");
    let b = format!("{dir}/b.kdl");
    let expected: &[&str] = &[
        "platform `acme`",
        &format!("first in {a} at line 1, column 10"),
        &format!("again in {b} at line 2, column 10"),
    ];
    platform_dir_refused(&s, &dir, expected);
    // Across two directories, and against a built-in platform.
    let other = platform_dir(
        &s,
        "more",
        &[("c.kdl", "platform \"linux-6.2\" {\n  kernel \"6.2\"\n}\n")],
    );
    refused(
        &s,
        &["platforms", "--platform-path", &other],
        &[
            "platform `linux-6.2`",
            "first in <built-in>/linux-6.2.kdl at line ",
            "line 1, column 10",
        ],
    );
    let second = platform_dir(
        &s,
        "second",
        &[("a.kdl", "platform \"acme\" {\n    inherits \"linux-6.1\"\n}\n")],
    );
    let first_only = platform_dir(
        &s,
        "first",
        &[("a.kdl", "platform \"acme\" {\n    inherits \"linux-6.1\"\n}\n")],
    );
    refused(
        &s,
        &["platforms", "--platform-path", &first_only, "--platform-path", &second],
        &[
            &format!("first in {first_only}/a.kdl at line 1, column 10"),
            &format!("again in {second}/a.kdl at line 1, column 10"),
        ],
    );
    // Each file alone is fine.
    let o = vmc(&["platforms", "--platform-path", &first_only]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Compiling for platform `acme` with `dir` as a platform directory, and listing the
/// platforms, are both refused with `expected`, and no document is written.
fn platform_dir_refused(s: &Scratch, dir: &str, expected: &[&str]) {
    let out = s.path("web.abi").display().to_string();
    refused(
        s,
        &[
            "compile",
            &spec("web.kdl"),
            "--platform-path",
            dir,
            "--platform",
            "acme",
            "-o",
            &out,
        ],
        expected,
    );
    refused(s, &["platforms", "--platform-path", dir], expected);
    assert!(!Path::new(&out).exists());
}

/// A probe file as `vmc probe --json` writes it (with what a test adds before the end).
fn json_probe(extra: &str) -> String {
    format!(
        "{{\n  \"format\": 1,\n  \"name\": \"h\",\n  \"kernel\": \"6.9\",\n  \"tap-offloads\": [\"csum\"],\n  \"cpu-features\": [\"sse2\"],\n  \"unmeasured\": []{extra}\n}}\n"
    )
}

/// Every probe-file command (`place` and `compile --pool`) refuses `file`, with a good
/// host beside it.
fn every_probe_command_refuses(s: &Scratch, file: &str, expected: &[&str]) {
    let doc = s.path("web.abi").display().to_string();
    if !Path::new(&doc).exists() {
        let o = vmc(&["compile", &spec("web.kdl"), "--platform", "linux-5.15", "-o", &doc]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    refused(s, &["place", &doc, &host("new-6.9.json"), file], expected);
    refused(s, &["place", &doc, file], expected);
    let out = s.path("pool.abi").display().to_string();
    refused(
        s,
        &[
            "compile",
            &spec("web.kdl"),
            "--pool",
            &host("new-6.9.json"),
            file,
            "-o",
            &out,
        ],
        expected,
    );
    refused(s, &["compile", &spec("web.kdl"), "--pool", file, "-o", &out], expected);
    assert!(!Path::new(&out).exists());
}

#[test]
fn a_json_probe_file_with_a_repeated_key_is_refused_naming_both_places() {
    let cases: Vec<(String, &[&str])> = vec![
        (
            json_probe(",\n  \"kernel\": \"5.15\""),
            &[
                "key `kernel`",
                "the top-level object",
                "line 4, column 3",
                "line 8, column 3",
            ],
        ),
        (
            json_probe(",\n  \"tap-offloads\": [\"csum\", \"uso4\", \"uso6\"]"),
            &["key `tap-offloads`", "line 5, column 3", "line 8, column 3"],
        ),
        (
            json_probe(",\n  \"cpu-features\": []"),
            &["key `cpu-features`", "line 6, column 3", "line 8, column 3"],
        ),
        (
            "{\"format\": 1, \"format\": 1, \"name\": \"h\", \"kernel\": \"6.9\", \"cpu-features\": []}".to_string(),
            &["key `format`", "line 1, column 2", "line 1, column 15"],
        ),
        (
            // The same key, spelled with an escape.
            json_probe(",\n  \"n\\u0061me\": \"other\""),
            &["key `name`", "line 3, column 3", "line 8, column 3"],
        ),
        (
            json_probe(",\n  \"kvm-capabilities\": [],\n  \"description\": {\"a\": 1,\n    \"a\": 2}"),
            &[
                "key `a`",
                "the object `description`",
                "line 9, column 19",
                "line 10, column 5",
            ],
        ),
        (
            json_probe(",\n  \"kvm-api-version\": [{\"x\": {\"y\": 1, \"y\": 1}}]"),
            &[
                "key `y`",
                "the object `kvm-api-version[0].x`",
                "line 8, column 30",
                "line 8, column 38",
            ],
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let s = Scratch::new(&format!("dup-json-{i}"));
        let file = s.write("probe.json", text);
        every_probe_command_refuses(&s, &file, expected);
    }
    // The same file without a repeat is a good probe file.
    let s = Scratch::new("dup-json-control");
    let good = s.write("probe.json", json_probe(""));
    let doc = s.path("web.abi").display().to_string();
    let o = vmc(&["compile", &spec("web.kdl"), "--platform", "linux-5.15", "-o", &doc]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = vmc(&["place", &doc, &good]);
    assert!(
        o.status.code() == Some(0) || o.status.code() == Some(1),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_kdl_probe_file_with_a_repeat_is_refused_naming_both_places() {
    let probe = "// kernel release 6.9.3\nformat 1\nplatform \"h\" {\n    kernel \"6.9\"\n    tap-offloads \"csum\"\n    cpu-features \"sse2\"\n}\n";
    let cases: Vec<(String, &[&str])> = vec![
        (
            probe.replace("    cpu-features", "    kernel \"5.15\"\n    cpu-features"),
            &["`kernel`", "`platform \"h\"`", "line 4, column 5", "line 6, column 5"],
        ),
        (
            probe.replace("}\n", "    cpu-features \"sse2\" \"avx\"\n}\n"),
            &["`cpu-features`", "line 6, column 5", "line 7, column 5"],
        ),
        (
            probe.replace(
                "    tap-offloads \"csum\"\n",
                "    tap-offloads \"csum\"\n    tap-offloads\n",
            ),
            &["`tap-offloads`", "line 5, column 5", "line 6, column 5"],
        ),
        (
            format!("{probe}platform \"h\" {{\n    kernel \"5.15\"\n}}\n"),
            &["`platform \"h\"`", "line 3, column 1", "line 8, column 1"],
        ),
        (
            probe.replace("format 1\n", "format 1\nformat 1\n"),
            &["`format`", "line 2, column 1", "line 3, column 1"],
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let s = Scratch::new(&format!("dup-kdl-probe-{i}"));
        let file = s.write("probe.kdl", text);
        every_probe_command_refuses(&s, &file, expected);
    }
    // The probe itself, unrepeated, is a good probe file.
    let s = Scratch::new("dup-kdl-probe-control");
    let good = s.write("probe.kdl", probe);
    let doc = s.path("web.abi").display().to_string();
    let o = vmc(&["compile", &spec("web.kdl"), "--platform", "linux-5.15", "-o", &doc]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = vmc(&["place", &doc, &good]);
    assert!(
        o.status.code() == Some(0) || o.status.code() == Some(1),
        "{}",
        stderr(&o)
    );
}
