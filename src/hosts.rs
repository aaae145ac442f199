//! The commands about hosts: probe, platforms (with --host), place; and probe files.

use std::path::{Path, PathBuf};

use vmc_compiler::check::{self, Host, Unmeasured, Verdict};
use vmc_compiler::{platform, PlatformRegistry};

use crate::files::{read_document, read_source, registry};
use crate::{pretty, Failure, PlatformPaths};

/// This host, measured: what it has, what could not be measured, and its RAM.
pub(crate) fn measure_host() -> Host {
    vmc_runtime::host::HostProbe::measure().to_host(vmc_runtime::host::platform::DEFAULT_NAME)
}

/// The name `vmc probe` gives this host unless told one: its hostname
/// (`/proc/sys/kernel/hostname`, else uname(2)) when that is a valid platform name, else
/// `host`.
pub(crate) fn host_name() -> String {
    let from_proc = || {
        let mut text = String::new();
        let file = std::fs::File::open("/proc/sys/kernel/hostname").ok()?;
        // A hostname is at most 64 bytes (HOST_NAME_MAX); read a little more, no further.
        std::io::Read::read_to_string(&mut std::io::Read::take(file, 256), &mut text).ok()?;
        Some(text.trim_end_matches('\n').to_string())
    };
    let from_uname = || {
        // SAFETY: uname fills the zeroed struct it is given; its fields are NUL-terminated.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        if unsafe { libc::uname(&mut u) } != 0 {
            return None;
        }
        let bytes: Vec<u8> = u.nodename.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8(bytes).ok()
    };
    from_proc()
        .filter(|n| platform::is_platform_name(n))
        .or_else(|| from_uname().filter(|n| platform::is_platform_name(n)))
        .unwrap_or_else(|| vmc_runtime::host::platform::DEFAULT_NAME.to_string())
}

/// `--name`: a valid platform name, so that the probe file can be read back.
pub(crate) fn parse_host_name(name: &str) -> Result<String, String> {
    if platform::is_platform_name(name) {
        Ok(name.to_string())
    } else {
        Err("use 1 to 64 letters, digits, `-`, `.` or `_`, such as `rack1-a`".to_string())
    }
}

/// One line per part of `host` not measured: `LABEL: PART not measured: WHY`.
pub(crate) fn unmeasured_lines(label: &str, unmeasured: &[Unmeasured]) -> String {
    unmeasured
        .iter()
        .map(|u| format!("{label}: {} not measured: {}\n", u.part, u.why))
        .collect()
}

/// What to do about a host not measured in full.
pub(crate) const MEASURE_IN_FULL: &str =
    "vmc measures a host in full where it can open /dev/kvm and /dev/net/tun and create a TAP (as root)";

/// `vmc probe`: exit 0 when every part was measured; 1 when some could not be (the
/// document is printed all the same, its `unmeasured` naming each part and why).
pub(crate) fn probe(name: Option<&str>, json: bool) -> Result<u8, Failure> {
    let probe = vmc_runtime::host::HostProbe::measure();
    let name = name.map_or_else(host_name, str::to_string);
    let host = probe.to_host(&name);
    let platform = &host.platform;
    if json {
        let kvm = probe.kvm.as_ref().ok();
        outln!(
            "{}",
            pretty(&serde_json::json!({
                "format": platform::PLATFORM_FORMAT,
                "name": platform.name,
                "description": platform.description,
                "kernel": platform.kernel.to_string(),
                "kernel-release": probe.kernel.as_ref().map(|k| k.release.clone()).ok(),
                "tap-offloads": platform.tap_offloads.iter().map(|o| o.name()).collect::<Vec<_>>(),
                "kvm-api-version": kvm.map(|k| k.api_version),
                "kvm-capabilities": platform.kvm_capabilities,
                "cpu-features": platform.cpu_features,
                "unmeasured": check::unmeasured_json(&host.unmeasured),
            }))
        );
    } else {
        if let Ok(k) = &probe.kernel {
            outln!("// kernel release {}", k.release);
        }
        out!("{}", check::probe_kdl(&host));
    }
    if host.unmeasured.is_empty() {
        return Ok(0);
    }
    errln!(
        "vmc probe: this host was not measured in full; its probe lists what is missing as `unmeasured`, not as absent\n{}{MEASURE_IN_FULL}",
        unmeasured_lines("this host", &host.unmeasured)
    );
    Ok(1)
}

pub(crate) fn platforms(registry: &PlatformRegistry, json: bool) -> Result<(), Failure> {
    let all = registry.by_age();
    if json {
        let list: Vec<serde_json::Value> = all
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "description": p.description,
                    "kernel": p.kernel.to_string(),
                    "inherits": p.inherits,
                    "tap-offloads": p.tap_offloads.iter().map(|o| o.name()).collect::<Vec<_>>(),
                    "kvm-capabilities": p.kvm_capabilities,
                    "cpu-features": p.cpu_features,
                    "source": match &p.source {
                        platform::PlatformSource::Builtin => "built-in".to_string(),
                        platform::PlatformSource::File(f) => f.clone(),
                    },
                })
            })
            .collect();
        outln!("{}", pretty(&serde_json::Value::Array(list)));
        return Ok(());
    }
    let width = all.iter().map(|p| p.name.len()).max().unwrap_or(0);
    for p in all {
        let offloads: Vec<&str> = p.tap_offloads.iter().map(|o| o.name()).collect();
        let source = match &p.source {
            platform::PlatformSource::Builtin => String::new(),
            platform::PlatformSource::File(f) => format!("  [{f}]"),
        };
        outln!(
            "{:width$}  kernel {:5}  tap {}  {}{source}",
            p.name,
            p.kernel.to_string(),
            offloads.join(","),
            p.description
        );
    }
    Ok(())
}

pub(crate) fn platforms_for_host(registry: &PlatformRegistry, host: &Host, json: bool) -> Result<(), Failure> {
    let rows: Vec<(&vmc_compiler::Platform, check::PlatformFit)> = registry
        .by_age()
        .into_iter()
        .map(|p| (p, check::platform_fit(p, host)))
        .collect();
    if !host.unmeasured.is_empty() {
        errln!(
            "warning: this host was not measured in full, so for some platforms vmc cannot tell\n{}",
            unmeasured_lines("this host", &host.unmeasured).trim_end()
        );
    }
    if json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(p, fit)| {
                // What needs a capability here is the platform itself: it promises it.
                let needed_by = [format!("platform {}", p.name)];
                let missing = |items: &[(check::Group, String)]| -> Vec<serde_json::Value> {
                    items
                        .iter()
                        .map(|(g, c)| check::missing_json(*g, c, &needed_by))
                        .collect()
                };
                serde_json::json!({
                    "name": p.name,
                    "kernel": p.kernel.to_string(),
                    "supported": fit.verdict() == Verdict::CanRun,
                    "verdict": match fit.verdict() {
                        Verdict::CanRun => "supported",
                        Verdict::CannotRun => "not-supported",
                        Verdict::CannotTell => "cannot-tell",
                    },
                    "missing": missing(&fit.missing),
                    "unmeasured": fit.unknown.iter().map(|(u, needed)| serde_json::json!({
                        "what": u.part.name(),
                        "why": u.why,
                        "needed": missing(needed),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        outln!("{}", pretty(&serde_json::Value::Array(list)));
        return Ok(());
    }
    let width = rows.iter().map(|(p, _)| p.name.len()).max().unwrap_or(0);
    for (p, fit) in rows {
        match fit.verdict() {
            Verdict::CanRun => outln!("{:width$}  supported", p.name),
            Verdict::CannotRun => {
                let what: Vec<String> = fit.missing.iter().map(|(g, c)| format!("{g} {c}")).collect();
                outln!("{:width$}  not supported: this host lacks {}", p.name, what.join(", "));
            }
            Verdict::CannotTell => {
                let parts: Vec<&str> = fit.unknown.iter().map(|(u, _)| u.part.name()).collect();
                outln!("{:width$}  cannot tell: not measured: {}", p.name, parts.join(", "));
            }
        }
    }
    Ok(())
}

/// Reads host descriptions (probe files), each with the name it is shown under.
pub(crate) fn load_hosts(registry: &PlatformRegistry, files: &[PathBuf]) -> Result<Vec<(String, Host)>, Failure> {
    let mut hosts = Vec::new();
    for file in files {
        let host = check::load_host(registry, &read_source(file)?)?;
        if host.platform.cpu_features.is_none() {
            return Err(Failure::Message(format!(
                "{} states no cpu-features, so no CPU model can be checked against it; use a file from `vmc probe`",
                file.display()
            )));
        }
        hosts.push((format!("{} ({})", file.display(), host.platform.name), host));
    }
    Ok(hosts)
}

/// `vmc place`: exit 0 when some host can run the document; 1 when none can; 2 when none
/// is known to, but some could not be told (their probes did not measure what it needs).
pub(crate) fn place(file: &Path, files: &[PathBuf], paths: &PlatformPaths, json: bool) -> Result<u8, Failure> {
    let doc = read_document(file)?;
    let registry = registry(paths)?;
    let hosts = load_hosts(&registry, files)?;
    let results: Vec<(&str, &Path, &Host, check::Assessment)> = hosts
        .iter()
        .zip(files)
        .map(|((label, host), path)| (label.as_str(), path.as_path(), host, check::assess(&doc, host)))
        .collect();
    if json {
        let list: Vec<serde_json::Value> = results
            .iter()
            .map(|(_, path, host, a)| {
                serde_json::json!({
                    "file": path.display().to_string(),
                    "host": host.platform.name,
                    "can-run": a.verdict() == Verdict::CanRun,
                    "verdict": match a.verdict() {
                        Verdict::CanRun => "can-run",
                        Verdict::CannotRun => "cannot-run",
                        Verdict::CannotTell => "cannot-tell",
                    },
                    "missing": a.missing.iter().map(check::Shortfall::to_json).collect::<Vec<_>>(),
                    "unmeasured": a.unknown.iter().map(|(u, needed)| serde_json::json!({
                        "what": u.part.name(),
                        "why": u.why,
                        "needed": needed.iter().map(check::Shortfall::to_json).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        outln!("{}", pretty(&serde_json::Value::Array(list)));
    } else {
        for (label, _, _, a) in &results {
            match a.verdict() {
                Verdict::CanRun => {
                    outln!("{label}: can run {}", doc.hash);
                    continue;
                }
                Verdict::CannotRun => outln!("{label}: cannot run it"),
                Verdict::CannotTell => {
                    let parts: Vec<&str> = a.unknown.iter().map(|(u, _)| u.part.name()).collect();
                    outln!("{label}: cannot tell: not measured: {}", parts.join(", "));
                }
            }
            for line in check::render_assessment(a, "  host").lines() {
                outln!("  {line}");
            }
        }
    }
    let verdicts: Vec<Verdict> = results.iter().map(|(_, _, _, a)| a.verdict()).collect();
    Ok(if verdicts.contains(&Verdict::CanRun) {
        0
    } else if verdicts.contains(&Verdict::CannotTell) {
        errln!("no host is known to be able to run it: some probes did not measure what it needs");
        2
    } else {
        1
    })
}
