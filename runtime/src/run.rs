//! `vmc run`: execute exactly an ABI document, or refuse before creating anything.
//!
//! Order matters: the document was already hash-checked when read; here the host is
//! probed and compared with the document's `requires` (the same check as `vmc check`),
//! and only then are guest memory, vCPUs, TAPs and devices created.

use std::io::Write;
use std::time::{Duration, Instant};

use vmc_compiler::check::{self, Shortfall};
use vmc_compiler::{cpu, AbiDocument, Platform};

use crate::vm::cpuid::CpuidBit;
use crate::vm::{RunOutcome, Vm, VmConfig, VmError};

/// Why `vmc run` did not run the VM (or could not finish running it).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The host lacks capabilities the ABI needs; nothing was created.
    #[error("this host cannot run this ABI; nothing was started\n{}", check::render(.0, "this host"))]
    Refused(Vec<Shortfall>),
    /// The document names no kernel.
    #[error("the document's `host` section names no kernel: add `boot {{ kernel \"PATH\" }}` to the spec")]
    NoKernel,
    /// A boot file could not be read.
    #[error("cannot read the {what} {path}: {source}")]
    ReadBootFile {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The ABI holds a value this runtime cannot build.
    #[error("this runtime cannot build the ABI: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Vm(#[from] VmError),
}

/// What happened during a run, for the exit status and for `--stats`.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub outcome: RunOutcome,
    /// From the start of [`run`] to the guest's first byte on the console.
    pub first_output: Option<Duration>,
    /// From the start of [`run`] to the end of the run.
    pub total: Duration,
}

/// The capabilities `doc` needs that `host` lacks (empty when it can run).
pub fn preflight(doc: &AbiDocument, host: &Platform) -> Result<(), RunError> {
    let shortfalls = check::shortfalls(doc, host);
    if shortfalls.is_empty() {
        Ok(())
    } else {
        Err(RunError::Refused(shortfalls))
    }
}

/// The CPUID bits of every named CPU feature the ABI does not list.
pub fn hidden_cpuid_bits(doc: &AbiDocument) -> Vec<CpuidBit> {
    cpu::FEATURES
        .iter()
        .filter(|f| !doc.abi.cpu.features.iter().any(|n| n == f.name))
        .map(|f| CpuidBit {
            leaf: f.leaf,
            subleaf: f.subleaf,
            reg: match f.reg {
                cpu::Reg::Eax => 0,
                cpu::Reg::Ebx => 1,
                cpu::Reg::Ecx => 2,
                cpu::Reg::Edx => 3,
            },
            bit: f.bit,
        })
        .collect()
}

/// The kernel command line: the host binding's, then one `virtio_mmio.device=` per
/// device at the placement the ABI fixes (the syntax Linux and QEMU's microvm use).
pub fn kernel_cmdline(doc: &AbiDocument) -> String {
    let mut parts: Vec<String> = doc.host.cmdline.iter().filter(|c| !c.is_empty()).cloned().collect();
    for d in &doc.abi.devices {
        parts.push(format!(
            "virtio_mmio.device={}@{:#x}:{}",
            d.mmio_size, d.mmio_base, d.irq
        ));
    }
    parts.join(" ")
}

/// Builds the VM the document describes and runs it to the end. `host` is this host,
/// measured; `console` receives the guest's serial output.
pub fn run(doc: &AbiDocument, host: &Platform, console: Box<dyn Write + Send>) -> Result<RunReport, RunError> {
    let start = Instant::now();
    preflight(doc, host)?;
    let kernel_path = doc.host.kernel.as_ref().ok_or(RunError::NoKernel)?;
    let kernel = read_boot_file("kernel", kernel_path)?;
    let initrd = doc
        .host
        .initrd
        .as_ref()
        .map(|p| read_boot_file("initrd", p))
        .transpose()?;
    let vcpus = u8::try_from(doc.abi.cpu.count)
        .map_err(|_| RunError::Unsupported(format!("{} vCPUs (at most 255)", doc.abi.cpu.count)))?;
    if !doc.abi.devices.is_empty() {
        return Err(RunError::Unsupported(format!(
            "virtio-net device `{}`: this runtime has no virtio-net yet",
            doc.abi.devices[0].id
        )));
    }

    let config = VmConfig {
        hidden_cpuid_bits: hidden_cpuid_bits(doc),
        ..VmConfig::new(doc.abi.memory, vcpus)
    };
    let mut vm = Vm::new(&config)?;
    let first_output = FirstByte::new(console, start);
    let first_output_at = first_output.seen.clone();
    vm.add_legacy_devices(Box::new(first_output))?;
    vm.load_kernel(&kernel, &kernel_cmdline(doc), initrd.as_deref())?;
    let outcome = vm.run()?;
    let first_output = *first_output_at.lock().unwrap_or_else(|e| e.into_inner());
    Ok(RunReport {
        outcome,
        first_output,
        total: start.elapsed(),
    })
}

fn read_boot_file(what: &'static str, path: &str) -> Result<Vec<u8>, RunError> {
    std::fs::read(path).map_err(|source| RunError::ReadBootFile {
        what,
        path: path.to_string(),
        source,
    })
}

/// A console writer that notes when the guest first wrote to it.
struct FirstByte {
    out: Box<dyn Write + Send>,
    start: Instant,
    seen: std::sync::Arc<std::sync::Mutex<Option<Duration>>>,
}

impl FirstByte {
    fn new(out: Box<dyn Write + Send>, start: Instant) -> FirstByte {
        FirstByte {
            out,
            start,
            seen: Default::default(),
        }
    }
}

impl Write for FirstByte {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !buf.is_empty() {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.get_or_insert_with(|| self.start.elapsed());
        }
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
