//! `vmc`: the command line. Thin: it reads files, asks the compiler, prints results.

use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Prints to standard output, like `print!`, through [`print_out`]: untrusted text is
/// escaped, and the calling function returns [`Failure::Stdout`] when standard output
/// cannot be written.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::print_out(format_args!($($arg)*))?
    };
}

/// Like [`out!`], with a newline.
macro_rules! outln {
    () => {
        $crate::print_out(format_args!("\n"))?
    };
    ($($arg:tt)*) => {
        $crate::print_out(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

/// Prints a line to standard error, like `eprintln!`, through [`print_err`]: untrusted
/// text is escaped.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::print_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod commands;
mod control;
mod docs;
mod files;
mod hosts;
mod kube_cmd;
mod lower_cmd;

use commands::{compile, run_vm};
use files::{flush_stdout, read_document, registry, write_output};
use hosts::{measure_host, place, platforms, platforms_for_host, probe};
use vmc_compiler::check::Verdict;
use vmc_compiler::diagnostic::{escape_for_terminal, escape_json_for_terminal, unsafe_on_terminal, Problem};
use vmc_compiler::{machine, Problems};

/// Exit status for any error (bad input, I/O, refused documents).
const EXIT_ERROR: u8 = 2;
/// Exit status when standard output is a pipe whose reader has gone: as if killed by
/// SIGPIPE (128 + 13), as the shell reports it for coreutils; nothing is printed.
const EXIT_BROKEN_PIPE: u8 = 128 + libc::SIGPIPE as u8;

/// The examples at the end of `vmc --help`.
const EXAMPLES: &str = "\
Examples:
  vmc compile vm.kdl --platform linux-6.9      # vm.abi: every default explicit, hashed
  vmc diff web-5.15.abi web-6.9.abi            # what a guest would see differently
  vmc probe --json > rack1.json                # on each host: what it can do
  vmc place vm.abi rack1.json rack2.json       # which hosts can run vm.abi, and why not
  vmc run vm.abi --api-sock /run/vm.sock       # run it on KVM, with a control socket
  vmc lower vm.abi --to qemu                   # the same guest ABI as a QEMU command line
  source <(vmc completions bash)               # complete vmc's commands in bash";

#[derive(Parser)]
#[command(
    name = "vmc",
    version,
    about = "Compile a VM spec into a hashed guest-ABI document, and inspect such documents",
    long_about = "vmc turns a KDL VM spec plus a host platform into a fully expanded guest-ABI \
document (.abi) in which every default is explicit and the guest-visible part is hashed. \
Two hosts can run or migrate a VM exactly when they accept the same hash.\n\n\
Exit status: 0 success. 1 a negative answer: `diff` found differences, `check` found that \
this host lacks what the document needs, `place` found that no host can run it, `probe` \
could not measure every part of this host (its document is printed all the same). 2 an \
error (also when standard output cannot be written), or `check` and `place` cannot tell \
(what is needed was not measured). 141 standard output is a pipe closed by its reader (as \
if killed by SIGPIPE), quietly. `run` exits with the guest's own status: see \
`vmc run --help`.\n\n\
Inputs (specs, documents, platform and probe files, kernels and initrds) must be regular \
files: a FIFO, device, socket or directory is refused, and so is a file larger than the \
limit (4 MiB; for a kernel or initrd, the guest's memory), before it is read.",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log what vmc does and decides on stderr (the probe, the TAP and its offloads, what
    /// the guest negotiated, device resets, why the VM stopped): -v info, -vv debug, -vvv
    /// trace. RUST_LOG (for example `vmc_runtime=debug`) overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

/// Sends `tracing`'s events to stderr when asked for (-v or RUST_LOG); nothing otherwise.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let from_env = std::env::var_os("RUST_LOG").is_some();
    if verbose == 0 && !from_env {
        return;
    }
    let level = match verbose {
        0 | 1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = if from_env {
        EnvFilter::from_default_env()
    } else {
        EnvFilter::new(format!("vmc={level},vmc_runtime={level},vmc_compiler={level}"))
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true)
        .try_init();
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
        ///
        /// A regular file is replaced atomically (its mode kept; a new file gets 0644); a
        /// symbolic link is followed and the file it names replaced; a character device
        /// (/dev/null) or FIFO is written through; a directory, block device or socket is
        /// refused, and so is any file this command reads (the spec, platform or probe files).
        #[arg(short, long, value_name = "OUT")]
        output: Option<PathBuf>,
    },
    /// Print an ABI document (checked); --json is the stable machine interface.
    Show {
        /// The ABI document (.abi, from `vmc compile`).
        file: PathBuf,
        /// Print JSON instead of KDL (schemas/show.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// Print the document's hash, recomputed; an error if the stored one disagrees.
    Hash {
        /// The ABI document (.abi).
        file: PathBuf,
    },
    /// Each value of the document and where it came from (spec line, machine type, platform, derived).
    Explain {
        /// The ABI document (.abi).
        file: PathBuf,
        /// A value path (`devices.net0.host-uso`), a prefix (`cpu`) or a property name (`host-uso`).
        property: Option<String>,
    },
    /// Guest-visible differences between two documents: exit 0 equal, 1 different, 2 error.
    Diff {
        /// The first ABI document (shown as `-`, the values before).
        a: PathBuf,
        /// The second ABI document (shown as `+`, the values after).
        b: PathBuf,
    },
    /// The known platforms (built-in and from --platform-path).
    Platforms {
        #[command(flatten)]
        paths: PlatformPaths,
        /// Probe this host and say which platforms it supports, what it lacks for the
        /// others, and for which it cannot tell (a part of the host not measured).
        #[arg(long)]
        host: bool,
        /// Print JSON (schemas/platforms.schema.json; with --host,
        /// schemas/platforms-host.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// Measure this host (kernel, TAP offloads, KVM capabilities, CPU features KVM can
    /// give a guest) and print it as a platform document, usable with --platform-path.
    ///
    /// A part that cannot be measured (without root, or without access to /dev/kvm or
    /// /dev/net/tun) is listed in the document as `unmeasured`, with why, and said on
    /// stderr: other commands then say "cannot tell" rather than "missing". Exit 0 when
    /// every part was measured; 1 when some could not be (the document is printed all
    /// the same); 2 on an error.
    Probe {
        /// The platform name to give this host (1 to 64 letters, digits, `-`, `.`, `_`);
        /// default: its hostname when that is such a name, else `host`.
        #[arg(long, value_name = "NAME", value_parser = hosts::parse_host_name)]
        name: Option<String>,
        /// Print JSON instead of KDL (schemas/probe.schema.json); `--pool` and `place`
        /// read either.
        #[arg(long)]
        json: bool,
    },
    /// Can this host run FILE? Exit 0 if so; 1 and every missing capability if not; 2
    /// when it cannot be told (a capability it needs is in a part of this host that could
    /// not be measured, such as without access to /dev/kvm) or on an error.
    ///
    /// Warns on stderr when the guest's memory is more than this host's RAM (the VM may
    /// still run, its memory overcommitted).
    Check {
        /// The ABI document (.abi).
        file: PathBuf,
    },
    /// Execute FILE on KVM, exactly as the document says, or refuse before creating
    /// anything. A spec (.kdl) is compiled for this host first.
    ///
    /// Refuses (exit 2) when this host lacks a capability the document needs, or when
    /// one could not be measured (no access to /dev/kvm or /dev/net/tun); warns on
    /// stderr when the guest's memory is more than this host's RAM.
    ///
    /// EXIT STATUS: N the guest wrote N to the debug-exit port 0xf4 (so 0 is the guest's
    /// success); 0 the guest reset through the i8042, or the VM migrated away; 3 the guest
    /// triple-faulted; 2 vmc refused or failed (message on stderr); 124 --timeout passed;
    /// 128+N stopped by signal N (130 SIGINT, 143 SIGTERM); 141 the console's reader went
    /// away (the VM is stopped, as any program writing to a closed pipe); 159 a seccomp
    /// stop (128+SIGSYS; the call is named on stderr). A guest can write any value, 2
    /// and 124 included: --exit-status FILE tells them apart.
    #[command(verbatim_doc_comment)]
    Run {
        /// The ABI document (.abi), or a spec (.kdl) to compile for this host first.
        file: PathBuf,
        #[command(flatten)]
        paths: PlatformPaths,
        #[command(flatten)]
        flags: commands::RunFlags,
    },
    /// Ask a running VM (`vmc run --api-sock PATH`) for its state: running, paused,
    /// snapshotting or migrating, with its ABI hash.
    Status {
        /// The VM's control socket.
        socket: PathBuf,
        /// Print the VM's answer as JSON (schemas/status.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// Pause a running VM's vCPUs and devices (`vmc run --api-sock PATH`).
    Pause {
        /// The VM's control socket.
        socket: PathBuf,
    },
    /// Resume a paused VM.
    Resume {
        /// The VM's control socket.
        socket: PathBuf,
    },
    /// Write a running VM's snapshot: its ABI, vCPUs, interrupt controllers, clock,
    /// devices and memory, in one versioned file that `vmc run FILE --restore` reads.
    /// The VM is paused while it is written and then goes on (a paused VM stays paused).
    Snapshot {
        /// The VM's control socket.
        socket: PathBuf,
        /// The snapshot file; replaced atomically (nothing appears under the name unless
        /// the whole snapshot was written).
        #[arg(short, long, value_name = "SNAPSHOT")]
        output: PathBuf,
    },
    /// Move a running VM to another host, live: the destination runs `vmc run FILE
    /// --incoming ADDRESS` with its own document. The ABI hashes are compared before any
    /// state moves: on a difference both sides print the values that differ and the VM
    /// runs on here (exit 2). On success the source exits 0 and this prints the bytes
    /// sent, the rounds, the downtime and the total time.
    Migrate {
        /// The VM's control socket.
        socket: PathBuf,
        /// The destination: unix:PATH or tcp:HOST:PORT.
        #[arg(long, value_name = "ADDRESS")]
        to: String,
        /// The longest the guest may stay paused for the stop-and-copy, in milliseconds:
        /// pre-copy rounds go on (at most 12) until what the guest wrote in the last one
        /// could be sent in this time at that round's rate.
        #[arg(long, value_name = "MS", default_value_t = 300)]
        downtime_limit: u64,
        /// Print the VM's report as JSON (schemas/migrate.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// Write vmc's self-test guest, a tiny PVH kernel that drives its virtio-net device
    /// and reports on the serial port (see specs/selftest.kdl).
    SelftestGuest {
        /// Where to write the ELF image (`-` for stdout). A regular file is replaced
        /// atomically (its mode kept; a new file gets 0644); a symbolic link is followed and
        /// the file it names replaced; a character device (/dev/null) or FIFO is written
        /// through; a directory, block device or socket is refused.
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
    },
    /// Which of these hosts (probe files from `vmc probe`) can run FILE, and why not the
    /// others ("cannot tell" for a host whose probe did not measure what FILE needs).
    /// Exit 0 if at least one can; 1 if none can; 2 if none is known to (some cannot be
    /// told) or on an error.
    #[command(after_help = "Example:\n  vmc place vm.abi rack1.json rack2.json --json")]
    Place {
        /// The ABI document (.abi).
        file: PathBuf,
        /// The hosts: probe files from `vmc probe` (KDL, or JSON from `vmc probe --json`).
        #[arg(value_name = "PROBE", required = true)]
        hosts: Vec<PathBuf>,
        #[command(flatten)]
        paths: PlatformPaths,
        /// Print JSON, one object per host (schemas/place.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// The Kubernetes node labels each host's probe (from `vmc probe`) implies: the TAP
    /// offloads, KVM capabilities and CPU features it has, the platforms it supports and
    /// the parts not measured, under `<group>.vmc.dev/` (such as
    /// `tap-offload.vmc.dev/uso4=true`).
    ///
    /// Prints one `kubectl label node HOST --overwrite ...` command per probe, ready to
    /// run: it sets the host's labels and removes every other label vmc sets, so running
    /// it again after the host changed (a kernel upgrade without USO) drops what it lost.
    /// HOST is the probe's name (`vmc probe --name NODE`). A part not measured gets no
    /// label, so no VM that needs it is placed there. --json prints a list of
    /// {"host": HOST, "labels": {KEY: VALUE}}.
    Labels {
        /// Probe files (`vmc probe`, KDL or --json), one per host.
        #[arg(value_name = "PROBE", required = true)]
        hosts: Vec<PathBuf>,
        #[command(flatten)]
        paths: PlatformPaths,
        /// Print [{"host": HOST, "labels": {KEY: VALUE}}] instead of commands.
        #[arg(long)]
        json: bool,
    },
    /// The node affinity for a pod that runs FILE: it admits exactly the nodes labelled
    /// by `vmc labels` that `vmc place` says can run FILE.
    ///
    /// Prints the YAML to put under the pod's `spec.affinity:` (one node selector term
    /// asking for the label of every TAP offload, KVM capability and CPU feature FILE
    /// needs); --json prints {"nodeAffinity": ...}.
    Affinity {
        /// The ABI document the pod runs.
        file: PathBuf,
        /// Print {"nodeAffinity": ...} instead of YAML.
        #[arg(long)]
        json: bool,
    },
    /// The QEMU command line that gives the guest exactly FILE's ABI, every property explicit.
    #[command(after_help = "Examples:\n  vmc lower vm.abi --to qemu\n  vmc lower vm.abi --json | jq -r '.[]'")]
    Lower {
        /// The ABI document (.abi).
        file: PathBuf,
        /// The lowering target.
        #[arg(long, value_name = "TARGET", value_enum, default_value_t = lower_cmd::Target::Qemu)]
        to: lower_cmd::Target,
        /// Print the arguments after the binary name as a JSON array of strings
        /// (schemas/lower.schema.json).
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
    /// Print a completion script for a shell, such as `source <(vmc completions bash)`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: docs::Shell,
    },
    /// Print vmc's man page (roff), which lists every command; or, with COMMAND, that
    /// command's page. View it with `vmc man | man -l -`.
    Man {
        /// A command, such as `compile`.
        command: Option<String>,
    },
}

/// An error for the user: compiler problems (with spans) or a plain message.
enum Failure {
    Problems(Problems),
    Message(String),
    /// Standard output could not be written.
    Stdout(std::io::Error),
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
    catch_unrouted_stdout_failures();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return command_line_error(e),
    };
    init_logging(cli.verbose);
    match run(cli).and_then(|code| flush_stdout().map(|_| code)) {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Problems(problems)) => {
            // Escaped before miette renders them (source lines included), so that its
            // colours are the only escape sequences it prints.
            for p in vmc_compiler::diagnostic::for_terminal(&problems.0) {
                eprintln!("{:?}", miette::Report::new(p));
            }
            ExitCode::from(EXIT_ERROR)
        }
        Err(Failure::Message(m)) => {
            errln!("error: {}", m.trim_end());
            ExitCode::from(EXIT_ERROR)
        }
        Err(Failure::Stdout(e)) => ExitCode::from(stdout_failed(&e.to_string(), e.kind() == ErrorKind::BrokenPipe)),
    }
}

/// A command line clap refuses. Its message echoes the arguments as they are: when one
/// holds a character unsafe on a terminal, the command line is parsed again without
/// clap's styles, and that message printed escaped. Otherwise clap prints it (help and
/// version on stdout, errors on stderr, coloured where the terminal takes it).
fn command_line_error(e: clap::Error) -> ExitCode {
    let unsafe_argument = std::env::args_os().any(|a| a.to_string_lossy().chars().any(unsafe_on_terminal));
    if e.use_stderr() && unsafe_argument {
        let code = u8::try_from(e.exit_code()).unwrap_or(EXIT_ERROR);
        let plain = <Cli as clap::CommandFactory>::command()
            .styles(clap::builder::Styles::plain())
            .try_get_matches()
            .err()
            .unwrap_or(e);
        errln!("{}", plain.render().ansi().to_string().trim_end());
        return ExitCode::from(code);
    }
    e.exit()
}

/// Prints to standard output with every character unsafe on a terminal escaped (see
/// [`escape_for_terminal`]): names from inputs cannot reach the terminal raw. Documents
/// and JSON hold no such character (they are written with escapes of their own), so
/// they print unchanged. A failure is [`Failure::Stdout`].
fn print_out(args: std::fmt::Arguments) -> Result<(), Failure> {
    match args.as_str() {
        Some(text) => files::stdout_fmt(format_args!("{}", escape_for_terminal(text))),
        None => files::stdout_fmt(format_args!("{}", escape_for_terminal(&args.to_string()))),
    }
}

/// Prints to standard error with every character unsafe on a terminal escaped; the one
/// way the CLI writes its messages there (miette's reports are escaped before rendering).
fn print_err(args: std::fmt::Arguments) {
    eprint!("{}", escape_for_terminal(&args.to_string()));
}

/// The exit status (and message) when standard output cannot be written: a reader that
/// went away ends the command quietly, as SIGPIPE would; any other error is an error.
fn stdout_failed(why: &str, broken_pipe: bool) -> u8 {
    if broken_pipe {
        return EXIT_BROKEN_PIPE;
    }
    errln!("error: cannot write to standard output: {why}");
    EXIT_ERROR
}

/// A net under the `out!` macros: output still printed with `print!` panics when standard
/// output fails ("failed printing to stdout: ..."); that panic ends the command as a
/// failed `out!` would, instead of with a panic message and status 101.
fn catch_unrouted_stdout_failures() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(why) = info
            .payload_as_str()
            .and_then(|m| m.strip_prefix("failed printing to stdout: "))
        {
            let broken_pipe = why.ends_with(&format!("(os error {})", libc::EPIPE));
            std::process::exit(i32::from(stdout_failed(why, broken_pipe)));
        }
        default(info);
    }));
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
        Command::Labels { hosts, paths, json } => kube_cmd::labels(&hosts, &paths, json),
        Command::Affinity { file, json } => kube_cmd::affinity(&file, json),
        Command::Show { file, json } => {
            let doc = read_document(&file)?;
            if json {
                outln!("{}", pretty(&doc.to_json()));
            } else {
                out!("{}", doc.to_kdl());
            }
            Ok(0)
        }
        Command::Hash { file } => {
            outln!("{}", read_document(&file)?.hash);
            Ok(0)
        }
        Command::Explain { file, property } => {
            let doc = read_document(&file)?;
            out!("{}", vmc_compiler::explain::explain(&doc, property.as_deref())?);
            Ok(0)
        }
        Command::Diff { a, b } => {
            let (da, db) = (read_document(&a)?, read_document(&b)?);
            let differences = vmc_compiler::diff::diff(&da, &db);
            if differences.is_empty() {
                outln!("no guest-visible difference ({})", da.hash);
                return Ok(0);
            }
            outln!("--- {} ({})", a.display(), da.hash);
            outln!("+++ {} ({})", b.display(), db.hash);
            for d in &differences {
                outln!("{}", d.render());
            }
            Ok(1)
        }
        Command::Platforms { paths, host, json } => {
            let registry = registry(&paths)?;
            if host {
                platforms_for_host(&registry, &measure_host(), json)?;
            } else {
                platforms(&registry, json)?;
            }
            Ok(0)
        }
        Command::Probe { name, json } => probe(name.as_deref(), json),
        Command::Run { file, paths, flags } => run_vm(&file, &paths, &flags),
        Command::Status { socket, json } => control::status(&socket, json),
        Command::Pause { socket } => control::simple(&socket, "pause"),
        Command::Resume { socket } => control::simple(&socket, "resume"),
        Command::Snapshot { socket, output } => control::snapshot(&socket, &output),
        Command::Migrate {
            socket,
            to,
            downtime_limit,
            json,
        } => control::migrate(&socket, &to, downtime_limit, json),
        Command::SelftestGuest { output } => {
            let image = vmc_selftest::build_image()
                .map_err(|e| Failure::Message(format!("cannot assemble the self-test guest: {e}")))?;
            write_output(&output, &image)?;
            errln!(
                "wrote the self-test guest ({} bytes) to {}",
                image.len(),
                output.display()
            );
            Ok(0)
        }
        Command::Check { file } => {
            let doc = read_document(&file)?;
            let host = measure_host();
            commands::warn_memory(&doc, &host);
            let assessment = vmc_compiler::check::assess(&doc, &host);
            let reasons = vmc_compiler::check::render_assessment(&assessment, "this host");
            match assessment.verdict() {
                Verdict::CanRun => {
                    outln!("this host can run {} ({})", file.display(), doc.hash);
                    Ok(0)
                }
                Verdict::CannotRun => {
                    out!("{reasons}");
                    Ok(1)
                }
                Verdict::CannotTell => Err(Failure::Message(format!(
                    "cannot tell whether this host can run {}: what it needs was not measured\n{}\n{}",
                    file.display(),
                    reasons.trim_end(),
                    hosts::MEASURE_IN_FULL
                ))),
            }
        }
        Command::Lower { file, to, json } => {
            let doc = read_document(&file)?;
            out!("{}", lower_cmd::run(&file, to, json, &doc)?);
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
                    outln!();
                }
                out!("{}", vmc_compiler::explain::describe(p));
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
                    outln!();
                }
                outln!("# {}", m.doc);
                out!("{}", machine::default_table(&m));
            }
            Ok(0)
        }
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { command } => docs::man(command.as_deref()),
    }
}

/// JSON for standard output: pretty, with every character unsafe on a terminal written
/// as a JSON escape (the same value; see [`escape_json_for_terminal`]).
fn pretty(v: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    escape_json_for_terminal(&text).into_owned()
}
