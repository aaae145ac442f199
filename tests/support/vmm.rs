//! A `vmc run` in the background, for tests that watch a running VM.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any one step of a VM test may take.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A VMM (`vmc run`, or QEMU) in a process group of its own, its stdout and stderr
/// collected apart as they come; the group is killed if the test ends first.
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

    /// Starts `command` (a VMM, or what execs one), its output collected.
    pub fn spawn(command: &mut Command) -> Vmm {
        let mut child = command
            .stdin(Stdio::null())
            .process_group(0)
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
                // Partial lines included: a restore may continue mid-line. A serial
                // console's carriage returns are dropped, and bytes that are not UTF-8
                // replaced, so that lines read as they were meant.
                while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
                    s.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf).replace('\r', ""));
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

    /// Everything printed, stdout then stderr.
    pub fn output(&self) -> String {
        format!("{}\n{}", self.out(), self.err())
    }

    pub fn both(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", tail(&self.out()), self.err())
    }

    /// Waits until `done` holds for (stdout, stderr).
    pub fn wait_until(&mut self, what: &str, done: impl Fn(&str, &str) -> bool) {
        self.wait_until_within(LIMIT, what, done)
    }

    /// [`Vmm::wait_until`], for at most `limit`; fails if the VMM exits first.
    pub fn wait_until_within(&mut self, limit: Duration, what: &str, done: impl Fn(&str, &str) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(&self.out(), &self.err()) {
            assert!(Instant::now() < deadline, "no {what} within {limit:?}\n{}", self.both());
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                if !done(&self.out(), &self.err()) {
                    panic!("vmc run ended ({status}) before {what}\n{}", self.both());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a line (of stdout or stderr) starting with `prefix`, and returns it.
    pub fn wait_for(&mut self, prefix: &str, limit: Duration) -> String {
        let has = |out: &str, err: &str| out.lines().chain(err.lines()).any(|l| l.starts_with(prefix));
        self.wait_until_within(limit, &format!("`{prefix}`"), has);
        let output = self.output();
        let line = output.lines().find(|l| l.starts_with(prefix)).unwrap_or_default();
        line.to_string()
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
        self.wait_within(LIMIT)
    }

    /// [`Vmm::wait`], for at most `limit`; past it the group is killed and the test fails.
    pub fn wait_within(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The readers drain what was written before the exit.
                std::thread::sleep(Duration::from_millis(200));
                return status.code();
            }
            if Instant::now() >= deadline {
                self.kill_group();
                panic!("the VMM did not exit within {limit:?}\n{}", self.both());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the VMM's process group (the VMM and whatever it started), and reaps it.
    pub fn kill_group(&mut self) {
        // SAFETY: kill() with a negative pid signals the group this VMM leads.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill_group();
        }
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
