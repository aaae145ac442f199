//! Helpers shared by the integration tests.
#![allow(dead_code)]

mod skip;
pub mod vmm;

#[allow(unused_imports)]
pub(crate) use skip::{all, available, effective_uid, has, kvm, require, root, test_name};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vmc_compiler::{AbiDocument, CompileInput, PlatformRegistry, Problems, SourceFile};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every example spec in `specs/` as (file stem, text), sorted.
pub fn example_specs() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(repo().join("specs"))
        .expect("specs/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "kdl"))
        .map(|p| {
            let stem = p.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            (stem, std::fs::read_to_string(&p).expect("read a spec"))
        })
        .collect();
    out.sort();
    out
}

/// Compiles spec text for a built-in platform, as if the spec lived in `/vmc/specs`
/// (so documents do not depend on where the checkout is).
pub fn compile_text(text: &str, platform: &str) -> Result<AbiDocument, Problems> {
    compile_named("spec.kdl", text, platform, &PlatformRegistry::builtin())
}

pub fn compile_named(
    name: &str,
    text: &str,
    platform: &str,
    registry: &PlatformRegistry,
) -> Result<AbiDocument, Problems> {
    let source = SourceFile::new(name, text);
    let platform = registry.lookup(platform).map_err(Problems::from)?;
    vmc_compiler::compile(&CompileInput {
        spec: &source,
        platform,
        registry,
        base_dir: Some(Path::new("/vmc/specs")),
        host_cpu_features: None,
    })
}

/// Problems rendered as a user sees them, without colour, for snapshots and assertions.
pub fn render(problems: &Problems) -> String {
    let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor()).with_width(100);
    let mut out = String::new();
    for p in problems.iter() {
        handler.render_report(&mut out, p).expect("render");
        out.push('\n');
    }
    out
}

/// Runs the `vmc` binary.
pub fn vmc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmc"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run vmc")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh scratch directory under the target directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = repo()
            .join("target")
            .join("test-scratch")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    pub fn write(&self, file: &str, contents: impl AsRef<[u8]>) -> String {
        let p = self.path(file);
        std::fs::write(&p, contents).expect("write scratch file");
        p.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Tests that measure the host need root (a throwaway TAP) and /dev/kvm: a check for
/// [`require!`].
pub fn host_access() -> Result<(), String> {
    if effective_uid() != 0 {
        Err("needs root".to_string())
    } else if !Path::new("/dev/kvm").exists() {
        Err("/dev/kvm is missing".to_string())
    } else {
        Ok(())
    }
}

/// The QEMU reference tests need root (a network namespace and a TAP), /dev/kvm,
/// /dev/net/tun, `ip` and QEMU 10 or newer (`scripts/install-qemu.sh`): a check for
/// [`require!`].
pub fn qemu() -> Result<(), String> {
    let mut missing = Vec::new();
    if effective_uid() != 0 {
        missing.push("needs root".to_string());
    }
    for dev in ["/dev/kvm", "/dev/net/tun"] {
        if !Path::new(dev).exists() {
            missing.push(format!("{dev} is missing"));
        }
    }
    if Command::new("ip")
        .arg("-V")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        missing.push("`ip` (iproute2) is missing".to_string());
    }
    match qemu_major_version() {
        Some(major) if major >= 10 => {}
        Some(major) => missing.push(format!(
            "qemu-system-x86_64 is version {major}, needs 10 (run scripts/install-qemu.sh)"
        )),
        None => missing.push("qemu-system-x86_64 is missing (run scripts/install-qemu.sh)".to_string()),
    }
    skip::all(missing.into_iter().map(Err))
}

/// The major version `qemu-system-x86_64 --version` reports.
pub fn qemu_major_version() -> Option<u32> {
    let out = Command::new("qemu-system-x86_64").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text.split("version ").nth(1)?;
    version.split('.').next()?.trim().parse().ok()
}

/// The CPU features the guest sees, from its `selftest: cpuid` lines.
pub fn guest_cpu_features(serial: &str) -> Vec<&'static str> {
    let mut regs = std::collections::HashMap::new();
    for line in serial.lines().filter_map(|l| l.strip_prefix("selftest: cpuid ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let leaf = u32::from_str_radix(words[0].trim_start_matches("0x"), 16).unwrap();
        for pair in words[1..].chunks(2) {
            let value = u32::from_str_radix(pair[1].trim_start_matches("0x"), 16).unwrap();
            regs.insert((leaf, pair[0]), value);
        }
    }
    assert_eq!(regs.len(), 7, "seven feature registers reported:\n{serial}");
    vmc_compiler::cpu::FEATURES
        .iter()
        .filter(|f| {
            let reg = match f.reg {
                vmc_compiler::cpu::Reg::Eax => "eax",
                vmc_compiler::cpu::Reg::Ebx => "ebx",
                vmc_compiler::cpu::Reg::Ecx => "ecx",
                vmc_compiler::cpu::Reg::Edx => "edx",
            };
            regs[&(f.leaf, reg)] & (1 << f.bit) != 0
        })
        .map(|f| f.name)
        .collect()
}
