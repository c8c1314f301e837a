//! The `sockit` command: parses arguments, sets up logging, and calls into the
//! library. No logic lives here.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use sockit::accounts::{self, Accounts};
use sockit::bench::{self, BenchMode};
use sockit::config::Config;
use sockit::echo::{self, Mode};
use sockit::files::commands;
use sockit::tls::{Transport, Trust, Verify};
use sockit::{netcat, serve, server, web};

/// sockit: echo servers, a netcat-style client, a framed protocol and a load
/// generator, in one binary.
#[derive(Parser)]
#[command(name = "sockit", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service (echo on 7007 TCP+UDP, the framed port on 7070),
    /// bound to 127.0.0.1, data under ./sockit-data.
    Serve(ServeArgs),
    /// Run only the echo service (TCP and UDP on one port).
    Echo(EchoArgs),
    /// Serve a folder over HTTP: what `python -m http.server` does, done
    /// properly (ranges, caching validators, compression, safe paths).
    Web(WebArgs),
    /// Talk to a TCP or UDP server, as netcat does: lines from a terminal,
    /// or stdin streamed to the socket and the socket to stdout.
    Connect(ConnectArgs),
    /// Wait for a client and relay it to stdin/stdout, as `ncat -l` does.
    Listen(ListenArgs),
    /// Download a URL over HTTP or HTTPS (HTTP/1.1 or HTTP/2), following
    /// redirects: the body to stdout, or with -o saved atomically to a file,
    /// resumable with -c.
    Fetch(FetchArgs),
    /// Load-test a server and report rate and latency.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Create an account on a server.
    Register(AccountArgs),
    /// Log in and save the session for later commands.
    Login(AccountArgs),
    /// Revoke the saved session and forget it.
    Logout(ServerArg),
    /// Upload a file (a folder with -r), verified, resumable.
    Put(PutArgs),
    /// Download a file (a folder with -r), verified, resumable.
    Get(GetArgs),
    /// List a remote folder.
    Ls(LsArgs),
    /// Remove a remote file (a folder with -r).
    Rm(RmArgs),
    /// Move or rename a remote file or folder.
    Mv(MvArgs),
    /// Create a remote folder.
    Mkdir(MkdirArgs),
    /// Run a program on the server (allowlisted, for users with the exec
    /// permission), with stdin, stdout and stderr relayed; exits with its status.
    Exec(ExecArgs),
    /// Show the server host's statistics and the server's own figures.
    Stats(StatsArgs),
    /// Chat with other users: rooms and direct messages (interactive on a
    /// terminal; `chat send` and `chat tail` for scripts).
    Chat(ChatArgs),
    /// Local administration against a data directory (no server needed).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Certificates and trusted servers: show a server's fingerprint, pin
    /// or forget a server.
    #[command(subcommand)]
    Tls(TlsCommand),
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Print the SHA-256 fingerprint of the server's certificate (run it
    /// where the server runs, and compare with what clients show).
    Fingerprint(TlsFingerprintArgs),
    /// Pin a server's fingerprint, as a first connection would after a yes.
    Trust(TlsTrustArgs),
    /// Forget a server's pinned fingerprint (after a legitimate change).
    Forget(TlsServerArgs),
    /// List the pinned servers.
    Known,
}

#[derive(Args)]
struct TlsFingerprintArgs {
    /// The server's data directory (its generated certificate)
    #[arg(long, default_value = "sockit-data", conflicts_with = "cert")]
    data_dir: PathBuf,
    /// A certificate file (PEM) instead, e.g. the configured tls_cert
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
}

#[derive(Args)]
struct TlsTrustArgs {
    /// The server, HOST:PORT, as given to --server
    server: String,
    /// SHA256:... (hex, colons allowed), as `sockit tls fingerprint` prints it
    fingerprint: String,
}

#[derive(Args)]
struct TlsServerArgs {
    /// The server, HOST:PORT, as given to --server
    server: String,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ChatArgs {
    #[command(subcommand)]
    action: Option<ChatAction>,
    #[command(flatten)]
    server: ServerArg,
    /// Join ROOM (creating it) and talk there.
    #[arg(long, short, value_name = "ROOM")]
    room: Option<String>,
}

#[derive(Subcommand)]
enum ChatAction {
    /// Send one message; exits 0 once the server has stored it.
    Send(ChatSendArgs),
    /// Print incoming messages (or one room's) until interrupted; reconnects
    /// by itself.
    Tail(ChatTailArgs),
}

#[derive(Args)]
struct ChatSendArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Send to this user.
    #[arg(
        long,
        value_name = "USER",
        required_unless_present = "room",
        conflicts_with = "room"
    )]
    to: Option<String>,
    /// Send to this room (you must have joined it).
    #[arg(long, value_name = "ROOM")]
    room: Option<String>,
    /// The text; `-` reads it from stdin.
    text: String,
}

#[derive(Args)]
struct ChatTailArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Only this room's messages (joining it, and printing its recent history first).
    #[arg(long, value_name = "ROOM")]
    room: Option<String>,
    /// One JSON object per line: {"seq","ts","from","room"|"to","text"}.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ServerArg {
    /// Server HOST:PORT [default: $SOCKIT_SERVER, else the last server logged into, else 127.0.0.1:7070]
    #[arg(long, short = 'S', value_name = "HOST:PORT")]
    server: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
}

impl ServerArg {
    fn remote(&self) -> commands::Remote {
        commands::Remote {
            server: self.server.clone(),
            transport: self.tls.transport(),
        }
    }
}

/// How a client trusts the server (TLS is the default).
#[derive(Args)]
struct TlsArgs {
    /// Plain TCP, for a server run with `tls = false` (only on a trusted network)
    #[arg(long, conflicts_with_all = ["ca", "insecure", "accept_new"])]
    no_tls: bool,
    /// Trust only certificates issued by the CA(s) in this PEM file (name and dates checked)
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// Trust a server seen for the first time without asking, and pin its certificate
    #[arg(long)]
    accept_new: bool,
    /// Do not check the server's certificate at all (warns every time)
    #[arg(long)]
    insecure: bool,
}

impl TlsArgs {
    fn transport(&self) -> Transport {
        if self.no_tls {
            return Transport::Plain;
        }
        Transport::Tls(trust(self.ca.clone(), self.insecure, self.accept_new))
    }
}

#[derive(Args)]
struct AccountArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Account name (1 to 32 of A-Z a-z 0-9 _ . -) [default: the saved one, else asked]
    #[arg(long, short)]
    user: Option<String>,
    /// Read the password from the first line of stdin (else $SOCKIT_PASSWORD, else a hidden prompt)
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Args)]
struct TransferArgs {
    /// Copy a folder with everything in it
    #[arg(long, short)]
    recursive: bool,
    /// Replace an existing target
    #[arg(long, short)]
    force: bool,
    /// Start over instead of resuming an interrupted transfer
    #[arg(long)]
    no_resume: bool,
    /// No progress bar
    #[arg(long, short)]
    quiet: bool,
}

impl TransferArgs {
    fn options(&self) -> commands::TransferOptions {
        commands::TransferOptions {
            recursive: self.recursive,
            force: self.force,
            no_resume: self.no_resume,
            quiet: self.quiet,
        }
    }
}

#[derive(Args)]
struct PutArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Local file or folder
    local: PathBuf,
    /// Remote path; a trailing / or an existing remote folder puts LOCAL inside it [default: LOCAL's name]
    remote: Option<String>,
    #[command(flatten)]
    transfer: TransferArgs,
}

#[derive(Args)]
struct GetArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Remote file or folder
    remote: String,
    /// Local path; an existing folder gets REMOTE inside it [default: REMOTE's name, here]
    local: Option<PathBuf>,
    #[command(flatten)]
    transfer: TransferArgs,
}

#[derive(Args)]
struct LsArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Remote folder [default: the top of your space]
    #[arg(default_value = "", hide_default_value = true)]
    path: String,
    /// Kind, size and modification time
    #[arg(long, short)]
    long: bool,
    /// Everything beneath, as paths
    #[arg(long, short = 'R')]
    recursive: bool,
    /// A JSON array (name, kind, size, mtime_ns)
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RmArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Remote path
    path: String,
    /// Remove a folder and everything in it
    #[arg(long, short)]
    recursive: bool,
}

#[derive(Args)]
struct MvArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Remote path to move
    from: String,
    /// New remote path, or an existing folder to move into
    to: String,
    /// Replace an existing file at TO
    #[arg(long, short)]
    force: bool,
}

#[derive(Args)]
struct MkdirArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Remote folder to create
    path: String,
    /// Create missing parents too, and do not mind if it exists
    #[arg(long, short)]
    parents: bool,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Add a user (works even when registration is closed).
    AddUser(AdminUserArgs),
    /// Set a user's password (their sessions are revoked).
    Passwd(AdminUserArgs),
    /// List the users.
    Users(AdminDataArgs),
    /// Give a user a permission: `exec` (remote commands), `admin` (stats when restricted).
    Grant(AdminPermissionArgs),
    /// Take a permission away from a user.
    Revoke(AdminPermissionArgs),
}

#[derive(Args)]
struct AdminPermissionArgs {
    /// Account name
    name: String,
    /// The permission: exec or admin
    permission: String,
    #[command(flatten)]
    data: AdminDataArgs,
}

#[derive(Args)]
struct ExecArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Kill the program after SECS seconds (the server's own limit still applies)
    #[arg(long, short = 't', value_name = "SECS")]
    timeout: Option<f64>,
    /// Give the program an empty stdin instead of forwarding this one
    #[arg(long, short = 'n')]
    no_stdin: bool,
    /// PROGRAM and its arguments (after --), passed as they are, never through a shell
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM ARGS"
    )]
    argv: Vec<String>,
}

#[derive(Args)]
struct StatsArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Print JSON (one object) instead of text
    #[arg(long)]
    json: bool,
    /// Refresh every SECS seconds: redrawn in place on a terminal, one JSON line per sample otherwise
    #[arg(long, short, value_name = "SECS")]
    watch: Option<f64>,
}

/// Ends the process with this status and no message (`sockit exec`).
#[derive(Debug)]
struct ExitWith(u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

#[derive(Args)]
struct AdminDataArgs {
    /// The server's data directory [default: the config file's data_dir, else ./sockit-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The server's configuration file, for its data_dir
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl AdminDataArgs {
    /// The data folder to work on: `--data-dir`, else the config file's,
    /// else `./sockit-data`. It must hold a server's accounts already, so
    /// that an admin command run in the wrong folder never reports success
    /// into a database the server does not read; only `add-user` (`create`)
    /// may start the accounts of a folder named explicitly, for a first
    /// account before the server's first start.
    fn data_dir(&self, create: bool) -> Result<PathBuf> {
        let (dir, from, named) = match (&self.data_dir, &self.config) {
            (Some(dir), _) => (dir.clone(), "--data-dir", true),
            (None, Some(file)) => {
                let config = sockit::config::Config::load(file)
                    .with_context(|| format!("reading {}", file.display()))?;
                (config.data_dir, "the config file's data_dir", true)
            }
            (None, None) => (PathBuf::from("sockit-data"), "the default", false),
        };
        let db = dir.join(accounts::DB_FILE);
        if db.is_file() {
            return Ok(dir);
        }
        if create && named && dir.is_dir() {
            eprintln!(
                "starting the accounts of {} in {}",
                dir.display(),
                db.display()
            );
            return Ok(dir);
        }
        anyhow::bail!(
            "no sockit accounts in {} ({from}: {} is missing); point at the server's data folder with --data-dir DIR or --config FILE (`sockit serve` makes it on its first start)",
            dir.display(),
            db.display()
        )
    }
}

#[derive(Args)]
struct AdminUserArgs {
    /// Account name
    name: String,
    #[command(flatten)]
    data: AdminDataArgs,
    /// Read the password from the first line of stdin (else $SOCKIT_PASSWORD, else a hidden prompt)
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// Configuration file (TOML; see docs/config.md). Flags override it.
    #[arg(long, short, env = "SOCKIT_CONFIG")]
    config: Option<PathBuf>,
    /// Where state is kept [default: ./sockit-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the echo service, TCP and UDP [default: 127.0.0.1:7007]
    #[arg(long, value_name = "ADDR")]
    echo_bind: Option<String>,
    /// Address of the framed port [default: 127.0.0.1:7070]
    #[arg(long, value_name = "ADDR")]
    framed_bind: Option<String>,
    /// Address of the web port (site, app, API) [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    web_bind: Option<String>,
    /// Serve the framed port in plain TCP (framed.tls = false): only on loopback unless the config allows more
    #[arg(long)]
    no_tls: bool,
    /// Serve the web port over HTTPS (web.tls = true)
    #[arg(long)]
    web_tls: bool,
    /// Certificate chain (PEM) instead of the self-signed one (tls_cert)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM) (tls_key)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Args)]
struct LimitArgs {
    /// Connections served at once per listener [default: 10000]
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Close connections idle this long, e.g. 30s, 5m [default: 5m]
    #[arg(long, value_name = "DURATION", value_parser = sockit::duration::positive)]
    idle_timeout: Option<Duration>,
    /// On SIGINT/SIGTERM, time open connections get to finish [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = sockit::duration::positive)]
    shutdown_grace: Option<Duration>,
}

impl LimitArgs {
    fn apply(&self, config: &mut Config) {
        if let Some(n) = self.max_connections {
            config.limits.max_connections = n.max(1);
        }
        if let Some(d) = self.idle_timeout {
            config.limits.idle_timeout = d;
        }
        if let Some(d) = self.shutdown_grace {
            config.limits.shutdown_grace = d;
        }
    }
}

#[derive(Args)]
struct EchoArgs {
    /// Address for TCP and UDP
    #[arg(long, default_value = echo::DEFAULT_ECHO_ADDR, value_name = "ADDR")]
    bind: String,
    /// echo: bytes back unchanged; upper: text upper-cased; hello: "Hello, <line>!"
    #[arg(long, value_enum, default_value_t = Mode::Echo)]
    mode: Mode,
    /// Serve TCP only
    #[arg(long, conflicts_with = "udp_only")]
    tcp_only: bool,
    /// Serve UDP only
    #[arg(long)]
    udp_only: bool,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Args)]
struct WebArgs {
    /// Folder to serve
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Address to listen on
    #[arg(long, short, default_value = web::DEFAULT_WEB_ADDR, value_name = "ADDR")]
    bind: String,
    /// Answer 404 instead of listing folders that have no index.html
    #[arg(long)]
    no_list: bool,
    /// Serve dot-files (refused by default)
    #[arg(long)]
    hidden: bool,
    /// Follow symlinks that lead out of the folder (refused by default)
    #[arg(long)]
    follow_symlinks: bool,
    /// Cache-Control header of files; "" sends none
    #[arg(long, default_value = "no-cache", value_name = "VALUE")]
    cache_control: String,
    /// Never compress on the fly (precompressed .br/.gz files are still used)
    #[arg(long)]
    no_compress: bool,
    /// Content-Security-Policy header of every response
    #[arg(long, default_value = web::DEFAULT_CSP, value_name = "POLICY")]
    csp: String,
    /// Time a client has to send a request's headers; also how long an idle
    /// keep-alive connection waits for its next request
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = sockit::duration::positive)]
    header_timeout: Duration,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1; plain http:// requests are
    /// redirected), with --cert/--key or else a self-signed certificate
    #[arg(long)]
    tls: bool,
    /// Certificate chain (PEM) for --tls instead of the self-signed one
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    cert: Option<PathBuf>,
    /// Its private key (PEM)
    #[arg(long, value_name = "FILE", requires_all = ["tls", "cert"])]
    key: Option<PathBuf>,
    /// Where --tls keeps the self-signed certificate it makes on first use
    /// [default: sockit/web-tls in the user's config folder]
    #[arg(long, value_name = "DIR", requires = "tls")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Args)]
struct ConnectArgs {
    /// Server address, HOST:PORT
    target: String,
    /// Use UDP: one datagram per line (terminal) or per read (piped)
    #[arg(long, short)]
    udp: bool,
    /// Seconds to wait for the connection (TCP, default 10) or a reply (UDP, default 2)
    #[arg(long, short = 'w', value_name = "SECS")]
    timeout: Option<f64>,
    /// Speak TLS, as `ncat --ssl`; the server's certificate is trusted on first use and pinned per HOST:PORT, unless --ca or --insecure
    #[arg(long)]
    tls: bool,
    /// With --tls: trust only certificates issued by the CA(s) in this PEM file (name and dates checked)
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls",
        conflicts_with = "insecure"
    )]
    ca: Option<PathBuf>,
    /// With --tls: trust a server seen for the first time without asking, and pin its certificate
    #[arg(long, requires = "tls")]
    accept_new: bool,
    /// With --tls: do not check the server's certificate at all (warns every time)
    #[arg(long, requires = "tls")]
    insecure: bool,
    #[command(flatten)]
    relay: RelayArgs,
}

/// How a TCP or TLS conversation ends (`connect` and `listen`).
#[derive(Args)]
struct RelayArgs {
    /// Only send stdin: what the peer sends is thrown away, and the program ends once stdin is sent and acknowledged
    #[arg(long, conflicts_with_all = ["recv_only", "udp"])]
    send_only: bool,
    /// Only print what the peer sends: stdin is never read and nothing is sent
    #[arg(long, conflicts_with_all = ["no_shutdown", "close_after", "udp"])]
    recv_only: bool,
    /// Do not half-close the connection at stdin's end (for peers that hang up on it)
    #[arg(long, conflicts_with = "udp")]
    no_shutdown: bool,
    /// After stdin's end, wait at most this long for the peer to finish, then stop (0, 500ms, 10s, or seconds)
    #[arg(long, short = 'q', value_name = "DURATION", value_parser = sockit::duration::or_zero, conflicts_with = "udp")]
    close_after: Option<Duration>,
}

impl RelayArgs {
    fn relay(&self) -> netcat::Relay {
        netcat::Relay {
            send_only: self.send_only,
            recv_only: self.recv_only,
            no_shutdown: self.no_shutdown,
            close_after: self.close_after,
        }
    }
}

#[derive(Args)]
struct ListenArgs {
    /// [HOST:]PORT to listen on; the host defaults to 127.0.0.1
    bind: String,
    /// Use UDP
    #[arg(long, short)]
    udp: bool,
    /// Keep accepting clients: print what every client sends, send stdin to all
    #[arg(long, short)]
    keep_open: bool,
    /// Speak TLS, as `ncat --ssl`, with a self-signed certificate made on first use and kept in listen-tls/ in the configuration folder (its fingerprint is printed), unless --cert/--key
    #[arg(long)]
    tls: bool,
    /// With --tls: the certificate chain (PEM) to present
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    cert: Option<PathBuf>,
    /// With --tls: its private key (PEM)
    #[arg(long, value_name = "FILE", requires_all = ["tls", "cert"])]
    key: Option<PathBuf>,
    #[command(flatten)]
    relay: RelayArgs,
}

#[derive(Args)]
struct FetchArgs {
    /// http:// or https:// URL
    url: String,
    /// Save the body to FILE (through FILE.part, renamed when complete); `-` is stdout [default: stdout]
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Resume an interrupted download from FILE.part (needs -o FILE)
    #[arg(long = "continue", short = 'c', requires = "output")]
    resume: bool,
    /// Send HEAD and print the response's status and headers instead of a body
    #[arg(long, short = 'I', conflicts_with_all = ["output", "resume"])]
    head: bool,
    /// Extra request header, e.g. -H 'Accept: text/plain' (repeatable)
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Also trust the CA certificate(s) in this PEM file
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Speak HTTP/2 from the first byte on http:// (h2c); https negotiates it by itself
    #[arg(long)]
    http2_prior_knowledge: bool,
    /// Follow at most N redirects
    #[arg(long, value_name = "N", default_value_t = sockit::fetch::DEFAULT_MAX_REDIRECTS)]
    max_redirects: usize,
    /// Give up connecting after this long (10s, 500ms, or seconds)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = sockit::duration::positive)]
    connect_timeout: Duration,
    /// Give up on the whole transfer after this long [default: no limit]
    #[arg(long, value_name = "DURATION", value_parser = sockit::duration::positive)]
    timeout: Option<Duration>,
    /// Fail when the server sends nothing for this long
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = sockit::duration::positive)]
    idle_timeout: Duration,
    /// No progress bar and no summary line
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Benchmark an echo-style server (sockit echo, ncat, or your own).
    Echo(BenchEchoArgs),
    /// Benchmark the chat relay: one sender, a room of many members.
    Chat(BenchChatArgs),
    /// New connections per second: TCP, TLS handshake (full, no
    /// resumption) and the framed hello, against the framed port or, with
    /// --handshake-only, any TLS server.
    Handshake(BenchHandshakeArgs),
}

#[derive(Args)]
struct BenchHandshakeArgs {
    /// HOST:PORT
    target: String,
    /// Workers, each setting up one connection after another
    #[arg(long, short, default_value_t = 8)]
    connections: usize,
    /// How long to run, e.g. 10s
    #[arg(long, short, default_value = "10s", value_parser = sockit::duration::positive)]
    duration: Duration,
    /// Only connect (and handshake): no framed hello, for any TLS server
    #[arg(long)]
    handshake_only: bool,
    /// Print one JSON object instead of the summary
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Args)]
struct BenchChatArgs {
    /// The framed port, HOST:PORT
    target: String,
    /// Users in the room, each with its own subscribed connection
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Further idle subscribed connections per member (memory measurements)
    #[arg(long, default_value_t = 0, value_name = "N")]
    hold: usize,
    /// Messages the sender sends
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Messages per second to offer; 0 sends as fast as they are acknowledged
    #[arg(long, default_value_t = 0.0, value_name = "PER_SEC")]
    rate: f64,
    /// Bytes of text per message
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// User names are PREFIX0, PREFIX1, ... (registered when missing)
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// The users' password (a benchmark account's, not a secret)
    #[arg(long, default_value = "bench password")]
    password: String,
    /// The room
    #[arg(long, default_value = "bench")]
    room: String,
    /// Keep every connection open this long after the run (to read the
    /// server's memory), e.g. 30s
    #[arg(long, default_value = "0s", value_parser = sockit::duration::or_zero)]
    linger: Duration,
    /// Keep the users' session tokens in FILE between runs (saves an
    /// Argon2id login per user on reruns)
    #[arg(long, value_name = "FILE")]
    token_cache: Option<std::path::PathBuf>,
    /// Print one JSON object instead of the summary
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Args)]
struct BenchEchoArgs {
    /// Server address, HOST:PORT
    target: String,
    /// Concurrent connections (UDP: sockets)
    #[arg(long, short, default_value_t = 50)]
    connections: usize,
    /// How long to run, e.g. 10s, 1m
    #[arg(long, short, default_value = "10s", value_parser = sockit::duration::positive)]
    duration: Duration,
    /// Bytes per message; in bulk mode, bytes per write [default: 64, bulk: 131072]
    #[arg(long, short)]
    size: Option<usize>,
    /// Use UDP (rr mode only)
    #[arg(long, short)]
    udp: bool,
    /// rr: round trips; bulk: one-way streaming; connect: a new connection per round trip
    #[arg(long, short, value_enum, default_value_t = BenchMode::Rr)]
    mode: BenchMode,
    /// Idle connections to open and hold during the run
    #[arg(long, default_value_t = 0, value_name = "N")]
    hold: usize,
    /// Offer this many round trips per second in all, paced evenly over the
    /// connections (TCP rr), to measure latency at a load the machine can
    /// sustain; without it, each connection sends as soon as its reply is in
    #[arg(long, value_name = "PER_SEC")]
    rate: Option<f64>,
    /// Print one JSON object instead of the summary
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    server::tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            // The platform verifier logs each refused certificate as an
            // error, and rustls warns about each peer that breaks TLS; the
            // commands report these once, in their own words.
            EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                EnvFilter::new("info,rustls=error,rustls_platform_verifier=off")
            }),
        )
        .with_writer(std::io::stderr)
        // A closed stderr must not panic the task that logs (tracing would
        // report its own write failure with eprintln!, which panics).
        .log_internal_errors(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<ExitWith>() {
            Some(ExitWith(status)) => ExitCode::from(*status),
            None => {
                eprintln!("sockit: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// A command line clap refused: `--help` and `--version` as clap prints
/// them; a mistake in one line with where to look, status 2, as every other
/// error of ours is one line.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
    }
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut what = lines
        .next()
        .unwrap_or("bad command line")
        .trim_start_matches("error: ")
        .to_string();
    // "the following required arguments were not provided:" lists them on
    // the lines after it.
    if what.ends_with(':') {
        let listed: Vec<&str> = lines
            .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("tip:"))
            .collect();
        what = format!("{} {}", what, listed.join(", "));
    }
    let tip = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("tip: "))
        .map(|t| format!("; {t}"))
        .unwrap_or_default();
    eprintln!(
        "sockit: {what}{tip} (see `{} --help`)",
        command_named(std::env::args().skip(1))
    );
    ExitCode::from(2)
}

/// The (sub)command a command line names, `sockit bench echo` for
/// `sockit bench echo HOST --duration x`: the words that are subcommands,
/// in order, from the top.
fn command_named(args: impl Iterator<Item = String>) -> String {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut path = vec!["sockit".to_string()];
    for arg in args {
        let Some(sub) = cmd.find_subcommand(&arg).cloned() else {
            if arg.starts_with('-') {
                continue;
            }
            break;
        };
        path.push(sub.get_name().to_string());
        cmd = sub;
    }
    path.join(" ")
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    server::runtime().context("cannot start the async runtime")
}

/// Cancels the returned token on SIGINT or SIGTERM.
fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        server::shutdown_signal().await;
        t.cancel();
    });
    token
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve(args) => {
            let mut config = match &args.config {
                Some(path) => Config::load(path)?,
                None => Config::default(),
            };
            if let Some(d) = args.data_dir {
                config.data_dir = d;
            }
            if let Some(a) = args.echo_bind {
                config.echo.bind = a;
            }
            if let Some(a) = args.framed_bind {
                config.framed.bind = a;
            }
            if let Some(a) = args.web_bind {
                config.web.bind = a;
            }
            if args.no_tls {
                config.framed.tls = false;
            }
            if args.web_tls {
                config.web.tls = true;
            }
            if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
                config.tls_cert = cert;
                config.tls_key = key;
            }
            args.limits.apply(&mut config);
            runtime()?.block_on(async {
                server::raise_nofile_limit();
                let bound = serve::bind(config).await?;
                bound.run(on_signal()).await;
                Ok(())
            })
        }
        Command::Web(args) => {
            let mut config = Config::default();
            args.limits.apply(&mut config);
            let mut options = web::site::SiteOptions::new(args.dir);
            options.list = !args.no_list;
            options.hidden = args.hidden;
            options.follow_symlinks = args.follow_symlinks;
            options.cache_control = (!args.cache_control.is_empty()).then_some(args.cache_control);
            options.compress = !args.no_compress;
            let tls = match args.tls {
                true => {
                    let data_dir = match args.data_dir {
                        Some(d) => d,
                        None => sockit::credentials::config_dir()
                            .context("finding a folder for the certificate (or pass --data-dir)")?
                            .join("web-tls"),
                    };
                    let source = sockit::tls::CertSource::new(
                        &data_dir,
                        args.cert.as_deref(),
                        args.key.as_deref(),
                    );
                    let tls =
                        sockit::tls::ServerTls::load_or_create(source).context("setting up TLS")?;
                    tracing::info!(fingerprint = %tls.fingerprint(), "TLS certificate");
                    let config = tls
                        .config(sockit::tls::server::WEB_ALPN)
                        .context("setting up TLS")?;
                    Some((tls, config))
                }
                false => None,
            };
            let settings = web::Settings {
                header_timeout: args.header_timeout,
                csp: args.csp,
                tls: tls.is_some(),
                ..web::Settings::default()
            };
            let site = web::site::Site::open(options)?;
            runtime()?.block_on(async {
                server::raise_nofile_limit();
                let listener = server::bind_tcp(&args.bind).await?;
                let root =
                    std::fs::canonicalize(site.root()).unwrap_or_else(|_| site.root().into());
                tracing::info!(root = %root.display(), "serving folder");
                let shutdown = on_signal();
                if let Some((tls, _)) = &tls {
                    tokio::spawn(serve::reload_on_hangup(tls.clone(), shutdown.clone()));
                }
                let handler = web::HttpHandler {
                    web: web::Web::new(settings, Some(site), None),
                    tls: tls.map(|(_, config)| config),
                };
                server::serve(
                    "web",
                    listener,
                    handler,
                    config.limits.to_limits(),
                    shutdown,
                )
                .await;
                Ok(())
            })
        }
        Command::Echo(args) => {
            let mut config = Config::default();
            args.limits.apply(&mut config);
            runtime()?.block_on(async {
                server::raise_nofile_limit();
                let tcp = match args.udp_only {
                    true => None,
                    false => Some(server::bind_tcp(&args.bind).await?),
                };
                let udp = match args.tcp_only {
                    true => None,
                    // Port 0: UDP takes the port TCP got.
                    false => {
                        let addr = match &tcp {
                            Some(l) => l.local_addr()?.to_string(),
                            None => args.bind.clone(),
                        };
                        Some(server::bind_udp(&addr).await?)
                    }
                };
                echo::run(tcp, udp, args.mode, config.limits.to_limits(), on_signal()).await;
                Ok(())
            })
        }
        Command::Connect(args) => {
            let timeout = secs(args.timeout)?;
            let tls = args
                .tls
                .then(|| trust(args.ca, args.insecure, args.accept_new));
            netcat::connect(&netcat::ConnectOptions {
                target: args.target,
                udp: args.udp,
                timeout,
                tls,
                relay: args.relay.relay(),
            })?;
            Ok(())
        }
        Command::Listen(args) => {
            let tls = match (args.tls, args.cert, args.key) {
                (false, _, _) => None,
                (true, Some(cert), Some(key)) => Some(sockit::tls::CertSource::Files { cert, key }),
                // One certificate, made once and kept, so that a client's
                // pin still holds when the listener is started again.
                (true, _, _) => Some(sockit::tls::CertSource::Generated {
                    dir: sockit::credentials::config_dir()
                        .context("finding a folder for the certificate")?
                        .join("listen-tls"),
                }),
            };
            netcat::listen(&netcat::ListenOptions {
                bind: args.bind,
                udp: args.udp,
                keep_open: args.keep_open,
                tls,
                relay: args.relay.relay(),
            })?;
            Ok(())
        }
        Command::Register(a) => client(commands::register(
            &a.server.remote(),
            a.user.as_deref(),
            commands::PasswordInput {
                from_stdin: a.password_stdin,
                confirm: true,
            },
        )),
        Command::Login(a) => client(commands::login(
            &a.server.remote(),
            a.user.as_deref(),
            commands::PasswordInput {
                from_stdin: a.password_stdin,
                confirm: false,
            },
        )),
        Command::Logout(a) => client(commands::logout(&a.remote())),
        Command::Put(a) => client(commands::put(
            &a.server.remote(),
            &a.local,
            a.remote.as_deref(),
            a.transfer.options(),
        )),
        Command::Get(a) => client(commands::get(
            &a.server.remote(),
            &a.remote,
            a.local.as_deref(),
            a.transfer.options(),
        )),
        Command::Ls(a) => client(commands::ls(
            &a.server.remote(),
            &a.path,
            commands::ListOptions {
                long: a.long,
                json: a.json,
                recursive: a.recursive,
            },
        )),
        Command::Rm(a) => client(commands::rm(&a.server.remote(), &a.path, a.recursive)),
        Command::Mv(a) => client(commands::mv(&a.server.remote(), &a.from, &a.to, a.force)),
        Command::Mkdir(a) => client(commands::mkdir(&a.server.remote(), &a.path, a.parents)),
        Command::Admin(cmd) => admin(cmd),
        Command::Tls(cmd) => tls(cmd),
        Command::Chat(a) => chat(a),
        Command::Exec(a) => {
            if let Some(t) = a.timeout {
                secs(Some(t))?;
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let status = rt.block_on(sockit::exec::client::command(
                &a.server.remote(),
                &a.argv,
                a.timeout,
                a.no_stdin,
            ));
            // The stdin reader thread may be blocked in a read: do not wait for it.
            rt.shutdown_background();
            match status {
                0 => Ok(()),
                s => Err(ExitWith(s).into()),
            }
        }
        Command::Stats(a) => {
            let watch = secs(a.watch)?;
            client(sockit::stats::command(&a.server.remote(), a.json, watch))
        }
        Command::Fetch(a) => {
            let opts = sockit::fetch::FetchOptions {
                url: a.url,
                output: sockit::fetch::Output::from_arg(a.output),
                resume: a.resume,
                head: a.head,
                headers: a.headers,
                max_redirects: a.max_redirects,
                connect_timeout: a.connect_timeout,
                timeout: a.timeout,
                idle_timeout: a.idle_timeout,
                cacert: a.cacert,
                http2_prior_knowledge: a.http2_prior_knowledge,
                quiet: a.quiet,
            };
            match runtime()?.block_on(sockit::fetch::run(&opts)) {
                // The reader went away (`sockit fetch URL | head`): not an
                // error worth a message, as with any Unix filter.
                Err(sockit::fetch::FetchError::Stdout(e))
                    if e.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    Ok(())
                }
                r => r.map(|_| ()).map_err(Into::into),
            }
        }
        Command::Bench(BenchCommand::Chat(a)) => {
            let opts = bench::chat::ChatBench {
                target: a.target,
                members: a.members,
                hold: a.hold,
                messages: a.messages,
                rate: a.rate,
                size: a.size,
                prefix: a.prefix,
                password: a.password,
                room: a.room,
                linger: a.linger,
                token_cache: a.token_cache,
                transport: a.tls.transport(),
            };
            let report = runtime()?.block_on(async {
                server::raise_nofile_limit_quietly();
                bench::chat::run(&opts).await
            })?;
            if a.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", report.render());
            }
            Ok(())
        }
        Command::Bench(BenchCommand::Handshake(a)) => {
            let opts = bench::handshake::HandshakeBench {
                target: a.target,
                connections: a.connections,
                duration: a.duration,
                transport: a.tls.transport(),
                handshake_only: a.handshake_only,
            };
            let report = runtime()?.block_on(async {
                server::raise_nofile_limit_quietly();
                bench::handshake::run(&opts).await
            })?;
            if a.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(())
        }
        Command::Bench(BenchCommand::Echo(args)) => {
            let size = args.size.unwrap_or(match args.mode {
                BenchMode::Bulk => 128 * 1024,
                _ => 64,
            });
            let opts = bench::EchoBench {
                target: args.target,
                connections: args.connections,
                duration: args.duration,
                size,
                udp: args.udp,
                mode: args.mode,
                hold: args.hold,
                rate: args.rate,
            };
            let report = runtime()?.block_on(async {
                server::raise_nofile_limit_quietly();
                bench::run(&opts).await
            })?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", report.render());
            }
            Ok(())
        }
    }
}

/// How a TLS client trusts the server, from `--ca`, `--insecure` and
/// `--accept-new` (trust on first use when neither of the first two).
fn trust(ca: Option<PathBuf>, insecure: bool, accept_new: bool) -> Trust {
    let verify = match (ca, insecure) {
        (Some(ca), _) => Verify::Ca(ca),
        (None, true) => Verify::Insecure,
        (None, false) => Verify::Pin,
    };
    Trust {
        verify,
        accept_new,
        ..Trust::default()
    }
}

/// `sockit tls ...`.
fn tls(cmd: TlsCommand) -> Result<()> {
    use sockit::tls::client::KnownServers;
    match cmd {
        TlsCommand::Fingerprint(a) => {
            let cert = match a.cert {
                Some(c) => c,
                None => a
                    .data_dir
                    .join(sockit::tls::server::GENERATED_DIR)
                    .join("cert.pem"),
            };
            println!("{}", sockit::tls::client::file_fingerprint(&cert)?);
        }
        TlsCommand::Trust(a) => {
            let fp = sockit::tls::parse_fingerprint(&a.fingerprint).with_context(|| {
                format!(
                    "{:?} is not a SHA-256 fingerprint (SHA256: and 64 hex digits)",
                    a.fingerprint
                )
            })?;
            let path = KnownServers::default_path()?;
            KnownServers::load(&path)?.pin(&a.server, &fp)?;
            eprintln!("pinned {} as {fp} in {}", a.server, path.display());
        }
        TlsCommand::Forget(a) => {
            let path = KnownServers::default_path()?;
            match KnownServers::load(&path)?.forget(&a.server)? {
                true => eprintln!("forgot {}; the next connection will ask again", a.server),
                false => anyhow::bail!("{} is not pinned in {}", a.server, path.display()),
            }
        }
        TlsCommand::Known => {
            let path = KnownServers::default_path()?;
            for (server, fp) in KnownServers::load(&path)?.pins() {
                println!("{server} {fp}");
            }
        }
    }
    Ok(())
}

/// Runs a client command on a small runtime.
fn client<F: std::future::Future<Output = Result<(), sockit::files::client::ClientError>>>(
    f: F,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(f)?;
    Ok(())
}

fn chat(a: ChatArgs) -> Result<()> {
    use sockit::chat::client;
    match a.action {
        None => self::client(client::interactive(&a.server.remote(), a.room.as_deref())),
        Some(ChatAction::Send(s)) => {
            let text = if s.text == "-" {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                    .context("reading the message from stdin")?;
                t.strip_suffix('\n').map(String::from).unwrap_or(t)
            } else {
                s.text
            };
            let to = match (s.to, s.room) {
                (Some(u), _) => client::To::User(u),
                (None, Some(r)) => client::To::Room(r),
                (None, None) => anyhow::bail!("say who to send to: --to USER or --room ROOM"),
            };
            self::client(async move {
                client::send(&s.server.remote(), &to, &text).await?;
                Ok(())
            })
        }
        Some(ChatAction::Tail(t)) => {
            self::client(client::tail(&t.server.remote(), t.room.as_deref(), t.json))
        }
    }
}

fn admin(cmd: AdminCommand) -> Result<()> {
    let open_or_create = |data: &AdminDataArgs, create: bool| {
        let dir = data.data_dir(create)?;
        Accounts::open(&dir, accounts::Settings::default())
            .with_context(|| format!("opening the accounts in {}", dir.display()))
    };
    let open = |data: &AdminDataArgs| open_or_create(data, false);
    match cmd {
        AdminCommand::AddUser(a) => {
            let store = open_or_create(&a.data, true)?;
            let pw = commands::read_password(commands::PasswordInput {
                from_stdin: a.password_stdin,
                confirm: true,
            })?;
            let user = store.add_user(&a.name, &pw)?;
            eprintln!("added user {}", user.name);
        }
        AdminCommand::Passwd(a) => {
            let store = open(&a.data)?;
            let pw = commands::read_password(commands::PasswordInput {
                from_stdin: a.password_stdin,
                confirm: true,
            })?;
            store.set_password(&a.name, &pw)?;
            eprintln!(
                "password changed for {}; their sessions were revoked",
                a.name
            );
        }
        AdminCommand::Grant(a) | AdminCommand::Revoke(a)
            if !PERMISSIONS.contains(&a.permission.as_str()) =>
        {
            anyhow::bail!(
                "unknown permission {:?}: the permissions are {}",
                a.permission,
                PERMISSIONS.join(", ")
            );
        }
        AdminCommand::Grant(a) => {
            let user = open(&a.data)?.set_permission(&a.name, &a.permission, true)?;
            let perms: Vec<_> = user.permissions.into_iter().collect();
            eprintln!("{} now has: {}", user.name, perms.join(", "));
        }
        AdminCommand::Revoke(a) => {
            let user = open(&a.data)?.set_permission(&a.name, &a.permission, false)?;
            let perms: Vec<_> = user.permissions.into_iter().collect();
            let now = if perms.is_empty() {
                "no permissions".to_string()
            } else {
                perms.join(", ")
            };
            eprintln!("{} now has: {now}", user.name);
        }
        AdminCommand::Users(d) => {
            for u in open(&d)?.users()? {
                let perms: Vec<_> = u.permissions.into_iter().collect();
                println!("{}\t{}", u.name, perms.join(","));
            }
        }
    }
    Ok(())
}

/// Permissions `sockit admin grant` knows.
const PERMISSIONS: &[&str] = &[sockit::exec::PERMISSION, sockit::stats::ADMIN_PERMISSION];

fn secs(s: Option<f64>) -> Result<Option<Duration>> {
    match s {
        None => Ok(None),
        Some(v) if v.is_finite() && v > 0.0 => Ok(Some(Duration::from_secs_f64(v))),
        Some(v) => anyhow::bail!("--timeout must be a positive number of seconds, got {v}"),
    }
}
