//! A connection whose client stops reading. hyper has a time limit for a request's
//! head but none for writing the answer: a client that asks (for the OpenAPI document,
//! say, or an event stream, or many requests in a row) and never reads would hold its
//! connection slot for good once the socket's buffers are full. [`Stalled`] fails a
//! write that makes no progress for [`super::Limits::write`], which closes the
//! connection; any progress starts the time again, so a slow reader is served.
//! Progress is what the kernel reports: a full socket takes writes again once about a
//! third of its send buffer has drained, so a client that reads less than that (tens
//! of KiB at most) in the whole time counts as reading nothing.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// An I/O stream whose writes fail after `limit` without progress.
pub(super) struct Stalled<S> {
    inner: S,
    limit: Duration,
    /// Since when a write has been waiting, as the time it may wait until.
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<S> Stalled<S> {
    pub(super) fn new(inner: S, limit: Duration) -> Self {
        Stalled {
            inner,
            limit,
            waiting: None,
        }
    }

    /// After a write step: progress (or an error) clears the wait; `Pending` starts it,
    /// or fails once it has lasted `limit`.
    fn timed<T>(&mut self, cx: &mut Context<'_>, step: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if step.is_ready() {
            self.waiting = None;
            return step;
        }
        let limit = self.limit;
        let waiting = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match waiting.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stalled<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stalled<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let step = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.timed(cx, step)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let step = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.timed(cx, step)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let step = Pin::new(&mut self.inner).poll_flush(cx);
        self.timed(cx, step)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let step = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.timed(cx, step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_fails_after_the_limit() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut stream = Stalled::new(ours, LIMIT);
        let started = tokio::time::Instant::now();
        let error = stream.write_all(&[0; 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_is_served_however_long_the_whole_takes() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut stream = Stalled::new(ours, LIMIT);
        let reader = tokio::spawn(async move {
            let mut read = Vec::new();
            let mut chunk = [0; 64];
            // 64 bytes every 20 s: each wait is under the limit, the whole far over it.
            loop {
                tokio::time::sleep(Duration::from_secs(20)).await;
                match theirs.read(&mut chunk).await.unwrap() {
                    0 => return read,
                    n => read.extend_from_slice(&chunk[..n]),
                }
            }
        });
        let started = tokio::time::Instant::now();
        stream.write_all(&[7; 1024]).await.unwrap();
        stream.shutdown().await.unwrap();
        assert!(started.elapsed() >= 5 * LIMIT, "{:?}", started.elapsed());
        assert_eq!(reader.await.unwrap(), vec![7; 1024]);
    }
}
