//! Shared by vmc's fuzz targets: the compiler's inputs as the CLI builds them, and the
//! properties every accepted input must keep.
//!
//! A panic anywhere (a target's own `assert!` included) is a crash: libFuzzer saves the
//! input under `fuzz/artifacts/TARGET/`.

use std::path::Path;
use std::sync::OnceLock;

use vmc_compiler::{kdlread, AbiDocument, CompileInput, Platform, PlatformRegistry, Problems, SourceFile};

pub mod net;

/// The built-in platforms, parsed once per process.
pub fn builtin() -> &'static PlatformRegistry {
    static REGISTRY: OnceLock<PlatformRegistry> = OnceLock::new();
    REGISTRY.get_or_init(PlatformRegistry::builtin)
}

/// Bytes as the CLI reads a file: refused when too large, binary or not UTF-8.
pub fn source(name: &str, bytes: &[u8]) -> Option<SourceFile> {
    kdlread::source_from_bytes(name, bytes).ok()
}

/// A spec every platform compiles, to try platforms that were read from input.
pub const SMALL_SPEC: &str = r#"vm "fuzz" {
    cpus 2
    memory "256MiB"
    boot { kernel "guest/vmlinuz"; cmdline "console=ttyS0"; }
    net "net0" { tap "vmc-fz0"; host-uso #true; }
    net "net1"
}
"#;

/// Renders problems as `vmc` prints them (miette's graphical report, source lines and
/// labels included), so that every span a problem points at is used.
pub fn render(problems: &Problems) {
    let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .with_wrap_lines(false);
    let mut out = String::new();
    for p in problems.iter() {
        out.clear();
        handler.render_report(&mut out, p).expect("rendering a problem");
    }
}

/// `result`'s value; its problems, if any, rendered.
pub fn ok<T>(result: Result<T, Problems>) -> Option<T> {
    result.map_err(|problems| render(&problems)).ok()
}

/// Compiles `spec` for `platform` as `vmc compile` does, in a fixed directory; when it
/// succeeds, the document must survive the checks every reader makes.
pub fn compile(spec: &SourceFile, platform: &Platform, registry: &PlatformRegistry) -> Option<AbiDocument> {
    let host_cpu_features = platform.cpu_features.as_ref();
    let doc = ok(vmc_compiler::compile(&CompileInput {
        spec,
        platform,
        registry,
        base_dir: Some(Path::new("/srv/specs")),
        host_cpu_features,
    }))?;
    round_trip(&doc);
    Some(doc)
}

/// A document the compiler wrote, or a reader accepted, is read back with the same hash,
/// and writing it again gives the same text: it is a fixed point.
pub fn round_trip(doc: &AbiDocument) {
    let text = doc.to_kdl();
    let again = AbiDocument::from_kdl(&SourceFile::new("round-trip.abi", text.clone()))
        .unwrap_or_else(|problems| panic!("a written document is refused on reading: {problems:?}\n{text}"));
    assert_eq!(again.hash, doc.hash, "the hash changed on reading back\n{text}");
    assert_eq!(again.to_kdl(), text, "writing a document read back changes its text");
}
