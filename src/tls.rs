//! The TLS settings of the clients signoff configures itself: the Slack Web API, Socket
//! Mode's WebSocket and decision callbacks. Two rustls crypto providers are compiled in
//! (ring, which these clients and slack-morphism use, and aws-lc-rs, which reqwest
//! brings for `signoff proxy`), so rustls cannot pick one on its own: each config here
//! names ring.

use std::sync::Arc;

use hyper_rustls::ConfigBuilderExt;

/// A client config with ring, rustls's safe default protocol versions and the
/// system's root certificates.
pub fn client_config() -> Result<rustls::ClientConfig, String> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("cannot set up TLS: {error}"))?
        .with_native_roots()
        .map(|config| config.with_no_client_auth())
        .map_err(|error| format!("cannot load the system's TLS root certificates: {error}"))
}
