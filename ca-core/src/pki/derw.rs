//! DER writing by hand, for the documents written per request or at scale
//! (CRLs, OCSP responses): a few TLV helpers over a `Vec<u8>`, no tree of values.

use time::OffsetDateTime;

use crate::keys::KeyAlgorithm;

/// The length octets of a DER TLV.
pub(crate) fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

pub(crate) fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    push_len(out, content.len());
    out.extend_from_slice(content);
}

/// One TLV as a buffer of its own.
pub(crate) fn wrap(tag: u8, content: &[u8]) -> Vec<u8> {
    wrap_all(tag, &[content])
}

/// One TLV whose content is `parts`, back to back: `wrap_all(0x30, &[a, b])`
/// is `SEQUENCE { a, b }`.
pub(crate) fn wrap_all(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(header_len(len) + len);
    out.push(tag);
    push_len(&mut out, len);
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// A positive INTEGER as a buffer of its own.
pub(crate) fn uint(magnitude: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(magnitude.len() + 3);
    push_uint(&mut out, magnitude);
    out
}

pub(crate) fn header(tag: u8, len: usize) -> Vec<u8> {
    let mut out = vec![tag];
    push_len(&mut out, len);
    out
}

/// A positive INTEGER from big-endian magnitude bytes.
pub(crate) fn push_uint(out: &mut Vec<u8>, magnitude: &[u8]) {
    let skip = magnitude
        .iter()
        .take_while(|b| **b == 0)
        .count()
        .min(magnitude.len().saturating_sub(1));
    let m = &magnitude[skip..];
    let pad = m.first().is_some_and(|b| b & 0x80 != 0);
    out.push(0x02);
    push_len(out, m.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(m);
}

/// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
/// `UTCTime` before 2050, `GeneralizedTime` from then on (RFC 5280 §5.1.2.4).
pub(crate) fn push_time(out: &mut Vec<u8>, t: OffsetDateTime) {
    let t = t.to_offset(time::UtcOffset::UTC);
    if t.year() < 2050 {
        out.extend_from_slice(&[0x17, 13]);
        push_digits(out, (t.year() % 100) as u32, 2);
        push_clock(out, t);
    } else {
        push_generalized_time(out, t);
    }
}

pub(crate) fn push_generalized_time(out: &mut Vec<u8>, t: OffsetDateTime) {
    let t = t.to_offset(time::UtcOffset::UTC);
    out.extend_from_slice(&[0x18, 15]);
    push_digits(out, t.year().clamp(0, 9999) as u32, 4);
    push_clock(out, t);
}

/// `MMDDHHMMSSZ`.
pub(crate) fn push_clock(out: &mut Vec<u8>, t: OffsetDateTime) {
    for field in [
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    ] {
        push_digits(out, field.into(), 2);
    }
    out.push(b'Z');
}

pub(crate) fn push_digits(out: &mut Vec<u8>, value: u32, width: u32) {
    for place in (0..width).rev() {
        out.push(b'0' + (value / 10u32.pow(place) % 10) as u8);
    }
}

pub(crate) fn push_extension(out: &mut Vec<u8>, oid: &[u8], value: &[u8]) {
    let mut inner = Vec::with_capacity(oid.len() + value.len() + 8);
    tlv(&mut inner, 0x06, oid);
    tlv(&mut inner, 0x04, value);
    tlv(out, 0x30, &inner);
}

/// Bytes a tag and a length of `len` take.
pub(crate) fn header_len(len: usize) -> usize {
    let length_octets = if len < 0x80 {
        1
    } else {
        1 + (usize::BITS - len.leading_zeros()).div_ceil(8) as usize
    };
    1 + length_octets
}

pub(crate) fn signature_algorithm(algorithm: KeyAlgorithm) -> Vec<u8> {
    match algorithm {
        // ecdsa-with-SHA256 / SHA384, no parameters (RFC 5758 §3.2).
        KeyAlgorithm::EcdsaP256 => vec![
            0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
        ],
        KeyAlgorithm::EcdsaP384 => vec![
            0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
        ],
        // sha256WithRSAEncryption with NULL parameters (RFC 4055).
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => vec![
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05,
            0x00,
        ],
    }
}
