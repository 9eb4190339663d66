//! TLS and SASL for broker connections, from `KAFKA_SECURITY_PROTOCOL` and friends.

use std::path::Path;
use std::sync::Arc;

use rskafka::client::{ClientBuilder, Credentials, SaslConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::oauth::GoogleTokenProvider;
use super::settings::{KafkaSecurity, SaslMechanism};

/// A TLS or SASL setting that cannot be put to use.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{var} ({path}): {reason}")]
    Pem {
        /// The variable naming the file.
        var: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// Adds TLS and SASL to `builder` as `security` asks.
pub(crate) fn apply(
    mut builder: ClientBuilder,
    security: &KafkaSecurity,
) -> Result<ClientBuilder, SecurityError> {
    if security.protocol.uses_tls() {
        builder = builder.tls_config(Arc::new(tls_config(security)?));
    }
    if let Some(mechanism) = &security.sasl {
        let credentials = |u: &str, p: &str| Credentials::new(u.to_owned(), p.to_owned());
        builder = builder.sasl_config(match mechanism {
            SaslMechanism::Plain { username, password } => {
                SaslConfig::Plain(credentials(username, password))
            }
            SaslMechanism::ScramSha256 { username, password } => {
                SaslConfig::ScramSha256(credentials(username, password))
            }
            SaslMechanism::ScramSha512 { username, password } => {
                SaslConfig::ScramSha512(credentials(username, password))
            }
            SaslMechanism::OauthBearer => SaslConfig::Oauthbearer(
                Arc::new(GoogleTokenProvider::new(
                    &security.metadata_host,
                    security.oauthbearer_principal.clone(),
                ))
                .credentials(),
            ),
        });
    }
    Ok(builder)
}

/// rustls client config: the CA file or the system roots, plus a client certificate for mTLS.
pub(crate) fn tls_config(security: &KafkaSecurity) -> Result<rustls::ClientConfig, SecurityError> {
    let mut roots = rustls::RootCertStore::empty();
    match &security.ca_location {
        Some(path) => {
            for cert in read_certs("KAFKA_SSL_CA_LOCATION", path)? {
                roots
                    .add(cert)
                    .map_err(|e| pem_error("KAFKA_SSL_CA_LOCATION", path, e))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A malformed system certificate must not stop the others from working.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(SecurityError::Tls(
                    "no system CA certificates found; set KAFKA_SSL_CA_LOCATION".into(),
                ));
            }
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    match (
        &security.client_cert_location,
        &security.client_key_location,
    ) {
        (Some(cert_path), Some(key_path)) => {
            let chain = read_certs("KAFKA_SSL_CERTIFICATE_LOCATION", cert_path)?;
            let key = PrivateKeyDer::from_pem_file(key_path)
                .map_err(|e| pem_error("KAFKA_SSL_KEY_LOCATION", key_path, e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| SecurityError::Tls(e.to_string()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn read_certs(
    var: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(var, path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(var, path, e))?;
    if certs.is_empty() {
        return Err(pem_error(var, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn pem_error(var: &'static str, path: &Path, reason: impl std::fmt::Display) -> SecurityError {
    SecurityError::Pem {
        var,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}
