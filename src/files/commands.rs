//! The file and account commands as a user runs them: `register`, `login`,
//! `logout`, `put`, `get`, `ls`, `rm`, `mv`, `mkdir`. Target naming follows
//! scp: `put a.txt docs/` puts `docs/a.txt`, an existing remote folder is
//! put into, and `get` into an existing local folder lands inside it.

use crate::tls::Transport;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};

use super::client::{is_dir, Client, ClientError};
use crate::credentials::{Credentials, Saved};
use crate::store::path::escape_for_terminal;
use crate::store::{Entry, Kind};

/// Where a command's password comes from.
#[derive(Debug, Clone, Copy)]
pub struct PasswordInput {
    /// Read one line from stdin.
    pub from_stdin: bool,
    /// Ask twice at a terminal (new passwords).
    pub confirm: bool,
}

/// Reads a password: `--password-stdin`, then `$SOCKIT_PASSWORD`, then a
/// hidden prompt at a terminal. Never from the command line.
pub fn read_password(input: PasswordInput) -> Result<String, ClientError> {
    if input.from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| ClientError::Other(format!("reading the password from stdin: {e}")))?;
        let pw = line.trim_end_matches(['\n', '\r']).to_string();
        if pw.is_empty() {
            return Err(ClientError::Other("no password on stdin".into()));
        }
        return Ok(pw);
    }
    if let Ok(pw) = std::env::var("SOCKIT_PASSWORD") {
        if !pw.is_empty() {
            return Ok(pw);
        }
    }
    if !std::io::stdin().is_terminal() {
        return Err(ClientError::Other(
            "no password: type it at a terminal, or use --password-stdin or SOCKIT_PASSWORD".into(),
        ));
    }
    let prompt = |p: &str| {
        rpassword::prompt_password(p)
            .map_err(|e| ClientError::Other(format!("reading the password: {e}")))
    };
    let pw = prompt("Password: ")?;
    if input.confirm && prompt("Password again: ")? != pw {
        return Err(ClientError::Other("the passwords do not match".into()));
    }
    Ok(pw)
}

/// The user name: the flag, else the saved one for the server, else a prompt.
fn user_name(flag: Option<&str>, saved: Option<&Saved>) -> Result<String, ClientError> {
    if let Some(u) = flag.or(saved.map(|s| s.user.as_str())) {
        return Ok(u.to_string());
    }
    if std::io::stdin().is_terminal() {
        eprint!("User: ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| ClientError::Other(e.to_string()))?;
        let u = line.trim().to_string();
        if !u.is_empty() {
            return Ok(u);
        }
    }
    Err(ClientError::Other("no user name: use --user NAME".into()))
}

fn creds() -> Result<Credentials, ClientError> {
    Credentials::load().map_err(|e| ClientError::Other(e.to_string()))
}

/// Which server a client command talks to, and how.
#[derive(Debug, Clone, Default)]
pub struct Remote {
    /// HOST:PORT from `--server`; `None` picks as [`Credentials::pick_server`] does.
    pub server: Option<String>,
    /// Plain TCP or TLS, and how the server is trusted.
    pub transport: Transport,
}

/// `sockit register`.
pub async fn register(
    remote: &Remote,
    user: Option<&str>,
    pw: PasswordInput,
) -> Result<(), ClientError> {
    let creds = creds()?;
    let server = creds.pick_server(remote.server.as_deref());
    let name = user_name(user, None)?;
    // The server first: nobody should type a password twice for a server
    // that is down or is not a framed port (ssh asks in the same order).
    let mut client = Client::connect(&server, &remote.transport).await?;
    let password = read_password(PasswordInput {
        confirm: true,
        ..pw
    })?;
    let name = client.register(&name, &password).await?;
    eprintln!(
        "registered {} on {server}; now run: sockit login --server {server} --user {}",
        escape_for_terminal(&name),
        escape_for_terminal(&name)
    );
    Ok(())
}

/// `sockit login`: saves the session token for the server (mode 0600).
pub async fn login(
    remote: &Remote,
    user: Option<&str>,
    pw: PasswordInput,
) -> Result<(), ClientError> {
    let mut creds = creds()?;
    let server = creds.pick_server(remote.server.as_deref());
    let name = user_name(user, creds.servers.get(&server))?;
    let mut client = Client::connect(&server, &remote.transport).await?;
    let password = read_password(PasswordInput {
        confirm: false,
        ..pw
    })?;
    let (name, token, expires) = client.login(&name, &password).await?;
    creds.servers.insert(
        server.clone(),
        Saved {
            user: name.clone(),
            token,
        },
    );
    creds.last_server = Some(server.clone());
    creds
        .save()
        .map_err(|e| ClientError::Other(e.to_string()))?;
    let until =
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(expires.max(0) as u64));
    eprintln!(
        "logged in to {server} as {} (session valid until {until})",
        escape_for_terminal(&name)
    );
    Ok(())
}

/// `sockit logout`: revokes the token on the server and forgets it here.
pub async fn logout(remote: &Remote) -> Result<(), ClientError> {
    let mut creds = creds()?;
    let server = creds.pick_server(remote.server.as_deref());
    let Some(saved) = creds.servers.remove(&server) else {
        // What was asked holds already: like `rm -f`, not a failure.
        eprintln!("not logged in to {server}: nothing to log out of");
        return Ok(());
    };
    // Forget it locally even if the server cannot be reached or already
    // dropped the session.
    let revoked = async {
        let mut client = Client::connect(&server, &remote.transport).await?;
        client.auth(&saved.token).await?;
        client.logout().await
    }
    .await;
    creds
        .save()
        .map_err(|e| ClientError::Other(e.to_string()))?;
    match revoked {
        Ok(()) => eprintln!("logged out of {server}"),
        Err(e) => eprintln!("forgot the session for {server} (the server said: {e})"),
    }
    Ok(())
}

/// Connects to the chosen server and authenticates with the saved token.
pub async fn connect_authed(remote: &Remote) -> Result<Client, ClientError> {
    let creds = creds()?;
    let server = creds.pick_server(remote.server.as_deref());
    let saved = creds
        .servers
        .get(&server)
        .ok_or_else(|| ClientError::NotLoggedIn(server.clone()))?;
    let mut client = Client::connect(&server, &remote.transport).await?;
    match client.auth(&saved.token).await {
        Ok(_) => Ok(client),
        Err(e) if e.code() == Some("unauthorized") => Err(ClientError::Other(format!(
            "the session for {server} expired or was revoked: run `sockit login --server {server}`"
        ))),
        Err(e) => Err(e),
    }
}

/// A progress bar on stderr when it is a terminal, else nothing.
pub fn progress(total: u64, label: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{msg:20!} {bar:30.cyan/blue} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(escape_for_terminal(label));
    bar
}

/// Options shared by put and get.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransferOptions {
    /// Copy folders with their content.
    pub recursive: bool,
    /// Replace existing targets.
    pub force: bool,
    /// Start over instead of resuming.
    pub no_resume: bool,
    /// No progress bar.
    pub quiet: bool,
}

fn utf8_name(local: &Path) -> Result<String, ClientError> {
    local
        .file_name()
        .and_then(|n| n.to_str())
        .map(String::from)
        .ok_or_else(|| ClientError::local(local, "has no file name, or one that is not UTF-8"))
}

/// Where `put LOCAL [REMOTE]` lands.
async fn put_target(
    client: &mut Client,
    local: &Path,
    remote: Option<&str>,
) -> Result<String, ClientError> {
    let name = utf8_name(local)?;
    Ok(match remote {
        None | Some("") | Some(".") => name,
        Some(r) if r.ends_with('/') => format!("{}/{name}", r.trim_end_matches('/')),
        Some(r) => match client.stat(r).await? {
            Some(e) if is_dir(&e) => format!("{r}/{name}"),
            _ => r.to_string(),
        },
    })
}

/// `sockit put LOCAL [REMOTE]`.
pub async fn put(
    at: &Remote,
    local: &Path,
    remote: Option<&str>,
    opts: TransferOptions,
) -> Result<(), ClientError> {
    let meta = std::fs::metadata(local).map_err(|e| ClientError::local(local, e))?;
    if meta.is_dir() && !opts.recursive {
        return Err(ClientError::local(local, "is a folder (use -r)"));
    }
    let mut client = connect_authed(at).await?;
    let target = put_target(&mut client, local, remote).await?;
    if !meta.is_dir() {
        let bar = progress(meta.len(), &target, opts.quiet);
        let up = client
            .put_file(local, &target, opts.force, !opts.no_resume, &bar)
            .await;
        bar.finish_and_clear();
        let up = up?;
        if !opts.quiet {
            eprintln!(
                "{} ({} bytes, blake3 {})",
                escape_for_terminal(&up.path),
                up.length,
                &up.blake3[..16]
            );
        }
        return Ok(());
    }
    let (dirs, files, skipped) = walk_local(local, &target)?;
    for s in skipped {
        eprintln!(
            "sockit: skipping {} (not a regular file or folder)",
            s.display()
        );
    }
    client.mkdir(&target, true).await?;
    for d in &dirs {
        client.mkdir(d, true).await?;
    }
    let total = files
        .iter()
        .map(|(p, _)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = progress(total, &target, opts.quiet);
    let n = client
        .put_many(&files, opts.force, !opts.no_resume, &bar)
        .await;
    bar.finish_and_clear();
    let n = n?;
    if !opts.quiet {
        eprintln!("{}: {n} files, {total} bytes", escape_for_terminal(&target));
    }
    Ok(())
}

/// Local folders (as remote paths) and files (local, remote) beneath `root`.
type Walked = (Vec<String>, Vec<(PathBuf, String)>, Vec<PathBuf>);

fn walk_local(root: &Path, remote_root: &str) -> Result<Walked, ClientError> {
    let (mut dirs, mut files, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    let mut stack = vec![(root.to_path_buf(), remote_root.to_string())];
    while let Some((dir, remote)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| ClientError::local(&dir, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| ClientError::local(&dir, e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = utf8_name(&path)?;
            let ft = entry
                .file_type()
                .map_err(|e| ClientError::local(&path, e))?;
            let child = format!("{remote}/{name}");
            if ft.is_dir() {
                dirs.push(child.clone());
                stack.push((path, child));
            } else if ft.is_file() {
                files.push((path, child));
            } else {
                skipped.push(path);
            }
        }
    }
    Ok((dirs, files, skipped))
}

/// `sockit get REMOTE [LOCAL]`.
pub async fn get(
    at: &Remote,
    remote: &str,
    local: Option<&Path>,
    opts: TransferOptions,
) -> Result<(), ClientError> {
    let mut client = connect_authed(at).await?;
    let remote = remote.trim_end_matches('/');
    let entry = client
        .stat(remote)
        .await?
        .ok_or_else(|| ClientError::Remote {
            code: "not_found".into(),
            message: format!("{}: no such file or folder", escape_for_terminal(remote)),
        })?;
    if is_dir(&entry) && !opts.recursive {
        return Err(ClientError::Other(format!(
            "{} is a folder (use -r)",
            escape_for_terminal(remote)
        )));
    }
    let name = remote
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != ".")
        .unwrap_or("sockit-files");
    let target = match local {
        None => PathBuf::from(name),
        Some(l) if l.is_dir() => l.join(name),
        Some(l) => l.to_path_buf(),
    };
    if !is_dir(&entry) {
        return get_one(&mut client, remote, &target, entry.size, opts).await;
    }
    let entries = client.list(remote, true).await?;
    std::fs::create_dir_all(&target).map_err(|e| ClientError::local(&target, e))?;
    let total = entries
        .iter()
        .filter(|e| e.kind == Kind::File)
        .map(|e| e.size)
        .sum();
    let bar = progress(total, remote, opts.quiet);
    let mut count = 0;
    for e in &entries {
        let dest = target.join(&e.name);
        match e.kind {
            Kind::Dir => {
                std::fs::create_dir_all(&dest).map_err(|err| ClientError::local(&dest, err))?
            }
            Kind::File => {
                if dest.exists() && !opts.force {
                    bar.finish_and_clear();
                    return Err(ClientError::local(
                        &dest,
                        "already exists (use --force to replace it)",
                    ));
                }
                let before = bar.position();
                let one = ProgressBar::hidden();
                client
                    .get_file(
                        &format!("{remote}/{}", e.name),
                        &dest,
                        !opts.no_resume,
                        &one,
                    )
                    .await?;
                bar.set_position(before + e.size);
                count += 1;
            }
            _ => eprintln!(
                "sockit: skipping {} (not a regular file or folder)",
                escape_for_terminal(&e.name)
            ),
        }
    }
    bar.finish_and_clear();
    if !opts.quiet {
        eprintln!("{}: {count} files, {total} bytes", target.display());
    }
    Ok(())
}

async fn get_one(
    client: &mut Client,
    remote: &str,
    target: &Path,
    size: u64,
    opts: TransferOptions,
) -> Result<(), ClientError> {
    if target.exists() && !opts.force {
        return Err(ClientError::local(
            target,
            "already exists (use --force to replace it)",
        ));
    }
    let bar = progress(size, remote, opts.quiet);
    let got = client.get_file(remote, target, !opts.no_resume, &bar).await;
    bar.finish_and_clear();
    let n = got?;
    if !opts.quiet {
        eprintln!("{} ({n} bytes, verified)", target.display());
    }
    Ok(())
}

/// How `ls` prints.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListOptions {
    /// Kind, size and date per entry.
    pub long: bool,
    /// One JSON array.
    pub json: bool,
    /// Everything beneath, as relative paths.
    pub recursive: bool,
}

/// `sockit ls [PATH]`.
pub async fn ls(remote: &Remote, path: &str, opts: ListOptions) -> Result<(), ClientError> {
    let mut client = connect_authed(remote).await?;
    let entries = client
        .list(path.trim_end_matches('/'), opts.recursive)
        .await?;
    let mut out = std::io::stdout().lock();
    let text = render_listing(&entries, opts);
    let _ = out.write_all(text.as_bytes());
    Ok(())
}

/// A listing as `ls` prints it; names escaped for the terminal.
pub fn render_listing(entries: &[Entry], opts: ListOptions) -> String {
    if opts.json {
        return serde_json::to_string_pretty(entries).unwrap_or_default() + "\n";
    }
    let mut s = String::new();
    for e in entries {
        let name = escape_for_terminal(&e.name);
        let slash = if e.kind == Kind::Dir { "/" } else { "" };
        if opts.long {
            let when = UNIX_EPOCH + Duration::from_nanos(e.mtime_ns.max(0) as u64);
            let kind = match e.kind {
                Kind::File => "file",
                Kind::Dir => "dir ",
                Kind::Symlink => "link",
                Kind::Other => "?   ",
            };
            s += &format!(
                "{kind} {:>14} {} {name}{slash}\n",
                e.size,
                humantime::format_rfc3339_seconds(when)
            );
        } else {
            s += &format!("{name}{slash}\n");
        }
    }
    s
}

/// `sockit rm PATH`.
pub async fn rm(remote: &Remote, path: &str, recursive: bool) -> Result<(), ClientError> {
    connect_authed(remote).await?.remove(path, recursive).await
}

/// `sockit mv FROM TO`.
pub async fn mv(remote: &Remote, from: &str, to: &str, force: bool) -> Result<(), ClientError> {
    let mut client = connect_authed(remote).await?;
    // Into an existing folder, as mv does.
    let to = match client.stat(to).await? {
        Some(e) if is_dir(&e) => {
            let name = from
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(from);
            format!("{}/{name}", to.trim_end_matches('/'))
        }
        _ => to.to_string(),
    };
    client.rename(from, &to, force).await
}

/// `sockit mkdir PATH`.
pub async fn mkdir(remote: &Remote, path: &str, parents: bool) -> Result<(), ClientError> {
    match connect_authed(remote).await?.mkdir(path, parents).await {
        // The server's words suggest --force, which is put's and mv's.
        Err(ClientError::Remote { code, .. }) if code == "exists" => {
            Err(ClientError::Other(format!(
                "{} already exists (-p accepts a folder that exists)",
                escape_for_terminal(path)
            )))
        }
        other => other,
    }
}
