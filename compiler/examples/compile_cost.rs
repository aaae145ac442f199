//! How compile time grows with the number of devices: compiles, in-process, specs with
//! 1, 2, 4 and 8 network devices many times each, and prints the microseconds per
//! compile as JSON (`{"1": {"median": …, "min": …, "max": …, "runs": …}, …}`).
//! `scripts/bench` runs it.

use std::path::Path;
use std::time::Instant;

use vmc_compiler::{CompileInput, PlatformRegistry, SourceFile};

fn spec(devices: usize) -> String {
    let mut text = String::from(
        "vm \"cost\" {\n    cpu-model \"x86-64-v1\"\n    memory \"256MiB\"\n    boot {\n        kernel \"guest/vmlinux\"\n    }\n",
    );
    for i in 0..devices {
        text.push_str(&format!(
            "    net \"net{i}\" {{\n        tap \"vmc-tap{i}\"\n        mac \"52:54:00:12:34:{i:02x}\"\n    }}\n"
        ));
    }
    text.push_str("}\n");
    text
}

fn main() {
    let registry = PlatformRegistry::builtin();
    let platform = registry.lookup("linux-6.9").expect("built-in platform");
    let mut out = serde_json::Map::new();
    for devices in [1usize, 2, 4, 8] {
        let source = SourceFile::new("cost.kdl", spec(devices));
        let compile = || {
            vmc_compiler::compile(&CompileInput {
                spec: &source,
                platform,
                registry: &registry,
                base_dir: Some(Path::new("/vmc/specs")),
                host_cpu_features: None,
            })
            .expect("the spec compiles")
        };
        // Warm up, then time each compile on its own.
        for _ in 0..20 {
            compile();
        }
        let mut micros: Vec<f64> = (0..200)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(compile());
                start.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        micros.sort_by(f64::total_cmp);
        out.insert(
            devices.to_string(),
            serde_json::json!({
                "median": micros[micros.len() / 2],
                "min": micros[0],
                "max": micros[micros.len() - 1],
                "runs": micros.len(),
            }),
        );
    }
    println!("{}", serde_json::Value::Object(out));
}
