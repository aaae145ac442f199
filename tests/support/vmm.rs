//! A `vmc run` in the background, for tests that watch a running VM.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any one step of a VM test may take.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A `vmc run` in a namespace, its stdout and stderr collected apart as they come.
pub struct Vmm {
    pub child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

impl Vmm {
    pub fn start(ns: &str, args: &[&str]) -> Vmm {
        Vmm::spawn(
            Command::new("ip")
                .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_vmc"), "run"])
                .args(args),
        )
    }

    /// Starts `command` (a `vmc run`, or what execs one), its output collected.
    pub fn spawn(command: &mut Command) -> Vmm {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vmc run");
        let collect = |stream: Box<dyn Read + Send>| {
            let sink = Arc::new(Mutex::new(String::new()));
            let s = sink.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut buf = Vec::new();
                // Byte-exact, partial lines included: a restore may continue mid-line.
                while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
                    s.lock().unwrap().push_str(&String::from_utf8_lossy(&buf));
                    buf.clear();
                }
            });
            sink
        };
        let out = collect(Box::new(child.stdout.take().unwrap()));
        let err = collect(Box::new(child.stderr.take().unwrap()));
        Vmm { child, out, err }
    }

    pub fn out(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn err(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    pub fn both(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", tail(&self.out()), self.err())
    }

    /// Waits until `done` holds for (stdout, stderr).
    pub fn wait_until(&mut self, what: &str, done: impl Fn(&str, &str) -> bool) {
        let deadline = Instant::now() + LIMIT;
        while !done(&self.out(), &self.err()) {
            assert!(Instant::now() < deadline, "no {what} within {LIMIT:?}\n{}", self.both());
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                if !done(&self.out(), &self.err()) {
                    panic!("vmc run ended ({status}) before {what}\n{}", self.both());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_for_count(&mut self, n: u64) {
        self.wait_until(&format!("count {n}"), |out, _| last_count(out) >= n);
    }

    pub fn terminate(&self) {
        // `ip netns exec` execs vmc: the child is vmc itself.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Waits for the exit; returns the exit code.
    pub fn wait(&mut self) -> Option<i32> {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The readers drain what was written before the exit.
                std::thread::sleep(Duration::from_millis(100));
                return status.code();
            }
            assert!(Instant::now() < deadline, "vmc run did not exit\n{}", self.both());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Every count the guest printed, in order.
pub fn counts(text: &str) -> Vec<u64> {
    text.split("selftest: count ")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            // Only whole lines: the last may have been cut by the end of a run.
            rest[digits.len()..]
                .starts_with('\n')
                .then(|| digits.parse().ok())
                .flatten()
        })
        .collect()
}

pub fn last_count(text: &str) -> u64 {
    counts(text).last().copied().unwrap_or(0)
}
