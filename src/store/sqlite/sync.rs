//! The WAL's sync to disk, on a thread beside the writer.
//!
//! The writer commits with `synchronous = NORMAL` (the `COMMIT` writes the WAL without
//! syncing it) and goes on to its next batch; this thread syncs the WAL for every
//! commit that returned, one `fdatasync` for as many as returned meanwhile, and marks
//! them flushed on the [`Fence`], which holds their answers back until then. With
//! `synchronous = FULL` the sync ran inside each `COMMIT`, on the writer's path: about
//! half a click batch's time (docs/performance-journal.md, "The WAL's sync beside the
//! next batch"). Checkpoints still sync the WAL before they copy it and the database
//! file after (`NORMAL` keeps those).

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::store::durable::Fence;

/// What syncs the log: the file, or a test's stand-in.
pub(crate) trait SyncLog: Send + 'static {
    fn sync(&mut self) -> io::Result<()>;
}

/// The database's WAL file (`<database>-wal`), reopened when SQLite replaced it.
pub(crate) struct WalFile {
    path: PathBuf,
    file: File,
}

impl WalFile {
    /// Opens the WAL of the database at `database` (it exists while a connection is
    /// open in WAL mode).
    pub(crate) fn open(database: &Path) -> io::Result<Self> {
        let mut path = database.as_os_str().to_owned();
        path.push("-wal");
        let path = PathBuf::from(path);
        // Created empty if no connection made it yet: SQLite reads that as an empty log.
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        Ok(WalFile { path, file })
    }
}

impl SyncLog for WalFile {
    fn sync(&mut self) -> io::Result<()> {
        // SQLite truncates the WAL in place (`journal_size_limit`) and deletes it only
        // when its last connection closes, after copying it into the database file and
        // syncing that. Should another file stand at the path, it is the WAL now.
        if std::fs::metadata(&self.path)?.ino() != self.file.metadata()?.ino() {
            self.file = File::options().write(true).open(&self.path)?;
        }
        self.file.sync_data()
    }
}

/// Starts the thread that syncs `log` for `fence`'s commits, until the fence closes.
pub(crate) fn spawn(fence: Arc<Fence>, mut log: Box<dyn SyncLog>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("signoff-wal-sync".into())
        .spawn(move || {
            while let Some(newest) = fence.next_to_sync() {
                match log.sync() {
                    Ok(()) => fence.flushed(newest),
                    Err(error) => {
                        tracing::error!(%error, "SQLite WAL sync failed: refusing every write and read until restarted");
                        fence.fail(error.to_string());
                        return;
                    }
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::store::Store;

    /// A log whose every sync waits for the test: says it began, then returns what the
    /// test sends (`Ok` once the test is gone).
    struct Gated {
        began: mpsc::UnboundedSender<()>,
        ends: std::sync::mpsc::Receiver<io::Result<()>>,
    }

    impl SyncLog for Gated {
        fn sync(&mut self) -> io::Result<()> {
            let _ = self.began.send(());
            self.ends.recv().unwrap_or(Ok(()))
        }
    }

    struct Disk {
        store: Store,
        began: mpsc::UnboundedReceiver<()>,
        ends: std::sync::mpsc::Sender<io::Result<()>>,
        _dir: tempfile::TempDir,
    }

    async fn gated() -> Disk {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let (began, began_rx) = mpsc::unbounded_channel();
        let (ends, ends_rx) = std::sync::mpsc::channel();
        let log = Gated {
            began,
            ends: ends_rx,
        };
        let store = Store::connect_sqlite_synced_by(&url, Box::new(log))
            .await
            .unwrap();
        Disk {
            store,
            began: began_rx,
            ends,
            _dir: dir,
        }
    }

    /// Whether `task` is still running after a moment.
    async fn still_running<T>(task: &JoinHandle<T>) -> bool {
        tokio::time::sleep(Duration::from_millis(50)).await;
        !task.is_finished()
    }

    impl Disk {
        /// A token insert, under way (the store answers whether it inserted).
        fn insert(
            &self,
            name: &'static str,
            hash: &'static str,
        ) -> JoinHandle<crate::store::Result<bool>> {
            let store = self.store.clone();
            tokio::spawn(async move { store.token_insert(name, hash, Utc::now()).await })
        }
    }

    async fn sync_began(disk: &mut Disk) {
        tokio::time::timeout(Duration::from_secs(10), disk.began.recv())
            .await
            .expect("a sync begins once the commit returned")
            .unwrap();
    }

    #[tokio::test]
    async fn a_write_is_answered_and_read_only_once_the_sync_after_its_commit_ended() {
        let mut disk = gated().await;
        let write = disk.insert("agent", "hash-1");
        // The commit returned (the sync is under way), so a reader sees its row.
        sync_began(&mut disk).await;
        let store = disk.store.clone();
        let read = tokio::spawn(async move { store.token_lookup("hash-1").await });
        assert!(
            still_running(&write).await,
            "answered before its sync ended"
        );
        assert!(
            still_running(&read).await,
            "a read answered what is not yet durable"
        );

        disk.ends.send(Ok(())).unwrap();
        assert!(write.await.unwrap().unwrap(), "the token is inserted");
        assert_eq!(read.await.unwrap().unwrap().as_deref(), Some("agent"));
        // Nothing more to wait for: a later read answers at once.
        let later = tokio::time::timeout(Duration::from_secs(5), disk.store.token_lookup("hash-1"))
            .await
            .expect("no sync pending");
        assert_eq!(later.unwrap().as_deref(), Some("agent"));
    }

    #[tokio::test]
    async fn commits_that_return_during_a_sync_share_the_next_one() {
        let mut disk = gated().await;
        let first = disk.insert("a", "hash-a");
        sync_began(&mut disk).await;
        // Two more writes commit while the first sync runs.
        let (second, third) = (disk.insert("b", "hash-b"), disk.insert("c", "hash-c"));
        assert!(still_running(&second).await && still_running(&third).await);

        disk.ends.send(Ok(())).unwrap();
        assert!(first.await.unwrap().unwrap());
        assert!(
            still_running(&second).await,
            "the first sync began before it committed"
        );
        sync_began(&mut disk).await;
        disk.ends.send(Ok(())).unwrap();
        assert!(second.await.unwrap().unwrap() && third.await.unwrap().unwrap());
        assert!(
            disk.began.try_recv().is_err(),
            "the two commits needed one sync, not two"
        );
    }

    #[tokio::test]
    async fn a_failed_sync_fails_its_writes_and_refuses_every_later_write_and_read() {
        let mut disk = gated().await;
        let write = disk.insert("agent", "hash-1");
        sync_began(&mut disk).await;
        disk.ends
            .send(Err(io::Error::other("EIO on the test's disk")))
            .unwrap();
        let error = write.await.unwrap().unwrap_err().to_string();
        assert!(error.contains("could not be synced"), "{error}");
        assert!(error.contains("EIO on the test's disk"), "{error}");
        assert!(error.contains("restarted"), "{error}");

        let refused = disk.store.token_insert("other", "hash-2", Utc::now()).await;
        assert!(refused.unwrap_err().to_string().contains("restarted"));
        assert!(
            disk.began.try_recv().is_err(),
            "a refused write commits nothing, so nothing is synced"
        );
        let read = disk.store.token_lookup("hash-1").await;
        assert!(
            read.unwrap_err()
                .to_string()
                .contains("could not be synced")
        );
    }
}
