//! The TLS settings of every client signoff configures: the Slack Web API, Socket
//! Mode's WebSocket, decision callbacks, and `signoff proxy`'s clients (signoff's API,
//! an HTTP upstream). All are rustls with ring. (reqwest also compiles its own provider,
//! aws-lc-rs, for clients built without a config of ours, such as the tests'; with two
//! providers compiled in, rustls cannot pick one on its own, so each config here names
//! ring.)

use std::sync::Arc;

use hyper_rustls::ConfigBuilderExt;

/// A client config with ring, rustls's safe default protocol versions and the
/// system's root certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` replace them).
pub fn client_config() -> Result<rustls::ClientConfig, String> {
    versions()?
        .with_native_roots()
        .map(|config| config.with_no_client_auth())
        .map_err(|error| format!("cannot load the system's TLS root certificates: {error}"))
}

/// The config for a client of `url`: [`client_config`] for `https://`; for plain HTTP,
/// one that trusts no certificate (it serves no request there), so that a machine
/// without root certificates, such as a minimal container, still reaches a signoff
/// or an upstream on plain HTTP.
pub fn client_config_for(url: &str) -> Result<rustls::ClientConfig, String> {
    if url
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("https://")
    {
        return client_config();
    }
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
