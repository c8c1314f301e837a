//! sockit: the network toolkit, as a library. The `sockit` binary is a thin
//! command-line front over these modules.
//!
//! Shared pieces, written once:
//! - [`server`]: the one server runtime: binding, accept loop, connection
//!   limit, idle timeout, graceful shutdown.
//! - [`proto`]: the framed protocol (length-prefixed JSON header and streamed
//!   body): its codec and the [`proto::Connection`] every framed service uses.
//! - [`config`]: `sockit.toml`, the configuration of `sockit serve`.
//! - [`duration`]: how durations are written on the command line, one way
//!   for every option.
//! - [`accounts`]: users, Argon2id passwords, session tokens, login
//!   throttling, in the embedded SQLite database.
//! - [`store`]: the file store: per-user spaces and the one path-resolution
//!   function every service uses.
//! - [`credentials`]: the client's saved sessions.
//! - [`tls`]: TLS on the framed and web ports and for `connect`/`listen`:
//!   the server's certificate (made on first start, or configured and
//!   reloaded on SIGHUP), trust on first use for clients, and [`tls::Stream`],
//!   the one connection type for plain and encrypted TCP.
//!
//! Services, each owning its server and client side:
//! - [`echo`]: TCP and UDP echo / upper / hello servers.
//! - [`framed`]: the framed port: handshake, accounts messages, and dispatch
//!   to the services on it.
//! - [`files`]: the file service: put, get, ls, rm, mv, mkdir, verified and
//!   resumable, server and client.
//! - [`netcat`]: `connect` and `listen`, a netcat-style client and its mirror.
//! - [`chat`]: the chat relay: direct messages, rooms, presence and offline
//!   delivery for logged-in users, on the framed port and over WebSocket;
//!   and `sockit chat`.
//! - [`exec`]: remote commands for administrators (`sockit exec`): an
//!   allowlisted program in its own process group, its pipes relayed over
//!   the framed port, every run in an audit log.
//! - [`stats`]: the server machine's statistics and the server's own
//!   figures (`sockit stats`, `/api/stats`, the app's stats page).
//! - [`web`]: the HTTP port: the static site server (`sockit web`), the file
//!   store in the browser (`/app/`) and its JSON API (`/api/`).
//! - [`fetch`]: `sockit fetch`, the HTTP client.
//! - [`bench`]: the load generator behind the numbers in `bench/`.
//! - [`words`]: the words for common failures, the same in every command.
//!
//! And [`serve`], which binds and runs every enabled service together.

pub mod accounts;
pub mod bench;
pub mod chat;
pub mod config;
pub mod credentials;
pub mod duration;
pub mod echo;
pub mod exec;
pub mod fetch;
pub mod files;
pub mod framed;
pub mod netcat;
pub mod proto;
pub mod serve;
pub mod server;
pub mod stats;
pub mod store;
pub mod tls;
pub mod web;
pub mod words;
