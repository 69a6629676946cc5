//! SaslHandshake (17) and SaslAuthenticate (36): SASL is not enabled.
//!
//! Both are advertised so that a client configured for SASL gets a clear error instead of a
//! closed connection: the handshake lists no mechanisms, and authentication fails with
//! ILLEGAL_SASL_STATE and a message saying why.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

/// UNSUPPORTED_SASL_MECHANISM with an empty mechanism list, whatever was asked.
pub fn handshake(request: SaslHandshakeRequest) -> SaslHandshakeResponse {
    tracing::info!(
        mechanism = request.mechanism.as_str(),
        "refused SASL handshake: SASL is not enabled"
    );
    SaslHandshakeResponse::default()
        .with_error_code(ResponseError::UnsupportedSaslMechanism.code())
        .with_mechanisms(Vec::new())
}

/// ILLEGAL_SASL_STATE: there is no handshake this could continue.
pub fn authenticate(_request: SaslAuthenticateRequest) -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(ResponseError::IllegalSaslState.code())
        .with_error_message(Some(StrBytes::from_static_str(
            "SASL authentication is not enabled on this broker",
        )))
}
