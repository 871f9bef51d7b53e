//! How many bytes of large reviews are read and judged at once.
//!
//! A review near the body limit (an Endpoints with ~100k addresses) costs several times its
//! size while it is parsed and judged; sixteen of them at once took the server past its
//! Deployment's memory limit, and an OOM-killed webhook with `failurePolicy: Fail` blocks
//! every write it guards. Small reviews, the everyday ones, never wait here.

use tokio::sync::{Semaphore, SemaphorePermit};

/// Bodies below this size are not counted.
pub const LARGE_REVIEW: usize = 64 * 1024;

/// Permits are kibibytes: a `Semaphore` holds at most `u32::MAX` permits per acquire.
const UNIT: usize = 1024;

pub struct LargeReviews {
    budget: Semaphore,
    /// In units; a body larger than the whole budget waits for all of it.
    units: u32,
}

impl LargeReviews {
    pub fn new(budget_bytes: usize) -> LargeReviews {
        let units = u32::try_from(budget_bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        LargeReviews {
            budget: Semaphore::new(units as usize),
            units,
        }
    }

    /// The budget, in bytes.
    pub fn budget_bytes(&self) -> usize {
        self.units as usize * UNIT
    }

    /// Whether a body of `len` bytes needs room; the everyday ones do not.
    pub fn is_large(len: u64) -> bool {
        len >= LARGE_REVIEW as u64
    }

    /// The part of the budget a body of `len` bytes takes: none for a small one.
    fn units_for(&self, len: u64) -> Option<u32> {
        if !LargeReviews::is_large(len) {
            return None;
        }
        let units = len.div_ceil(UNIT as u64);
        Some(u32::try_from(units).unwrap_or(u32::MAX).min(self.units))
    }

    /// Waits until a body of `len` bytes fits in the budget. `None` for a small body (no
    /// wait); the permit returns its share when dropped.
    pub async fn admit(&self, len: u64) -> Option<SemaphorePermit<'_>> {
        let units = self.units_for(len)?;
        // The semaphore is never closed, so acquiring only fails if it were: then admit.
        self.budget.acquire_many(units).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// `--large-review-budget`'s default: one body at the limit, or several smaller ones.
    const DEFAULT_BUDGET: usize = 3 * 1024 * 1024;

    #[test]
    fn small_bodies_take_nothing_and_large_ones_their_size_in_kibibytes() {
        let large = LargeReviews::new(DEFAULT_BUDGET);
        assert_eq!(large.units_for(0), None);
        assert_eq!(large.units_for(LARGE_REVIEW as u64 - 1), None);
        assert_eq!(large.units_for(LARGE_REVIEW as u64), Some(64));
        assert_eq!(large.units_for(1024 * 1024 + 1), Some(1025));
        // More than the whole budget waits for all of it rather than forever.
        assert_eq!(large.units_for(u64::MAX), Some(3072));
        assert_eq!(large.budget_bytes(), DEFAULT_BUDGET);
    }

    #[tokio::test]
    async fn a_large_body_waits_until_there_is_room_and_small_ones_never_wait() {
        let large = LargeReviews::new(DEFAULT_BUDGET);
        let two_mib = 2 * 1024 * 1024;
        let first = large.admit(two_mib).await;
        assert!(first.is_some());
        assert!(large.admit(1024).await.is_none(), "a small body took room");
        let second = tokio::time::timeout(Duration::from_millis(50), large.admit(two_mib)).await;
        assert!(second.is_err(), "the second large body did not wait");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), large.admit(two_mib)).await;
        assert!(matches!(second, Ok(Some(_))));
    }
}
