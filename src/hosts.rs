//! The commands about hosts: probe, platforms (with --host), place; and probe files.

use std::path::{Path, PathBuf};

use vmc_compiler::{platform, PlatformRegistry};

use crate::files::{read_document, read_source, registry};
use crate::{pretty, Failure, PlatformPaths};

/// This host, measured, as a platform.
pub(crate) fn measure_host() -> vmc_compiler::Platform {
    vmc_runtime::host::HostProbe::measure().to_platform(vmc_runtime::host::platform::DEFAULT_NAME)
}

pub(crate) fn probe(name: &str, json: bool) -> Result<u8, Failure> {
    let probe = vmc_runtime::host::HostProbe::measure();
    let platform = probe.to_platform(name);
    let unmeasured = probe.unmeasured();
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
                "unmeasured": unmeasured,
            }))
        );
    } else {
        if let Ok(k) = &probe.kernel {
            outln!("// kernel release {}", k.release);
        }
        for u in &unmeasured {
            outln!("// not measured: {u}");
        }
        out!("{}", platform::to_kdl(&platform));
    }
    for u in &unmeasured {
        errln!("warning: not measured: {u}");
    }
    Ok(0)
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

pub(crate) fn platforms_for_host(
    registry: &PlatformRegistry,
    host: &vmc_compiler::Platform,
    json: bool,
) -> Result<(), Failure> {
    let rows: Vec<(&vmc_compiler::Platform, Vec<(vmc_compiler::check::Group, String)>)> = registry
        .by_age()
        .into_iter()
        .map(|p| (p, vmc_compiler::check::platform_missing(p, host)))
        .collect();
    if json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(p, missing)| {
                serde_json::json!({
                    "name": p.name,
                    "kernel": p.kernel.to_string(),
                    "supported": missing.is_empty(),
                    "missing": missing.iter().map(|(g, c)| format!("{} {c}", g.to_string().to_lowercase())).collect::<Vec<_>>(),
                })
            })
            .collect();
        outln!("{}", pretty(&serde_json::Value::Array(list)));
        return Ok(());
    }
    let width = rows.iter().map(|(p, _)| p.name.len()).max().unwrap_or(0);
    for (p, missing) in rows {
        if missing.is_empty() {
            outln!("{:width$}  supported", p.name);
        } else {
            let what: Vec<String> = missing.iter().map(|(g, c)| format!("{g} {c}")).collect();
            outln!("{:width$}  not supported: this host lacks {}", p.name, what.join(", "));
        }
    }
    Ok(())
}

/// Reads host descriptions (probe files), each with the name it is shown under.
pub(crate) fn load_hosts(
    registry: &PlatformRegistry,
    files: &[PathBuf],
) -> Result<Vec<(String, vmc_compiler::Platform)>, Failure> {
    let mut hosts = Vec::new();
    for file in files {
        let host = registry.load_host(&read_source(file)?)?;
        if host.cpu_features.is_none() {
            return Err(Failure::Message(format!(
                "{} states no cpu-features, so no CPU model can be checked against it; use a file from `vmc probe`",
                file.display()
            )));
        }
        hosts.push((format!("{} ({})", file.display(), host.name), host));
    }
    Ok(hosts)
}

pub(crate) fn place(file: &Path, files: &[PathBuf], paths: &PlatformPaths, json: bool) -> Result<u8, Failure> {
    let doc = read_document(file)?;
    let registry = registry(paths)?;
    let hosts = load_hosts(&registry, files)?;
    let results: Vec<(&str, &Path, Vec<vmc_compiler::check::Shortfall>)> = hosts
        .iter()
        .zip(files)
        .map(|((label, host), path)| {
            (
                label.as_str(),
                path.as_path(),
                vmc_compiler::check::shortfalls(&doc, host),
            )
        })
        .collect();
    if json {
        let list: Vec<serde_json::Value> = results
            .iter()
            .zip(&hosts)
            .map(|((_, path, shortfalls), (_, host))| {
                serde_json::json!({
                    "file": path.display().to_string(),
                    "host": host.name,
                    "can-run": shortfalls.is_empty(),
                    "missing": shortfalls.iter().map(|s| serde_json::json!({
                        "group": s.group.to_string().to_lowercase(),
                        "capability": s.capability,
                        "needed-by": s.needed_by,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        outln!("{}", pretty(&serde_json::Value::Array(list)));
    } else {
        for (label, _, shortfalls) in &results {
            if shortfalls.is_empty() {
                outln!("{label}: can run {}", doc.hash);
            } else {
                outln!("{label}: cannot run it");
                for line in vmc_compiler::check::render(shortfalls, "  host").lines() {
                    outln!("  {line}");
                }
            }
        }
    }
    Ok(if results.iter().any(|(_, _, s)| s.is_empty()) {
        0
    } else {
        1
    })
}
