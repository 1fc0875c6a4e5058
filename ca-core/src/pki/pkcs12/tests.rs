use super::*;
use crate::policy::Pkcs12Profile;
use openssl::hash::MessageDigest;
use pkcs12::kdf::Pkcs12KeyType;

#[test]
fn passwords_are_random_and_unambiguous() {
    let a = generate_password(20).unwrap();
    let b = generate_password(20).unwrap();
    assert_eq!(a.len(), 20);
    assert_ne!(*a, *b);
    assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
}

fn settings(profile: Pkcs12Profile, iterations: u32) -> Pkcs12Settings {
    let mut settings = crate::policy::Policies::shipped()
        .get("portal-admin")
        .unwrap()
        .pkcs12
        .clone()
        .unwrap();
    settings.profile = profile;
    settings.iterations = iterations;
    settings
}

#[test]
fn caller_passwords_meet_the_policy_minimum() {
    let mut policy = settings(Pkcs12Profile::Modern, 2048);
    assert_eq!(policy.min_password_length, 12, "the shipped default");
    for short in ["", "short", "8chars!!", "elevenchars"] {
        let err = check_password(short, &policy).unwrap_err().to_string();
        assert!(err.contains("must have 12 to 256"), "{err}");
    }
    assert!(check_password("twelve chars", &policy).is_ok());
    // Characters, not bytes: 12 umlauts are 24 bytes and still 12 characters.
    assert!(check_password(&"ü".repeat(11), &policy).is_err());
    assert!(check_password(&"ü".repeat(12), &policy).is_ok());
    policy.min_password_length = 16;
    assert!(check_password("twelve chars", &policy).is_err());
    assert!(check_password("bell\u{7}charsxxxxxxxx", &policy).is_err());
}

fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap()
}

/// RFC 7914 §11 (PBKDF2-HMAC-SHA256 test vectors), first 32 bytes.
#[test]
fn pbkdf2_known_answers() {
    assert_eq!(
        writer::pbkdf2_sha256(b"passwd", b"salt", 1).to_vec(),
        unhex("55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc")
    );
    assert_eq!(
        writer::pbkdf2_sha256(b"Password", b"NaCl", 80_000).to_vec(),
        unhex("4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56")
    );
}

/// The PKCS#12 KDF (RFC 7292 App. B) with SHA-256, MAC key (ID 3): a
/// vector made with OpenSSL's `PKCS12_key_gen_utf8` (published with the
/// RustCrypto `pkcs12` crate's tests), and OpenSSL's reading of a
/// non-BMP password (surrogate pairs), checked through a full bundle in
/// `modern_bundles_open_with_openssl_for_any_password`.
#[test]
fn pkcs12_kdf_known_answers() {
    let key = writer::pkcs12_kdf::<sha2::Sha256>(
        "ge@äheim",
        &[1, 2, 3, 4, 5, 6, 7, 8],
        Pkcs12KeyType::Mac,
        100,
        32,
    )
    .unwrap();
    assert_eq!(
        key.to_vec(),
        unhex("136355ed9434516682534f46d63956db5ff06b844702c2c1f3b46321e2524a4d")
    );
}

/// The 16-byte values that follow `prefix` (salts and IVs: `04 10 …`).
fn values_after(der: &[u8], prefix: &[u8]) -> Vec<Vec<u8>> {
    der.windows(prefix.len())
        .enumerate()
        .filter(|(_, w)| *w == prefix)
        .map(|(i, _)| i + prefix.len())
        .filter_map(|at| {
            let rest = &der[at..];
            let start = rest.windows(2).position(|w| w == [0x04, 0x10])?;
            Some(rest[start + 2..start + 18].to_vec())
        })
        .collect()
}

#[test]
fn every_bundle_has_fresh_salts_and_ivs() {
    let key = crate::keys::KeyAlgorithm::EcdsaP256.generate().unwrap();
    let (cert, _) = crate::pki::x509::test_certificate(key.clone(), "CN=Bundle Test");
    let build = || {
        let der = writer::build(
            &key,
            &cert.0,
            &cert.0,
            Pkcs12Profile::Modern,
            2048,
            "a (t)",
            "Abcdefgh2345",
        )
        .unwrap();
        const PBKDF2: &[u8] = &[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c,
        ];
        const AES: &[u8] = &[
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a,
        ];
        const SHA256: &[u8] = &[
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        ];
        let mut values = values_after(&der.0, PBKDF2);
        values.extend(values_after(&der.0, AES));
        // The MAC salt follows the MAC digest (after the last SHA-256 OID).
        let mac = values_after(&der.0, SHA256);
        values.push(mac.last().unwrap().clone());
        values
    };
    let (first, second) = (build(), build());
    // Two PBKDF2 salts, two IVs, one MAC salt in each.
    assert_eq!(first.len(), 5, "{first:?}");
    let mut all: Vec<&Vec<u8>> = first.iter().chain(second.iter()).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 10, "every salt and IV is drawn afresh");
}

/// The policy's iteration count is the one written, and the one OpenSSL
/// reads back (`openssl pkcs12 -info`), for both profiles.
#[test]
fn the_policy_iteration_count_is_written_and_used() {
    let key = crate::keys::KeyAlgorithm::EcdsaP256.generate().unwrap();
    let (cert, _) = crate::pki::x509::test_certificate(key.clone(), "CN=Bundle Test");
    let dir = tempfile::tempdir().unwrap();
    for profile in [Pkcs12Profile::Modern, Pkcs12Profile::Legacy] {
        let bundle = build_pkcs12(
            &key,
            &cert.0,
            &cert.0,
            &settings(profile, 4321),
            "a (t)",
            "Abcdefgh2345",
        )
        .unwrap();
        let path = dir.path().join("b.p12");
        std::fs::write(&path, &bundle.0[..]).unwrap();
        let out = std::process::Command::new("openssl")
            .args([
                "pkcs12",
                "-info",
                "-noout",
                "-passin",
                "pass:Abcdefgh2345",
                "-in",
            ])
            .arg(&path)
            .output()
            .expect("openssl CLI");
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{profile:?}: {text}");
        assert!(text.contains("Iteration 4321"), "{profile:?}: {text}");
        assert!(!text.contains("Iteration 2048"), "{profile:?}: {text}");
    }
}

#[test]
fn pbkdf2_matches_openssl() {
    for (password, iterations) in [
        (&b"password"[..], 1),
        (b"password", 2),
        (b"passwordPASSWORDpassword", 2048),
        (&[0x41u8; 100][..], 1000),
    ] {
        let salt = b"saltSALTsaltSALTsaltSALTsaltSALTsalt";
        let mut expected = [0u8; 32];
        openssl::pkcs5::pbkdf2_hmac(
            password,
            salt,
            iterations,
            MessageDigest::sha256(),
            &mut expected,
        )
        .unwrap();
        assert_eq!(
            *writer::pbkdf2_sha256(password, salt, iterations as u32),
            expected
        );
    }
}

#[test]
fn bundles_of_both_profiles_open_with_openssl_for_any_password() {
    let key = crate::keys::KeyAlgorithm::EcdsaP256.generate().unwrap();
    let (cert, _) = crate::pki::x509::test_certificate(key.clone(), "CN=Bundle Test");
    let long = "x".repeat(100);
    for profile in [Pkcs12Profile::Modern, Pkcs12Profile::Legacy] {
        for password in ["Abcdefgh2345", "pässwörd-ünïcode-€-😀", long.as_str()] {
            let der = writer::build(
                &key,
                &cert.0,
                &cert.0,
                profile,
                2048,
                "alice (acme)",
                password,
            )
            .unwrap();
            let parsed = openssl::pkcs12::Pkcs12::from_der(&der.0)
                .unwrap()
                .parse2(password)
                .unwrap_or_else(|e| panic!("{profile:?} {password}: {e}"));
            assert!(parsed.pkey.unwrap().public_eq(&key));
            assert_eq!(parsed.cert.unwrap().to_der().unwrap(), cert.0);
            assert_eq!(parsed.ca.unwrap().len(), 1);
            assert!(openssl::pkcs12::Pkcs12::from_der(&der.0)
                .unwrap()
                .parse2("wrong password")
                .is_err());
        }
    }
}

/// The PKCS#12 KDF (RFC 7292 App. B) with SHA-1: the published vectors
/// for the 3DES key (ID 1), its IV (ID 2) and the MAC key (ID 3), at 1
/// and 1,000 iterations (the test set that OpenSSL and Bouncy Castle
/// both carry, passwords "smeg" and "queeg").
#[test]
fn pkcs12_kdf_sha1_known_answers() {
    let kdf = |password: &str, salt: &str, id, iterations, len| {
        writer::pkcs12_kdf::<sha1::Sha1>(password, &unhex(salt), id, iterations, len)
            .unwrap()
            .to_vec()
    };
    use Pkcs12KeyType::{EncryptionKey, Iv, Mac};
    assert_eq!(
        kdf("smeg", "0a58cf64530d823f", EncryptionKey, 1, 24),
        unhex("8aaae6297b6cb04642ab5b077851284eb7128f1a2a7fbca3")
    );
    assert_eq!(
        kdf("smeg", "0a58cf64530d823f", Iv, 1, 8),
        unhex("79993dfe048d3b76")
    );
    assert_eq!(
        kdf("smeg", "3d83c0e4546ac140", Mac, 1, 20),
        unhex("8d967d88f6caa9d714800ab3d48051d63f73a312")
    );
    assert_eq!(
        kdf("queeg", "1682c0fc5b3f7ec5", EncryptionKey, 1000, 24),
        unhex("483dd6e919d7de2e8e648ba8f862f3fbfbdc2bcb2c02957f")
    );
    assert_eq!(
        kdf("queeg", "1682c0fc5b3f7ec5", Iv, 1000, 8),
        unhex("9d461d1b00355c50")
    );
    assert_eq!(
        kdf("queeg", "263216fcc2fab31c", Mac, 1000, 20),
        unhex("5ec4c7a80df652294c3925b6489a7ab857c83476")
    );
}

/// RFC 2202 §3 test cases 1 and 2 (HMAC-SHA1).
#[test]
fn hmac_sha1_known_answers() {
    assert_eq!(
        writer::hmac_sha1(&[0x0b; 20], b"Hi There"),
        unhex("b617318655057264e28bc0b6fb378c8ef146be00")
    );
    assert_eq!(
        writer::hmac_sha1(b"Jefe", b"what do ya want for nothing?"),
        unhex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
    );
}

/// A legacy bundle made by OpenSSL's own `PKCS12_create` (the path this
/// writer replaced) opens with this writer's derivations: its MAC checks
/// under our SHA-1 MAC key, and its key bag decrypts under our 3DES key
/// and IV — for an ASCII and a non-ASCII password (OpenSSL's UTF-16 reading).
#[test]
fn legacy_derivations_open_a_bundle_made_by_openssl() {
    use der::Decode as _;
    let key = crate::keys::KeyAlgorithm::EcdsaP256.generate().unwrap();
    let (cert, _) = crate::pki::x509::test_certificate(key.clone(), "CN=Bundle Test");
    for password in ["Abcdefgh2345", "pässwörd-ünïcode-€-😀"] {
        let pfx = openssl_legacy_bundle(&key, &cert.0, password, 2048);
        let pfx = pkcs12::pfx::Pfx::from_der(&pfx).unwrap();
        let safe = pfx
            .auth_safe
            .content
            .decode_as::<der::asn1::OctetString>()
            .unwrap();
        let mac_data = pfx.mac_data.unwrap();
        assert_eq!(mac_data.iterations, 2048);
        let mac_key = writer::pkcs12_kdf::<sha1::Sha1>(
            password,
            mac_data.mac_salt.as_bytes(),
            Pkcs12KeyType::Mac,
            2048,
            20,
        )
        .unwrap();
        assert_eq!(
            writer::hmac_sha1(&mac_key, safe.as_bytes()),
            mac_data.mac.digest.as_bytes(),
            "{password}: the MAC key matches OpenSSL's"
        );

        // AuthenticatedSafe: [encrypted certificates, data with the key bag].
        let contents: pkcs12::authenticated_safe::AuthenticatedSafe =
            Vec::from_der(safe.as_bytes()).unwrap();
        let data = contents[1]
            .content
            .decode_as::<der::asn1::OctetString>()
            .unwrap();
        let bags: Vec<pkcs12::safe_bag::SafeBag> = Vec::from_der(data.as_bytes()).unwrap();
        let explicit = der::asn1::AnyRef::from_der(&bags[0].bag_value).unwrap();
        let shrouded =
            pkcs12::pbe_params::EncryptedPrivateKeyInfo::from_der(explicit.value()).unwrap();
        let params = shrouded
            .encryption_algorithm
            .parameters
            .unwrap()
            .decode_as::<pkcs12::pbe_params::Pkcs12PbeParams>()
            .unwrap();
        let (des_key, iv) =
            writer::pbe_sha1_3des_key_iv(password, params.salt.as_bytes(), 2048).unwrap();
        let pkcs8 = openssl::symm::decrypt(
            openssl::symm::Cipher::des_ede3_cbc(),
            &des_key,
            Some(&iv),
            shrouded.encrypted_data.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("{password}: {e}"));
        let decrypted = PKey::private_key_from_pkcs8(&pkcs8).unwrap();
        assert!(decrypted.public_eq(&key), "{password}");
    }
}

/// What OpenSSL writes for the legacy profile: `PKCS12_create` with
/// PBE-SHA1-3DES for both bags and a SHA-1 MAC.
fn openssl_legacy_bundle(
    key: &PKey<Private>,
    certificate_der: &[u8],
    password: &str,
    iterations: u32,
) -> Vec<u8> {
    use openssl::nid::Nid;
    let cert = openssl::x509::X509::from_der(certificate_der).unwrap();
    let mut chain = openssl::stack::Stack::new().unwrap();
    chain.push(cert.clone()).unwrap();
    let mut builder = openssl::pkcs12::Pkcs12::builder();
    builder
        .name("alice (acme)")
        .pkey(key)
        .cert(&cert)
        .ca(chain)
        .key_iter(iterations)
        .mac_iter(iterations)
        .key_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .cert_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .mac_md(MessageDigest::sha1());
    builder.build2(password).unwrap().to_der().unwrap()
}

/// The DER tree of a bundle as (depth, tag, OID or small INTEGER), with
/// lengths and the random values (salts, IVs, ciphertexts, MACs) left
/// out; the OCTET STRING right inside a `[0]` (a ContentInfo's data, a
/// certificate bag's value) is opened, as its content is DER.
fn layout(der: &[u8]) -> Vec<String> {
    fn walk(mut der: &[u8], depth: usize, open: bool, out: &mut Vec<String>) {
        while !der.is_empty() {
            let tag = der[0];
            let (len, header) = match der[1] {
                n if n < 0x80 => (n as usize, 2),
                n => {
                    let count = (n & 0x7f) as usize;
                    let len = der[2..2 + count]
                        .iter()
                        .fold(0usize, |acc, b| (acc << 8) | *b as usize);
                    (len, 2 + count)
                }
            };
            let content = &der[header..header + len];
            let detail = match tag {
                0x06 => format!(" {}", hex::encode(content)),
                0x02 if len <= 4 => format!(" {}", hex::encode(content)),
                _ => String::new(),
            };
            out.push(format!("{depth} {tag:02x}{detail}"));
            if tag & 0x20 != 0 {
                walk(content, depth + 1, tag == 0xa0, out);
            } else if tag == 0x04 && open {
                walk(content, depth + 1, false, out);
            }
            der = &der[header + len..];
        }
    }
    let mut out = Vec::new();
    walk(der, 0, false, &mut out);
    out
}

/// Same layout as OpenSSL's `PKCS12_create` with PBE-SHA1-3DES and a
/// SHA-1 MAC: the same tree of SEQUENCEs, OIDs, versions and iteration
/// counts, element for element (only salt lengths, which are ours to
/// choose, and the random values differ). The openssl CLI then reads
/// both the same way (`pkcs12 -info`).
#[test]
fn legacy_layout_matches_openssl_pkcs12_create() {
    let key = crate::keys::KeyAlgorithm::EcdsaP256.generate().unwrap();
    let (cert, _) = crate::pki::x509::test_certificate(key.clone(), "CN=Bundle Test");
    let ours = writer::build(
        &key,
        &cert.0,
        &cert.0,
        Pkcs12Profile::Legacy,
        2048,
        "alice (acme)",
        "Abcdefgh2345",
    )
    .unwrap();
    let theirs = openssl_legacy_bundle(&key, &cert.0, "Abcdefgh2345", 2048);
    let (ours_layout, theirs_layout) = (layout(&ours.0), layout(&theirs));
    assert!(ours_layout.len() > 40, "{ours_layout:?}");
    assert_eq!(ours_layout, theirs_layout);

    let dir = tempfile::tempdir().unwrap();
    let info = |der: &[u8]| {
        let path = dir.path().join("b.p12");
        std::fs::write(&path, der).unwrap();
        let out = std::process::Command::new("openssl")
            .args([
                "pkcs12",
                "-info",
                "-nokeys",
                "-passin",
                "pass:Abcdefgh2345",
                "-in",
            ])
            .arg(&path)
            .output()
            .expect("openssl CLI");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The algorithm lines, without the salt lengths.
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(|l| l.split(", salt length").next().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let lines = info(&ours.0);
    assert!(lines.iter().any(|l| l.contains("MAC: sha1")), "{lines:?}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2048"))
            .count(),
        2,
        "{lines:?}"
    );
    assert_eq!(lines, info(&theirs));
}
