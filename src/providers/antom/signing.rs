//! Antom's RSA-SHA256 (PKCS#1 v1.5) request and answer signatures, with aws-lc-rs.
//!
//! Signed content: `POST <uri>\n<client-id>.<request-or-response-time>.<body>`.
//! Header: `algorithm=RSA256,keyVersion=<n>,signature=<urlencode(base64(sig))>`.

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{
    KeyPair as _, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};

/// Why a key could not be loaded. Never carries key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Neither PEM nor bare base64 DER.
    #[error("not a PEM key nor base64-encoded DER")]
    Encoding,
    /// Parsed, but not an RSA key of an accepted form or size.
    #[error("not an RSA key of 2048 to 8192 bits in PKCS#8 or PKCS#1 form")]
    Rejected,
    /// Key generation failed.
    #[error("RSA key generation failed")]
    Generation,
}

/// Builds the exact byte string Antom signs.
pub fn content(uri: &str, client_id: &str, time: &str, body: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(uri.len() + client_id.len() + time.len() + body.len() + 8);
    c.extend_from_slice(b"POST ");
    c.extend_from_slice(uri.as_bytes());
    c.push(b'\n');
    c.extend_from_slice(client_id.as_bytes());
    c.push(b'.');
    c.extend_from_slice(time.as_bytes());
    c.push(b'.');
    c.extend_from_slice(body);
    c
}

/// Formats the `Signature` header value.
pub fn signature_header(key_version: u32, signature: &[u8]) -> String {
    let b64 = STANDARD.encode(signature);
    format!(
        "algorithm=RSA256,keyVersion={key_version},signature={}",
        urlencoding::encode(&b64)
    )
}

/// Extracts the raw signature bytes from a `Signature` header value; `None` if absent or
/// malformed. Accepts spaces after commas and lower-case percent escapes.
pub fn parse_signature_header(value: &str) -> Option<Vec<u8>> {
    let encoded = value
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("signature="))?;
    let b64 = urlencoding::decode(encoded).ok()?;
    STANDARD.decode(b64.as_bytes()).ok()
}

/// The `keyVersion` a `Signature` header value names, if it names one.
pub fn key_version_of(value: &str) -> Option<u32> {
    value
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("keyVersion="))
        .and_then(|v| v.trim().parse().ok())
}

fn strip_base64(input: &[u8]) -> Option<Vec<u8>> {
    let compact: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    STANDARD.decode(compact).ok()
}

/// A merchant (or, in the simulator, Antom) private key that signs.
pub struct Signer {
    key: KeyPair,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer([redacted])")
    }
}

impl Signer {
    /// Loads a private key given as PEM (`PRIVATE KEY` or `RSA PRIVATE KEY`) or as bare
    /// base64 of PKCS#8 or PKCS#1 DER, as Antom's dashboard hands it out.
    pub fn from_bytes(input: &[u8]) -> Result<Self, KeyError> {
        let key = match PrivateKeyDer::from_pem_slice(input) {
            Ok(PrivateKeyDer::Pkcs8(k)) => KeyPair::from_pkcs8(k.secret_pkcs8_der()),
            Ok(PrivateKeyDer::Pkcs1(k)) => KeyPair::from_der(k.secret_pkcs1_der()),
            Ok(_) => return Err(KeyError::Rejected),
            Err(_) => {
                let der = strip_base64(input).ok_or(KeyError::Encoding)?;
                KeyPair::from_pkcs8(&der).or_else(|_| KeyPair::from_der(&der))
            }
        }
        .map_err(|_| KeyError::Rejected)?;
        Ok(Self { key })
    }

    /// A fresh 2048-bit key (dev mode and the simulator).
    pub fn generate() -> Result<Self, KeyError> {
        let key = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generation)?;
        Ok(Self { key })
    }

    /// Signs `message` with RSA PKCS#1 v1.5 over SHA-256.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; self.key.public_modulus_len()];
        // aws-lc-rs fails here only for a digest/key mismatch, which the types rule out.
        if self
            .key
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut out)
            .is_err()
        {
            out.clear();
        }
        out
    }

    /// The public half as SubjectPublicKeyInfo DER.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.key
            .public_key()
            .as_der()
            .map(|d| d.as_ref().to_vec())
            .unwrap_or_default()
    }

    /// The private key as PKCS#8 PEM (dev mode writes it for the operator).
    pub fn private_key_pem(&self) -> String {
        let der = self
            .key
            .as_der()
            .map(|d| d.as_ref().to_vec())
            .unwrap_or_default();
        pem("PRIVATE KEY", &der)
    }

    /// The public key as SPKI PEM.
    pub fn public_key_pem(&self) -> String {
        pem("PUBLIC KEY", &self.public_key_der())
    }
}

/// Wraps DER in PEM armour.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(line));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// A public key that verifies signatures, parsed once.
#[derive(Clone)]
pub struct Verifier {
    key: ParsedPublicKey,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier(RSA public key)")
    }
}

impl Verifier {
    /// Loads a public key given as PEM (`PUBLIC KEY` SPKI) or bare base64 of SPKI (or
    /// PKCS#1) DER.
    pub fn from_bytes(input: &[u8]) -> Result<Self, KeyError> {
        let der = match SubjectPublicKeyInfoDer::from_pem_slice(input) {
            Ok(spki) => spki.as_ref().to_vec(),
            Err(_) => strip_base64(input).ok_or(KeyError::Encoding)?,
        };
        Self::from_der(&der)
    }

    /// Builds a verifier from SPKI or PKCS#1 DER.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let key = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)
            .map_err(|_| KeyError::Rejected)?;
        Ok(Self { key })
    }

    /// True if `signature` is a valid RSA-SHA256 PKCS#1 v1.5 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_matches_the_spec_vector() {
        let body = br#"{"paymentId":"20181129190741010007000000XXXX","refundAmount":{"currency":"USD","value":"100"},"refundRequestId":"REFUND_REQ_0001"}"#;
        let c = content(
            "/ams/api/v1/payments/refund",
            "SANDBOX_5X00000000000000",
            "1685599933871",
            body,
        );
        assert_eq!(c.len(), 202);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &c);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "443ca31fd1507ffdc3a5a62f69ca9f9da932b2b972aadb95dadce069c0e56acc"
        );
    }

    #[test]
    fn header_url_encodes_base64_upper_case() {
        // The spec's vector for the URL-encoding step alone.
        assert_eq!(urlencoding::encode("ab+/cd=="), "ab%2B%2Fcd%3D%3D");
        let raw = STANDARD.decode("ab+/cw==").unwrap();
        let h = signature_header(1, &raw);
        assert_eq!(
            h,
            "algorithm=RSA256,keyVersion=1,signature=ab%2B%2Fcw%3D%3D"
        );
        assert_eq!(parse_signature_header(&h).unwrap(), raw);
        let spaced = "algorithm=RSA256, keyVersion=1, signature=ab%2b%2fcw%3d%3d";
        assert_eq!(parse_signature_header(spaced).unwrap(), raw);
        assert!(parse_signature_header("algorithm=RSA256,keyVersion=1").is_none());
    }

    #[test]
    fn generated_keys_round_trip_through_pem_and_base64() {
        let s = Signer::generate().unwrap();
        let v = Verifier::from_bytes(s.public_key_pem().as_bytes()).unwrap();
        let sig = s.sign(b"hello");
        assert_eq!(sig.len(), 256);
        assert!(v.verify(b"hello", &sig));
        assert!(!v.verify(b"hellO", &sig));
        let again = Signer::from_bytes(s.private_key_pem().as_bytes()).unwrap();
        assert_eq!(again.sign(b"hello"), sig, "PKCS#1 v1.5 is deterministic");
        let bare: String = s
            .private_key_pem()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert_eq!(
            Signer::from_bytes(bare.as_bytes()).unwrap().sign(b"hello"),
            sig
        );
        assert!(format!("{again:?}").contains("redacted"));
    }

    #[test]
    fn garbage_keys_are_rejected() {
        assert!(Signer::from_bytes(b"not a key").is_err());
        assert!(Signer::from_bytes(b"aGVsbG8=").is_err());
        assert!(Verifier::from_bytes(b"aGVsbG8=").is_err());
    }
}
