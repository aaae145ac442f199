//! `vmc`: the command line. Thin: it reads files, asks the compiler, prints results.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod lower_cmd;
use vmc_compiler::diagnostic::Problem;
use vmc_compiler::{kdlread, machine, platform, AbiDocument, CompileInput, PlatformRegistry, Problems, SourceFile};

/// Exit status for any error (bad input, I/O, refused documents).
const EXIT_ERROR: u8 = 2;

#[derive(Parser)]
#[command(
    name = "vmc",
    version,
    about = "Compile a VM spec into a hashed guest-ABI document, and inspect such documents",
    long_about = "vmc turns a KDL VM spec plus a host platform into a fully expanded guest-ABI \
document (.abi) in which every default is explicit and the guest-visible part is hashed. \
Two hosts can run or migrate a VM exactly when they accept the same hash.\n\n\
Exit status: 0 success; 1 `diff` found differences; 2 error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct PlatformPaths {
    /// Also read third-party platform files (*.kdl) from DIR; may be repeated.
    #[arg(long = "platform-path", value_name = "DIR")]
    dirs: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Compile SPEC for a platform into an ABI document (every default explicit, hashed).
    ///
    /// Prints the document's hash on stdout. Nothing is written when the spec has errors.
    Compile {
        /// The VM spec (KDL 2.0).
        spec: PathBuf,
        /// The host platform to compile for, such as `linux-6.9` (see `vmc platforms`);
        /// default: the newest platform this host supports (probed).
        #[arg(long, value_name = "NAME", conflicts_with = "pool")]
        platform: Option<String>,
        /// Compile for a migration pool: the probe files (`vmc probe`, KDL or --json) of
        /// every host the VM may run on. Chooses the newest platform all of them support
        /// and refuses a spec that some host could not run, naming the host and why.
        #[arg(long, value_name = "PROBE", num_args = 1..)]
        pool: Vec<PathBuf>,
        #[command(flatten)]
        paths: PlatformPaths,
        /// Where to write the document (default: SPEC with the extension .abi; `-` for stdout).
        #[arg(short, long, value_name = "OUT")]
        output: Option<PathBuf>,
    },
    /// Print an ABI document (checked); --json is the stable machine interface.
    Show {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the document's hash, recomputed; an error if the stored one disagrees.
    Hash { file: PathBuf },
    /// Each value of the document and where it came from (spec line, machine type, platform, derived).
    Explain {
        file: PathBuf,
        /// A value path (`devices.net0.host-uso`), a prefix (`cpu`) or a property name (`host-uso`).
        property: Option<String>,
    },
    /// Guest-visible differences between two documents: exit 0 equal, 1 different, 2 error.
    Diff { a: PathBuf, b: PathBuf },
    /// The known platforms (built-in and from --platform-path).
    Platforms {
        #[command(flatten)]
        paths: PlatformPaths,
        /// Probe this host and say which platforms it supports, and what it lacks for the others.
        #[arg(long)]
        host: bool,
        #[arg(long)]
        json: bool,
    },
    /// Measure this host (kernel, TAP offloads, KVM capabilities, CPU features KVM can
    /// give a guest) and print it as a platform document, usable with --platform-path.
    Probe {
        /// The platform name to give this host.
        #[arg(long, default_value = vmc_runtime::host::platform::DEFAULT_NAME)]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Can this host run FILE? Exit 0 if so; 1 and every missing capability if not.
    Check { file: PathBuf },
    /// Execute FILE on KVM, exactly as the document says, or refuse before creating
    /// anything. A spec (.kdl) is compiled for this host first. Exits with the guest's
    /// exit code (debug-exit port 0xf4; 128+N when stopped by signal N).
    Run {
        file: PathBuf,
        #[command(flatten)]
        paths: PlatformPaths,
        /// Print timings and VM exit counts on stderr at the end.
        #[arg(long)]
        stats: bool,
    },
    /// Write vmc's self-test guest, a tiny PVH kernel that drives its virtio-net device
    /// and reports on the serial port (see specs/selftest.kdl).
    SelftestGuest {
        /// Where to write the ELF image.
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
    },
    /// Which of these hosts (probe files from `vmc probe`) can run FILE, and why not the
    /// others. Exit 0 if at least one can, 1 if none can.
    Place {
        file: PathBuf,
        #[arg(value_name = "PROBE", required = true)]
        hosts: Vec<PathBuf>,
        #[command(flatten)]
        paths: PlatformPaths,
        #[arg(long)]
        json: bool,
    },
    /// The QEMU command line that gives the guest exactly FILE's ABI, every property explicit.
    Lower {
        file: PathBuf,
        /// The lowering target (only `qemu`: QEMU 10, machine microvm).
        #[arg(long, value_name = "TARGET", default_value = "qemu")]
        to: String,
        /// The arguments after the binary name, as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// The virtio-net properties a spec may set: values, feature bits, requirements.
    Properties {
        /// Only this property.
        name: Option<String>,
    },
    /// The machine types and their full default tables.
    Machines {
        /// Only this machine type.
        name: Option<String>,
    },
}

/// An error for the user: compiler problems (with spans) or a plain message.
enum Failure {
    Problems(Problems),
    Message(String),
}

impl From<Problems> for Failure {
    fn from(p: Problems) -> Self {
        Failure::Problems(p)
    }
}

impl From<Problem> for Failure {
    fn from(p: Problem) -> Self {
        Failure::Problems(p.into())
    }
}

fn main() -> ExitCode {
    // Messages stay on one line each, so they can be searched and quoted.
    let _ = miette::set_hook(Box::new(|_| {
        Box::new(miette::MietteHandlerOpts::new().wrap_lines(false).build())
    }));
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Problems(problems)) => {
            for p in problems.0 {
                eprintln!("{:?}", miette::Report::new(p));
            }
            ExitCode::from(EXIT_ERROR)
        }
        Err(Failure::Message(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::Compile {
            spec,
            platform,
            pool,
            paths,
            output,
        } => compile(&spec, platform.as_deref(), &pool, &paths, output.as_deref()),
        Command::Place {
            file,
            hosts,
            paths,
            json,
        } => place(&file, &hosts, &paths, json),
        Command::Show { file, json } => {
            let doc = read_document(&file)?;
            if json {
                println!("{}", pretty(&doc.to_json()));
            } else {
                print!("{}", doc.to_kdl());
            }
            Ok(0)
        }
        Command::Hash { file } => {
            println!("{}", read_document(&file)?.hash);
            Ok(0)
        }
        Command::Explain { file, property } => {
            let doc = read_document(&file)?;
            print!("{}", vmc_compiler::explain::explain(&doc, property.as_deref())?);
            Ok(0)
        }
        Command::Diff { a, b } => {
            let (da, db) = (read_document(&a)?, read_document(&b)?);
            let differences = vmc_compiler::diff::diff(&da, &db);
            if differences.is_empty() {
                println!("no guest-visible difference ({})", da.hash);
                return Ok(0);
            }
            println!("--- {} ({})", a.display(), da.hash);
            println!("+++ {} ({})", b.display(), db.hash);
            for d in &differences {
                println!("{}", d.render());
            }
            Ok(1)
        }
        Command::Platforms { paths, host, json } => {
            let registry = registry(&paths)?;
            if host {
                platforms_for_host(&registry, &measure_host(), json);
            } else {
                platforms(&registry, json);
            }
            Ok(0)
        }
        Command::Probe { name, json } => probe(&name, json),
        Command::Run { file, paths, stats } => run_vm(&file, &paths, stats),
        Command::SelftestGuest { output } => {
            let image = vmc_runtime::selftest::build_image()
                .map_err(|e| Failure::Message(format!("cannot assemble the self-test guest: {e}")))?;
            write_atomically(&output, &image)?;
            eprintln!(
                "wrote the self-test guest ({} bytes) to {}",
                image.len(),
                output.display()
            );
            Ok(0)
        }
        Command::Check { file } => {
            let doc = read_document(&file)?;
            let host = measure_host();
            let shortfalls = vmc_compiler::check::shortfalls(&doc, &host);
            if shortfalls.is_empty() {
                println!("this host can run {} ({})", file.display(), doc.hash);
                Ok(0)
            } else {
                print!("{}", vmc_compiler::check::render(&shortfalls, "this host"));
                Ok(1)
            }
        }
        Command::Lower { file, to, json } => {
            let doc = read_document(&file)?;
            print!("{}", lower_cmd::run(&file, &to, json, &doc)?);
            Ok(0)
        }
        Command::Properties { name } => {
            let rows: Vec<&vmc_compiler::schema::Property> = match &name {
                Some(n) => vec![vmc_compiler::schema::property(n).ok_or_else(|| {
                    let known = vmc_compiler::schema::VIRTIO_NET.iter().map(|p| p.name);
                    let help = vmc_compiler::diagnostic::suggestion_or(n, known, "`vmc properties` lists them all");
                    Failure::Message(format!("unknown property `{n}`; {help}"))
                })?],
                None => vmc_compiler::schema::VIRTIO_NET.iter().collect(),
            };
            for (i, p) in rows.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{}", vmc_compiler::explain::describe(p));
            }
            Ok(0)
        }
        Command::Machines { name } => {
            let names: Vec<&str> = match &name {
                Some(n) => vec![n.as_str()],
                None => machine::names().collect(),
            };
            for (i, n) in names.iter().enumerate() {
                let m = machine::resolve(n).ok_or_else(|| {
                    Failure::Message(format!(
                        "unknown machine type `{n}` (known: {})",
                        machine::names().collect::<Vec<_>>().join(", ")
                    ))
                })?;
                if i > 0 {
                    println!();
                }
                println!("# {}", m.doc);
                print!("{}", machine::default_table(&m));
            }
            Ok(0)
        }
    }
}

fn compile(
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
            let refs: Vec<&vmc_compiler::Platform> = hosts.iter().map(|(_, h)| h).collect();
            let chosen = vmc_compiler::check::choose_platform(&registry, &refs).ok_or_else(|| {
                Failure::Message(
                    "no known platform is supported by every host of the pool; see `vmc platforms --host` on each"
                        .to_string(),
                )
            })?;
            eprintln!(
                "pool of {} hosts: compiling for `{}`, the newest platform all of them support",
                hosts.len(),
                chosen.name
            );
            (chosen, hosts, true)
        }
        (None, true) => {
            let host = measure_host();
            let chosen = vmc_compiler::check::choose_platform(&registry, &[&host]).ok_or_else(|| {
                Failure::Message(format!(
                    "this host supports none of the known platforms ({}); see `vmc platforms --host`, or pass --platform NAME",
                    registry.names().collect::<Vec<_>>().join(", ")
                ))
            })?;
            eprintln!(
                "no --platform given: compiling for `{}`, the newest platform this host supports",
                chosen.name
            );
            (chosen, vec![("this host".to_string(), host)], false)
        }
    };
    let base_dir = spec_dir(spec_path)?;
    let doc = vmc_compiler::compile(&CompileInput {
        spec: &source,
        platform,
        registry: &registry,
        base_dir: Some(&base_dir),
        // `cpu-model "host"` means this host only when compiling on it for itself.
        host_cpu_features: if pool_given {
            None
        } else {
            hosts.first().and_then(|(_, h)| h.cpu_features.as_ref())
        },
    })?;
    // Every host must be able to run the result (the CPU model above all): for a pool
    // that is the point; for this host, a warning, as the VM may be meant for elsewhere.
    let mut refusals = String::new();
    for (name, host) in &hosts {
        let shortfalls = vmc_compiler::check::shortfalls(&doc, host);
        if !shortfalls.is_empty() {
            refusals += &vmc_compiler::check::render(&shortfalls, name);
        }
    }
    if !refusals.is_empty() {
        if pool_given {
            return Err(Failure::Message(format!(
                "some hosts of the pool could not run this VM; nothing written\n{refusals}"
            )));
        }
        eprint!("warning: {refusals}");
    }
    let text = doc.to_kdl();
    let out = output
        .map(Path::to_path_buf)
        .unwrap_or_else(|| spec_path.with_extension("abi"));
    if out == Path::new("-") {
        print!("{text}");
        return Ok(0);
    }
    write_atomically(&out, text.as_bytes())?;
    eprintln!(
        "compiled {} for {} -> {}",
        spec_path.display(),
        platform.name,
        out.display()
    );
    println!("{}", doc.hash);
    Ok(0)
}

/// Writes through a temporary file and a rename, so a failure never leaves a partial document.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let file_name = path
        .file_name()
        .ok_or_else(|| Failure::Message(format!("{} is not a file path", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Failure::Message(format!("cannot write {}: {e}", path.display())));
    }
    Ok(())
}

fn read_source(path: &Path) -> Result<SourceFile, Failure> {
    let bytes = std::fs::read(path).map_err(|e| Failure::Message(format!("cannot read {}: {e}", path.display())))?;
    Ok(kdlread::source_from_bytes(&path.display().to_string(), &bytes)?)
}

fn read_document(path: &Path) -> Result<AbiDocument, Failure> {
    Ok(AbiDocument::from_kdl(&read_source(path)?)?)
}

fn registry(paths: &PlatformPaths) -> Result<PlatformRegistry, Failure> {
    let mut files = Vec::new();
    for dir in &paths.dirs {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Failure::Message(format!("cannot read platform directory {}: {e}", dir.display())))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "kdl"))
            .collect();
        found.sort();
        for path in found {
            files.push(read_source(&path)?);
        }
    }
    Ok(PlatformRegistry::with_files(&files)?)
}

fn platforms(registry: &PlatformRegistry, json: bool) {
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
        println!("{}", pretty(&serde_json::Value::Array(list)));
        return;
    }
    let width = all.iter().map(|p| p.name.len()).max().unwrap_or(0);
    for p in all {
        let offloads: Vec<&str> = p.tap_offloads.iter().map(|o| o.name()).collect();
        let source = match &p.source {
            platform::PlatformSource::Builtin => String::new(),
            platform::PlatformSource::File(f) => format!("  [{f}]"),
        };
        println!(
            "{:width$}  kernel {:5}  tap {}  {}{source}",
            p.name,
            p.kernel.to_string(),
            offloads.join(","),
            p.description
        );
    }
}

fn run_vm(file: &Path, paths: &PlatformPaths, stats: bool) -> Result<u8, Failure> {
    let probe = vmc_runtime::host::HostProbe::measure();
    let host = probe.to_platform(vmc_runtime::host::platform::DEFAULT_NAME);
    let doc = if file.extension().is_some_and(|e| e == "kdl") {
        let source = read_source(file)?;
        let registry = registry(paths)?;
        let platform = vmc_compiler::check::choose_platform(&registry, &[&host]).ok_or_else(|| {
            Failure::Message("this host supports none of the known platforms; see `vmc platforms --host`".into())
        })?;
        let base_dir = spec_dir(file)?;
        let doc = vmc_compiler::compile(&CompileInput {
            spec: &source,
            platform,
            registry: &registry,
            base_dir: Some(&base_dir),
            host_cpu_features: host.cpu_features.as_ref(),
        })?;
        eprintln!(
            "compiled {} for `{}`: running {}",
            file.display(),
            platform.name,
            doc.hash
        );
        doc
    } else {
        read_document(file)?
    };
    vmc_runtime::vm::control::install_stop_signal_handlers()
        .map_err(|e| Failure::Message(format!("cannot install signal handlers: {e}")))?;
    let report =
        vmc_runtime::run::run(&doc, &host, Box::new(std::io::stdout())).map_err(|e| Failure::Message(e.to_string()))?;
    let code = report.outcome.reason.exit_code();
    if stats {
        let e = &report.outcome.exits;
        eprintln!(
            "vmc: stopped by {:?} (exit code {code}); first serial byte after {}; total {:.1} ms",
            report.outcome.reason,
            report
                .first_output
                .map_or("-".to_string(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3)),
            report.total.as_secs_f64() * 1e3,
        );
        eprintln!(
            "vmc: {} VM exits: {} port reads, {} port writes, {} MMIO reads, {} MMIO writes, {} unclaimed, {} other",
            e.total(),
            e.io_in,
            e.io_out,
            e.mmio_read,
            e.mmio_write,
            e.unclaimed,
            e.other
        );
        for (id, counters) in &report.net {
            eprintln!("vmc: {id}: {counters}");
        }
    }
    Ok(u8::try_from(code).unwrap_or(u8::MAX))
}

fn spec_dir(spec_path: &Path) -> Result<PathBuf, Failure> {
    let dir = spec_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::canonicalize(dir)
        .map_err(|e| Failure::Message(format!("cannot resolve the directory of {}: {e}", spec_path.display())))
}

/// Reads host descriptions (probe files), each with the name it is shown under.
fn load_hosts(
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

fn place(file: &Path, files: &[PathBuf], paths: &PlatformPaths, json: bool) -> Result<u8, Failure> {
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
        println!("{}", pretty(&serde_json::Value::Array(list)));
    } else {
        for (label, _, shortfalls) in &results {
            if shortfalls.is_empty() {
                println!("{label}: can run {}", doc.hash);
            } else {
                println!("{label}: cannot run it");
                for line in vmc_compiler::check::render(shortfalls, "  host").lines() {
                    println!("  {line}");
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

/// This host, measured, as a platform.
fn measure_host() -> vmc_compiler::Platform {
    vmc_runtime::host::HostProbe::measure().to_platform(vmc_runtime::host::platform::DEFAULT_NAME)
}

fn probe(name: &str, json: bool) -> Result<u8, Failure> {
    let probe = vmc_runtime::host::HostProbe::measure();
    let platform = probe.to_platform(name);
    let unmeasured = probe.unmeasured();
    if json {
        let kvm = probe.kvm.as_ref().ok();
        println!(
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
            println!("// kernel release {}", k.release);
        }
        for u in &unmeasured {
            println!("// not measured: {u}");
        }
        print!("{}", platform::to_kdl(&platform));
    }
    for u in &unmeasured {
        eprintln!("warning: not measured: {u}");
    }
    Ok(0)
}

fn platforms_for_host(registry: &PlatformRegistry, host: &vmc_compiler::Platform, json: bool) {
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
        println!("{}", pretty(&serde_json::Value::Array(list)));
        return;
    }
    let width = rows.iter().map(|(p, _)| p.name.len()).max().unwrap_or(0);
    for (p, missing) in rows {
        if missing.is_empty() {
            println!("{:width$}  supported", p.name);
        } else {
            let what: Vec<String> = missing.iter().map(|(g, c)| format!("{g} {c}")).collect();
            println!("{:width$}  not supported: this host lacks {}", p.name, what.join(", "));
        }
    }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
