//! Host and server statistics (`sockit stats`, `/api/stats`): host name, OS
//! and kernel, uptime, load, CPU overall and per core, memory and swap, each
//! mounted disk, network bytes per interface, and the server's own figures
//! (version, uptime, open connections and bytes per service, RSS).
//!
//! The host is read with the `sysinfo` crate on the blocking pool, at most
//! once per [`SAMPLE_EVERY`]: every client asking more often gets the same
//! sample, so statistics cost the server the same however many ask. CPU use
//! and network rates are differences between two samples. The server's
//! counters come from the runtime ([`crate::server::Metrics`]).
//!
//! Any logged-in user may read them, unless `[stats] admins_only` limits
//! them to users with the `admin` permission. On the framed port the request
//! is `{"type":"stats"}` and the answer `{"type":"stats","size":N}` with the
//! JSON [`Snapshot`] as its body (see `docs/protocol.md`).

use crate::files::commands::Remote;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::tls::Stream;
use serde::{Deserialize, Serialize};
use sysinfo::{
    CpuRefreshKind, Disks, Networks, Pid, ProcessRefreshKind, ProcessesToUpdate, System,
};

use crate::accounts::User;
use crate::files::client::ClientError;
use crate::proto::{Connection, Frame, ProtoError};
use crate::server::Metrics;

/// The permission that reads statistics when `admins_only` is set.
pub const ADMIN_PERMISSION: &str = "admin";
/// Samples younger than this are served again instead of read anew.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Largest statistics body a client accepts.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Statistics at one moment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// When the host was sampled (seconds since the epoch).
    pub time: u64,
    /// The machine.
    pub host: Host,
    /// Processor use.
    pub cpu: Cpu,
    /// Memory and swap.
    pub memory: Memory,
    /// Every mounted disk.
    pub disks: Vec<Disk>,
    /// Every network interface.
    pub networks: Vec<Interface>,
    /// The sockit server itself.
    pub server: Server,
}

/// The machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Host {
    /// Host name.
    pub name: String,
    /// Operating system and version ("Debian GNU/Linux 12 (bookworm)").
    pub os: String,
    /// Kernel version.
    pub kernel: String,
    /// CPU architecture.
    pub arch: String,
    /// Seconds since boot.
    pub uptime_secs: u64,
    /// Load averages over 1, 5 and 15 minutes.
    pub load: [f64; 3],
}

/// Processor use, in percent of one core (0 to 100 each).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cpu {
    /// All cores together.
    pub usage: f32,
    /// Each core.
    pub cores: Vec<f32>,
}

/// Memory and swap, in bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Memory {
    /// Installed memory.
    pub total: u64,
    /// Memory in use (total minus available).
    pub used: u64,
    /// Memory available to new work without swapping.
    pub available: u64,
    /// Swap space.
    pub swap_total: u64,
    /// Swap in use.
    pub swap_used: u64,
}

/// One mounted disk, in bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Disk {
    /// Where it is mounted.
    pub mount: String,
    /// The device.
    pub name: String,
    /// The file system type.
    pub fs: String,
    /// Its size.
    pub total: u64,
    /// Bytes in use (as `df` counts them: blocks in use, so `used + free`
    /// may be less than `total` by the blocks reserved for root).
    pub used: u64,
    /// Bytes available to unprivileged users.
    pub free: u64,
}

impl Disk {
    /// How full it is, as `df` says in its `Use%` column: in use out of what
    /// users can have (in use plus available, the blocks reserved for root
    /// left out), rounded up to a whole percent.
    pub fn use_percent(&self) -> f64 {
        let usable = self.used.saturating_add(self.free);
        if usable == 0 {
            return 0.0;
        }
        (self.used as f64 * 100.0 / usable as f64).ceil()
    }
}

/// One network interface.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Bytes received since boot.
    pub bytes_in: u64,
    /// Bytes sent since boot.
    pub bytes_out: u64,
    /// Bytes received per second since the previous sample.
    pub rate_in: f64,
    /// Bytes sent per second since the previous sample.
    pub rate_out: f64,
}

/// The sockit server's own figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Server {
    /// sockit's version.
    pub version: String,
    /// Seconds since the server started.
    pub uptime_secs: u64,
    /// Resident memory of the server process, in bytes.
    pub rss: u64,
    /// Each service.
    pub services: Vec<Service>,
    /// Bytes read from clients, every service together.
    pub bytes_in: u64,
    /// Bytes written to clients, every service together.
    pub bytes_out: u64,
}

/// One service's figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Service {
    /// `echo`, `framed`, `web`.
    pub name: String,
    /// Connections open now.
    pub open: u64,
    /// Connections accepted since the start.
    pub accepted: u64,
    /// Bytes read from its clients.
    pub bytes_in: u64,
    /// Bytes written to its clients.
    pub bytes_out: u64,
}

/// What one sample of the host holds (everything but the server's counters).
#[derive(Debug, Clone)]
struct HostSample {
    time: u64,
    host: Host,
    cpu: Cpu,
    memory: Memory,
    disks: Vec<Disk>,
    networks: Vec<Interface>,
    rss: u64,
}

/// A CPU or network reading older than this is taken again before the
/// sample, so that the figures describe the last moments, not the average
/// since the previous request.
const STALE_READING: Duration = Duration::from_secs(2);

/// sysinfo's state between samples (CPU use and network rates are
/// differences from the previous sample).
struct Sampler {
    system: System,
    disks: Disks,
    networks: Networks,
    pid: Option<Pid>,
    /// When the CPU and network figures were last refreshed.
    refreshed: Instant,
    /// The last sample, served again while younger than [`SAMPLE_EVERY`].
    last: Option<(Instant, Arc<HostSample>)>,
}

impl Sampler {
    fn new() -> Sampler {
        let mut system = System::new();
        system.refresh_cpu_specifics(CpuRefreshKind::nothing().with_cpu_usage());
        Sampler {
            system,
            disks: Disks::new_with_refreshed_list(),
            networks: Networks::new_with_refreshed_list(),
            pid: sysinfo::get_current_pid().ok(),
            refreshed: Instant::now(),
            last: None,
        }
    }

    fn sample(&mut self) -> Arc<HostSample> {
        if let Some((at, s)) = &self.last {
            if at.elapsed() < SAMPLE_EVERY {
                return s.clone();
            }
        }
        // CPU use and network rates are differences between two readings:
        // they need some time between them to mean anything, and a previous
        // reading that is too old would give the average since then (the
        // first `--watch` frame after a quiet minute showed 0% on busy
        // cores). So an old one is taken again first.
        let since = self.refreshed.elapsed();
        if since > STALE_READING {
            self.system
                .refresh_cpu_specifics(CpuRefreshKind::nothing().with_cpu_usage());
            self.networks.refresh(true);
            self.refreshed = Instant::now();
            std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        } else if since < sysinfo::MINIMUM_CPU_UPDATE_INTERVAL {
            std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL - since);
        }
        let elapsed = self.refreshed.elapsed().as_secs_f64().max(1e-3);
        self.refreshed = Instant::now();
        self.system
            .refresh_cpu_specifics(CpuRefreshKind::nothing().with_cpu_usage());
        self.system.refresh_memory();
        self.disks.refresh(true);
        self.networks.refresh(true);
        let rss = match self.pid {
            Some(pid) => {
                self.system.refresh_processes_specifics(
                    ProcessesToUpdate::Some(&[pid]),
                    true,
                    ProcessRefreshKind::nothing().with_memory(),
                );
                self.system.process(pid).map_or(0, |p| p.memory())
            }
            None => 0,
        };
        let load = System::load_average();
        let s = &self.system;
        let mut disks: Vec<Disk> = self
            .disks
            .list()
            .iter()
            .map(|d| Disk {
                mount: d.mount_point().display().to_string(),
                name: d.name().to_string_lossy().into_owned(),
                fs: d.file_system().to_string_lossy().into_owned(),
                total: d.total_space(),
                used: used_space(d.mount_point())
                    .unwrap_or_else(|| d.total_space().saturating_sub(d.available_space())),
                free: d.available_space(),
            })
            .collect();
        disks.sort_by(|a, b| a.mount.cmp(&b.mount));
        let mut networks: Vec<Interface> = self
            .networks
            .list()
            .iter()
            .map(|(name, n)| Interface {
                name: name.clone(),
                bytes_in: n.total_received(),
                bytes_out: n.total_transmitted(),
                rate_in: n.received() as f64 / elapsed,
                rate_out: n.transmitted() as f64 / elapsed,
            })
            .collect();
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        let sample = Arc::new(HostSample {
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            host: Host {
                name: System::host_name().unwrap_or_default(),
                os: System::long_os_version()
                    .or_else(System::name)
                    .unwrap_or_default(),
                kernel: System::kernel_version().unwrap_or_default(),
                arch: System::cpu_arch(),
                uptime_secs: System::uptime(),
                load: [load.one, load.five, load.fifteen],
            },
            cpu: Cpu {
                usage: s.global_cpu_usage(),
                cores: s.cpus().iter().map(|c| c.cpu_usage()).collect(),
            },
            memory: Memory {
                total: s.total_memory(),
                used: s.total_memory().saturating_sub(s.available_memory()),
                available: s.available_memory(),
                swap_total: s.total_swap(),
                swap_used: s.used_swap(),
            },
            disks,
            networks,
            rss,
        });
        self.last = Some((Instant::now(), sample.clone()));
        sample
    }
}

/// Bytes in use on the file system mounted at `mount`, as `df` counts
/// them (blocks minus free blocks, reserved ones included in neither).
// The statvfs fields are u64 here but narrower on 32-bit targets.
#[allow(clippy::unnecessary_cast)]
fn used_space(mount: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(mount.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: statvfs fills the struct when it returns 0.
    if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize as u64;
    Some((st.f_blocks as u64).saturating_sub(st.f_bfree as u64) * frsize)
}

/// The statistics service of one server. Cheap to clone.
#[derive(Clone)]
pub struct Stats {
    sampler: Arc<Mutex<Sampler>>,
    metrics: Metrics,
    started: Instant,
    admins_only: bool,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("admins_only", &self.admins_only)
            .finish()
    }
}

/// Errors reading statistics.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The user may not read them.
    #[error("statistics are for administrators on this server: an administrator grants it with `sockit admin grant {0} admin`")]
    Forbidden(String),
    /// Sampling failed.
    #[error("reading the statistics failed: {0}")]
    Internal(String),
}

impl StatsError {
    /// The wire error code.
    pub fn code(&self) -> &'static str {
        match self {
            StatsError::Forbidden(_) => "forbidden",
            StatsError::Internal(_) => "internal",
        }
    }
}

impl Stats {
    /// Starts the first sample now (the CPU's baseline), reading the
    /// server's counters from `metrics`.
    pub fn new(metrics: Metrics, admins_only: bool) -> Stats {
        Stats {
            sampler: Arc::new(Mutex::new(Sampler::new())),
            metrics,
            started: Instant::now(),
            admins_only,
        }
    }

    /// Whether only users with the `admin` permission may read them.
    pub fn admins_only(&self) -> bool {
        self.admins_only
    }

    /// Checks that `user` may read the statistics.
    pub fn allowed(&self, user: &User) -> Result<(), StatsError> {
        if self.admins_only && !user.permissions.contains(ADMIN_PERMISSION) {
            return Err(StatsError::Forbidden(user.name.clone()));
        }
        Ok(())
    }

    /// The statistics now (the host part at most [`SAMPLE_EVERY`] old).
    pub async fn snapshot(&self) -> Result<Snapshot, StatsError> {
        let sampler = self.sampler.clone();
        let host = tokio::task::spawn_blocking(move || {
            sampler
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .sample()
        })
        .await
        .map_err(|e| StatsError::Internal(e.to_string()))?;
        let services: Vec<Service> = self
            .metrics
            .snapshot()
            .into_iter()
            .map(|(name, c)| Service {
                name: name.to_string(),
                open: c.open,
                accepted: c.accepted,
                bytes_in: c.bytes_in,
                bytes_out: c.bytes_out,
            })
            .collect();
        Ok(Snapshot {
            time: host.time,
            host: host.host.clone(),
            cpu: host.cpu.clone(),
            memory: host.memory.clone(),
            disks: host.disks.clone(),
            networks: host.networks.clone(),
            server: Server {
                version: env!("CARGO_PKG_VERSION").into(),
                uptime_secs: self.started.elapsed().as_secs(),
                rss: host.rss,
                bytes_in: services.iter().map(|s| s.bytes_in).sum(),
                bytes_out: services.iter().map(|s| s.bytes_out).sum(),
                services,
            },
        })
    }

    /// Answers a `stats` request on the framed port for `user`.
    pub async fn answer(
        &self,
        conn: &mut Connection<Stream>,
        req: &Frame,
        user: &User,
        idle: Duration,
    ) -> Result<(), crate::framed::HandlerError> {
        use crate::framed::HandlerError;
        let refuse = |e: StatsError| HandlerError::refuse(e.code(), e.to_string());
        self.allowed(user).map_err(refuse)?;
        let snap = self.snapshot().await.map_err(refuse)?;
        let body = serde_json::to_vec(&snap)
            .map_err(|e| HandlerError::refuse("internal", e.to_string()))?;
        let frame = Frame::new("stats").reply_to(req);
        crate::proto::timed(idle, conn.write_message(&frame, &body)).await?;
        Ok(())
    }
}

/// Asks the server of `conn` (authenticated) for its statistics.
pub async fn fetch(conn: &mut Connection<Stream>) -> Result<Snapshot, ClientError> {
    conn.write_frame(&Frame::new("stats")).await?;
    let reply = conn.read_frame().await?.ok_or(ProtoError::Truncated)?;
    if let Some((code, message)) = reply.as_error() {
        conn.discard_body().await?;
        return Err(ClientError::Remote { code, message });
    }
    if reply.kind() != "stats" {
        return Err(ClientError::Other(format!(
            "unexpected answer to stats: {}",
            reply.kind()
        )));
    }
    let body = conn.read_body_to_vec(MAX_BODY).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ClientError::Other(format!("bad statistics from the server: {e}")))
}

/// Bytes for people: `512 B`, `1.5 KiB`, `23.4 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn human_secs(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The statistics as text for a terminal.
pub fn render(s: &Snapshot) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let h = &s.host;
    let _ = writeln!(
        o,
        "host      {} ({}, kernel {}, {}), up {}",
        h.name,
        h.os,
        h.kernel,
        h.arch,
        human_secs(h.uptime_secs)
    );
    let _ = writeln!(
        o,
        "load      {:.2} {:.2} {:.2}",
        h.load[0], h.load[1], h.load[2]
    );
    let cores: Vec<String> = s.cpu.cores.iter().map(|c| format!("{c:.0}%")).collect();
    let _ = writeln!(
        o,
        "cpu       {:.1}% ({} cores: {})",
        s.cpu.usage,
        s.cpu.cores.len(),
        cores.join(" ")
    );
    let m = &s.memory;
    let _ = writeln!(
        o,
        "memory    {} of {} used ({:.0}%), swap {} of {}",
        human_bytes(m.used),
        human_bytes(m.total),
        percent(m.used, m.total),
        human_bytes(m.swap_used),
        human_bytes(m.swap_total)
    );
    for d in &s.disks {
        let _ = writeln!(
            o,
            "disk      {} {} of {} used ({:.0}%), {} free ({})",
            d.mount,
            human_bytes(d.used),
            human_bytes(d.total),
            d.use_percent(),
            human_bytes(d.free),
            d.fs
        );
    }
    for n in &s.networks {
        let _ = writeln!(
            o,
            "net       {} in {} ({}/s), out {} ({}/s)",
            n.name,
            human_bytes(n.bytes_in),
            human_bytes(n.rate_in as u64),
            human_bytes(n.bytes_out),
            human_bytes(n.rate_out as u64)
        );
    }
    let v = &s.server;
    let _ = writeln!(
        o,
        "sockit    {}, up {}, RSS {}, {} in, {} out",
        v.version,
        human_secs(v.uptime_secs),
        human_bytes(v.rss),
        human_bytes(v.bytes_in),
        human_bytes(v.bytes_out)
    );
    for svc in &v.services {
        let _ = writeln!(
            o,
            "service   {}: {} open, {} accepted, {} in, {} out",
            svc.name,
            svc.open,
            svc.accepted,
            human_bytes(svc.bytes_in),
            human_bytes(svc.bytes_out)
        );
    }
    o
}

/// `sockit stats`: prints the statistics once (text, or JSON with
/// `json`), or every `watch` seconds: redrawn in place on a terminal, one
/// JSON line per sample otherwise. Watching ends with Ctrl-C.
pub async fn command(
    remote: &Remote,
    json: bool,
    watch: Option<Duration>,
) -> Result<(), ClientError> {
    let client = crate::files::commands::connect_authed(remote).await?;
    let mut conn = client.into_connection();
    let terminal = std::io::stdout().is_terminal();
    let Some(every) = watch else {
        let snap = fetch(&mut conn).await?;
        let text = if json {
            serde_json::to_string(&snap).map_err(|e| ClientError::Other(e.to_string()))? + "\n"
        } else {
            render(&snap)
        };
        print(&text)?;
        return Ok(());
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let snap = fetch(&mut conn).await?;
        let text = if terminal && !json {
            // Home, clear to the end of the screen, then the new figures.
            format!("\x1b[H\x1b[2J{}", render(&snap))
        } else {
            serde_json::to_string(&snap).map_err(|e| ClientError::Other(e.to_string()))? + "\n"
        };
        if !print(&text)? {
            return Ok(());
        }
    }
}

/// Writes to stdout; `Ok(false)` when its reader went away
/// (`sockit stats --watch 1 | head`), which ends the command quietly.
fn print(text: &str) -> Result<bool, ClientError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(ClientError::Other(format!("writing to stdout: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_durations_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(human_secs(59), "59s");
        assert_eq!(human_secs(3600 + 120), "1h 2m");
        assert_eq!(human_secs(2 * 86_400 + 3 * 3600), "2d 3h");
    }

    #[tokio::test]
    async fn a_snapshot_has_sane_figures() {
        let metrics = Metrics::default();
        metrics.service("framed").add_in(10);
        let stats = Stats::new(metrics, false);
        let s = stats.snapshot().await.unwrap();
        assert!(s.memory.total > 0 && s.memory.used <= s.memory.total);
        assert!(!s.cpu.cores.is_empty());
        assert!((0.0..=100.0).contains(&s.cpu.usage));
        assert!(s.server.rss > 0);
        assert_eq!(s.server.bytes_in, 10);
        assert!(render(&s).contains("memory"));
        // A second ask within SAMPLE_EVERY is the same sample.
        assert_eq!(stats.snapshot().await.unwrap().time, s.time);
    }
}
