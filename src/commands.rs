//! The commands that make documents and run them: compile (for a platform, a pool or
//! this host) and run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use vmc_compiler::check::{Host, Verdict};
use vmc_compiler::{AbiDocument, CompileInput, Platform, PlatformRegistry, SourceFile};

use crate::files::{read_document, read_source, registry, spec_dir, write_output};
use crate::hosts::{load_hosts, measure_host, unmeasured_lines, MEASURE_IN_FULL};
use crate::{Failure, PlatformPaths};

/// Says on stderr when the guest's memory is more than this host's RAM. The VM may still
/// run (its memory is overcommitted, as with QEMU), so nothing else changes.
pub(crate) fn warn_memory(doc: &AbiDocument, host: &Host) {
    if let Some(warning) = vmc_compiler::check::memory_warning(doc, host) {
        errln!("warning: {warning}");
    }
}

pub(crate) fn compile(
    spec_path: &Path,
    platform: Option<&str>,
    pool: &[PathBuf],
    paths: &PlatformPaths,
    output: Option<&Path>,
) -> Result<u8, Failure> {
    let source = read_source(spec_path)?;
    let registry = registry(paths)?;
    // The hosts the VM must run on, when known: the pool, or (without --platform) this one.
    let (platform, hosts, pool_given) = match (platform, pool.is_empty()) {
        (Some(name), _) => (registry.lookup(name)?, Vec::new(), false),
        (None, false) => {
            let hosts = load_hosts(&registry, pool)?;
            let unmeasured: String = hosts
                .iter()
                .map(|(label, h)| unmeasured_lines(label, &h.unmeasured))
                .collect();
            if !unmeasured.is_empty() {
                return Err(Failure::Message(format!(
                    "cannot tell which platform every host of the pool supports: some were not measured in full; nothing written\n{unmeasured}probe them again: {MEASURE_IN_FULL}"
                )));
            }
            let refs: Vec<&vmc_compiler::Platform> = hosts.iter().map(|(_, h)| &h.platform).collect();
            let chosen = vmc_compiler::check::choose_platform(&registry, &refs).ok_or_else(|| {
                Failure::Message(
                    "no known platform is supported by every host of the pool; see `vmc platforms --host` on each"
                        .to_string(),
                )
            })?;
            errln!(
                "pool of {} hosts: compiling for `{}`, the newest platform all of them support",
                hosts.len(),
                chosen.name
            );
            (chosen, hosts, true)
        }
        (None, true) => {
            let host = measure_host();
            let chosen = platform_for_host(&registry, &host)?;
            errln!(
                "no --platform given: compiling for `{}`, the newest platform this host supports",
                chosen.name
            );
            (chosen, vec![("this host".to_string(), host)], false)
        }
    };
    // `cpu-model "host"` means this host only when compiling on it for itself.
    let host_cpu = if pool_given {
        None
    } else {
        hosts.first().and_then(|(_, h)| h.platform.cpu_features.as_ref())
    };
    let doc = compile_spec(&source, spec_path, platform, &registry, host_cpu)?;
    // Every host must be able to run the result (the CPU model above all): for a pool
    // that is the point; for this host, a warning, as the VM may be meant for elsewhere.
    let mut refusals = String::new();
    for (name, host) in &hosts {
        let assessment = vmc_compiler::check::assess(&doc, host);
        if assessment.verdict() != Verdict::CanRun {
            refusals += &vmc_compiler::check::render_assessment(&assessment, name);
        }
    }
    if !refusals.is_empty() {
        if pool_given {
            return Err(Failure::Message(format!(
                "some hosts of the pool could not run this VM; nothing written\n{refusals}"
            )));
        }
        errln!("warning: {}", refusals.trim_end());
    }
    let text = doc.to_kdl();
    let out = output
        .map(Path::to_path_buf)
        .unwrap_or_else(|| spec_path.with_extension("abi"));
    write_output(&out, text.as_bytes())?;
    if out == Path::new("-") {
        return Ok(0);
    }
    errln!(
        "compiled {} for {} -> {}",
        spec_path.display(),
        platform.name,
        out.display()
    );
    outln!("{}", doc.hash);
    Ok(0)
}

/// The platform vmc compiles for on this host when none is named: it cannot be told when
/// the host was not measured in full.
fn platform_for_host<'a>(registry: &'a PlatformRegistry, host: &Host) -> Result<&'a Platform, Failure> {
    if !host.unmeasured.is_empty() {
        return Err(Failure::Message(format!(
            "cannot tell which platform this host supports: it was not measured in full\n{}pass --platform NAME; {MEASURE_IN_FULL}",
            unmeasured_lines("this host", &host.unmeasured)
        )));
    }
    vmc_compiler::check::choose_platform(registry, &[&host.platform]).ok_or_else(|| {
        Failure::Message(format!(
            "this host supports none of the known platforms ({}); see `vmc platforms --host`, or pass --platform NAME",
            registry.names().collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Compiles the spec read from `spec_path`, its boot paths taken from its directory.
fn compile_spec(
    source: &SourceFile,
    spec_path: &Path,
    platform: &Platform,
    registry: &PlatformRegistry,
    host_cpu_features: Option<&BTreeSet<String>>,
) -> Result<AbiDocument, Failure> {
    let base_dir = spec_dir(spec_path)?;
    Ok(vmc_compiler::compile(&CompileInput {
        spec: source,
        platform,
        registry,
        base_dir: Some(&base_dir),
        host_cpu_features,
    })?)
}

/// `vmc run`'s flags besides the file and the platform paths.
#[derive(clap::Args)]
pub(crate) struct RunFlags {
    /// Print timings and VM exit counts on stderr at the end.
    #[arg(long)]
    pub stats: bool,
    /// Serve the VM's control socket at PATH (status, pause, resume, snapshot,
    /// migrate; see `vmc status`, `vmc snapshot`, `vmc migrate`). PATH must not exist;
    /// it is removed when the VM stops.
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Continue the guest from a snapshot (`vmc snapshot`) instead of booting it. The
    /// snapshot's format version and ABI hash are checked first: one of another ABI is
    /// refused, naming the values that differ.
    #[arg(long, value_name = "SNAPSHOT", conflicts_with = "incoming")]
    pub restore: Option<PathBuf>,
    /// Wait for a live migration (`vmc migrate`) on unix:PATH or tcp:HOST:PORT and
    /// continue the guest from it. FILE is this host's own document: a source whose
    /// ABI hash differs is refused before any state moves, both sides naming the
    /// values that differ.
    #[arg(long, value_name = "ADDRESS")]
    pub incoming: Option<String>,
    /// Seccomp filters for vmc's threads once the VM is built, one allowlist per
    /// role (main, vcpu, net, api): `enforce` stops vmc (exit 159, naming the call)
    /// at a system call outside the role's list; `log` names it on stderr and lets it
    /// through; `off` installs none.
    #[arg(long, value_name = "MODE", default_value = "enforce")]
    pub seccomp: String,
    /// Drop to this user and group (numbers) once /dev/kvm, the TAPs and the control
    /// socket are open: no supplementary groups, no capabilities. A TAP vmc created
    /// still goes away at the end; the control socket is given to that user.
    #[arg(long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Stop the guest after this long (exit 124): a number of seconds, or with a
    /// unit: 500ms, 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Write one JSON line to FILE at the end, saying who ended the run and why:
    /// {"ended_by":"guest"|"host"|"vmc","reason":…,"exit_code":N, …}; so a script can
    /// tell the guest's own exit code from vmc's failure (see EXIT STATUS).
    #[arg(long, value_name = "FILE")]
    pub exit_status: Option<PathBuf>,
}

/// A duration on the command line: seconds, or a number with ms, s, m or h.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("`{s}` is not a duration (for example 30, 500ms, 30s, 5m, 1h)");
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, ""), |i| s.split_at(i));
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 1e9 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

pub(crate) fn run_vm(file: &Path, paths: &PlatformPaths, flags: &RunFlags) -> Result<u8, Failure> {
    let exit_status = flags
        .exit_status
        .as_deref()
        .map(|p| vmc_runtime::host::files::OutputTarget::resolve(p).map_err(|e| Failure::Message(e.to_string())))
        .transpose()?;
    let result = run_vm_inner(file, paths, flags);
    if let Some(target) = exit_status {
        let line = match &result {
            Ok((code, reason)) => {
                let (by, why) = reason.describe();
                let mut v = serde_json::json!({"ended_by": by, "reason": why, "exit_code": code});
                match reason {
                    vmc_runtime::vm::StopReason::DebugExit(g) => v["guest_code"] = (*g).into(),
                    vmc_runtime::vm::StopReason::Signal(n) => v["signal"] = (*n).into(),
                    _ => {}
                }
                v
            }
            Err(f) => serde_json::json!({
                "ended_by": "vmc",
                "reason": "error",
                "exit_code": crate::EXIT_ERROR,
                "error": match f {
                    Failure::Message(m) => m.clone(),
                    Failure::Problems(p) => p.to_string(),
                    Failure::Stdout(e) => e.to_string(),
                },
            }),
        };
        if let Err(e) = target.write(format!("{line}\n").as_bytes()) {
            errln!("vmc: cannot write the exit status: {e}");
        }
    }
    result.map(|(code, _)| code)
}

fn run_vm_inner(
    file: &Path,
    paths: &PlatformPaths,
    flags: &RunFlags,
) -> Result<(u8, vmc_runtime::vm::StopReason), Failure> {
    use vmc_runtime::run::{RunOptions, Start};
    let stats = flags.stats;
    let start = match (&flags.restore, &flags.incoming) {
        (Some(snapshot), _) => Start::Restore(snapshot.clone()),
        (None, Some(address)) => Start::Incoming(address.parse().map_err(Failure::Message)?),
        (None, None) => Start::Boot,
    };
    let seccomp = flags.seccomp.parse().map_err(Failure::Message)?;
    let user = flags
        .user
        .as_deref()
        .map(vmc_runtime::confine::parse_user)
        .transpose()
        .map_err(Failure::Message)?;
    let timeout = flags
        .timeout
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(Failure::Message)?;
    // First of all: a stop signal from now on ends the run cleanly (the runtime checks
    // between start-up steps), however long probing, compiling or reading takes.
    vmc_runtime::vm::control::install_stop_signal_handlers()
        .map_err(|e| Failure::Message(format!("cannot install signal handlers: {e}")))?;
    let host = measure_host();
    let doc = if file.extension().is_some_and(|e| e == "kdl") {
        let source = read_source(file)?;
        let registry = registry(paths)?;
        let platform = platform_for_host(&registry, &host)?;
        let doc = compile_spec(&source, file, platform, &registry, host.platform.cpu_features.as_ref())?;
        errln!(
            "compiled {} for `{}`: running {}",
            file.display(),
            platform.name,
            doc.hash
        );
        doc
    } else {
        read_document(file)?
    };
    warn_memory(&doc, &host);
    let options = RunOptions {
        start,
        seccomp,
        user,
        timeout,
        api_sock: flags.api_sock.clone(),
        progress: Some(std::sync::Arc::new(|line: &str| errln!("vmc: {line}"))),
    };
    let report = vmc_runtime::run::run_with(
        &doc,
        &host,
        Box::new(std::io::stdout()),
        vmc_runtime::vm::SignalMark::START,
        &options,
    )
    .map_err(|e| Failure::Message(e.to_string()))?;
    match report.outcome.reason {
        vmc_runtime::vm::StopReason::Migrated => errln!("vmc: the VM migrated: it runs on the destination now"),
        vmc_runtime::vm::StopReason::ConsoleClosed => {
            errln!("vmc: the console's reader went away (its pipe closed): the VM was stopped")
        }
        vmc_runtime::vm::StopReason::Timeout => errln!("vmc: the guest ran past --timeout: the VM was stopped"),
        _ => {}
    }
    let code = report.outcome.reason.exit_code();
    if stats {
        let e = &report.outcome.exits;
        errln!(
            "vmc: stopped by {:?} (exit code {code}); first serial byte after {}; total {:.1} ms",
            report.outcome.reason,
            report
                .first_output
                .map_or("-".to_string(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3)),
            report.total.as_secs_f64() * 1e3,
        );
        errln!(
            "vmc: {} VM exits: {} port reads, {} port writes, {} MMIO reads, {} MMIO writes, {} unclaimed, {} other",
            e.total(),
            e.io_in,
            e.io_out,
            e.mmio_read,
            e.mmio_write,
            e.unclaimed,
            e.other
        );
        // SAFETY: getrusage fills the struct it is given.
        let peak_kib = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut usage);
            usage.ru_maxrss
        };
        errln!(
            "vmc: peak RSS {:.1} MiB, of which guest memory resident {:.1} MiB",
            peak_kib as f64 / 1024.0,
            report.guest_resident as f64 / (1 << 20) as f64
        );
        for (id, counters) in &report.net {
            errln!("vmc: {id}: {counters}");
        }
    }
    Ok((u8::try_from(code).unwrap_or(u8::MAX), report.outcome.reason))
}
