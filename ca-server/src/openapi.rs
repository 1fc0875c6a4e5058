//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{audit, certificates, ocsp, pickup, public, tokens};

#[derive(OpenApi)]
#[openapi(
    info(title = "Portal client-certificate CA", description = "Issue, reissue and revoke administrators' login certificates; CRL for gateways."),
    paths(
        public::ca_crt, public::ca_pem, public::crl_der, public::crl_pem, public::healthz, public::readyz,
        public::metrics, public::openapi, public::root_pem, public::crls_pem,
        public::issuer_certificate, public::issuer_crl,
        certificates::issue, certificates::reissue, certificates::sign_csr, certificates::revoke,
        certificates::list, certificates::show,
        audit::audit,
        tokens::create, tokens::list, tokens::revoke,
        pickup::resend, pickup::list,
        ocsp::ocsp_post, ocsp::ocsp_get,
    ),
    components(schemas(ca_core::ErrorView, ca_core::ErrorDetail)),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
