//! Answers and request bodies that carry secrets (bundles, passwords, token
//! secrets): serialised into memory that is wiped when the body is dropped.
//!
//! What is wiped, exactly: the JSON text of such an answer (built in a
//! buffer that is wiped whenever it grows, and handed to the connection as
//! `Bytes` that own a `Zeroizing` buffer, so the last reference to drop
//! wipes it); the values parsed from such a request (`Zeroizing` fields); and
//! the request body bytes when this process holds their only copy. What is
//! not: bytes inside hyper's and the kernel's socket buffers and, on TLS,
//! OpenSSL's record buffers, which we do not own.

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use zeroize::{Zeroize, Zeroizing};

use crate::error::ApiError;

/// A JSON answer carrying a secret: never cached, wiped once sent.
pub struct SecretJson<T>(pub StatusCode, pub T);

impl<T: Serialize> IntoResponse for SecretJson<T> {
    fn into_response(self) -> Response {
        let mut writer = WipingWriter(Zeroizing::new(Vec::with_capacity(4096)));
        if let Err(e) = serde_json::to_writer(&mut writer, &self.1) {
            tracing::error!(error = %e, "cannot serialise an answer");
            return ApiError::Core(ca_core::Error::Crypto("serialisation failed".into()))
                .into_response();
        }
        let body = Body::from(Bytes::from_owner(writer.0));
        let mut response = (self.0, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// A `Vec` writer that never leaves a copy behind when it grows: it moves
/// to a larger buffer itself, and the old one is wiped as it is dropped.
struct WipingWriter(Zeroizing<Vec<u8>>);

impl Write for WipingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let needed = self.0.len() + buf.len();
        if needed > self.0.capacity() {
            let mut larger = Zeroizing::new(Vec::with_capacity(needed.max(2 * self.0.capacity())));
            larger.extend_from_slice(&self.0);
            self.0 = larger;
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Wipes a request body once parsed, when this process holds its only copy
/// (a body that arrived in several pieces was gathered into one buffer of ours).
pub(crate) fn wipe(bytes: Bytes) {
    if let Ok(mut owned) = bytes.try_into_mut() {
        owned[..].zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_keeps_every_byte_across_growth() {
        let mut writer = WipingWriter(Zeroizing::new(Vec::with_capacity(4)));
        for chunk in [&b"abc"[..], b"defgh", &[b'x'; 100]] {
            writer.write_all(chunk).unwrap();
        }
        assert_eq!(&writer.0[..8], b"abcdefgh");
        assert_eq!(writer.0.len(), 108);
    }
}
