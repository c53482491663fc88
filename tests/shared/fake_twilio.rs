//! `herald-fakes twilio` as a child process, killed on drop: shared by the test crates that
//! include it (`#[path]`); each adds the ways it reads the fake's stats.

/// A fake Twilio server (the repository's `herald-fakes twilio`).
pub struct FakeTwilio {
    child: std::process::Child,
    pub url: String,
}

impl FakeTwilio {
    /// On a free loopback port.
    pub fn start(token: &str) -> FakeTwilio {
        FakeTwilio::start_on(0, token)
    }

    /// On loopback `port` (0: any free one).
    pub fn start_on(port: u16, token: &str) -> FakeTwilio {
        use std::io::BufRead;
        let listen = format!("127.0.0.1:{port}");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_herald-fakes"))
            .args(["twilio", "--auth-token", token, "--listen", &listen])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("herald-fakes starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("listening line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("herald-fakes printed {line:?}"))
            .to_string();
        FakeTwilio { child, url }
    }
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
