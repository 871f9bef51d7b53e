//! Log output of `serve`: one thread writes every line, in batches, and the decision line
//! logged for each review is written without tracing's per-field machinery when the format is
//! JSON (the production format).
//!
//! Why not `tracing-appender`'s non-blocking writer: it hands each line to its thread as a
//! channel message and wakes the thread for it, and `tracing-subscriber`'s JSON formatter
//! builds each line field by field through a map serializer: together a noticeable share of
//! the server's work per request (measured in docs/performance.md).
//! Here a line is appended to a shared buffer; the writer thread is woken only when the
//! buffer was empty and takes everything that arrived in one `write`.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Lines waiting to be written, at most: past this the callers wait for the output, as a
/// direct write would (no line is dropped).
const PENDING_LIMIT: usize = 4 * 1024 * 1024;

/// Lines are written at most this long after they are logged; under load, what arrives
/// in between goes out in one `write`.
const BATCH_WINDOW: Duration = Duration::from_millis(1);

struct Shared {
    pending: Mutex<Pending>,
    /// The writer thread waits here for lines.
    lines: Condvar,
    /// Callers wait here for room when the output is slower than the log.
    room: Condvar,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    closed: bool,
    /// The writer thread has written everything and stopped.
    done: bool,
}

/// Longest wait at exit for the pending lines to be written: an output that takes nothing
/// (a stalled pipe) must not keep the process from exiting.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves bytes that are still lines: carry on.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where log lines go: cheap to clone, safe to write from any thread. One `write` call is
/// one line (tracing-subscriber writes a formatted event with one `write_all`).
#[derive(Clone)]
pub struct LineSink {
    shared: Arc<Shared>,
}

/// Writes what is pending and stops the writer thread when dropped.
pub struct Flush {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread, writing to `output`.
pub fn start(output: impl Write + Send + 'static) -> io::Result<(LineSink, Flush)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        lines: Condvar::new(),
        room: Condvar::new(),
    });
    let writer = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("extsvc-guard-log".into())
        .spawn(move || write_lines(&writer, output))?;
    Ok((
        LineSink {
            shared: Arc::clone(&shared),
        },
        Flush {
            shared,
            thread: Some(thread),
        },
    ))
}

fn write_lines(shared: &Shared, mut output: impl Write) {
    let mut batch = Vec::new();
    loop {
        {
            let mut pending = shared.lock();
            while pending.buf.is_empty() && !pending.closed {
                pending = shared
                    .lines
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if pending.buf.is_empty() {
                // Closed, and everything written.
                pending.done = true;
                drop(pending);
                shared.room.notify_all();
                return;
            }
            std::mem::swap(&mut pending.buf, &mut batch);
        }
        shared.room.notify_all();
        // A log that cannot be written has nowhere to say so; the lines are dropped rather
        // than blocking the requests that log them.
        let _ = output.write_all(&batch).and_then(|()| output.flush());
        batch.clear();
        // Let the next lines gather: under load one write then carries hundreds.
        if !shared.lock().closed {
            std::thread::sleep(BATCH_WINDOW);
        }
    }
}

impl LineSink {
    /// Appends `line` (which ends with a newline) to what the writer thread writes next.
    pub fn push(&self, line: &[u8]) {
        let mut pending = self.shared.lock();
        while pending.buf.len() >= PENDING_LIMIT && !pending.closed {
            pending = self
                .shared
                .room
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let was_empty = pending.buf.is_empty();
        pending.buf.extend_from_slice(line);
        drop(pending);
        // The thread only waits when the buffer is empty: one wake-up per batch, not per line.
        if was_empty {
            self.shared.lines.notify_one();
        }
    }
}

impl Write for &LineSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LineSink {
    type Writer = &'a LineSink;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + FLUSH_TIMEOUT;
        let mut pending = self.shared.lock();
        pending.closed = true;
        self.shared.lines.notify_one();
        self.shared.room.notify_all();
        while !pending.done {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return; // the thread is stuck in a write: leave it
            }
            pending = self
                .shared
                .room
                .wait_timeout(pending, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(pending);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Where JSON decision lines go; set by `serve` when the log format is JSON.
static JSON_DECISIONS: OnceLock<LineSink> = OnceLock::new();

/// Decision lines are written as JSON straight to `sink` from now on.
pub fn write_decisions_as_json(sink: LineSink) {
    let _ = JSON_DECISIONS.set(sink);
}

/// The line logged for each answered review.
#[derive(Debug, Clone, Copy)]
pub struct DecisionLine<'a> {
    pub path: &'a str,
    pub uid: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub operation: &'a str,
    pub dry_run: bool,
    pub verdict: &'a str,
    /// Rule ids of the findings that acted, comma-separated in the line.
    pub rules: &'a [&'a str],
    pub patch_ops: usize,
    pub latency_us: u64,
    /// The denial message, empty when allowed.
    pub denial: &'a str,
}

/// The target decision lines are logged under: `RUST_LOG` filters them by it.
const DECISION_TARGET: &str = "extsvc_guard::server";

impl DecisionLine<'_> {
    /// Logs the line: as JSON written directly when `serve` logs JSON, through tracing
    /// otherwise. `RUST_LOG` applies either way.
    pub fn log(&self) {
        // The event's fields named, as a filter directive may select by them.
        if !tracing::event_enabled!(
            target: DECISION_TARGET,
            tracing::Level::INFO,
            message,
            path,
            uid,
            kind,
            namespace,
            name,
            operation,
            dry_run,
            verdict,
            rules,
            patch_ops,
            latency_us,
            denial
        ) {
            return;
        }
        match JSON_DECISIONS.get() {
            Some(sink) => LINE.with_borrow_mut(|line| {
                line.clear();
                self.write_json(jiff::Timestamp::now(), line);
                sink.push(line);
                // A rare huge denial does not pin its buffer to the thread.
                if line.capacity() > LINE_KEPT {
                    *line = Vec::with_capacity(LINE_START);
                }
            }),
            None => tracing::info!(
                target: DECISION_TARGET,
                path = self.path,
                uid = %self.uid,
                kind = self.kind,
                namespace = %self.namespace,
                name = %self.name,
                operation = self.operation,
                dry_run = self.dry_run,
                verdict = self.verdict,
                rules = %Rules(self.rules),
                patch_ops = self.patch_ops,
                latency_us = self.latency_us,
                denial = self.denial,
                "decision"
            ),
        }
    }

    /// The line tracing-subscriber's JSON format (flattened) writes for the event above,
    /// with the same keys in the same order.
    fn write_json(&self, now: jiff::Timestamp, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "{{\"timestamp\":\"{now:.6}\",\"level\":\"INFO\",\"message\":\"decision\""
        );
        let strings = [
            ("path", self.path),
            ("uid", self.uid),
            ("kind", self.kind),
            ("namespace", self.namespace),
            ("name", self.name),
            ("operation", self.operation),
        ];
        for (key, value) in strings {
            json_field(out, key, value);
        }
        let _ = write!(out, ",\"dry_run\":{}", self.dry_run);
        json_field(out, "verdict", self.verdict);
        write_rules(out, self.rules);
        let _ = write!(
            out,
            ",\"patch_ops\":{},\"latency_us\":{}",
            self.patch_ops, self.latency_us
        );
        json_field(out, "denial", self.denial);
        json_field(out, "target", DECISION_TARGET);
        out.extend_from_slice(b"}\n");
    }
}

fn json_field(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    // A &str always serializes.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// `"rules":"A,B"` as `json_field` would write the joined ids, without joining them first.
fn write_rules(out: &mut Vec<u8>, rules: &[&str]) {
    // Rule ids are plain ASCII; anything that would need escaping takes the general path.
    let plain = |r: &&str| r.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    if !rules.iter().all(plain) {
        json_field(out, "rules", &rules.join(","));
        return;
    }
    out.extend_from_slice(b",\"rules\":\"");
    for (i, rule) in rules.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(rule.as_bytes());
    }
    out.push(b'"');
}

/// Sizes of the per-thread line buffer: its first allocation, and the most it keeps.
const LINE_START: usize = 512;
const LINE_KEPT: usize = 16 * 1024;

thread_local! {
    /// The decision line being written on this thread, reused so a line costs no allocation.
    static LINE: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(LINE_START));
}

struct Rules<'a>(&'a [&'a str]);

impl std::fmt::Display for Rules<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, rule) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(rule)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENIED: DecisionLine<'static> = DecisionLine {
        path: "/validate",
        uid: "705ab4f5-6393-11e8-b7cc-42010a800002",
        kind: "Endpoints",
        namespace: "default",
        name: "mysql-ep",
        operation: "CREATE",
        dry_run: true,
        verdict: "denied",
        rules: &["endpoints-orphaned", "target-disallowed"],
        patch_ops: 0,
        latency_us: 42,
        denial: "[endpoints-orphaned] Endpoints default/mysql-ep: \"quoted\"\n\tand a control \u{1} char",
    };

    /// What tracing-subscriber's JSON format writes for the same event.
    fn as_tracing_writes(line: &DecisionLine) -> Vec<u8> {
        let out = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let out = Arc::clone(&out);
            move || SharedVec(Arc::clone(&out))
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .finish();
        tracing::subscriber::with_default(subscriber, || line.log());
        out.lock().unwrap().clone()
    }

    struct SharedVec(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedVec {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The line from `"level"` on: all but the time it was written.
    fn after_timestamp(line: &[u8]) -> &str {
        let text = std::str::from_utf8(line).unwrap();
        assert!(text.starts_with("{\"timestamp\":\""), "{text}");
        &text[text.find(",\"level\"").unwrap()..]
    }

    #[test]
    fn the_json_decision_line_is_the_line_tracing_writes_byte_for_byte() {
        for line in [
            DENIED,
            DecisionLine {
                rules: &[],
                denial: "",
                dry_run: false,
                ..DENIED
            },
        ] {
            let mut ours = Vec::new();
            line.write_json(jiff::Timestamp::UNIX_EPOCH, &mut ours);
            let theirs = as_tracing_writes(&line);
            assert_eq!(after_timestamp(&ours), after_timestamp(&theirs));
            serde_json::from_slice::<serde_json::Value>(&ours).expect("one JSON line");
        }
    }

    #[test]
    fn rule_ids_are_written_as_their_joined_json_string_even_when_they_need_escaping() {
        let cases: [&[&str]; 5] = [
            &[],
            &["endpoints-orphaned"],
            &["endpoints-orphaned", "target-disallowed"],
            &["quote\"d", "back\\slash"],
            &["tab\there", "ünïcode"],
        ];
        for rules in cases {
            let (mut direct, mut joined) = (Vec::new(), Vec::new());
            write_rules(&mut direct, rules);
            json_field(&mut joined, "rules", &rules.join(","));
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&joined),
                "{rules:?}"
            );
        }
    }

    #[test]
    fn the_timestamp_is_utc_with_microseconds_as_tracing_writes_it() {
        let mut out = Vec::new();
        let at: jiff::Timestamp = "2026-11-30T16:54:00.4223401Z".parse().unwrap();
        DENIED.write_json(at, &mut out);
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["timestamp"], "2026-11-30T16:54:00.422340Z");
        let mut out = Vec::new();
        DENIED.write_json("2026-11-30T16:54:00Z".parse().unwrap(), &mut out);
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["timestamp"], "2026-11-30T16:54:00.000000Z");
    }

    /// An output that records each write.
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_pushed_from_many_threads_is_written_whole_before_the_flush_returns() {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let (sink, flush) = start(Recorder(Arc::clone(&writes))).unwrap();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let sink = sink.clone();
                scope.spawn(move || {
                    for i in 0..5000 {
                        sink.push(format!("thread {t} line {i}\n").as_bytes());
                    }
                });
            }
        });
        drop(flush);
        let text = String::from_utf8(writes.lock().unwrap().concat()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        for t in 0..4 {
            let prefix = format!("thread {t} line ");
            let order: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&prefix))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(order, (0..5000).collect::<Vec<_>>(), "thread {t}");
        }
        // Batched: far fewer writes than lines.
        assert!(writes.lock().unwrap().len() < 20_000);
    }

    /// An output that blocks until told to go on, like a full pipe.
    struct Gate(Arc<(Mutex<bool>, Condvar)>, Arc<Mutex<usize>>);

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (open, opened) = &*self.0;
            let mut open = open.lock().unwrap();
            while !*open {
                open = opened.wait(open).unwrap();
            }
            *self.1.lock().unwrap() += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_output_that_never_takes_a_line_does_not_keep_the_process_from_exiting() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (sink, flush) = start(Gate(Arc::clone(&gate), Arc::new(Mutex::new(0)))).unwrap();
        sink.push(b"stuck\n");
        let started = std::time::Instant::now();
        drop(flush);
        // Returned (after FLUSH_TIMEOUT) although the writer thread is still in its write.
        assert!(started.elapsed() >= FLUSH_TIMEOUT);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
    }

    #[test]
    fn a_blocked_output_makes_callers_wait_past_the_limit_and_loses_no_line() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let written = Arc::new(Mutex::new(0));
        let (sink, flush) = start(Gate(Arc::clone(&gate), Arc::clone(&written))).unwrap();
        let line = vec![b'x'; 1023]
            .into_iter()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        let lines = 3 * PENDING_LIMIT / line.len();
        let pusher = {
            let (sink, line) = (sink.clone(), line.clone());
            std::thread::spawn(move || {
                for _ in 0..lines {
                    sink.push(&line);
                }
            })
        };
        // The pusher cannot finish while the output is blocked: at most the limit is pending
        // and one batch is in the blocked write.
        std::thread::sleep(Duration::from_millis(200));
        assert!(!pusher.is_finished());
        assert!(sink.shared.lock().buf.len() <= PENDING_LIMIT + line.len());
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        pusher.join().unwrap();
        drop(flush);
        assert_eq!(*written.lock().unwrap(), lines * line.len());
    }
}
