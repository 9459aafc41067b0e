//! The gateway's RSA-SHA256 signature of the spec's content string is byte-for-byte what
//! `openssl dgst -sha256 -sign tests/fixtures/test_merchant_key.pem` produces (pinned below),
//! for the PKCS#8 and the PKCS#1 form of the same key.

#[path = "common/provision.rs"]
mod provision;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use paygate::providers::antom::signing::{self, Signer, Verifier};

/// `base64(openssl dgst -sha256 -sign test_merchant_key.pem content.txt)`.
const OPENSSL_SIGNATURE: &str = "jIPfubTKw9pjASIn4gC4UwlUjMXE4kGheyuow9GsjPoJzozR8dtFTMZnr3V7rKrurjKPXYYUnp+JBo+Xhefseh1dfQcnNjloiH2/hkNkLg150/GVPhZKpU0h/bPpbZ0i/UB4vcbXf59eJRh4XQFIaLxbRE5nUhZidiFFGdER8dHGUYSUriLzrI5LF+zWvI/vn4r+h8KTzjN7MJhqHlb7lrXXrK71uzTfku7pazxxmDwGHR+ij3oKqEWWpgCqXJVJODzAHHxZufzPtxw5zcWyMfv5xt374/1w0AARRdUfxAKPNLOrKVpQUILn7jInqLndcQsz+22q/K8sAq2fyRF9uQ==";

fn content() -> Vec<u8> {
    signing::content(
        "/ams/api/v1/payments/refund",
        "SANDBOX_5X00000000000000",
        "1685599933871",
        br#"{"paymentId":"20181129190741010007000000XXXX","refundAmount":{"currency":"USD","value":"100"},"refundRequestId":"REFUND_REQ_0001"}"#,
    )
}

#[test]
fn signature_matches_openssl_byte_for_byte() {
    for pem in [
        include_str!("fixtures/test_merchant_key.pem"),
        include_str!("fixtures/test_merchant_key_pkcs1.pem"),
    ] {
        let signer = Signer::from_bytes(pem.as_bytes()).unwrap();
        let sig = signer.sign(&content());
        assert_eq!(STANDARD.encode(&sig), OPENSSL_SIGNATURE);
    }
    let verifier =
        Verifier::from_bytes(include_bytes!("fixtures/test_merchant_public_key.pem")).unwrap();
    let openssl_sig = STANDARD.decode(OPENSSL_SIGNATURE).unwrap();
    assert!(verifier.verify(&content(), &openssl_sig));
    let mut tampered = content();
    tampered[10] ^= 1;
    assert!(!verifier.verify(&tampered, &openssl_sig));
}

#[test]
fn header_carries_the_url_encoded_base64() {
    let signer = Signer::from_bytes(include_bytes!("fixtures/test_merchant_key.pem")).unwrap();
    let h = signing::signature_header(1, &signer.sign(&content()));
    let expected = format!(
        "algorithm=RSA256,keyVersion=1,signature={}",
        OPENSSL_SIGNATURE
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    assert_eq!(h, expected);
}

/// Where openssl is installed, the check is also made live against it.
#[test]
fn live_openssl_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("content.txt");
    std::fs::write(&path, content()).unwrap();
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/test_merchant_key.pem"
    );
    let out = std::process::Command::new(provision::command("openssl", "openssl"))
        .args(["dgst", "-sha256", "-sign", key])
        .arg(&path)
        .output()
        .expect("openssl");
    assert!(out.status.success());
    assert_eq!(STANDARD.encode(out.stdout), OPENSSL_SIGNATURE);
}
