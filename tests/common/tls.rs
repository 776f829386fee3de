//! An HTTPS stand-in and its test-only TLS material (`tests/common/tls/`, see its
//! README): what a client that checks certificates against `SSL_CERT_FILE` reaches.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A file of `tests/common/tls/`.
pub fn material(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/common/tls")
        .join(name)
}

/// An HTTPS server on 127.0.0.1 (the test CA's `server.pem`) that answers every request
/// 401: a stand-in for signoff or Slack that proves a request crossed TLS. Records each
/// request line; a refused handshake records nothing.
pub fn https_stand_in() -> (String, Arc<Mutex<Vec<String>>>) {
    let certs = CertificateDer::pem_file_iter(material("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(material("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (config, seen) = (config.clone(), recorded.clone());
            std::thread::spawn(move || {
                let tls = rustls::ServerConnection::new(config).unwrap();
                let mut stream = BufReader::new(rustls::StreamOwned::new(tls, tcp));
                // A refused handshake ends here, with nothing read.
                let mut line = String::new();
                if stream.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                seen.lock().unwrap().push(line.trim_end().to_owned());
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    stream.read_line(&mut header).unwrap();
                    if header.trim_end().is_empty() {
                        break;
                    }
                    if let Some((name, value)) = header.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap();
                    }
                }
                stream.read_exact(&mut vec![0; length]).unwrap();
                let body = r#"{"error":"unauthorized","detail":"bad token"}"#;
                let answer = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let stream = stream.get_mut();
                stream.write_all(answer.as_bytes()).unwrap();
                stream.flush().unwrap();
                stream.conn.send_close_notify();
                let _ = stream.flush();
            });
        }
    });
    (url, seen)
}
