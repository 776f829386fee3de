//! The TLS settings of every client signoff configures: the Slack Web API, Socket
//! Mode's WebSocket, decision callbacks, and `signoff proxy`'s clients (signoff's API,
//! an HTTP upstream). All are rustls with ring, the one provider compiled in: reqwest
//! is built without one of its own (`rustls-no-provider`), so each of its clients is
//! given a config from here, and the binary also makes ring the process's default
//! (`main`), so that a client built without a config still works.

use std::sync::{Arc, OnceLock};

use hyper_rustls::ConfigBuilderExt;

/// A client config with ring, rustls's safe default protocol versions and the
/// system's root certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` replace them).
pub fn client_config() -> Result<rustls::ClientConfig, String> {
    versions()?
        .with_native_roots()
        .map(|config| config.with_no_client_auth())
        .map_err(|error| format!("cannot load the system's TLS root certificates: {error}"))
}

/// The config for a client of `url` alone: [`client_config`] for `https://` and
/// `wss://`; for plain HTTP or WebSocket, one that trusts no certificate (it serves no
/// request there), so that a machine without root certificates, such as a minimal
/// container, still reaches a signoff, an upstream or a Slack stand-in on plain HTTP.
pub fn client_config_for(url: &str) -> Result<rustls::ClientConfig, String> {
    if uses_tls(url) {
        return client_config();
    }
    without_roots()
}

/// Whether `url` is `https://` or `wss://`.
pub fn uses_tls(url: &str) -> bool {
    let url = url.trim_start().to_ascii_lowercase();
    url.starts_with("https://") || url.starts_with("wss://")
}

/// A config that trusts no certificate: for a client that makes no TLS request.
pub fn without_roots() -> Result<rustls::ClientConfig, String> {
    Ok(versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

fn versions() -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, String>
{
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("cannot set up TLS: {error}"))
}

/// [`client_config_for`] for a client that connects again and again (Socket Mode's
/// sockets, to a new URL each time): the system's root certificates, read from files
/// and parsed, are loaded at the first `https://` or `wss://` connection and kept for
/// every one after it. A load that fails is tried again at the next connection.
#[derive(Default)]
pub struct Kept(OnceLock<Arc<rustls::ClientConfig>>);

impl Kept {
    pub fn for_url(&self, url: &str) -> Result<Arc<rustls::ClientConfig>, String> {
        if !uses_tls(url) {
            return without_roots().map(Arc::new);
        }
        if let Some(config) = self.0.get() {
            return Ok(config.clone());
        }
        let config = Arc::new(client_config()?);
        Ok(self.0.get_or_init(|| config).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roots_are_loaded_once_for_every_tls_connection_and_never_for_plain_ones() {
        let kept = Kept::default();
        kept.for_url("ws://127.0.0.1:1/socket").unwrap();
        assert!(kept.0.get().is_none(), "plain WebSocket loads no roots");
        let first = kept
            .for_url("wss://wss-primary.slack.com/link/?ticket=1")
            .unwrap();
        let again = kept
            .for_url("WSS://wss-backup.slack.com/link/?ticket=2")
            .unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "a reconnect reuses the loaded roots"
        );
        let plain = kept.for_url("ws://127.0.0.1:1/socket").unwrap();
        assert!(!Arc::ptr_eq(&first, &plain));
    }
}
