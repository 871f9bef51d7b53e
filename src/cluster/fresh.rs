//! Fresh reads of a namespace for confirming cross-object denials, shared by the denials
//! that need one at the same time.
//!
//! A denial may only be confirmed by a read that *started after the request arrived*: an
//! older read may predate the object whose absence the denial rests on. So a request joins
//! the read that is queued to start next, never the one already running; at most one read
//! per namespace runs and one waits. Under a burst of denials in one namespace (a `kubectl
//! apply` of a directory, or a load test) the API server sees about one read per read time
//! instead of one per request, and every answer still rests on a read newer than its request.
//!
//! A read fetches only what the denials of the kind under review rest on ([`FreshScope`]):
//! a Service's on its Endpoints and EndpointSlices, an Endpoints' on the namespace's Services
//! and endpoints, and the namespace's labels only on a policy that selects by them.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;

use crate::cluster::{FreshScope, ManifestView};

/// What one read found: the namespace's objects, or why they could not be read.
pub type ReadResult = Arc<Result<ManifestView, String>>;

/// Reads a namespace afresh; given the namespace name and what to read. Bounded in time by
/// its implementation.
pub type Reader = Arc<
    dyn Fn(String, FreshScope) -> futures::future::BoxFuture<'static, Result<ManifestView, String>>
        + Send
        + Sync,
>;

/// One read, started or queued, and the answer its waiters get.
struct Read {
    answer: watch::Sender<Option<ReadResult>>,
}

impl Read {
    fn new() -> Arc<Read> {
        Arc::new(Read {
            answer: watch::Sender::new(None),
        })
    }
}

#[derive(Default)]
struct Slot {
    running: Option<Arc<Read>>,
    queued: Option<Arc<Read>>,
}

/// Shared namespace reads; cheap to clone.
#[derive(Clone)]
pub struct FreshReads {
    reader: Reader,
    timeout: Duration,
    slots: Arc<Mutex<HashMap<(String, FreshScope), Slot>>>,
}

impl FreshReads {
    /// `timeout` bounds each caller's wait: a read queued behind a slow one does not make
    /// its callers wait for both.
    pub fn new(reader: Reader, timeout: Duration) -> FreshReads {
        FreshReads {
            reader,
            timeout,
            slots: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The `scope` of the namespace as read by a read that started after this call.
    pub async fn read(&self, namespace: &str, scope: FreshScope) -> ReadResult {
        let read = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let key = (namespace.to_owned(), scope);
            let slot = slots.entry(key.clone()).or_default();
            if slot.running.is_none() {
                let read = Read::new();
                slot.running = Some(Arc::clone(&read));
                self.start(key, Arc::clone(&read));
                read
            } else {
                Arc::clone(slot.queued.get_or_insert_with(Read::new))
            }
        };
        let mut answer = read.answer.subscribe();
        let waited = tokio::time::timeout(self.timeout, answer.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(value)) => match value.as_ref() {
                Some(result) => Arc::clone(result),
                None => Arc::new(Err("the read ended without an answer".to_owned())),
            },
            Ok(Err(_)) => Arc::new(Err("the read ended without an answer".to_owned())),
            Err(_) => Arc::new(Err(format!(
                "the API server did not answer within {}ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// Runs `read` on its own task, so that it ends (and starts the queued one) even when
    /// every caller waiting for it has gone.
    fn start(&self, key: (String, FreshScope), read: Arc<Read>) {
        let this = self.clone();
        tokio::spawn(async move {
            // A read that panicked would keep its slot taken, and every later denial in the
            // namespace would wait for it and become a warning: answer it as failed instead.
            let read_once = AssertUnwindSafe((this.reader)(key.0.clone(), key.1));
            let result = Arc::new(read_once.catch_unwind().await.unwrap_or_else(|_| {
                Err("the read failed unexpectedly (see the server's log)".to_owned())
            }));
            {
                let mut slots = this.slots.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(slot) = slots.get_mut(&key) {
                    match slot.queued.take() {
                        Some(next) => {
                            slot.running = Some(Arc::clone(&next));
                            this.start(key.clone(), next);
                        }
                        None => {
                            slots.remove(&key);
                        }
                    }
                }
            }
            read.answer.send_replace(Some(result));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::Kind;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Semaphore;

    /// A reader whose reads finish only when the test lets them, counting starts; each
    /// read's answer names its number.
    fn gated_reader(started: Arc<AtomicUsize>, gate: Arc<Semaphore>) -> Reader {
        Arc::new(move |_namespace, _scope| {
            let n = started.fetch_add(1, Ordering::SeqCst) + 1;
            let gate = Arc::clone(&gate);
            Box::pin(async move {
                let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
                Err(format!("read {n}"))
            })
        })
    }

    /// Shared reads through [`gated_reader`], with the count of reads started and the gate.
    fn gated(timeout: Duration) -> (FreshReads, Arc<AtomicUsize>, Arc<Semaphore>) {
        let started = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Semaphore::new(0));
        let reads = FreshReads::new(
            gated_reader(Arc::clone(&started), Arc::clone(&gate)),
            timeout,
        );
        (reads, started, gate)
    }

    fn which(result: &ReadResult) -> String {
        match result.as_ref() {
            Ok(_) => "a view".to_owned(),
            Err(e) => e.clone(),
        }
    }

    /// A request for `namespace`'s read, on its own task.
    fn spawn_read(
        reads: &FreshReads,
        namespace: &'static str,
    ) -> tokio::task::JoinHandle<ReadResult> {
        let reads = reads.clone();
        tokio::spawn(async move { reads.read(namespace, FOR_ENDPOINTS).await })
    }

    const FOR_ENDPOINTS: FreshScope = FreshScope {
        services: true,
        endpoints: true,
        labels: false,
        consumers: false,
    };

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn requests_arriving_during_a_read_share_the_next_read_not_the_running_one() {
        let (reads, started, gate) = gated(Duration::from_secs(10));
        let first = spawn_read(&reads, "db");
        settle().await;
        assert_eq!(started.load(Ordering::SeqCst), 1);
        // Ten requests arrive while read 1 runs: read 1 may predate what they rest on.
        let later: Vec<_> = (0..10).map(|_| spawn_read(&reads, "db")).collect();
        settle().await;
        assert_eq!(started.load(Ordering::SeqCst), 1, "the next read waits");
        gate.add_permits(1);
        assert_eq!(which(&first.await.unwrap()), "read 1");
        settle().await;
        assert_eq!(started.load(Ordering::SeqCst), 2, "one read for all ten");
        gate.add_permits(1);
        for handle in later {
            assert_eq!(which(&handle.await.unwrap()), "read 2");
        }
        // Idle again: the next request starts its own read at once.
        let again = spawn_read(&reads, "db");
        settle().await;
        assert_eq!(started.load(Ordering::SeqCst), 3);
        gate.add_permits(1);
        assert_eq!(which(&again.await.unwrap()), "read 3");
        assert!(
            reads.slots.lock().unwrap().is_empty(),
            "no slot left behind"
        );
    }

    #[tokio::test]
    async fn namespaces_are_read_independently() {
        let (reads, started, gate) = gated(Duration::from_secs(10));
        let a = spawn_read(&reads, "a");
        let b = spawn_read(&reads, "b");
        settle().await;
        assert_eq!(started.load(Ordering::SeqCst), 2);
        gate.add_permits(2);
        assert!(which(&a.await.unwrap()).starts_with("read "));
        assert!(which(&b.await.unwrap()).starts_with("read "));
    }

    #[tokio::test]
    async fn reads_of_different_scopes_are_not_shared() {
        let (reads, started, gate) = gated(Duration::from_secs(10));
        let for_endpoints = spawn_read(&reads, "db");
        let for_service = {
            let reads = reads.clone();
            let scope = FreshScope::for_denials_of(Kind::Service);
            tokio::spawn(async move { reads.read("db", scope).await })
        };
        settle().await;
        assert_eq!(
            started.load(Ordering::SeqCst),
            2,
            "a read for an Endpoints does not answer for a Service"
        );
        gate.add_permits(2);
        assert!(which(&for_endpoints.await.unwrap()).starts_with("read "));
        assert!(which(&for_service.await.unwrap()).starts_with("read "));
    }

    #[tokio::test]
    async fn a_read_that_panics_is_answered_as_failed_and_the_next_one_runs() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let reader: Reader = Arc::new(move |_namespace, _scope| {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move {
                if n == 1 {
                    panic!("a bug in read {n}");
                }
                Err(format!("read {n}"))
            })
        });
        let reads = FreshReads::new(reader, Duration::from_secs(10));
        let first = reads.read("db", FOR_ENDPOINTS).await;
        assert_eq!(
            which(&first),
            "the read failed unexpectedly (see the server's log)"
        );
        assert_eq!(which(&reads.read("db", FOR_ENDPOINTS).await), "read 2");
        assert!(reads.slots.lock().unwrap().is_empty());
    }

    #[test]
    fn a_denial_is_confirmed_by_reading_the_kinds_it_rests_on() {
        for kind in [Kind::Endpoints, Kind::EndpointSlice] {
            let scope = FreshScope::for_denials_of(kind);
            assert!(scope.services && scope.endpoints && !scope.labels, "{kind}");
        }
        let service = FreshScope::for_denials_of(Kind::Service);
        assert!(service.endpoints && !service.services && !service.labels);
    }

    #[tokio::test]
    async fn a_caller_stops_waiting_after_the_timeout_and_the_read_still_finishes() {
        let (reads, _started, gate) = gated(Duration::from_millis(20));
        let result = reads.read("db", FOR_ENDPOINTS).await;
        assert!(which(&result).contains("did not answer within 20ms"));
        // The abandoned read ends when the API server answers, and frees its slot.
        gate.add_permits(1);
        for _ in 0..100 {
            if reads.slots.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(reads.slots.lock().unwrap().is_empty());
    }
}
