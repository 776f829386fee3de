//! The process's stop signals: ctrl-c and SIGTERM, as `signoff serve` and `signoff
//! proxy` answer them (a clean shutdown, not the default action that ends the process
//! at once).

use std::future::Future;

/// Listens for ctrl-c and SIGTERM from the moment it is called, and resolves on
/// the first of them. The handlers are installed here rather than at the first
/// poll, so a supervisor's SIGTERM that arrives while the server is still starting
/// (or just after it answers its first request) still means a clean shutdown, not
/// the default action that kills the process.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::SignalKind;
        let listen = |kind: SignalKind, name: &'static str| match tokio::signal::unix::signal(kind)
        {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for {name}");
                None
            }
        };
        (
            listen(SignalKind::interrupt(), "ctrl-c"),
            listen(SignalKind::terminate(), "SIGTERM"),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let received = |signal: Option<tokio::signal::unix::Signal>| async move {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = received(interrupt) => {}
                _ = received(terminate) => {}
            }
        }
        #[cfg(not(unix))]
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down");
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    /// The handlers are in place when `signal` returns, before its future
    /// is first polled: a SIGTERM sent in between resolves it instead of killing
    /// this process (which would fail the whole test binary).
    #[tokio::test]
    async fn a_sigterm_sent_before_the_first_poll_is_a_shutdown_not_a_kill() {
        let shutdown = super::signal();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(10), shutdown)
            .await
            .expect("the SIGTERM sent before the first poll resolves the shutdown");
    }
}
