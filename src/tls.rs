//! TLS on the gRPC port from files (`PAYGATE_TLS_CERT_FILE`, `PAYGATE_TLS_KEY_FILE`,
//! `PAYGATE_TLS_CLIENT_CA_FILE`), read again when they change (see `crate::reload`): a renewed
//! certificate (cert-manager's, a mounted Secret's) serves every connection opened after the
//! reload, while open connections go on. Handshakes run here, each in its own task under the
//! connection's handshake timeout, so a slow client holds no other; tonic sees the TLS streams
//! (and their client certificates, for mutual TLS) as it does its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_stream::{Stream, StreamExt as _};

use crate::reload::{Reload, Seen, contents_of};

/// The gRPC port's TLS settings in use, swapped whole when their files change and load.
pub struct LiveTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    /// With mutual TLS: a client may also come without a certificate (bearer tokens).
    client_optional: bool,
    config: ArcSwap<rustls::ServerConfig>,
    seen: Seen,
}

impl std::fmt::Debug for LiveTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTls")
            .field("cert", &self.cert)
            .field("client_ca", &self.client_ca)
            .finish_non_exhaustive()
    }
}

fn build(
    cert: &[u8],
    key: &[u8],
    client_ca: Option<&[u8]>,
    client_optional: bool,
) -> Result<rustls::ServerConfig, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate file: {e}"))?;
    if chain.is_empty() {
        return Err("the certificate file holds no CERTIFICATE".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("the key file: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca) {
                let c = c.map_err(|e| format!("the client CA file: {e}"))?;
                roots
                    .add(c)
                    .map_err(|e| format!("the client CA file: {e}"))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            let verifier = if client_optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("the client CA file: {e}"))?,
            )
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

impl LiveTls {
    /// TLS from these files, loaded now.
    pub fn load(
        cert: PathBuf,
        key: PathBuf,
        client_ca: Option<PathBuf>,
        client_optional: bool,
    ) -> Result<Arc<Self>, String> {
        let mut files = vec![cert.clone(), key.clone()];
        files.extend(client_ca.clone());
        let seen = Seen::default();
        seen.changed(&contents_of(&files)?);
        let config = Self::build_from(&cert, &key, client_ca.as_ref(), client_optional)?;
        Ok(Arc::new(Self {
            cert,
            key,
            client_ca,
            client_optional,
            config: ArcSwap::from_pointee(config),
            seen,
        }))
    }

    fn build_from(
        cert: &PathBuf,
        key: &PathBuf,
        client_ca: Option<&PathBuf>,
        client_optional: bool,
    ) -> Result<rustls::ServerConfig, String> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let ca = client_ca.map(read).transpose()?;
        build(&read(cert)?, &read(key)?, ca.as_deref(), client_optional)
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut f = vec![self.cert.clone(), self.key.clone()];
        f.extend(self.client_ca.clone());
        f
    }

    /// Reads the files; `Ok(false)` when they did not change.
    fn read(&self) -> Result<bool, String> {
        if !self.seen.changed(&contents_of(&self.files())?) {
            return Ok(false);
        }
        let config = Self::build_from(
            &self.cert,
            &self.key,
            self.client_ca.as_ref(),
            self.client_optional,
        )?;
        self.config.store(Arc::new(config));
        Ok(true)
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }
}

impl Reload for LiveTls {
    fn name(&self) -> String {
        "TLS certificate".into()
    }

    fn watched(&self) -> Vec<PathBuf> {
        self.files()
    }

    fn reload(&self) -> Result<bool, String> {
        self.read()
    }
}

/// `plain` connections, each through a TLS handshake with the settings current when it
/// arrived (within `timeout`, in a task of its own); the ones that complete, in the order they
/// complete. The accepting task ends with the returned stream.
pub(crate) fn incoming<S, IO>(
    plain: S,
    tls: Arc<LiveTls>,
    timeout: Duration,
) -> impl Stream<Item = std::io::Result<tokio_rustls::server::TlsStream<IO>>>
where
    S: Stream<Item = std::io::Result<IO>> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut plain = std::pin::pin!(plain);
        while let Some(conn) = plain.next().await {
            if tx.is_closed() {
                return;
            }
            let Ok(conn) = conn else {
                continue;
            };
            let (acceptor, tx) = (tls.acceptor(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(timeout, acceptor.accept(conn)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => {
                        metrics::counter!("paygate_shed_total", "reason" => "handshake_timeout")
                            .increment(1);
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
