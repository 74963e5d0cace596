//! A real `switchboard serve` in a temporary data directory: started with extra arguments,
//! ready once it prints `ready ws=<addr> ops=<addr> media=<addr>`, killed on drop unless it
//! already exited. A test that needs the exit status signals it and calls [`Gateway::wait_exit`].
//! The child's environment is scrubbed of `SWITCHBOARD_*` variables (the test runner's own
//! `SWITCHBOARD_BIN`/`SWITCHBOARD_PYTHON` would read as config keys) and gets only the
//! variables a test sets.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use rustix::process::Signal;

use crate::http;
use crate::prom::{self, Metrics};
use crate::token;
use crate::ws::{self, Handshake, WsClient};

/// How long `serve` may take to print `ready` (a debug build on a busy 2-core machine).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a short subcommand (`token`, `config`) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test waits for one answer over a socket when nothing should delay it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Token lifetime for ordinary test clients.
const TOKEN_TTL_S: u64 = 3600;

/// The `switchboard` binary: `$SWITCHBOARD_BIN`, else next to the test executable
/// (`target/debug/switchboard`, the test being `target/debug/deps/<name>-<hash>`).
///
/// # Panics
/// When it is missing: the suite runs through `./scripts/test`, which builds it first.
pub fn bin() -> PathBuf {
    workspace_bin("switchboard", "SWITCHBOARD_BIN")
}

/// A binary of this workspace: `$<env>`, else `name` next to the test executable.
///
/// # Panics
/// When it is missing: the suite runs through `./scripts/test`, which builds it first.
pub fn workspace_bin(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    let found = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "no {name} binary near {} and no ${env}: run ./scripts/test (it builds the \
             binaries first)",
            exe.display()
        )
    })
}

/// A `Command` for the `switchboard` binary with `SWITCHBOARD_*` removed from its env.
pub fn command() -> Command {
    let mut cmd = Command::new(bin());
    scrub_env(&mut cmd);
    cmd
}

fn scrub_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHBOARD_") {
            cmd.env_remove(key);
        }
    }
}

/// Runs `cmd` to completion with piped output, killing it after `timeout`.
///
/// # Panics
/// When it cannot be spawned or does not finish in time (with what it printed so far).
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let status = wait_timeout(&mut child, timeout);
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        let err = stderr.recv_timeout(IO_TIMEOUT).unwrap_or_default();
        panic!(
            "{cmd:?} did not finish within {timeout:?}; stderr:\n{}",
            String::from_utf8_lossy(&err)
        )
    });
    Output {
        status,
        stdout: stdout.recv_timeout(IO_TIMEOUT).unwrap_or_default(),
        stderr: stderr.recv_timeout(IO_TIMEOUT).unwrap_or_default(),
    }
}

/// Reads a pipe to its end on a thread; the bytes arrive on the channel.
fn drain(mut pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Polls `child` until it exits or `timeout` passes (`None`); never kills it.
///
/// # Panics
/// When the child's status cannot be read.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
    }
}

/// How to start a gateway; [`Gateway::builder`] makes one.
#[derive(Debug, Default)]
pub struct Builder {
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    nofile: Option<u32>,
    file_blocks_max: Option<u64>,
    listen: Option<String>,
    media_listen: Option<String>,
    data_dir: Option<PathBuf>,
    secret: Option<Vec<u8>>,
    stderr: Option<PathBuf>,
}

impl Builder {
    /// Adds one argument after `serve` and the harness's own flags.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds `flag value`.
    #[must_use]
    pub fn flag(self, flag: &str, value: impl std::fmt::Display) -> Self {
        self.arg(flag).arg(value.to_string())
    }

    /// Sets an environment variable of the gateway process.
    #[must_use]
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Sets every send rate limit (a device's and a user's, burst and per second) to
    /// `per_s`: for tests whose senders must not be the ones limited.
    #[must_use]
    pub fn send_limits(self, per_s: u64) -> Self {
        let value = per_s.to_string();
        [
            "SEND_BURST",
            "SEND_PER_S",
            "USER_SEND_BURST",
            "USER_SEND_PER_S",
        ]
        .into_iter()
        .fold(self, |b, key| {
            b.env(format!("SWITCHBOARD_LIMITS__{key}"), value.clone())
        })
    }

    /// Sends the gateway's stderr to `path` (e.g. `/dev/full`) instead of a log file the
    /// harness reads (then [`Gateway::stderr`] is empty).
    #[must_use]
    pub fn stderr_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.stderr = Some(path.into());
        self
    }

    /// Runs the gateway under `ulimit -f blocks` (512-byte blocks; via `sh -c '…; exec …'`),
    /// with `SIGXFSZ` ignored: a write past that size fails with `EFBIG`, as on a full disk,
    /// instead of killing the process.
    #[must_use]
    pub fn file_blocks_max(mut self, blocks: u64) -> Self {
        self.file_blocks_max = Some(blocks);
        self
    }

    /// Runs the gateway under `ulimit -n nofile` (via `sh -c '…; exec …'`).
    #[must_use]
    pub fn nofile(mut self, nofile: u32) -> Self {
        self.nofile = Some(nofile);
        self
    }

    /// `--listen` (default `127.0.0.1:0`).
    #[must_use]
    pub fn listen(mut self, addr: impl std::fmt::Display) -> Self {
        self.listen = Some(addr.to_string());
        self
    }

    /// `--media-listen` (default `127.0.0.1:0`).
    #[must_use]
    pub fn media_listen(mut self, addr: impl std::fmt::Display) -> Self {
        self.media_listen = Some(addr.to_string());
        self
    }

    /// Uses this data directory instead of a fresh one (e.g. to restart on the same key).
    #[must_use]
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// Writes `secret` (exactly these bytes) to a file and passes `--jwt-secret-file`.
    #[must_use]
    pub fn jwt_secret(mut self, secret: &[u8]) -> Self {
        self.secret = Some(secret.to_vec());
        self
    }

    /// Starts the gateway and waits for `ready`.
    ///
    /// # Panics
    /// When it exits or does not print a valid `ready` line within [`READY_TIMEOUT`].
    pub fn start(self) -> Gateway {
        self.try_start()
            .unwrap_or_else(|e| panic!("switchboard serve did not become ready: {e}"))
    }

    /// Starts the gateway; `Err` when it exits or is not ready within [`READY_TIMEOUT`]
    /// (then it has been killed).
    ///
    /// # Errors
    /// [`StartFailure`] with its exit status, first stdout line and stderr.
    ///
    /// # Panics
    /// When the temporary directory or the process cannot be created.
    pub fn try_start(self) -> Result<Gateway, StartFailure> {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let data_dir = self.data_dir.unwrap_or_else(|| dir.path().join("data"));
        std::fs::create_dir_all(&data_dir).expect("creating the data dir");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = match &self.stderr {
            None => File::create(&stderr_path).expect("creating the stderr log"),
            Some(path) => File::options()
                .write(true)
                .open(path)
                .unwrap_or_else(|e| panic!("opening {} for stderr: {e}", path.display())),
        };
        let mut limits = Vec::new();
        if let Some(n) = self.nofile {
            limits.push(format!("ulimit -n {n}"));
        }
        if let Some(blocks) = self.file_blocks_max {
            limits.push(format!("trap '' XFSZ && ulimit -f {blocks}"));
        }
        let mut cmd = if limits.is_empty() {
            Command::new(bin())
        } else {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!("{} && exec \"$0\" \"$@\"", limits.join(" && ")))
                .arg(bin());
            sh
        };
        scrub_env(&mut cmd);
        let listen = self.listen.unwrap_or_else(|| "127.0.0.1:0".into());
        let media = self.media_listen.unwrap_or_else(|| "127.0.0.1:0".into());
        cmd.arg("serve")
            .args(["--listen", &listen, "--ops-listen", "127.0.0.1:0"])
            .args(["--media-listen", &media])
            .arg("--data-dir")
            .arg(&data_dir);
        if let Some(secret) = &self.secret {
            let file = dir.path().join("jwt-secret");
            std::fs::write(&file, secret).expect("writing the JWT secret");
            cmd.arg("--jwt-secret-file").arg(file);
        }
        cmd.args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let line = ready_line(&mut child);
        let fail = |child: &mut Child, status: Option<ExitStatus>, line: Option<String>| {
            if status.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            StartFailure {
                status,
                line,
                stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
                elapsed: started.elapsed(),
            }
        };
        match line {
            ReadyLine::Line(line) => match parse_ready(&line) {
                Some((ws, ops, media)) => Ok(Gateway {
                    child,
                    ws,
                    ops,
                    media,
                    data_dir,
                    stderr_path,
                    secret: self.secret,
                    exited: None,
                    _dir: dir,
                }),
                None => Err(fail(&mut child, None, Some(line))),
            },
            ReadyLine::Exited(status) => Err(fail(&mut child, Some(status), None)),
            ReadyLine::TimedOut => Err(fail(&mut child, None, None)),
        }
    }
}

enum ReadyLine {
    Line(String),
    Exited(ExitStatus),
    TimedOut,
}

/// Waits for the first stdout line; a thread keeps draining stdout after it.
fn ready_line(child: &mut Child) -> ReadyLine {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        lines.for_each(drop);
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(line) => return ReadyLine::Line(line),
            Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {
                if let Ok(Some(status)) = child.try_wait() {
                    return ReadyLine::Exited(status);
                }
                if Instant::now() >= deadline {
                    return ReadyLine::TimedOut;
                }
            }
        }
    }
}

/// `ready ws=<ip:port> ops=<ip:port> media=<ip:port>`, exactly: (ws, ops, media).
pub fn parse_ready(line: &str) -> Option<(SocketAddr, SocketAddr, SocketAddr)> {
    let mut words = line.split(' ');
    let (Some("ready"), Some(ws), Some(ops), Some(media), None) = (
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
    ) else {
        return None;
    };
    let ws = ws.strip_prefix("ws=")?.parse().ok()?;
    let ops = ops.strip_prefix("ops=")?.parse().ok()?;
    let media = media.strip_prefix("media=")?.parse().ok()?;
    Some((ws, ops, media))
}

/// Why a gateway did not become ready.
#[derive(Debug)]
pub struct StartFailure {
    /// Its exit status, or `None` when it was still running (and has been killed).
    pub status: Option<ExitStatus>,
    /// The first stdout line when it was not a valid `ready` line.
    pub line: Option<String>,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// From spawn to giving up.
    pub elapsed: Duration,
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.status, &self.line) {
            (Some(status), _) => write!(f, "exited with {status}")?,
            (None, Some(line)) => write!(f, "printed {line:?} instead of a ready line")?,
            (None, None) => write!(f, "no ready line within {READY_TIMEOUT:?}")?,
        }
        write!(f, " after {:?}; stderr:\n{}", self.elapsed, self.stderr)
    }
}

/// A running `switchboard serve`.
#[derive(Debug)]
pub struct Gateway {
    child: Child,
    /// The WebSocket listener from the `ready` line.
    pub ws: SocketAddr,
    /// The operations HTTP listener from the `ready` line.
    pub ops: SocketAddr,
    /// The media HTTP listener (built-in blob backend) from the `ready` line.
    pub media: SocketAddr,
    data_dir: PathBuf,
    stderr_path: PathBuf,
    secret: Option<Vec<u8>>,
    exited: Option<ExitStatus>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// A builder for a gateway on `127.0.0.1:0` with a fresh data dir.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A gateway with default configuration.
    ///
    /// # Panics
    /// When it does not become ready.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it has written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends `signal` to the process.
    ///
    /// # Panics
    /// When the signal cannot be sent (e.g. it already exited and was reaped).
    pub fn signal(&self, signal: Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal)
            .unwrap_or_else(|e| panic!("sending {signal:?} to {}: {e}", self.pid()));
    }

    /// Its exit status once it exits, or `None` if still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = wait_timeout(&mut self.child, timeout);
        }
        self.exited
    }

    /// Its exit status if it has exited by now.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.wait_exit(Duration::ZERO)
    }

    /// The HS256 secret its tokens are signed with: `--jwt-secret-file`'s bytes if the
    /// builder set one, else the dev key file's exact bytes.
    ///
    /// # Panics
    /// When the dev key file cannot be read.
    pub fn secret(&self) -> Vec<u8> {
        if let Some(secret) = &self.secret {
            return secret.clone();
        }
        let path = self.data_dir.join("dev-jwt.key");
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    /// A valid token for (user, device), signed in-process with [`Self::secret`].
    pub fn sign(&self, user: u64, device: u64) -> String {
        let exp = token::now_s() + TOKEN_TTL_S;
        token::sign(&self.secret(), &token::claims(user, device, exp))
    }

    /// A token minted by `switchboard token --data-dir <its dir> --user U --device D`.
    ///
    /// # Panics
    /// When the command fails.
    pub fn mint(&self, user: u64, device: u64, extra: &[&str]) -> String {
        let out = output_within(
            command()
                .arg("token")
                .arg("--data-dir")
                .arg(&self.data_dir)
                .args(["--user", &user.to_string(), "--device", &device.to_string()])
                .args(extra),
            COMMAND_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "switchboard token failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("a token is ASCII")
            .trim()
            .to_owned()
    }

    /// A WebSocket upgrade on `/ws` with `Authorization: Bearer <token>`.
    ///
    /// # Errors
    /// Socket errors and timeouts.
    pub fn upgrade_with(&self, token: &str) -> std::io::Result<Handshake> {
        let auth = format!("Bearer {token}");
        ws::handshake(self.ws, "/ws", &[("Authorization", &auth)], IO_TIMEOUT)
    }

    /// A connected client for (user, device), past its sync: the server's first frames on
    /// every connection are the sync (here, for a device with nothing owed, just `SyncDone`).
    ///
    /// # Panics
    /// When the upgrade does not succeed or no `SyncDone` comes.
    pub fn connect(&self, user: u64, device: u64) -> WsClient {
        let mut client = self.connect_unsynced(user, device);
        client.expect_empty_sync(IO_TIMEOUT);
        client
    }

    /// A connected client for (user, device), before anything the server sends.
    ///
    /// # Panics
    /// When the upgrade does not succeed.
    pub fn connect_unsynced(&self, user: u64, device: u64) -> WsClient {
        match self.upgrade_with(&self.sign(user, device)) {
            Ok(Handshake::Upgraded(client)) => client,
            Ok(Handshake::Refused(r)) => panic!("upgrade refused: {r:?}"),
            Err(e) => panic!("upgrade failed: {e}\nstderr:\n{}", self.stderr()),
        }
    }

    /// `GET path` on the operations listener.
    ///
    /// # Errors
    /// Socket errors and timeouts.
    pub fn get(&self, path: &str) -> std::io::Result<http::Response> {
        http::get(self.ops, path, IO_TIMEOUT)
    }

    /// `/metrics`, checked (200, a Prometheus text content type) and strictly parsed.
    ///
    /// # Panics
    /// On any of those failing, with the text.
    pub fn metrics(&self) -> Metrics {
        let r = self
            .get("/metrics")
            .unwrap_or_else(|e| panic!("GET /metrics: {e}\nstderr:\n{}", self.stderr()));
        assert_eq!(r.status, 200, "GET /metrics: {r:?}");
        let ctype = r.header("content-type").unwrap_or_default();
        assert!(
            ctype.starts_with("text/plain") || ctype.starts_with("application/openmetrics-text"),
            "/metrics content type {ctype:?} is not Prometheus text"
        );
        let text = String::from_utf8(r.body).expect("/metrics is UTF-8");
        prom::parse(&text).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"))
    }

    /// Polls `/metrics` until `check` holds or `timeout` passes; returns the last one.
    pub fn metrics_until(&self, timeout: Duration, check: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.metrics();
            if check(&m) || Instant::now() >= deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
