//! What a node proves itself with and checks others against: the memcache
//! port's TLS, the cluster's mutual TLS, and clients' passwords. All are
//! read from the files the settings name, at start and on a reload.

use crate::config::Config;
use crate::memcache::auth::{ClientAuth, PasswordFile};
use crate::stats::NodeStats;
use crate::tls::Tls;
use std::sync::Arc;

#[derive(Default)]
pub struct Credentials {
    /// TLS on the memcache port, when it speaks TLS.
    pub clients: Option<Arc<Tls>>,
    /// Mutual TLS on the internal API, when the cluster uses it.
    pub cluster: Option<Arc<Tls>>,
    pub auth: Arc<ClientAuth>,
}

impl Credentials {
    /// Reads every file the settings name; the first that cannot be used
    /// is named.
    pub fn load(config: &Config) -> Result<Credentials, String> {
        let clients = config.client_tls().map(Tls::for_clients).transpose().map_err(|e| format!("memcache TLS: {e}"))?;
        let cluster = config.cluster_tls().map(Tls::for_cluster).transpose().map_err(|e| format!("cluster TLS: {e}"))?;
        let open = |path: &Option<std::path::PathBuf>| path.as_deref().map(PasswordFile::open).transpose();
        let auth = ClientAuth { sasl: open(&config.sasl_password_file)?, ascii: open(&config.ascii_auth_file)? };
        Ok(Credentials { clients, cluster, auth: Arc::new(auth) })
    }

    /// Reads the files again (SIGHUP, `reload_certs`). Connections open
    /// now keep what they made; new ones use what was read. If any file
    /// fails, that side keeps what it had and the failure is answered.
    pub fn reload(&self, stats: &NodeStats) -> Result<(), String> {
        let tls = self.clients.iter().chain(&self.cluster).try_for_each(|tls| tls.reload());
        let auth = self.auth.reload();
        tls.and(auth)?;
        self.mark_refreshed(stats);
        tracing::info!("certificates and password files read again");
        Ok(())
    }

    /// Notes the time the certificates were read, for
    /// `time_since_server_cert_refresh`.
    pub fn mark_refreshed(&self, stats: &NodeStats) {
        if self.clients.is_some() || self.cluster.is_some() {
            stats.mark_certs_refreshed();
        }
    }
}
