//! The write-ahead log: copied back into the database file beside the writer, and cut
//! back to a size once it starts over.
//!
//! A passive checkpoint (the [`checkpointer`]) copies committed WAL frames back into
//! the database file without stopping readers or the writer. SQLite starts the WAL
//! over from its beginning when a write transaction begins with every frame copied.
//! Under constant writes that moment does not come (a pass never ends between one
//! commit and the next `BEGIN`), and the WAL grows for as long as they last: 765 MB
//! after a side-by-side click run. Having the writer copy the last frames itself
//! before a `BEGIN`, so that the WAL starts over on time, was measured and not kept:
//! that copy ends in a sync of the database file and stalled the writer 5–41 ms twice
//! a second under intake (docs/performance-journal.md, "Tried and not kept: starting
//! the WAL over under load"). Instead, once the writes pause and the WAL does start
//! over, it is cut back to [`WalLimits::size_limit`], so a burst does not leave a
//! file of its size behind.

use std::time::Duration;

use sqlx::{SqliteConnection, SqlitePool};

/// When the WAL is copied back and what it is cut back to.
#[derive(Clone, Copy, Debug)]
pub(super) struct WalLimits {
    /// How often committed frames are copied back into the database file.
    pub(super) every: Duration,
    /// Bytes the WAL is cut back to when it starts over (`journal_size_limit`).
    pub(super) size_limit: u64,
}

impl Default for WalLimits {
    /// Every 250 ms; cut back to 64 MiB, more than a second of the heaviest writes
    /// measured, so that a WAL starting over between ordinary batches is not cut and
    /// grown again.
    fn default() -> Self {
        WalLimits {
            every: Duration::from_millis(250),
            size_limit: 64 << 20,
        }
    }
}

/// Copies committed frames into the database file every [`WalLimits::every`], off the
/// writer's path: left to SQLite, every ~1,000 pages one commit would stop to write
/// them back and sync the file, stalling every request in its batch.
pub(super) async fn checkpointer(pool: SqlitePool, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let began = std::time::Instant::now();
        let pass = match pool.acquire().await {
            Ok(mut conn) => passive(&mut conn).await,
            Err(error) => Err(error),
        };
        match pass {
            Ok((frames, copied)) => tracing::debug!(
                frames,
                copied,
                took_us = began.elapsed().as_micros(),
                "WAL copied back"
            ),
            Err(error) => tracing::warn!(%error, "SQLite WAL checkpoint failed; trying again"),
        }
    }
}

/// A passive checkpoint: copies every frame no reader still needs, waiting for
/// nobody. Answers the frames in the WAL and how many of them are copied.
async fn passive(conn: &mut SqliteConnection) -> sqlx::Result<(i64, i64)> {
    // busy (another checkpoint was running), frames in the WAL, frames copied
    let (_busy, frames, copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(conn)
        .await?;
    Ok((frames, copied))
}

#[cfg(test)]
mod tests {
    use super::super::tx::SqliteTx;
    use super::*;
    use crate::store::Schema;
    use crate::store::backend::Tx;

    async fn commit(tx: &mut SqliteTx, statement: &str) {
        tx.begin().await.unwrap();
        tx.defer().push(statement);
        tx.commit(false).await.unwrap();
    }

    fn wal_len(dir: &tempfile::TempDir) -> u64 {
        std::fs::metadata(dir.path().join("s.db-wal"))
            .unwrap()
            .len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wal_grown_by_back_to_back_commits_is_cut_back_once_they_pause() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        // The checkpointer makes one pass, at the start: a pass under way as the
        // writer begins keeps the WAL from starting over (until the next pause), and
        // with one every few milliseconds the test failed on that chance most times.
        let limits = WalLimits {
            every: Duration::from_secs(3600),
            size_limit: 256 << 10,
        };
        let (changes, _) = tokio::sync::broadcast::channel(16);
        let (_reads, mut tx) =
            super::super::open_with(&url, Schema::Migrate, changes, limits, None)
                .await
                .unwrap();
        commit(&mut tx, "CREATE TABLE wal_test (body BLOB)").await;

        // With no pause between commits (as the writer under load) the WAL never
        // starts over: 500 rows of a page and 3 overflow pages, some 4 MB.
        let row = "INSERT INTO wal_test (body) VALUES (randomblob(6000))";
        for _ in 0..500 {
            commit(&mut tx, row).await;
        }
        let grown = wal_len(&dir);
        assert!(grown > 2 << 20, "the WAL grew to only {grown} bytes");

        // A pause: every frame is copied back (here by the test, as the checkpointer
        // would), and the next commit starts the WAL over and cuts it back.
        let copied = async {
            loop {
                let (frames, copied) = passive(tx.conn().await.unwrap()).await.unwrap();
                if frames == copied {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), copied)
            .await
            .expect("every frame is copied back once the writes pause");
        commit(&mut tx, row).await;
        let cut = wal_len(&dir);
        assert!(
            cut <= limits.size_limit,
            "the WAL is {cut} bytes after it started over (grown to {grown}, limit {})",
            limits.size_limit
        );
        // Every row is in the database, whatever the WAL did.
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM wal_test")
            .fetch_one(tx.conn().await.unwrap())
            .await
            .unwrap();
        assert_eq!(rows, 501);
    }
}
