//! Throwaway TLS material for tests: a CA and a server certificate for `localhost`
//! and `127.0.0.1`, made with the `openssl` command line tool (installed with OpenSSL).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestCerts {
    pub dir: PathBuf,
    /// PEM of the CA that signed `server_cert`; what `tls_ca_file` points at.
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCerts {
    /// Writes a fresh CA and server certificate into `dir` (which must exist).
    pub fn generate(dir: &Path) -> TestCerts {
        let p = |name: &str| dir.join(name);
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("the `openssl` command is needed for TLS tests: apt-get install openssl");
            assert!(
                out.status.success(),
                "openssl {:?} failed: {}",
                args,
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=pophook test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            p("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        TestCerts {
            dir: dir.to_path_buf(),
            ca_cert: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
        }
    }

    /// A `native_tls` identity for in-process TLS servers (the scripted POP3 server).
    pub fn identity(&self) -> native_tls::Identity {
        let cert = std::fs::read(&self.server_cert).unwrap();
        let key = std::fs::read(&self.server_key).unwrap();
        native_tls::Identity::from_pkcs8(&cert, &key).expect("test server identity")
    }
}
