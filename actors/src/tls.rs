//! TLS, through rustls: on the memcache port for clients (memcached's
//! `-Z`), and mutual TLS between nodes (the internal API) against the
//! cluster's own CA. Certificates are read from PEM files at start and
//! again on a reload (SIGHUP or the admin command `reload_certs`); a reload
//! that fails leaves the certificates in use as they were, and connections
//! already open keep the session they made.

use crate::api::net::{Accepted, Conn, Listener, Network};
use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Whether a client must show a certificate (memcached's
/// `ssl_verify_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyClient {
    /// No client certificate is asked for.
    None,
    /// One is asked for and, if given, must come from the CA.
    Request,
    /// One from the CA is required.
    Require,
}

/// The oldest TLS version a connection may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum MinVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

impl MinVersion {
    fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        static FROM_TLS12: [&SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];
        static FROM_TLS13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            MinVersion::Tls12 => &FROM_TLS12,
            MinVersion::Tls13 => &FROM_TLS13,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MinVersion::Tls12 => "tlsv1.2",
            MinVersion::Tls13 => "tlsv1.3",
        }
    }
}

/// Where a side's certificates are, and what it asks of the other side.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// This side's certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA the other side's certificates must come from (PEM); needed
    /// to verify clients, and always for the cluster.
    pub ca: Option<PathBuf>,
    pub verify_client: VerifyClient,
    pub min_version: MinVersion,
}

/// A TLS failure, named for the operator: which file, and why.
pub type TlsResult<T> = std::result::Result<T, String>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_chain(path: &PathBuf) -> TlsResult<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(chain)
}

fn read_key(path: &PathBuf) -> TlsResult<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))
}

fn read_roots(path: &PathBuf) -> TlsResult<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in read_chain(path)? {
        roots.add(cert).map_err(|e| format!("{} is not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(Arc::new(roots))
}

impl TlsFiles {
    /// The server side, as the files say now.
    pub fn server_config(&self) -> TlsResult<Arc<ServerConfig>> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(self.min_version.versions())
            .map_err(|e| e.to_string())?;
        let builder = match (self.verify_client, &self.ca) {
            (VerifyClient::None, _) => builder.with_no_client_auth(),
            (_, None) => return Err("verifying clients needs a CA (tls_ca)".into()),
            (mode, Some(ca)) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(read_roots(ca)?, provider());
                let verifier = match mode {
                    VerifyClient::Request => verifier.allow_unauthenticated(),
                    _ => verifier,
                };
                builder.with_client_cert_verifier(verifier.build().map_err(|e| e.to_string())?)
            }
        };
        let (chain, key) = (read_chain(&self.cert)?, read_key(&self.key)?);
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("{} and {} do not make a usable pair: {e}", self.cert.display(), self.key.display()))?;
        Ok(Arc::new(config))
    }

    /// The client side (a node dialling a peer): it shows its own
    /// certificate and trusts only the CA.
    pub fn client_config(&self) -> TlsResult<Arc<ClientConfig>> {
        let ca = self.ca.as_ref().ok_or("a TLS client needs a CA to verify the server")?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(self.min_version.versions())
            .map_err(|e| e.to_string())?
            .with_root_certificates(read_roots(ca)?)
            .with_client_auth_cert(read_chain(&self.cert)?, read_key(&self.key)?)
            .map_err(|e| format!("{} and {} do not make a usable pair: {e}", self.cert.display(), self.key.display()))?;
        Ok(Arc::new(config))
    }
}

/// One side's TLS: its files, and the configs made from them (swapped
/// whole on a reload).
pub struct Tls {
    files: TlsFiles,
    server: ArcSwap<ServerConfig>,
    /// Only for the cluster, whose nodes dial each other.
    client: Option<ArcSwap<ClientConfig>>,
}

impl Tls {
    /// TLS for the memcache port: a server only.
    pub fn for_clients(files: TlsFiles) -> TlsResult<Arc<Tls>> {
        let server = ArcSwap::new(files.server_config()?);
        Ok(Arc::new(Tls { files, server, client: None }))
    }

    /// Mutual TLS between nodes: both sides show a certificate and verify
    /// the other's against the cluster CA.
    pub fn for_cluster(files: TlsFiles) -> TlsResult<Arc<Tls>> {
        let files = TlsFiles { verify_client: VerifyClient::Require, ..files };
        let server = ArcSwap::new(files.server_config()?);
        let client = Some(ArcSwap::new(files.client_config()?));
        Ok(Arc::new(Tls { files, server, client }))
    }

    /// Reads the files again. New connections use what they hold from now
    /// on; open ones keep theirs. On failure nothing changes.
    pub fn reload(&self) -> TlsResult<()> {
        let server = self.files.server_config()?;
        let client = self.client.as_ref().map(|_| self.files.client_config()).transpose()?;
        self.server.store(server);
        if let (Some(slot), Some(client)) = (&self.client, client) {
            slot.store(client);
        }
        Ok(())
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.server.load_full())
    }

    fn connector(&self) -> Option<TlsConnector> {
        self.client.as_ref().map(|client| TlsConnector::from(client.load_full()))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// Counts a handshake that failed, and says why (a peer's certificate
/// from another CA, a plain client on a TLS port, an expired
/// certificate).
pub fn refused(errors: &crate::stats::Counter, peer: SocketAddr, error: &io::Error) {
    crate::stats::NodeStats::incr(errors);
    tracing::warn!(%peer, "refused a TLS connection: {error}");
}

/// A connection as one stream again, for TLS to run over.
type Joined = tokio::io::Join<crate::api::net::BoxRead, crate::api::net::BoxWrite>;

fn split<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static>(stream: S) -> Conn {
    let (reader, writer) = tokio::io::split(stream);
    Conn { reader: Box::new(reader), writer: Box::new(writer) }
}

/// The internal API's network with mutual TLS over it: a peer is dialled,
/// then its certificate checked against the cluster CA and its address.
pub struct TlsNetwork {
    pub inner: Arc<dyn Network>,
    pub tls: Arc<Tls>,
}

impl Network for TlsNetwork {
    fn connect(&self, peer: SocketAddr) -> BoxFuture<'static, io::Result<Conn>> {
        let (dial, tls) = (self.inner.connect(peer), self.tls.clone());
        Box::pin(async move {
            let Conn { reader, writer } = dial.await?;
            let connector = tls.connector().ok_or_else(|| io::Error::other("no client side for TLS"))?;
            let name = ServerName::IpAddress(peer.ip().into());
            let stream = connector.connect(name, tokio::io::join(reader, writer)).await.map_err(|e| {
                tracing::warn!(%peer, "TLS with peer failed: {e}");
                e
            })?;
            Ok(split(stream))
        })
    }
}

/// The internal API's listener with mutual TLS over it: a caller without a
/// certificate from the cluster CA is refused at the handshake.
pub struct TlsListener {
    pub inner: Arc<dyn Listener>,
    pub tls: Arc<Tls>,
    pub stats: Arc<crate::stats::NodeStats>,
}

impl Listener for TlsListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(Accepted, SocketAddr)>> {
        Box::pin(async move {
            let (open, peer) = self.inner.accept().await?;
            let (tls, stats) = (self.tls.clone(), self.stats.clone());
            let open: Accepted = Box::new(move || {
                Box::pin(async move {
                    let Conn { reader, writer } = open().await?;
                    let joined: Joined = tokio::io::join(reader, writer);
                    match tls.acceptor().accept(joined).await {
                        Ok(stream) => Ok(split(stream)),
                        Err(e) => {
                            refused(&stats.peer_tls_handshake_errors, peer, &e);
                            Err(e)
                        }
                    }
                })
            });
            Ok((open, peer))
        })
    }
}
