//! Pure builders and parsers of the PKI formats: X.509 certificates, CRLs,
//! OCSP, PKCS#12, CSRs and the small DER writer they share. Nothing here
//! touches the store; signing goes through the [`Signer`](crate::Signer) seam.

pub(crate) mod crl;
pub(crate) mod csr;
pub(crate) mod derw;
pub mod ocsp;
pub(crate) mod pkcs12;
pub(crate) mod seal;
pub(crate) mod x509;
