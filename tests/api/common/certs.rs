//! Certificates and keys the tests make with `openssl` (which `scripts/test` installs):
//! Herald's own for HTTPS, a TLS upstream's, and keys that sign or verify tokens.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A self-signed end-entity certificate for 127.0.0.1 (P-256), as PEM files in `dir`: (cert, key).
pub fn make_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", &format!("/CN={name}")])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        // an end-entity certificate (rustls refuses a CA one as the server's own)
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args([
            "-addext",
            "keyUsage=digitalSignature",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (scripts/test installs it)");
    assert!(status.success());
    (cert, key)
}

/// Run `openssl` with `args`; it must succeed.
pub fn openssl(args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (scripts/test installs it)");
    assert!(status.success(), "openssl {args:?}");
}

/// A private EC key on P-384 (a curve Herald does not take) at `path`.
pub fn p384_key(path: &str) {
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-out",
        path,
    ]);
}
