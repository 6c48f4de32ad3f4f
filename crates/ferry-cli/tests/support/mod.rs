//! Shared helpers for ferry-cli's integration tests: free loopback ports, server processes that die
//! with the test, a raw HTTP/1.1 client, and preparation of a built copy of `examples/showcase`.
//!
//! Everything here talks to real things: real processes, real sockets, a real `next build`.
#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

pub mod images;
pub mod redis;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

/// A loopback port that was free a moment ago (the OS picked it; small race, acceptable in tests).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The repository root (two levels above this crate's manifest).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The showcase example app in the repository.
pub fn showcase_src() -> PathBuf {
    repo_root().join("examples/showcase")
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// What to run: command, arguments, extra environment, working directory.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Program to execute.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables (added to the inherited environment).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
}

impl ProcessSpec {
    /// A spec with no arguments or extra environment.
    pub fn new(program: impl Into<PathBuf>, cwd: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: cwd.into(),
        }
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).current_dir(&self.cwd);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs to completion with a timeout, output captured to `log`; errors (with the log's tail)
    /// on a non-zero exit or on timeout (the process group is killed then).
    pub fn run(&self, log: &Path, timeout: Duration) -> Result<()> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {:?}", self.program))?;
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                ensure!(
                    status.success(),
                    "{:?} {:?} failed ({status}); log tail:\n{}",
                    self.program,
                    self.args,
                    tail(log, 40)
                );
                return Ok(());
            }
            if start.elapsed() > timeout {
                kill_group(child.id(), "-KILL");
                let _ = child.wait();
                bail!(
                    "{:?} {:?} timed out after {timeout:?}; log tail:\n{}",
                    self.program,
                    self.args,
                    tail(log, 40)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Sends `signal` (e.g. "-TERM") to the whole process group led by `pid`. Uses kill(1) because
/// the workspace denies `unsafe` (libc::kill).
fn kill_group(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last `n` lines of a log file (for error messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A long-running server in its own process group, killed (group-wide) when dropped.
pub struct ServerProcess {
    /// Human-readable name for messages.
    pub name: String,
    /// Loopback address it listens on.
    pub addr: SocketAddr,
    /// File receiving its stdout and stderr.
    pub log: PathBuf,
    child: Child,
}

impl ServerProcess {
    /// Spawns the server and waits until it answers any HTTP request on `addr` (or fails: exit,
    /// timeout). Output goes to `log`.
    pub fn start(
        name: &str,
        spec: &ProcessSpec,
        addr: SocketAddr,
        log: &Path,
        timeout: Duration,
    ) -> Result<Self> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = spec.command();
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {name}: {:?}", spec.program))?;
        let mut server = Self {
            name: name.to_owned(),
            addr,
            log: log.to_owned(),
            child,
        };
        server.wait_ready(timeout)?;
        Ok(server)
    }

    /// Process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let probe = RawRequest::get("/")
            .header("Host", "localhost")
            .header("Connection", "close");
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited before answering ({status}); log tail:\n{}",
                    self.name,
                    tail(&self.log, 40)
                );
            }
            if send(self.addr, &probe, Duration::from_secs(30)).is_ok() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} did not answer within {timeout:?}; log tail:\n{}",
                    self.name,
                    tail(&self.log, 40)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let pid = self.child.id();
        kill_group(pid, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                // The leader is gone; make sure no worker of the group outlives it.
                kill_group(pid, "-KILL");
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        kill_group(pid, "-KILL");
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

/// A request written to the socket exactly as given: no header is added or normalized.
#[derive(Debug, Clone, Default)]
pub struct RawRequest {
    /// Method token, sent verbatim.
    pub method: String,
    /// Request target, sent verbatim (may be malformed on purpose).
    pub target: String,
    /// Header lines in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes (the caller sets any Content-Length / Transfer-Encoding header).
    pub body: Vec<u8>,
}

impl RawRequest {
    /// A GET with no headers.
    pub fn get(target: &str) -> Self {
        Self {
            method: "GET".into(),
            target: target.into(),
            ..Self::default()
        }
    }

    /// Appends a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// First value of a header (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The bytes put on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// A parsed response: status, ordered (possibly repeated) headers, and the de-framed body
/// (chunked / content-length removed, content-encoding still applied).
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Headers in wire order; names as sent.
    pub headers: Vec<(String, String)>,
    /// Body after transfer decoding.
    pub body: Vec<u8>,
    /// Whether the body used chunked transfer coding.
    pub chunked: bool,
}

impl RawResponse {
    /// All values of a header, in order (case-insensitive name).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// The body with its Content-Encoding (gzip, br, deflate, identity; stacked ones in reverse
    /// order) removed.
    pub fn decoded_body(&self) -> Result<Vec<u8>> {
        let mut body = self.body.clone();
        let codings: Vec<String> = self
            .header_all("content-encoding")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        for coding in codings.iter().rev() {
            body = match coding.as_str() {
                "identity" => body,
                "gzip" | "x-gzip" => {
                    let mut out = Vec::new();
                    flate2::read::MultiGzDecoder::new(&body[..])
                        .read_to_end(&mut out)
                        .context("gunzip")?;
                    out
                }
                "deflate" => {
                    let mut out = Vec::new();
                    flate2::read::ZlibDecoder::new(&body[..])
                        .read_to_end(&mut out)
                        .context("inflate")?;
                    out
                }
                "br" => {
                    let mut out = Vec::new();
                    brotli::Decompressor::new(&body[..], 4096)
                        .read_to_end(&mut out)
                        .context("brotli")?;
                    out
                }
                other => bail!("unknown content-encoding {other}"),
            };
        }
        Ok(body)
    }
}

/// Sends one request on a fresh connection and reads one response. Interim 1xx responses (other
/// than 101) are skipped. The body is framed by the response (HEAD / 204 / 304: none; chunked;
/// Content-Length; else until EOF). Every socket operation is bounded by `timeout`.
pub fn send(addr: SocketAddr, req: &RawRequest, timeout: Duration) -> Result<RawResponse> {
    let stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    (&stream)
        .write_all(&req.to_bytes())
        .context("writing request")?;
    let mut reader = BufReader::new(stream);
    loop {
        let (status, reason, headers) = read_head(&mut reader)?;
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let no_body = req.method.eq_ignore_ascii_case("HEAD")
            || status == 204
            || status == 304
            || status < 200;
        let chunked = headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        });
        let body = if no_body {
            Vec::new()
        } else if chunked {
            read_chunked(&mut reader)?
        } else if let Some((_, len)) = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        {
            let len: usize = len
                .trim()
                .parse()
                .with_context(|| format!("bad content-length {len:?}"))?;
            let mut body = vec![0; len];
            reader
                .read_exact(&mut body)
                .context("reading content-length body")?;
            body
        } else {
            let mut body = Vec::new();
            reader
                .read_to_end(&mut body)
                .context("reading body to EOF")?;
            body
        };
        return Ok(RawResponse {
            status,
            reason,
            headers,
            body,
            chunked,
        });
    }
}

fn read_line(reader: &mut impl BufRead) -> Result<String> {
    let mut buf = Vec::new();
    let n = reader.read_until(b'\n', &mut buf).context("reading line")?;
    ensure!(n > 0, "connection closed before a complete response head");
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|e| anyhow!("non-UTF-8 header line: {e}"))
}

type Head = (u16, String, Vec<(String, String)>);

fn read_head(reader: &mut impl BufRead) -> Result<Head> {
    let status_line = read_line(reader)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    ensure!(
        version.starts_with("HTTP/1."),
        "bad status line {status_line:?}"
    );
    let status: u16 = parts
        .next()
        .unwrap_or_default()
        .parse()
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let reason = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| anyhow!("bad header line {line:?}"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok((status, reason, headers))
}

fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?;
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("bad chunk size {line:?}"))?;
        if size == 0 {
            // Trailers until the empty line.
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader
            .read_exact(&mut body[start..])
            .context("reading chunk")?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).context("reading chunk CRLF")?;
        ensure!(&crlf == b"\r\n", "chunk not followed by CRLF");
    }
}

// ---------------------------------------------------------------------------------------------
// App preparation
// ---------------------------------------------------------------------------------------------

/// Runs `npm ci` in the showcase when its node_modules is missing (fresh clone).
pub fn ensure_node_modules(app: &Path, log: &Path) -> Result<()> {
    if app.join("node_modules/next/package.json").is_file() {
        return Ok(());
    }
    // scripts/npm-install.sh: `npm ci`, or `npm install` when the registry cannot serve every
    // optional platform package the lockfile would need.
    let script = repo_root().join("scripts/npm-install.sh");
    ProcessSpec::new("bash", app)
        .args([script.to_string_lossy().into_owned(), ".".to_owned()])
        .run(log, Duration::from_secs(900))
}

/// Copies `src` (node_modules included; `.ferry` and all of `.next` except its cache left out) to
/// `dst`, which must not exist.
pub fn copy_app(src: &Path, dst: &Path) -> Result<()> {
    // Canonical, so that a symlinked source is copied rather than the link.
    let src = &fs::canonicalize(src).with_context(|| format!("resolving {}", src.display()))?;
    let status = Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(src)
        .arg(dst)
        .status()
        .context("running cp")?;
    ensure!(
        status.success(),
        "cp -a {} {} failed",
        src.display(),
        dst.display()
    );
    let _ = fs::remove_dir_all(dst.join(".ferry"));
    if let Ok(entries) = fs::read_dir(dst.join(".next")) {
        for entry in entries.flatten() {
            if entry.file_name() != "cache" {
                let path = entry.path();
                if path.is_dir() {
                    fs::remove_dir_all(&path)?
                } else {
                    fs::remove_file(&path)?
                }
            }
        }
    }
    Ok(())
}

/// Makes `dst` a second runnable copy of the built app `src` sharing its node_modules through a
/// symlink (only the runtime needs them, so no bundler sees the link).
pub fn clone_built_app(src: &Path, dst: &Path) -> Result<()> {
    fs::create_dir_all(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "node_modules" {
            std::os::unix::fs::symlink(entry.path(), dst.join(&name))?;
            continue;
        }
        let status = Command::new("cp")
            .arg("-a")
            .arg(entry.path())
            .arg(dst.join(&name))
            .status()?;
        ensure!(status.success(), "cp -a {} failed", entry.path().display());
    }
    Ok(())
}

/// Copies the bundle `<app>/.ferry` to `dst` (which must not exist), a directory outside the app,
/// and returns `dst`. Served from there, the bundle's Node.js workers cannot fall back on the
/// app's `node_modules` through module resolution: no ancestor of `dst` may hold a
/// `node_modules` directory (checked).
pub fn copy_bundle_outside(app: &Path, dst: &Path) -> Result<PathBuf> {
    let bundle = app.join(".ferry");
    ensure!(
        bundle.join("manifest.json").is_file(),
        "{} holds no bundle",
        bundle.display()
    );
    let status = Command::new("cp")
        .arg("-a")
        .arg(&bundle)
        .arg(dst)
        .status()
        .context("running cp")?;
    ensure!(
        status.success(),
        "cp -a {} {} failed",
        bundle.display(),
        dst.display()
    );
    let dst = fs::canonicalize(dst)?;
    if let Some(dir) = dst
        .ancestors()
        .skip(1)
        .find(|a| a.join("node_modules").exists())
    {
        bail!(
            "{} has node_modules: the bundle copy in {} could resolve modules from there",
            dir.display(),
            dst.display()
        );
    }
    Ok(dst)
}

/// `node <app>/node_modules/next/dist/bin/next <args>` as a spec, cwd = app.
pub fn next_cli(app: &Path, args: &[&str]) -> ProcessSpec {
    let bin = app.join("node_modules/next/dist/bin/next");
    ProcessSpec::new("node", app)
        .args(std::iter::once(bin.to_string_lossy().into_owned()))
        .args(args.iter().copied())
        .env("NEXT_TELEMETRY_DISABLED", "1")
}

/// `next start` for `app` on 127.0.0.1:`port`.
pub fn next_start(app: &Path, port: u16) -> ProcessSpec {
    next_cli(app, &["start", "-p", &port.to_string(), "-H", "127.0.0.1"])
}

/// `ferry start` for `app` on 127.0.0.1:`port`.
pub fn ferry_start(ferry: &Path, app: &Path, port: u16) -> ProcessSpec {
    ProcessSpec::new(ferry, app)
        .args(["start".to_owned(), app.to_string_lossy().into_owned()])
        .args([
            "-p".to_owned(),
            port.to_string(),
            "-H".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .env("NEXT_TELEMETRY_DISABLED", "1")
}

/// `ferry build <app>`.
pub fn ferry_build(ferry: &Path, app: &Path) -> ProcessSpec {
    ProcessSpec::new(ferry, app)
        .args(["build".to_owned(), app.to_string_lossy().into_owned()])
        .env("NEXT_TELEMETRY_DISABLED", "1")
}

/// The build id of a built app (`.next/BUILD_ID`).
pub fn build_id(app: &Path) -> Result<String> {
    Ok(fs::read_to_string(app.join(".next/BUILD_ID"))
        .context("reading .next/BUILD_ID")?
        .trim()
        .to_owned())
}

/// The largest `.js` file under `.next/static/chunks`, as a URL path.
pub fn largest_chunk(app: &Path) -> Result<String> {
    let dir = app.join(".next/static/chunks");
    let mut best: Option<(u64, String)> = None;
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let len = entry.metadata()?.len();
        if name.ends_with(".js") && best.as_ref().is_none_or(|(l, _)| len > *l) {
            best = Some((len, name));
        }
    }
    let (_, name) = best.ok_or_else(|| anyhow!("no chunk in {}", dir.display()))?;
    Ok(format!("/_next/static/chunks/{name}"))
}

// ---------------------------------------------------------------------------------------------
// Process inspection and control (end-to-end tests)
// ---------------------------------------------------------------------------------------------

/// Sends `signal` (`STOP`, `CONT`, ...) to process `pid`.
pub fn signal_pid(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

/// Files and directories under `dir` whose name contains `part` (e.g. a worker's own cache copy
/// of a page Ferry should own).
pub fn files_named(dir: &Path, part: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().contains(part) {
                found.push(path.clone());
            }
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    found
}

impl ServerProcess {
    /// Sends `signal` (e.g. "-TERM") to the server process only (not its group), as a supervisor
    /// or a terminal would address the main process.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Waits up to `timeout` for the server to exit; `None` if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Fields of `/proc/<pid>/stat` after the command name: (state, ppid).
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is parenthesized and may contain spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Every live process whose parent is `pid` (zombies excluded).
pub fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| matches!(proc_stat(p), Some((state, ppid)) if ppid == pid && state != 'Z'))
        .collect()
}

/// Whether `pid` is a live (non-zombie) process.
pub fn pid_alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((state, _)) if state != 'Z')
}

/// The command line of `pid`, arguments joined by spaces (empty if gone).
pub fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// Resident set size of `pid` in KiB (`VmRSS` in /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Sends SIGKILL to one process id (cleanup of processes a test started indirectly).
pub fn kill_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs `spec` to completion (bounded by `timeout`, the group killed on timeout) and returns its
/// exit status and combined stdout + stderr, whatever the status.
pub fn run_capture(
    spec: &ProcessSpec,
    timeout: Duration,
) -> Result<(std::process::ExitStatus, String)> {
    let log = tempfile::NamedTempFile::new()?;
    let out = log.reopen()?;
    let err = out.try_clone()?;
    let mut cmd = spec.command();
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {:?}", spec.program))?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > timeout {
            kill_group(child.id(), "-KILL");
            let _ = child.wait();
            bail!(
                "{:?} {:?} timed out after {timeout:?}; output tail:\n{}",
                spec.program,
                spec.args,
                tail(log.path(), 40)
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    Ok((status, fs::read_to_string(log.path()).unwrap_or_default()))
}

impl ServerProcess {
    /// Spawns the server without waiting for it to answer (the caller polls; see
    /// [`ServerProcess::start`] for the waiting variant). Output goes to `log`.
    pub fn spawn(name: &str, spec: &ProcessSpec, addr: SocketAddr, log: &Path) -> Result<Self> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = spec.command();
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {name}: {:?}", spec.program))?;
        Ok(Self {
            name: name.to_owned(),
            addr,
            log: log.to_owned(),
            child,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Built app copies and `ferry start` servers for the end-to-end tests
// ---------------------------------------------------------------------------------------------

/// The `ferry` binary under test.
pub fn ferry_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferry"))
}

/// Copies `src` into a fresh work directory under cargo's per-target temp dir, lets `prepare`
/// edit the copy, and runs `ferry build` on it; returns the app copy, its `node_modules` removed
/// (the bundle must not need them). Meant to be called once
/// per test binary (from a `OnceLock`): the directory is named after `name` and this process,
/// and leftovers of earlier runs whose process is gone are removed first.
pub fn build_app_once(
    name: &str,
    src: &Path,
    prepare: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let prefix = format!("e2e-{name}-");
    if let Ok(entries) = fs::read_dir(&base) {
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = file_name
                .strip_prefix(&prefix)
                .and_then(|p| p.parse::<u32>().ok())
                && !pid_alive(pid)
            {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let work = base.join(format!("{prefix}{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    install_node_modules(src, &work)?;
    let app = work.join("app");
    copy_app(src, &app)?;
    prepare(&app)?;
    let started = Instant::now();
    ferry_build(&ferry_bin(), &app).run(&work.join("build.log"), Duration::from_secs(900))?;
    eprintln!(
        "ferry build {name}: {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        app.display()
    );
    // The bundle is self-contained: serve it without node_modules (which also keeps the copies
    // left in the cargo temp dir small).
    fs::remove_dir_all(app.join("node_modules")).context("removing the copy's node_modules")?;
    Ok(app)
}

/// The pnpm that installs pnpm fixtures (`npx -y pnpm@…`; scripts/test.sh names the same).
pub const PNPM: &str = "pnpm@9.15.9";

/// `npm ci` (or, with a `pnpm-lock.yaml`, `pnpm install`) in `app` when its node_modules is
/// missing (fresh clone). If `npm ci` refuses the lock
/// file (a registry mirror that lacks other platforms' optional packages writes a lock file `npm
/// ci` calls out of sync), falls back to `npm install`.
pub fn install_node_modules(app: &Path, logs: &Path) -> Result<()> {
    if app.join("node_modules/next/package.json").is_file() {
        return Ok(());
    }
    if app.join("pnpm-lock.yaml").is_file() {
        // A pnpm app (symlinked node_modules): pnpm itself, the version scripts/test.sh uses.
        return ProcessSpec::new("npx", app)
            .args(["-y", PNPM, "install", "--frozen-lockfile"])
            .run(&logs.join("pnpm-install.log"), Duration::from_secs(900));
    }
    let ci = ProcessSpec::new("npm", app)
        .args(["ci", "--no-audit", "--no-fund"])
        .run(&logs.join("npm-ci.log"), Duration::from_secs(900));
    if let Err(ci_err) = ci {
        let msg = format!("{ci_err:#}");
        eprintln!(
            "npm ci failed in {} ({}); trying npm install",
            app.display(),
            msg.lines().next().unwrap_or_default()
        );
        ProcessSpec::new("npm", app)
            .args(["install", "--no-audit", "--no-fund"])
            .run(&logs.join("npm-install.log"), Duration::from_secs(900))?;
    }
    Ok(())
}

/// A `ferry start` of a built app on a free loopback port, with its workers cleaned up on drop.
pub struct FerryServer {
    server: Option<ServerProcess>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Time from spawning `ferry start` to its first HTTP answer (polled every 100 ms).
    pub ready_after: Duration,
    logs: tempfile::TempDir,
}

impl FerryServer {
    /// `ferry start <app> -p <free port> -H 127.0.0.1 <extra>` with `env` added; waits until it
    /// answers (up to 60 s).
    pub fn start(app: &Path, extra: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let port = free_port()?;
        let mut spec = ferry_start(&ferry_bin(), app, port).args(extra.iter().copied());
        for (k, v) in env {
            spec = spec.env(k, v);
        }
        Self::start_spec(&spec, ([127, 0, 0, 1], port).into())
    }

    /// Starts an arbitrary `ferry` spec expected to listen on `addr`.
    pub fn start_spec(spec: &ProcessSpec, addr: SocketAddr) -> Result<Self> {
        let logs = tempfile::Builder::new().prefix("ferry-e2e-").tempdir()?;
        let started = Instant::now();
        let server = ServerProcess::start(
            "ferry start",
            spec,
            addr,
            &logs.path().join("ferry.log"),
            Duration::from_secs(60),
        )?;
        Ok(Self {
            server: Some(server),
            addr,
            ready_after: started.elapsed(),
            logs,
        })
    }

    /// The running server process.
    pub fn process(&mut self) -> &mut ServerProcess {
        self.server.as_mut().expect("server present until drop")
    }

    /// The `ferry` process id.
    pub fn pid(&self) -> u32 {
        self.server.as_ref().map_or(0, ServerProcess::pid)
    }

    /// The server's combined output so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.logs.path().join("ferry.log")).unwrap_or_default()
    }

    /// The last lines of the server's output (for assertion messages).
    pub fn log_tail(&self) -> String {
        tail(&self.logs.path().join("ferry.log"), 30)
    }

    /// Live child processes of `ferry` (its Node.js workers).
    pub fn children(&self) -> Vec<u32> {
        child_pids(self.pid())
    }

    /// The workers once at least `n` are running (30 s at most): ferry is ready before its
    /// workers, which start in the background (`WorkerPool::spawn`), so right after the ready
    /// line on a loaded machine `children` can still be empty.
    pub fn wait_for_workers(&self, n: usize) -> Result<Vec<u32>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pids = self.children();
            if pids.len() >= n {
                return Ok(pids);
            }
            if Instant::now() >= deadline {
                bail!(
                    "ferry has {} worker processes 30 s after it was ready, expected {n}:\n{}",
                    pids.len(),
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to every worker (child process) of this server.
    pub fn signal_workers(&self, signal: &str) -> Result<()> {
        for pid in self.children() {
            signal_pid(pid, signal)?;
        }
        Ok(())
    }

    /// Sends `req` (a `Host` and `Connection: close` header are added when missing).
    pub fn send(&self, req: RawRequest, timeout: Duration) -> Result<RawResponse> {
        let mut req = req;
        if req.header_value("host").is_none() {
            req.headers.insert(0, ("Host".into(), "localhost".into()));
        }
        if req.header_value("connection").is_none() {
            req.headers.push(("Connection".into(), "close".into()));
        }
        send(self.addr, &req, timeout)
    }

    /// GET `path` (30 s timeout).
    pub fn get(&self, path: &str) -> Result<RawResponse> {
        self.send(RawRequest::get(path), Duration::from_secs(30))
    }
}

impl Drop for FerryServer {
    fn drop(&mut self) {
        // Workers run in their own process groups: note them before the group kill, and kill any
        // that outlive their server.
        let mut pids = self.children();
        for &p in &pids.clone() {
            pids.extend(child_pids(p));
        }
        drop(self.server.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while pids.iter().any(|&p| pid_alive(p)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        for p in pids {
            if pid_alive(p) {
                kill_pid(p);
            }
        }
    }
}

/// A response body, decoded (gzip/br) and read as text.
pub fn body_text(resp: &RawResponse) -> Result<String> {
    Ok(String::from_utf8_lossy(&resp.decoded_body()?).into_owned())
}

/// The text of `<p id="{id}">…</p>` in `html`.
pub fn paragraph(html: &str, id: &str) -> Result<String> {
    let open = format!("<p id=\"{id}\">");
    let start = html
        .find(&open)
        .ok_or_else(|| anyhow!("no {open} in the page"))?
        + open.len();
    let end = html[start..]
        .find("</p>")
        .ok_or_else(|| anyhow!("unclosed {open}"))?;
    Ok(html[start..start + end].to_owned())
}

/// Runs `request(i)` for `i` in `0..n` on `n` threads released together by a barrier; every
/// result, or the first error.
pub fn released_together<T: Send>(
    n: usize,
    request: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let barrier = std::sync::Barrier::new(n);
    thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, request) = (&barrier, &request);
                s.spawn(move || {
                    barrier.wait();
                    request(i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("request thread panicked")))
            })
            .collect()
    })
}

/// The render time the fixture prints: the first run of digits after `rendered-at` (HTML, RSC)
/// or `renderedAt` (JSON).
pub fn stamp(body: &str) -> Option<String> {
    let at = body
        .find("rendered-at")
        .or_else(|| body.find("renderedAt"))?;
    let digits: String = body[at..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    (digits.len() >= 10).then_some(digits)
}
