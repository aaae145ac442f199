//! The commands that talk to a running VM through its control socket (`vmc run
//! --api-sock PATH`): status, pause, resume, snapshot, migrate.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use vmc_runtime::migration::api;

use crate::Failure;

/// A snapshot or a migration of a large guest over a slow link takes a while.
const LONG_REQUEST: Duration = Duration::from_secs(3600);
const SHORT_REQUEST: Duration = Duration::from_secs(30);

/// Sends `request`; a refusal becomes a failure carrying the VM's own message.
fn ask(socket: &Path, request: Value, limit: Duration) -> Result<Value, Failure> {
    let answer = api::request(socket, &request, limit).map_err(|e| {
        Failure::Message(format!(
            "cannot reach the VM's control socket {}: {e}",
            socket.display()
        ))
    })?;
    if answer.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(answer);
    }
    let mut message = answer
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("the VM refused without a reason")
        .to_string();
    for line in answer
        .get("differences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        message.push('\n');
        message.push_str(line);
    }
    Err(Failure::Message(message))
}

pub(crate) fn status(socket: &Path, json: bool) -> Result<u8, Failure> {
    let answer = ask(socket, json!({"op": "status"}), SHORT_REQUEST)?;
    if json {
        outln!("{answer}");
    } else {
        outln!(
            "{} {}",
            answer.get("state").and_then(Value::as_str).unwrap_or("?"),
            answer.get("abi_hash").and_then(Value::as_str).unwrap_or("?")
        );
    }
    Ok(0)
}

pub(crate) fn simple(socket: &Path, op: &str) -> Result<u8, Failure> {
    let answer = ask(socket, json!({ "op": op }), SHORT_REQUEST)?;
    outln!("{}", answer.get("state").and_then(Value::as_str).unwrap_or("?"));
    Ok(0)
}

pub(crate) fn snapshot(socket: &Path, output: &Path) -> Result<u8, Failure> {
    // The VM writes the file: it gets the path as this command means it.
    let path = std::path::absolute(output)
        .map_err(|e| Failure::Message(format!("cannot resolve {}: {e}", output.display())))?;
    let path = path
        .to_str()
        .ok_or_else(|| Failure::Message(format!("{} is not valid UTF-8", path.display())))?;
    let answer = ask(socket, json!({"op": "snapshot", "path": path}), LONG_REQUEST)?;
    errln!(
        "wrote the snapshot {} ({} bytes; the guest was paused {:.1} ms)",
        output.display(),
        answer.get("bytes").and_then(Value::as_u64).unwrap_or(0),
        answer.get("paused_ms").and_then(Value::as_f64).unwrap_or(0.0)
    );
    Ok(0)
}

pub(crate) fn migrate(socket: &Path, to: &str, downtime_limit_ms: u64, json: bool) -> Result<u8, Failure> {
    // Checked here too, so a typo is named before the VM is asked.
    to.parse::<vmc_runtime::migration::transfer::Address>()
        .map_err(Failure::Message)?;
    let answer = ask(
        socket,
        json!({"op": "migrate", "to": to, "downtime_limit_ms": downtime_limit_ms}),
        LONG_REQUEST,
    )?;
    if json {
        outln!("{answer}");
        return Ok(0);
    }
    let number = |key: &str| answer.get(key).and_then(Value::as_f64).unwrap_or(0.0);
    outln!(
        "migrated to {to}: {} bytes sent ({} of guest memory) in {} pre-copy rounds; downtime {:.1} ms; total {:.1} ms",
        number("bytes") as u64,
        number("memory_bytes") as u64,
        number("rounds") as u64,
        number("downtime_ms"),
        number("total_ms")
    );
    Ok(0)
}
