//! Commits that are visible before they are durable, held back until they are.
//!
//! On SQLite the writer commits with `synchronous = NORMAL`: its `COMMIT` writes the
//! batch to the WAL and returns, and a thread beside it (`sqlite::sync`) syncs the WAL
//! to disk while the writer runs the next batch. Until that sync ends, the batch is in
//! the operating system's cache: it survives the process crashing, not the machine.
//! So nothing may leave the process on the strength of it before then. The [`Fence`]
//! orders that, by numbering commits:
//!
//! - the writer takes a number *before* it sends each `COMMIT` ([`Fence::committing`]);
//!   a reader that saw the commit's rows therefore finishes after the number was taken;
//! - the sync thread, once a sync that began after commit `n` returned, marks `n`
//!   flushed ([`Fence::flushed`]);
//! - the writer's answerer then answers the batch's operations and announces its status
//!   changes, in commit order, and marks `n` released ([`Fence::released`]);
//! - a read answers only once every commit numbered before its query ended is released
//!   ([`Fence::settle`]). Under writes a read waits for at most one sync; without
//!   writes it waits for nothing.
//!
//! A failed sync may have lost what it was to sync, and a later sync can succeed
//! without it (the kernel forgets the failed pages), so it is final: the fence fails,
//! every operation waiting on it and every later write and read is refused, and signoff
//! must be restarted to read the file back. Nothing that was not durable was answered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

use tokio::sync::Notify;

/// The numbered commits of one writer, and how far they are durable and answered.
#[derive(Default)]
pub(crate) struct Fence {
    /// The number of the newest commit sent (or being sent).
    begun: AtomicU64,
    /// The newest commit that returned, for the sync thread: the next sync covers it.
    returned: Mutex<Returned>,
    wake_sync: Condvar,
    /// The newest commit a finished sync covers.
    flushed: AtomicU64,
    /// The newest commit whose operations were answered and changes announced.
    released: AtomicU64,
    /// Wakes whoever waits on `flushed`, `released` or `failed`.
    moved: Notify,
    /// Why a sync failed; set once, never cleared.
    failed: OnceLock<String>,
    /// Wakes whoever waits for the fence to fail ([`Fence::broken`]).
    broke: Notify,
}

#[derive(Default)]
struct Returned {
    newest: u64,
    closed: bool,
}

/// The fence failed: a sync of the log did not complete.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "the database's write-ahead log could not be synced to disk ({0}); \
     nothing more is written or read until signoff is restarted"
)]
pub(crate) struct SyncFailed(pub(crate) String);

impl From<SyncFailed> for sqlx::Error {
    fn from(failed: SyncFailed) -> Self {
        sqlx::Error::Io(std::io::Error::other(failed))
    }
}

impl From<SyncFailed> for super::StoreError {
    fn from(failed: SyncFailed) -> Self {
        super::StoreError::Database(failed.into())
    }
}

impl Fence {
    /// Numbers the commit about to be sent.
    pub(crate) fn committing(&self) -> u64 {
        self.begun.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The number of the newest commit sent.
    pub(crate) fn newest(&self) -> u64 {
        self.begun.load(Ordering::SeqCst)
    }

    /// Commit `n` returned (whether it succeeded or not): the next sync is to cover it.
    pub(crate) fn returned(&self, n: u64) {
        let mut returned = self.returned.lock().unwrap_or_else(|e| e.into_inner());
        returned.newest = returned.newest.max(n);
        self.wake_sync.notify_one();
    }

    /// For the sync thread: waits until a commit returned that no sync covers yet, and
    /// answers the newest such; `None` once the fence is closed.
    pub(crate) fn next_to_sync(&self) -> Option<u64> {
        let mut returned = self.returned.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if returned.closed {
                return None;
            }
            if returned.newest > self.flushed.load(Ordering::SeqCst) {
                return Some(returned.newest);
            }
            returned = self
                .wake_sync
                .wait(returned)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// For the sync thread: a sync that began after commit `n` returned has ended.
    pub(crate) fn flushed(&self, n: u64) {
        self.flushed.fetch_max(n, Ordering::SeqCst);
        self.moved.notify_waiters();
    }

    /// For the sync thread: a sync failed. Final (see the module's notes).
    pub(crate) fn fail(&self, why: String) {
        let _ = self.failed.set(why);
        self.moved.notify_waiters();
        self.broke.notify_waiters();
    }

    /// Stops the sync thread (its writer is gone).
    pub(crate) fn close(&self) {
        self.returned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed = true;
        self.wake_sync.notify_all();
    }

    /// Why the fence failed, if it did.
    pub(crate) fn failure(&self) -> Option<SyncFailed> {
        self.failed.get().cloned().map(SyncFailed)
    }

    /// Resolves once the fence failed, with why.
    pub(crate) async fn broken(&self) -> SyncFailed {
        loop {
            let notified = self.broke.notified();
            tokio::pin!(notified);
            // Registered before the check, so a failure between the two still wakes it.
            notified.as_mut().enable();
            if let Some(failed) = self.failure() {
                return failed;
            }
            notified.await;
        }
    }

    /// For the writer's answerer: waits until commit `n` is on disk. A sync that failed
    /// after one covering `n` ended does not take `n` back: it is on disk.
    pub(crate) async fn until_flushed(&self, n: u64) -> Result<(), SyncFailed> {
        match self.until(&self.flushed, n).await {
            Err(_) if self.flushed.load(Ordering::SeqCst) >= n => Ok(()),
            reached => reached,
        }
    }

    /// For the writer's answerer: commit `n`'s operations were answered.
    pub(crate) fn released(&self, n: u64) {
        self.released.fetch_max(n, Ordering::SeqCst);
        self.moved.notify_waiters();
    }

    /// For a read that just ended: waits until every commit it may have seen is on disk
    /// and answered.
    pub(crate) async fn settle(&self) -> Result<(), SyncFailed> {
        let seen = self.newest();
        self.until(&self.released, seen).await
    }

    async fn until(&self, mark: &AtomicU64, n: u64) -> Result<(), SyncFailed> {
        // Most reads have nothing to wait for: answered without registering a waiter
        // (the notifier's list is behind a lock every read would take).
        if let Some(reached) = self.reached(mark, n) {
            return reached;
        }
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            // Registered before the check, so a move between the two is not missed.
            moved.as_mut().enable();
            if let Some(reached) = self.reached(mark, n) {
                return reached;
            }
            moved.await;
        }
    }

    /// Whether waiting for `mark` to reach `n` is over: it reached it, or the fence failed.
    fn reached(&self, mark: &AtomicU64, n: u64) -> Option<Result<(), SyncFailed>> {
        if let Some(failed) = self.failure() {
            return Some(Err(failed));
        }
        (mark.load(Ordering::SeqCst) >= n).then_some(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Whether `wait` is still waiting after a moment.
    async fn still_waiting<F: std::future::Future>(wait: F) -> bool {
        tokio::time::timeout(Duration::from_millis(30), wait)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_read_waits_for_every_commit_numbered_before_it_ended_to_be_released() {
        let fence = Fence::default();
        fence
            .settle()
            .await
            .expect("nothing committed, nothing to wait for");
        let n = fence.committing();
        assert!(still_waiting(fence.settle()).await);
        fence.returned(n);
        fence.flushed(n);
        assert!(
            still_waiting(fence.settle()).await,
            "flushed but not yet answered"
        );
        fence.until_flushed(n).await.unwrap();
        fence.released(n);
        fence.settle().await.unwrap();
    }

    #[tokio::test]
    async fn a_waiter_is_woken_by_the_release_it_waits_for() {
        let fence = Arc::new(Fence::default());
        let n = fence.committing();
        let waiting = tokio::spawn({
            let fence = fence.clone();
            async move { fence.settle().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished());
        fence.released(n);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .unwrap()
            .unwrap();
    }

    #[test]
    fn the_sync_thread_is_given_the_newest_commit_returned_and_stops_when_closed() {
        let fence = Fence::default();
        let (a, b) = (fence.committing(), fence.committing());
        fence.returned(a);
        fence.returned(b);
        assert_eq!(fence.next_to_sync(), Some(b), "one sync covers both");
        fence.flushed(b);
        fence.close();
        assert_eq!(fence.next_to_sync(), None);
    }

    #[tokio::test]
    async fn a_failed_sync_fails_every_waiter_and_every_later_read() {
        let fence = Fence::default();
        let n = fence.committing();
        fence.returned(n);
        fence.fail("EIO".into());
        let error = fence.until_flushed(n).await.unwrap_err();
        assert!(error.to_string().contains("EIO"), "{error}");
        assert!(error.to_string().contains("restarted"), "{error}");
        assert!(fence.settle().await.is_err());
        // Even one released earlier: nothing is read from a file that may have lost it.
        fence.released(n);
        assert!(fence.settle().await.is_err());
    }

    /// A commit a finished sync covered is on disk: its operations are answered as
    /// done though a later sync failed before the answerer got to them; the commit
    /// after it is not, and reads are refused all the same.
    #[tokio::test]
    async fn a_commit_synced_before_a_later_sync_failed_is_answered_as_done() {
        let fence = Fence::default();
        let (synced, lost) = (fence.committing(), fence.committing());
        fence.returned(synced);
        fence.flushed(synced);
        fence.returned(lost);
        fence.fail("EIO".into());
        fence.until_flushed(synced).await.expect("on disk");
        assert!(fence.until_flushed(lost).await.is_err());
        assert!(fence.settle().await.is_err());
    }

    #[tokio::test]
    async fn whoever_waits_for_the_fence_to_break_is_woken_by_the_failure_and_only_by_it() {
        let fence = Arc::new(Fence::default());
        let watching = tokio::spawn({
            let fence = fence.clone();
            async move { fence.broken().await }
        });
        let n = fence.committing();
        fence.returned(n);
        fence.flushed(n);
        fence.released(n);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(
            !watching.is_finished(),
            "a sync that ended is not a failure"
        );
        fence.fail("EIO".into());
        let failed = tokio::time::timeout(Duration::from_secs(5), watching)
            .await
            .expect("woken by the failure")
            .unwrap();
        assert!(failed.to_string().contains("EIO"), "{failed}");
        // Asked after the failure, it answers at once.
        let again = tokio::time::timeout(Duration::from_secs(5), fence.broken()).await;
        assert!(again.expect("answers at once").to_string().contains("EIO"));
    }
}
