//! Reads of one kind by key, coalesced into one statement when they arrive together.
//! At most `slots` such statements run at once; the reads that arrive while all are
//! busy wait in a queue, and the next free slot reads them together (up to `most`
//! keys). On PostgreSQL a one-row read costs mostly its statement's fixed share (the
//! round trip, the protocol's messages, the executor's start on both sides), so under
//! load a statement for many keys costs little more than one for a single key. When
//! a slot is free a read starts at once, alone: nothing waits to fill a batch.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Result, StoreError};

type Answer<V> = oneshot::Sender<Result<Option<V>>>;

/// A queue of reads by key, answered by batches (see the module's documentation);
/// cheap to clone. Its task ends when the last clone is dropped.
pub(crate) struct Coalescer<K, V> {
    queue: mpsc::UnboundedSender<(K, Answer<V>)>,
}

impl<K, V> Clone for Coalescer<K, V> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<K, V> Coalescer<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// Starts the queue's task (on the current runtime). `read` reads the keys it is
    /// given in one statement and answers what it found by key; a key it does not
    /// answer does not exist.
    pub(crate) fn spawn<F, Fut>(slots: usize, most: usize, read: F) -> Self
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HashMap<K, V>>> + Send + 'static,
    {
        let (queue, waiting) = mpsc::unbounded_channel();
        let slots = Arc::new(Semaphore::new(slots.max(1)));
        tokio::spawn(serve(waiting, slots, most.max(1), Arc::new(read)));
        Self { queue }
    }

    /// The value of `key`, read alone or with the reads queued beside it.
    pub(crate) async fn get(&self, key: K) -> Result<Option<V>> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send((key, answer))
            .map_err(|_| StoreError::Closed)?;
        // A read whose task failed (a panic) answers nothing.
        answered.await.map_err(|_| StoreError::Closed)?
    }
}

/// Takes the queued reads in batches, each when a slot is free, and runs each batch on
/// a task of its own.
async fn serve<K, V, F, Fut>(
    mut waiting: mpsc::UnboundedReceiver<(K, Answer<V>)>,
    slots: Arc<Semaphore>,
    most: usize,
    read: Arc<F>,
) where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + 'static,
    F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<HashMap<K, V>>> + Send + 'static,
{
    while let Some(first) = waiting.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < most
            && let Ok(next) = waiting.try_recv()
        {
            batch.push(next);
        }
        let read = read.clone();
        tokio::spawn(async move {
            let keys = batch.iter().map(|(key, _)| key.clone()).collect();
            let found = read(keys).await;
            drop(slot);
            answer(batch, found);
        });
    }
}

/// Answers each read of `batch` from what its statement `found`; a failed statement
/// fails every read in it.
fn answer<K: Eq + Hash, V: Clone>(batch: Vec<(K, Answer<V>)>, found: Result<HashMap<K, V>>) {
    match found {
        Ok(found) => {
            for (key, answer) in batch {
                // A reader that went away (its request was cancelled) needs no answer.
                let _ = answer.send(Ok(found.get(&key).cloned()));
            }
        }
        Err(error) => {
            let error = error.to_string();
            for (_, answer) in batch {
                let failed = sqlx::Error::Protocol(format!("a batched read failed: {error}"));
                let _ = answer.send(Err(StoreError::Database(failed)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// The keys of each statement run, in order.
    type Statements = Arc<Mutex<Vec<Vec<u32>>>>;

    /// A coalescer over a map whose reads are recorded (the keys of each statement)
    /// and held until `gate` opens.
    fn recorded(
        slots: usize,
        most: usize,
        gate: Arc<tokio::sync::Notify>,
    ) -> (Coalescer<u32, String>, Statements) {
        let statements = Arc::new(Mutex::new(Vec::new()));
        let seen = statements.clone();
        let coalescer = Coalescer::spawn(slots, most, move |keys: Vec<u32>| {
            seen.lock().unwrap().push(keys.clone());
            let gate = gate.clone();
            async move {
                gate.notified().await;
                Ok(keys
                    .into_iter()
                    .filter(|key| key % 2 == 0)
                    .map(|key| (key, format!("value {key}")))
                    .collect())
            }
        });
        (coalescer, statements)
    }

    #[tokio::test]
    async fn reads_that_arrive_while_the_slot_is_busy_share_one_statement() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let (coalescer, statements) = recorded(1, 3, gate.clone());
        let first = tokio::spawn({
            let coalescer = coalescer.clone();
            async move { coalescer.get(2).await }
        });
        // The first read holds the only slot; the next four queue behind it.
        while statements.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let queued: Vec<_> = [4, 5, 4, 6]
            .into_iter()
            .map(|key| {
                let coalescer = coalescer.clone();
                tokio::spawn(async move { coalescer.get(key).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.notify_one();
        assert_eq!(first.await.unwrap().unwrap().as_deref(), Some("value 2"));
        // The next statement takes at most three of the four, in their order.
        while statements.lock().unwrap().len() < 2 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        while statements.lock().unwrap().len() < 3 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        let mut answers = Vec::new();
        for read in queued {
            answers.push(read.await.unwrap().unwrap());
        }
        assert_eq!(
            answers,
            [
                Some("value 4".to_string()),
                None,
                Some("value 4".to_string()),
                Some("value 6".to_string())
            ],
            "each read gets its own key's value; an odd key does not exist"
        );
        assert_eq!(
            *statements.lock().unwrap(),
            [vec![2], vec![4, 5, 4], vec![6]]
        );
    }

    #[tokio::test]
    async fn a_failed_statement_fails_each_read_in_it_and_the_next_ones_still_run() {
        let calls = Arc::new(Mutex::new(0));
        let counted = calls.clone();
        let coalescer = Coalescer::spawn(2, 8, move |keys: Vec<u32>| {
            let call = {
                let mut calls = counted.lock().unwrap();
                *calls += 1;
                *calls
            };
            async move {
                if call == 1 {
                    Err(StoreError::Invalid("the server went away".into()))
                } else {
                    Ok(keys.into_iter().map(|key| (key, key * 10)).collect())
                }
            }
        });
        let error = coalescer.get(1).await.unwrap_err().to_string();
        assert!(error.contains("the server went away"), "{error}");
        assert_eq!(coalescer.get(3).await.unwrap(), Some(30));
        assert_eq!(*calls.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn a_read_whose_statement_panics_fails_and_the_queue_keeps_serving() {
        let coalescer = Coalescer::spawn(1, 8, |keys: Vec<u32>| async move {
            assert!(!keys.contains(&13), "unlucky");
            Ok(keys.into_iter().map(|key| (key, key)).collect())
        });
        assert!(matches!(coalescer.get(13).await, Err(StoreError::Closed)));
        assert_eq!(coalescer.get(7).await.unwrap(), Some(7));
    }
}
