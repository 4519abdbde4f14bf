//! The bed's certificates: one CA, the API server's serving certificate, client certificates
//! for the admin and the control-plane components, and the service-account signing key. All
//! ECDSA P-256, valid for a day, written as PEM files into the bed's directory.

use crate::{Error, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// The ClusterIP of the `kubernetes` Service (first address of the service range).
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The PEM certificate.
    pub cert: PathBuf,
    /// The PEM private key (PKCS#8).
    pub key: PathBuf,
}

/// Every file the control plane is started with.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate (trusted by every client; the API server's `--client-ca-file`).
    pub ca: PathBuf,
    /// The API server's serving certificate (`127.0.0.1`, `localhost`, `kubernetes.default.svc…`).
    pub apiserver: CertFiles,
    /// The cluster admin (`system:masters`): tests, kubectl, the test node, the API server's
    /// client certificate towards the test node's log endpoint.
    pub admin: CertFiles,
    /// kube-controller-manager's identity (`system:kube-controller-manager`).
    pub controller_manager: CertFiles,
    /// kube-scheduler's identity (`system:kube-scheduler`).
    pub scheduler: CertFiles,
    /// The test node's serving certificate (its log endpoint; `127.0.0.1`, `localhost`), which
    /// the API server verifies against [`Pki::ca`].
    pub kubelet: CertFiles,
    /// The service-account token signing key (private key; the API server derives the public one).
    pub service_account_key: PathBuf,
    /// The service-account token verification key (public half of the signing key).
    pub service_account_public_key: PathBuf,
    /// The CA certificate as PEM text.
    pub ca_pem: String,
}

fn pki_error(step: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |source| Error::Pki { step: step.to_owned(), message: source.to_string() }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(Error::io(format!("writing {}", path.display())))
}

impl Pki {
    /// Creates the CA and every certificate in `dir`.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let ca_key = KeyPair::generate().map_err(pki_error("generating the CA key"))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(pki_error("CA parameters"))?;
        ca_params.distinguished_name.push(DnType::CommonName, "duckmesh-testbed-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        ca_params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        ca_params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let ca_cert = ca_params.self_signed(&ca_key).map_err(pki_error("signing the CA certificate"))?;
        let ca_pem = ca_cert.pem();
        let ca = dir.join("ca.crt");
        write(&ca, &ca_pem)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let serving_names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"];
        let mut sans: Vec<SanType> = serving_names
            .iter()
            .map(|name| (*name).try_into().map(SanType::DnsName).map_err(pki_error("SAN")))
            .collect::<Result<_>>()?;
        sans.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        sans.push(SanType::IpAddress(IpAddr::V4(KUBERNETES_SERVICE_IP)));
        let apiserver =
            leaf(dir, "apiserver", &issuer, "kube-apiserver", &[], sans, ExtendedKeyUsagePurpose::ServerAuth)?;
        let admin = client(dir, "admin", &issuer, "duckmesh-testbed-admin", &["system:masters"])?;
        let controller_manager = client(dir, "controller-manager", &issuer, "system:kube-controller-manager", &[])?;
        let scheduler = client(dir, "scheduler", &issuer, "system:kube-scheduler", &[])?;
        let kubelet_sans = vec![
            SanType::DnsName("localhost".try_into().map_err(pki_error("SAN"))?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        let kubelet =
            leaf(dir, "kubelet", &issuer, "duckmesh-testnode", &[], kubelet_sans, ExtendedKeyUsagePurpose::ServerAuth)?;

        let sa_key = KeyPair::generate().map_err(pki_error("generating the service-account key"))?;
        let service_account_key = dir.join("service-account.key");
        write(&service_account_key, &sa_key.serialize_pem())?;
        let service_account_public_key = dir.join("service-account.pub");
        write(&service_account_public_key, &sa_key.public_key_pem())?;
        Ok(Self {
            ca,
            apiserver,
            admin,
            controller_manager,
            scheduler,
            kubelet,
            service_account_key,
            service_account_public_key,
            ca_pem,
        })
    }
}

fn client(dir: &Path, file: &str, issuer: &Issuer<'_, KeyPair>, user: &str, groups: &[&str]) -> Result<CertFiles> {
    leaf(dir, file, issuer, user, groups, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
}

fn leaf(
    dir: &Path,
    file: &str,
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    organizations: &[&str],
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertFiles> {
    let key = KeyPair::generate().map_err(pki_error("generating a key"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki_error("certificate parameters"))?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    for organization in organizations {
        params.distinguished_name.push(DnType::OrganizationName, *organization);
    }
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let cert = params.signed_by(&key, issuer).map_err(pki_error("signing a certificate"))?;
    let files = CertFiles { cert: dir.join(format!("{file}.crt")), key: dir.join(format!("{file}.key")) };
    write(&files.cert, &cert.pem())?;
    write(&files.key, &key.serialize_pem())?;
    Ok(files)
}
