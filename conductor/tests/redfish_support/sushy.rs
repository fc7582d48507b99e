//! `sushy-emulator --fake` (PyPI `sushy-tools`) as a Redfish peer on a free loopback port.
//!
//! The emulator lives in a Python venv at `$FERRIC_SUSHY_VENV`, else
//! `<target dir>/sushy-venv`, created on first use with pinned versions. Without
//! `python3 -m venv` the tests print a "skipped:" line and return.
//!
//! Each [`Sushy`] gets its own config file (fake systems, a bcrypt htpasswd file for
//! basic authentication) and state directory, and is killed by PID when dropped.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The pinned peer: the emulator and the bcrypt module that hashes its passwords.
const PACKAGES: [&str; 2] = ["sushy-tools==2.2.0", "bcrypt==5.0.0"];

/// Environment variable naming an existing venv to use instead.
pub const VENV_ENV: &str = "FERRIC_SUSHY_VENV";

/// How long the emulator may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // <target>/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("the test binary has a path");
    let mut dir = exe.parent().expect("the test binary has a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("deps/ has a parent");
    }
    dir.parent().expect("the profile directory has a parent").to_path_buf()
}

fn venv_dir() -> PathBuf {
    match std::env::var_os(VENV_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => target_dir().join("sushy-venv"),
    }
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{what}: cannot run: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what} exited with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// Why the peer is not available.
#[derive(Debug)]
pub enum Unavailable {
    /// The machine cannot make Python venvs: the test is skipped.
    Skip(String),
    /// Making the venv failed for another reason: the test fails.
    Failed(String),
}

/// The venv's `bin/` directory, creating the venv first when needed (once per process).
pub fn ensure_venv() -> Result<PathBuf, Unavailable> {
    static READY: Mutex<Option<Result<PathBuf, String>>> = Mutex::new(None);
    let mut ready = READY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(done) = ready.as_ref() {
        return done.clone().map_err(Unavailable::Failed);
    }
    let venv = venv_dir();
    let bin = venv.join("bin");
    let stamp = venv.join(".ferric-sushy");
    let want = PACKAGES.join(" ");
    let current = std::fs::read_to_string(&stamp).unwrap_or_default();
    if bin.join("sushy-emulator").is_file() && current == want {
        *ready = Some(Ok(bin.clone()));
        return Ok(bin);
    }
    if !bin.join("python").is_file() {
        let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).output();
        match made {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return Err(Unavailable::Skip(format!(
                    "`python3 -m venv` failed (install python3-venv): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
            Err(e) => return Err(Unavailable::Skip(format!("python3 is not available: {e}"))),
        }
    }
    let installed = run(
        Command::new(bin.join("python"))
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(PACKAGES),
        "pip install sushy-tools",
    )
    .and_then(|()| std::fs::write(&stamp, &want).map_err(|e| format!("writing {stamp:?}: {e}")));
    let result = installed.map(|()| bin);
    *ready = Some(result.clone());
    result.map_err(Unavailable::Failed)
}

/// The venv or, when it cannot exist here, `None` after printing why the test skips.
/// Any other failure to make it fails the test.
pub fn venv_or_skip(test: &str) -> Option<PathBuf> {
    match ensure_venv() {
        Ok(bin) => Some(bin),
        Err(Unavailable::Skip(reason)) => {
            println!("skipped: {test}: {reason}");
            None
        }
        Err(Unavailable::Failed(reason)) => panic!("cannot set up sushy-tools: {reason}"),
    }
}

/// A free loopback TCP port (bound, read, released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

/// A fake system of the emulator.
#[derive(Debug, Clone)]
pub struct FakeSystem {
    pub uuid: String,
    pub name: String,
    pub power_on: bool,
}

/// A running `sushy-emulator --fake`.
#[derive(Debug)]
pub struct Sushy {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Sushy {
    /// Starts the emulator with `systems`, accepting `user`/`password` by basic auth.
    pub fn start(bin: &Path, systems: &[FakeSystem], user: &str, password: &str) -> Sushy {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        let script = "import bcrypt, sys\n\
                      h = bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(rounds=4)).decode()\n\
                      open(sys.argv[3], 'w').write(f'{sys.argv[1]}:{h}\\n')\n";
        run(
            Command::new(bin.join("python")).args(["-c", script, user, password]).arg(&htpasswd),
            "hashing the emulator password",
        )
        .unwrap();
        let systems_py: Vec<String> = systems
            .iter()
            .map(|s| {
                format!(
                    "{{'uuid': {:?}, 'name': {:?}, 'power_state': {:?}, \
                     'external_notifier': False, 'nics': [{{'mac': '52:54:00:12:34:56', \
                     'ip': '127.0.0.2'}}]}}",
                    s.uuid,
                    s.name,
                    if s.power_on { "On" } else { "Off" }
                )
            })
            .collect();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let config = dir.path().join("emulator.conf");
        std::fs::write(
            &config,
            format!(
                "import logging\n\
                 logging.basicConfig(level=logging.INFO)\n\
                 SUSHY_EMULATOR_FAKE_DRIVER = True\n\
                 SUSHY_EMULATOR_FAKE_SYSTEMS = [{}]\n\
                 SUSHY_EMULATOR_AUTH_FILE = {:?}\n\
                 SUSHY_EMULATOR_STATE_DIR = {:?}\n",
                systems_py.join(", "),
                htpasswd.to_str().unwrap(),
                state.to_str().unwrap(),
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("emulator.log")).unwrap();
        let child = Command::new(bin.join("sushy-emulator"))
            .arg("--config")
            .arg(&config)
            .args(["--interface", "127.0.0.1", "--port", &port.to_string(), "--fake"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut sushy = Sushy { child, port, dir };
        sushy.wait_ready();
        sushy
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sushy-emulator exited with {status}:\n{}", self.log());
            }
            // Any HTTP answer (401 without credentials) means it serves.
            if let Ok(mut stream) = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) {
                use std::io::{Read, Write};
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let request = "GET /redfish/v1/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
                let mut head = [0u8; 12];
                if stream.write_all(request.as_bytes()).is_ok()
                    && stream.read_exact(&mut head).is_ok()
                    && head.starts_with(b"HTTP/1.")
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "sushy-emulator did not start:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        // The child's own PID: nothing else is signalled.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
