//! TLS for STARTTLS: a throwaway certificate authority made fresh for each run, and the server
//! configurations (good and deliberately bad certificates) the fake MX servers present.
//!
//! The authority's certificate ([`Authority::ca_pem`]) is what a system under test must trust
//! for [`TlsMode::Valid`] to verify. Keys are ECDSA P-256; nothing is written to disk.

use std::fmt;
use std::sync::Arc;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

/// Which certificate (if any) a listener offers after STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// No TLS: STARTTLS is neither advertised nor accepted (`502`).
    #[default]
    Off,
    /// A leaf for the server's hostname, signed by the run's [`Authority`].
    Valid,
    /// STARTTLS is accepted with `220`, then the server answers the client's handshake with
    /// bytes that are not TLS and closes.
    BrokenHandshake,
    /// A leaf for the right name whose validity ended in the past (2021-01-01).
    Expired,
    /// A valid leaf, but for another name (`wrong-name.invalid`).
    WrongName,
    /// A valid but large chain: a leaf with about 100 subject alternative names plus four
    /// intermediate CAs (well over 3 KB on the wire), for path-MTU tests.
    OversizedChain,
    /// STARTTLS is accepted with `220`, then the server reads the client's ClientHello and
    /// never answers it: the handshake stalls until the client gives up.
    StalledHandshake,
    /// STARTTLS is accepted with `220`, then the server answers the ClientHello with a fatal
    /// TLS alert (`handshake_failure`) and closes.
    Alert,
}

impl TlsMode {
    /// Whether the mode never completes a handshake (so it needs no certificate).
    pub fn never_completes(self) -> bool {
        matches!(
            self,
            TlsMode::BrokenHandshake | TlsMode::StalledHandshake | TlsMode::Alert
        )
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Off => "off",
            TlsMode::Valid => "valid",
            TlsMode::BrokenHandshake => "broken-handshake",
            TlsMode::Expired => "expired",
            TlsMode::WrongName => "wrong-name",
            TlsMode::OversizedChain => "oversized-chain",
            TlsMode::StalledHandshake => "stalled-handshake",
            TlsMode::Alert => "alert",
        })
    }
}

/// Why certificates or a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed (e.g. a hostname that is not a valid DNS name).
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("cannot configure TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// The name a [`TlsMode::WrongName`] leaf is issued for.
pub const WRONG_NAME: &str = "wrong-name.invalid";

/// How many intermediates a [`TlsMode::OversizedChain`] chain has.
const OVERSIZED_INTERMEDIATES: usize = 4;

/// How many extra subject alternative names a [`TlsMode::OversizedChain`] leaf has.
const OVERSIZED_SANS: usize = 100;

/// A per-run certificate authority. Cheap to clone; clones share the key.
#[derive(Clone)]
pub struct Authority {
    inner: Arc<Inner>,
}

struct Inner {
    cert: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("cert_len", &self.inner.cert.len())
            .finish_non_exhaustive()
    }
}

/// Parameters of a CA certificate named `name`.
fn ca_params(name: &str) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "mxlab");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = date_time_ymd(2000, 1, 1);
    params.not_after = date_time_ymd(2099, 12, 31);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Parameters of a server leaf for `names` (the first is also the common name).
fn leaf_params(names: Vec<String>) -> Result<CertificateParams, TlsError> {
    let common_name = names.first().cloned().unwrap_or_default();
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = date_time_ymd(2000, 1, 1);
    params.not_after = date_time_ymd(2099, 12, 31);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

impl Authority {
    /// Makes a new CA (self-signed, valid 2000–2099, `CN=mxlab throwaway CA`).
    pub fn new() -> Result<Authority, TlsError> {
        let key = KeyPair::generate()?;
        let params = ca_params("mxlab throwaway CA")?;
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            inner: Arc::new(Inner {
                pem: cert.pem(),
                cert: cert.der().clone(),
                issuer: Issuer::new(params, key),
            }),
        })
    }

    /// The CA certificate in PEM, for a system under test to trust.
    pub fn ca_pem(&self) -> String {
        self.inner.pem.clone()
    }

    /// The CA certificate in DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.inner.cert.clone()
    }

    /// The certificate chain (leaf first, without the CA) and leaf key for `mode`, or `None`
    /// for the modes that present no certificate ([`TlsMode::Off`],
    /// [`TlsMode::BrokenHandshake`]).
    pub fn chain(
        &self,
        hostname: &str,
        mode: TlsMode,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
        let key = KeyPair::generate()?;
        let issuer = &self.inner.issuer;
        let chain = match mode {
            TlsMode::Off
            | TlsMode::BrokenHandshake
            | TlsMode::StalledHandshake
            | TlsMode::Alert => return Ok(None),
            TlsMode::Valid => {
                vec![leaf_params(vec![hostname.to_string()])?.signed_by(&key, issuer)?]
            }
            TlsMode::WrongName => {
                vec![leaf_params(vec![WRONG_NAME.to_string()])?.signed_by(&key, issuer)?]
            }
            TlsMode::Expired => {
                let mut params = leaf_params(vec![hostname.to_string()])?;
                params.not_before = date_time_ymd(2020, 1, 1);
                params.not_after = date_time_ymd(2021, 1, 1);
                vec![params.signed_by(&key, issuer)?]
            }
            TlsMode::OversizedChain => {
                // root -> intermediate 1 -> ... -> intermediate 4 -> leaf.
                let mut intermediates = Vec::new();
                let mut parent: Option<Issuer<'static, KeyPair>> = None;
                for n in 1..=OVERSIZED_INTERMEDIATES {
                    let params = ca_params(&format!("mxlab intermediate CA {n}"))?;
                    let ca_key = KeyPair::generate()?;
                    let cert = params.signed_by(&ca_key, parent.as_ref().unwrap_or(issuer))?;
                    intermediates.push(cert);
                    parent = Some(Issuer::new(params, ca_key));
                }
                let names: Vec<String> = std::iter::once(hostname.to_string())
                    .chain((1..=OVERSIZED_SANS).map(|i| format!("alt{i:03}.{hostname}")))
                    .collect();
                let leaf =
                    leaf_params(names)?.signed_by(&key, parent.as_ref().unwrap_or(issuer))?;
                intermediates.reverse();
                std::iter::once(leaf).chain(intermediates).collect()
            }
        };
        let chain = chain.into_iter().map(|c| c.der().clone()).collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok(Some((chain, key)))
    }

    /// A rustls server configuration presenting the certificate `mode` calls for, or `None`
    /// for [`TlsMode::Off`] and [`TlsMode::BrokenHandshake`] (which never complete a
    /// handshake). TLS 1.2 and 1.3, ring's default cipher suites, no client certificates.
    pub fn server_config(
        &self,
        hostname: &str,
        mode: TlsMode,
    ) -> Result<Option<Arc<ServerConfig>>, TlsError> {
        let Some((chain, key)) = self.chain(hostname, mode)? else {
            return Ok(None);
        };
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
                .with_no_client_auth()
                .with_single_cert(chain, key)?;
        Ok(Some(Arc::new(config)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_have_the_expected_shape() {
        let ca = Authority::new().unwrap();
        assert!(ca.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let len = |mode| {
            let (chain, _) = ca.chain("mx1.example.test", mode).unwrap().unwrap();
            (chain.len(), chain.iter().map(|c| c.len()).sum::<usize>())
        };
        assert_eq!(len(TlsMode::Valid).0, 1);
        let (certs, bytes) = len(TlsMode::OversizedChain);
        assert_eq!(certs, 1 + OVERSIZED_INTERMEDIATES);
        assert!(bytes >= 3000, "{bytes}");
        assert!(ca.chain("x", TlsMode::Off).unwrap().is_none());
        assert!(ca
            .server_config("mx1.example.test", TlsMode::BrokenHandshake)
            .unwrap()
            .is_none());
        assert!(ca
            .server_config("mx1.example.test", TlsMode::Expired)
            .unwrap()
            .is_some());
    }
}
