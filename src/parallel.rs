//! Order-keeping parallel map on the machine's cores, with scoped std threads: no
//! dependency, no pool that outlives the call.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `items.iter().map(f).collect()`, computed on up to as many threads as there are cores.
/// Threads take the next item as they finish one, so uneven items (a huge file beside small
/// ones) still spread. The result is in the order of `items`, whatever order work ran in.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    mine.push((i, f(item)));
                }
                // A poisoned lock only means another worker panicked; the scope re-raises
                // that panic when it ends, so the results here are never read.
                if let Ok(mut done) = done.lock() {
                    done.extend(mine);
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// `items` cut into at most `len / size + 1` runs of `size` (the last one shorter), as
/// ranges: units of work small enough to spread, large enough to be worth a hand-off.
pub fn runs(len: usize, size: usize) -> Vec<std::ops::Range<usize>> {
    let size = size.max(1);
    (0..len.div_ceil(size))
        .map(|k| k * size..((k + 1) * size).min(len))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_the_order_of_the_items() {
        let items: Vec<u64> = (0..1000).collect();
        let out = map(&items, |i| i * 2);
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn no_items_give_no_results() {
        let out: Vec<u8> = map(&Vec::<u8>::new(), |b| *b);
        assert!(out.is_empty());
    }

    #[test]
    fn runs_cover_every_index_once() {
        assert_eq!(runs(10, 4), vec![0..4, 4..8, 8..10]);
        assert_eq!(runs(8, 4), vec![0..4, 4..8]);
        assert!(runs(0, 4).is_empty());
    }
}
