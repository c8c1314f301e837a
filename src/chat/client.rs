//! `sockit chat`: the interactive terminal client, and `chat send` /
//! `chat tail` for scripts. All three use the session saved by
//! `sockit login`, and reconnect by themselves (resuming after the last
//! message seen, so nothing the server keeps is missed or shown twice).

use crate::files::commands::Remote;
use std::io::IsTerminal as _;
use std::time::Duration;

use crate::tls::Stream;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{Message, Sent};
use crate::files::client::ClientError;
use crate::files::commands::connect_authed;
use crate::proto::{Connection, Frame, ProtoError};

/// How often a client pings the server.
pub const PING_EVERY: Duration = Duration::from_secs(30);
/// A connection that answers nothing for this long is considered dead.
const DEAD_AFTER: Duration = Duration::from_secs(60);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Largest list body accepted (history, replay).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Marks the end of a tail whose reader went away.
const STDOUT_CLOSED: &str = "stdout closed";
/// Lines typed ahead of the connection.
const INPUT_QUEUE: usize = 64;

/// Makes text safe to print on a terminal: control characters and
/// bidirectional overrides are shown escaped (`\n`, `\u{1b}`), so a message
/// is one line and cannot move the cursor or recolour the screen.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `HH:MM` in local time.
fn clock(ts_ms: i64) -> String {
    let secs = (ts_ms / 1000) as libc::time_t;
    // SAFETY: localtime_r writes only into the tm we pass.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if ok {
        format!("{:02}:{:02}", tm.tm_hour, tm.tm_min)
    } else {
        "--:--".into()
    }
}

/// One message as a line of text.
pub fn render(m: &Message) -> String {
    let text = escape(&m.text);
    match (&m.room, &m.to) {
        (Some(room), _) => format!("[{}] #{} <{}> {}", clock(m.ts), room, escape(&m.from), text),
        (None, Some(to)) => format!(
            "[{}] <{} -> {}> {}",
            clock(m.ts),
            escape(&m.from),
            escape(to),
            text
        ),
        _ => format!("[{}] <{}> {}", clock(m.ts), escape(&m.from), text),
    }
}

/// What came from the server.
#[derive(Debug)]
enum Incoming {
    /// The answer to request `id`: its header and body.
    Reply(u64, Frame, Vec<u8>),
    /// A refusal of request `id` (`None` for a goodbye).
    Error(Option<u64>, String, String),
    Message(Message),
    Presence(String, bool),
    Member(String, String, bool),
}

/// A chat connection: hello and auth done.
struct ChatConn {
    conn: Connection<Stream>,
    next_id: u64,
}

impl ChatConn {
    async fn open(remote: &Remote) -> Result<ChatConn, ClientError> {
        let client = connect_authed(remote).await?;
        Ok(ChatConn {
            conn: client.into_connection(),
            next_id: 1,
        })
    }

    /// Sends a request; returns its id.
    async fn request(&mut self, frame: Frame, body: &[u8]) -> Result<u64, ClientError> {
        self.next_id += 1;
        let id = self.next_id;
        let frame = frame.with("id", id).with_body_len(body.len() as u64);
        self.conn.write_message(&frame, body).await?;
        Ok(id)
    }

    async fn read(&mut self) -> Result<Incoming, ClientError> {
        let frame = self.conn.read_frame().await?.ok_or(ProtoError::Truncated)?;
        let body = self.conn.read_body_to_vec(MAX_BODY).await?;
        let id = frame.id().and_then(|v| v.as_u64());
        let s = |k: &str| frame.str(k).unwrap_or_default().to_string();
        Ok(match frame.kind() {
            "error" => Incoming::Error(id, s("code"), s("message")),
            "message" if id.is_none() => Incoming::Message(Message {
                seq: frame.get("seq").and_then(|v| v.as_i64()).unwrap_or(0),
                ts: frame.get("ts").and_then(|v| v.as_i64()).unwrap_or(0),
                from: s("from"),
                room: frame.str("room").map(String::from),
                to: frame.str("to").map(String::from),
                text: String::from_utf8_lossy(&body).into_owned(),
            }),
            "presence" if id.is_none() => Incoming::Presence(
                s("user"),
                frame
                    .get("online")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
            ),
            "member" if id.is_none() => Incoming::Member(
                s("room"),
                s("user"),
                frame
                    .get("joined")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
            ),
            _ => Incoming::Reply(id.unwrap_or(0), frame, body),
        })
    }

    /// Sends a request and waits for its answer, passing events that
    /// arrive meanwhile to `event`.
    async fn call(
        &mut self,
        frame: Frame,
        body: &[u8],
        event: &mut dyn FnMut(Incoming),
    ) -> Result<(Frame, Vec<u8>), ClientError> {
        let id = self.request(frame, body).await?;
        loop {
            match self.read().await? {
                Incoming::Reply(rid, f, b) if rid == id => return Ok((f, b)),
                Incoming::Error(Some(rid), code, message) if rid == id => {
                    return Err(ClientError::Remote { code, message })
                }
                Incoming::Error(None, code, message) => {
                    return Err(ClientError::Remote { code, message })
                }
                other => event(other),
            }
        }
    }
}

/// Where `chat send` sends.
#[derive(Debug, Clone)]
pub enum To {
    User(String),
    Room(String),
}

impl To {
    fn frame(&self) -> Frame {
        match self {
            To::User(u) => Frame::new("send").with("to", u.as_str()),
            To::Room(r) => Frame::new("send").with("room", r.as_str()),
        }
    }

    /// Parses `#room` or `user`.
    pub fn parse(s: &str) -> To {
        match s.strip_prefix('#') {
            Some(room) => To::Room(room.to_string()),
            None => To::User(s.to_string()),
        }
    }
}

impl std::fmt::Display for To {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            To::User(u) => write!(f, "{u}"),
            To::Room(r) => write!(f, "#{r}"),
        }
    }
}

/// `sockit chat send`: sends one message; returns once the server stored it.
pub async fn send(remote: &Remote, to: &To, text: &str) -> Result<Sent, ClientError> {
    let mut c = ChatConn::open(remote).await?;
    let (f, _) = c.call(to.frame(), text.as_bytes(), &mut |_| {}).await?;
    Ok(Sent {
        seq: f.get("seq").and_then(|v| v.as_i64()).unwrap_or(0),
        ts: f.get("ts").and_then(|v| v.as_i64()).unwrap_or(0),
    })
}

#[derive(Deserialize)]
struct JoinedBody {
    #[serde(default)]
    history: Vec<Message>,
}

/// Subscribes (after `since` when reconnecting) and returns the backlog.
async fn subscribe(
    c: &mut ChatConn,
    since: i64,
    event: &mut dyn FnMut(Incoming),
) -> Result<(Frame, Vec<Message>), ClientError> {
    let mut req = Frame::new("subscribe");
    if since > 0 {
        req = req.with("since", since);
    }
    let (f, body) = c.call(req, &[], event).await?;
    let backlog: Vec<Message> = serde_json::from_slice(&body)
        .map_err(|e| ClientError::Other(format!("bad subscribe answer: {e}")))?;
    Ok((f, backlog))
}

/// Waits with backoff before the next reconnection attempt.
async fn backoff(attempt: &mut u32) {
    let wait = Duration::from_secs(1u64 << (*attempt).min(5)).min(MAX_BACKOFF);
    *attempt += 1;
    tokio::time::sleep(wait).await;
}

/// Whether an error is worth reconnecting over (the network), rather than
/// final (a refusal, a lost session).
fn transient(e: &ClientError) -> bool {
    match e {
        // A server that is down or restarting comes back; one that is not
        // trusted (unknown, changed certificate, plain) does not.
        ClientError::Connect(e) => e.is_transient(),
        ClientError::Proto(_) => true,
        ClientError::Remote { code, .. } => {
            matches!(
                code.as_str(),
                "shutting_down" | "slow_consumer" | "timeout" | "busy"
            )
        }
        _ => false,
    }
}

/// `sockit chat tail`: prints messages (of one room, with `room`) as lines
/// or JSON lines until interrupted; reconnects by itself.
pub async fn tail(remote: &Remote, room: Option<&str>, json: bool) -> Result<(), ClientError> {
    let mut last_seq = 0i64;
    let mut attempt = 0u32;
    // A closed stdout (`| head -1`) ends the tail quietly.
    let print = |m: &Message, last: &mut i64| -> Result<(), ClientError> {
        use std::io::Write as _;
        if m.seq <= *last {
            return Ok(());
        }
        *last = m.seq;
        let wanted = match room {
            Some(r) => m
                .room
                .as_deref()
                .is_some_and(|mr| mr.eq_ignore_ascii_case(r)),
            None => true,
        };
        if !wanted {
            return Ok(());
        }
        let line = if json {
            serde_json::to_string(m).unwrap_or_default()
        } else {
            render(m)
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|_| ClientError::Other(STDOUT_CLOSED.into()))
    };
    loop {
        let result: Result<(), ClientError> = async {
            let mut c = ChatConn::open(remote).await?;
            let mut early = Vec::new();
            let mut keep = |i: Incoming| {
                if let Incoming::Message(m) = i {
                    early.push(m)
                }
            };
            if let (Some(r), 0) = (room, last_seq) {
                let (_, body) = c
                    .call(Frame::new("join").with("room", r), &[], &mut keep)
                    .await?;
                let joined: JoinedBody = serde_json::from_slice(&body).unwrap_or(JoinedBody {
                    history: Vec::new(),
                });
                for m in &joined.history {
                    print(m, &mut last_seq)?;
                }
            }
            let (sub, backlog) = subscribe(&mut c, last_seq, &mut keep).await?;
            if attempt > 0 {
                eprintln!("reconnected to the chat");
            }
            attempt = 0;
            for m in backlog.iter().chain(early.iter()) {
                print(m, &mut last_seq)?;
            }
            last_seq = last_seq.max(sub.get("seq").and_then(|v| v.as_i64()).unwrap_or(0));
            let mut ping =
                tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
            let mut heard = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    r = c.read() => {
                        heard = tokio::time::Instant::now();
                        match r? {
                            Incoming::Message(m) => print(&m, &mut last_seq)?,
                            Incoming::Error(None, code, message) => {
                                return Err(ClientError::Remote { code, message })
                            }
                            _ => {}
                        }
                    }
                    _ = ping.tick() => {
                        if heard.elapsed() > DEAD_AFTER {
                            return Err(ClientError::Proto(ProtoError::Timeout));
                        }
                        c.request(Frame::new("ping"), &[]).await?;
                    }
                }
            }
        }
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(ClientError::Other(m)) if m == STDOUT_CLOSED => return Ok(()),
            Err(e) if transient(&e) => {
                eprintln!("chat connection lost ({e}); reconnecting");
                backoff(&mut attempt).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A line of output for the terminal.
type Printer = Box<dyn FnMut(String) + Send>;

/// A typed line, or the end of input.
enum Input {
    Line(String),
    Eof,
}

const HELP: &str = "\
commands:
  TEXT             send TEXT to the current room or person
  /join ROOM       join ROOM (creating it) and talk there
  /leave [ROOM]    leave ROOM (default: the current room)
  /msg USER TEXT   send one direct message
  /to USER|#ROOM   talk to USER or in #ROOM from now on
  /who             who is online
  /rooms           every room
  /members [ROOM]  who is in ROOM
  /history         recent messages here
  /help            this help
  /quit            leave (also Ctrl-D)";

/// The `seq`s of the last few thousand messages shown.
#[derive(Default)]
struct Seen {
    order: std::collections::VecDeque<i64>,
    set: std::collections::HashSet<i64>,
}

impl Seen {
    const KEEP: usize = 4096;

    /// Records `seq`; false if it was already there.
    fn first_time(&mut self, seq: i64) -> bool {
        if !self.set.insert(seq) {
            return false;
        }
        self.order.push_back(seq);
        if self.order.len() > Self::KEEP {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// The interactive client's state, kept across reconnections.
struct Ui {
    target: Option<To>,
    /// The largest `seq` seen: where a reconnection resumes.
    last_seq: i64,
    /// Recently shown messages, so none is shown twice (history, backlog
    /// and live events overlap).
    seen: Seen,
    out: Printer,
    /// Sends typed but not yet confirmed, by request id.
    unconfirmed: Vec<(u64, String)>,
    /// The line editor's next prompt, sent after each typed line is
    /// handled (a `/join` or `/to` changes it); `None` when not on a
    /// terminal.
    prompts: Option<std::sync::mpsc::SyncSender<String>>,
}

/// The prompt that shows where a typed line goes: `#lobby> `, `@bob> `, or
/// `> ` when nowhere yet.
fn prompt_for(target: Option<&To>) -> String {
    match target {
        Some(To::Room(r)) => format!("#{}> ", escape(r)),
        Some(To::User(u)) => format!("@{}> ", escape(u)),
        None => "> ".into(),
    }
}

impl Ui {
    fn say(&mut self, line: impl Into<String>) {
        (self.out)(line.into());
    }

    /// Tells the line editor the prompt for the next line.
    fn prompt(&self) {
        if let Some(p) = &self.prompts {
            let _ = p.try_send(prompt_for(self.target.as_ref()));
        }
    }

    fn event(&mut self, i: Incoming) {
        match i {
            Incoming::Message(m) => {
                self.last_seq = self.last_seq.max(m.seq);
                if self.seen.first_time(m.seq) {
                    let line = render(&m);
                    self.say(line);
                }
            }
            Incoming::Presence(user, online) => {
                let what = if online { "is online" } else { "went offline" };
                self.say(format!("* {} {what}", escape(&user)));
            }
            Incoming::Member(room, user, joined) => {
                let what = if joined { "joined" } else { "left" };
                self.say(format!("* {} {what} #{}", escape(&user), escape(&room)));
            }
            Incoming::Error(Some(id), code, message) => {
                if let Some(pos) = self.unconfirmed.iter().position(|(i, _)| *i == id) {
                    let (_, text) = self.unconfirmed.remove(pos);
                    self.say(format!("! not sent ({code}): {message}: {}", escape(&text)));
                } else {
                    self.say(format!("! {message} ({code})"));
                }
            }
            Incoming::Error(None, code, message) => self.say(format!("! {message} ({code})")),
            Incoming::Reply(id, f, _) => {
                if f.kind() == "sent" {
                    self.unconfirmed.retain(|(i, _)| *i != id);
                }
            }
        }
    }
}

/// `sockit chat`: the interactive client. On a terminal it uses a line
/// editor whose input line stays intact while messages are printed above
/// it; otherwise it reads lines from stdin (each sent like typed) and exits
/// once all are confirmed.
pub async fn interactive(remote: &Remote, room: Option<&str>) -> Result<(), ClientError> {
    let (tx, mut rx) = mpsc::channel::<Input>(INPUT_QUEUE);
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let target = room.map(|r| To::Room(r.to_string()));
    let mut prompts = None;
    let out: Printer = if tty {
        // One prompt waits at most: the editor takes each before its next line.
        let (prompt_tx, prompt_rx) = std::sync::mpsc::sync_channel(1);
        prompts = Some(prompt_tx);
        start_editor(tx, prompt_for(target.as_ref()), prompt_rx)?
    } else {
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt as _;
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(Input::Line(line)).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Input::Eof).await;
        });
        Box::new(|line: String| println!("{line}"))
    };
    let mut ui = Ui {
        target,
        last_seq: 0,
        seen: Seen::default(),
        out,
        unconfirmed: Vec::new(),
        prompts,
    };
    let mut attempt = 0u32;
    let mut first = true;
    loop {
        match session(remote, &mut ui, &mut rx, first).await {
            Ok(()) => return Ok(()),
            Err(e) if transient(&e) => {
                for (_, text) in std::mem::take(&mut ui.unconfirmed) {
                    ui.say(format!(
                        "! maybe not sent (connection lost): {}",
                        escape(&text)
                    ));
                }
                ui.say(format!("* connection lost ({e}); reconnecting..."));
                backoff(&mut attempt).await;
                first = false;
            }
            Err(e) => return Err(e),
        }
        attempt = attempt.min(5);
    }
}

/// How long the editor waits for the prompt of its next line before it
/// shows the last one again (the session may be reconnecting).
const PROMPT_WAIT: Duration = Duration::from_secs(1);

/// Starts the line editor on its own thread, with `first` as its prompt and
/// each later one from `prompts`; returns its printer.
fn start_editor(
    tx: mpsc::Sender<Input>,
    first: String,
    prompts: std::sync::mpsc::Receiver<String>,
) -> Result<Printer, ClientError> {
    use rustyline::error::ReadlineError;
    use rustyline::ExternalPrinter as _;
    let mut editor = rustyline::DefaultEditor::new()
        .map_err(|e| ClientError::Other(format!("cannot start the line editor: {e}")))?;
    let mut printer = editor
        .create_external_printer()
        .map_err(|e| ClientError::Other(format!("cannot start the line editor: {e}")))?;
    std::thread::spawn(move || {
        let mut prompt = first;
        loop {
            match editor.readline(&prompt) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    if tx.blocking_send(Input::Line(line)).is_err() {
                        return;
                    }
                    if let Ok(next) = prompts.recv_timeout(PROMPT_WAIT) {
                        prompt = next;
                    }
                }
                Err(ReadlineError::Interrupted | ReadlineError::Eof) | Err(_) => {
                    let _ = tx.blocking_send(Input::Eof);
                    return;
                }
            }
        }
    });
    Ok(Box::new(move |mut line: String| {
        // Between two lines (raw mode off) rustyline writes the text as it
        // is, and the next prompt's redraw then erases a line without its
        // newline: feedback to a command was lost that way.
        if !line.ends_with('\n') {
            line.push('\n');
        }
        let _ = printer.print(line);
    }))
}

/// One connection's life: subscribe, then relay typed lines and incoming
/// events until the input ends (`Ok`) or the connection fails.
async fn session(
    remote: &Remote,
    ui: &mut Ui,
    rx: &mut mpsc::Receiver<Input>,
    first: bool,
) -> Result<(), ClientError> {
    let mut c = ChatConn::open(remote).await?;
    let mut early = Vec::new();
    let mut history = Vec::new();
    if first {
        if let Some(To::Room(r)) = ui.target.clone() {
            let (f, body) = c
                .call(Frame::new("join").with("room", r.as_str()), &[], &mut |i| {
                    early.push(i)
                })
                .await?;
            let joined: JoinedBody = serde_json::from_slice(&body).unwrap_or(JoinedBody {
                history: Vec::new(),
            });
            let name = f.str("room").unwrap_or(&r).to_string();
            ui.target = Some(To::Room(name));
            history = joined.history;
        }
    }
    let (sub, backlog) = subscribe(&mut c, ui.last_seq, &mut |i| early.push(i)).await?;
    let user = sub.str("user").unwrap_or("?").to_string();
    if first {
        let rooms: Vec<String> = sub
            .get("rooms")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str())
                    .map(|r| format!("#{r}"))
                    .collect()
            })
            .unwrap_or_default();
        let target = ui
            .target
            .as_ref()
            .map_or("nobody yet: /join ROOM or /to USER".into(), |t| {
                t.to_string()
            });
        ui.say(format!(
            "connected as {user}; your rooms: {}; talking to {target}; /help for commands",
            if rooms.is_empty() {
                "none".into()
            } else {
                rooms.join(" ")
            }
        ));
    } else {
        ui.say("* reconnected");
    }
    for m in history {
        ui.event(Incoming::Message(m));
    }
    for m in backlog {
        ui.event(Incoming::Message(m));
    }
    for i in early {
        ui.event(i);
    }
    ui.last_seq = ui
        .last_seq
        .max(sub.get("seq").and_then(|v| v.as_i64()).unwrap_or(0));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut heard = tokio::time::Instant::now();
    let mut input_done = false;
    loop {
        if input_done && ui.unconfirmed.is_empty() {
            return Ok(());
        }
        tokio::select! {
            r = c.read() => {
                heard = tokio::time::Instant::now();
                match r? {
                    Incoming::Error(None, code, message) => {
                        return Err(ClientError::Remote { code, message })
                    }
                    other => ui.event(other),
                }
            }
            line = rx.recv(), if !input_done => match line {
                Some(Input::Line(line)) => {
                    let more = command(&mut c, ui, line.trim_end()).await;
                    // Whatever happened, the editor gets its next prompt.
                    ui.prompt();
                    if !more? {
                        input_done = true;
                    }
                }
                Some(Input::Eof) | None => input_done = true,
            },
            _ = ping.tick() => {
                if heard.elapsed() > DEAD_AFTER {
                    return Err(ClientError::Proto(ProtoError::Timeout));
                }
                c.request(Frame::new("ping"), &[]).await?;
            }
        }
    }
}

/// Runs one typed line; `Ok(false)` on `/quit`.
async fn command(c: &mut ChatConn, ui: &mut Ui, line: &str) -> Result<bool, ClientError> {
    if line.is_empty() {
        return Ok(true);
    }
    let (cmd, rest) = match line.strip_prefix('/') {
        Some(l) if !l.starts_with('/') => {
            let mut parts = l.splitn(2, ' ');
            (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or("").trim(),
            )
        }
        // "//text" sends "/text".
        _ => (
            "",
            line.strip_prefix('/')
                .filter(|l| l.starts_with('/'))
                .unwrap_or(line),
        ),
    };
    let result = match cmd {
        "" => {
            let Some(to) = ui.target.clone() else {
                ui.say("! nobody to talk to: /join ROOM or /to USER first");
                return Ok(true);
            };
            let id = c.request(to.frame(), rest.as_bytes()).await?;
            ui.unconfirmed.push((id, rest.to_string()));
            Ok(())
        }
        "quit" | "exit" => return Ok(false),
        "help" => {
            ui.say(HELP);
            Ok(())
        }
        "msg" => {
            let mut p = rest.splitn(2, ' ');
            match (p.next().filter(|u| !u.is_empty()), p.next()) {
                (Some(user), Some(text)) => {
                    let to = To::User(user.to_string());
                    let id = c.request(to.frame(), text.as_bytes()).await?;
                    ui.unconfirmed.push((id, text.to_string()));
                    Ok(())
                }
                _ => {
                    ui.say("! usage: /msg USER TEXT");
                    Ok(())
                }
            }
        }
        "to" if rest.is_empty() => {
            ui.say("! usage: /to USER or /to #ROOM");
            Ok(())
        }
        "join" if rest.trim_start_matches('#').is_empty() => {
            ui.say("! usage: /join ROOM");
            Ok(())
        }
        "to" => {
            let to = To::parse(rest);
            ui.say(format!("* talking to {to}"));
            ui.target = Some(to);
            Ok(())
        }
        "join" => {
            let room = rest.trim_start_matches('#');
            match c
                .call(Frame::new("join").with("room", room), &[], &mut |i| {
                    ui.event(i)
                })
                .await
            {
                Ok((f, body)) => {
                    let name = f.str("room").unwrap_or(room).to_string();
                    let joined: JoinedBody = serde_json::from_slice(&body).unwrap_or(JoinedBody {
                        history: Vec::new(),
                    });
                    for m in joined.history {
                        ui.event(Incoming::Message(m));
                    }
                    ui.say(format!("* you are in #{name}; talking there"));
                    ui.target = Some(To::Room(name));
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        "leave" => {
            let room = match (rest, &ui.target) {
                ("", Some(To::Room(r))) => r.clone(),
                ("", _) => {
                    ui.say("! usage: /leave ROOM");
                    return Ok(true);
                }
                (r, _) => r.trim_start_matches('#').to_string(),
            };
            match c
                .call(
                    Frame::new("leave").with("room", room.as_str()),
                    &[],
                    &mut |i| ui.event(i),
                )
                .await
            {
                Ok((f, _)) => {
                    let name = f.str("room").unwrap_or(&room).to_string();
                    if matches!(&ui.target, Some(To::Room(r)) if r.eq_ignore_ascii_case(&name)) {
                        ui.target = None;
                    }
                    ui.say(format!("* you left #{name}"));
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        "who" => match c.call(Frame::new("who"), &[], &mut |i| ui.event(i)).await {
            Ok((_, body)) => {
                let users: Vec<String> = serde_json::from_slice(&body).unwrap_or_default();
                ui.say(format!("* online: {}", escape(&users.join(", "))));
                Ok(())
            }
            Err(e) => Err(e),
        },
        "rooms" => match c.call(Frame::new("rooms"), &[], &mut |i| ui.event(i)).await {
            Ok((_, body)) => {
                let rooms: Vec<super::RoomInfo> = serde_json::from_slice(&body).unwrap_or_default();
                if rooms.is_empty() {
                    ui.say("* no rooms yet: /join NAME creates one");
                }
                for r in rooms {
                    let mark = if r.joined { " (joined)" } else { "" };
                    ui.say(format!(
                        "* #{}: {} members, {} online{mark}",
                        r.room, r.members, r.online
                    ));
                }
                Ok(())
            }
            Err(e) => Err(e),
        },
        "members" => {
            let room = match (rest, &ui.target) {
                ("", Some(To::Room(r))) => r.clone(),
                (r, _) => r.trim_start_matches('#').to_string(),
            };
            match c
                .call(
                    Frame::new("members").with("room", room.as_str()),
                    &[],
                    &mut |i| ui.event(i),
                )
                .await
            {
                Ok((f, body)) => {
                    let members: Vec<super::Member> =
                        serde_json::from_slice(&body).unwrap_or_default();
                    let names: Vec<String> = members
                        .iter()
                        .map(|m| format!("{}{}", m.user, if m.online { "*" } else { "" }))
                        .collect();
                    ui.say(format!(
                        "* #{} ({} members, * = online): {}",
                        f.str("room").unwrap_or(&room),
                        members.len(),
                        names.join(" ")
                    ));
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        "history" => {
            let req = match &ui.target {
                Some(To::Room(r)) => Frame::new("history").with("room", r.as_str()),
                Some(To::User(u)) => Frame::new("history").with("with", u.as_str()),
                None => {
                    ui.say("! nobody to show history of: /join ROOM or /to USER first");
                    return Ok(true);
                }
            };
            match c.call(req, &[], &mut |i| ui.event(i)).await {
                Ok((_, body)) => {
                    let messages: Vec<Message> = serde_json::from_slice(&body).unwrap_or_default();
                    if messages.is_empty() {
                        ui.say("* no messages here yet");
                    }
                    for m in messages {
                        // Shown on request, even if seen before.
                        let line = render(&m);
                        ui.say(line);
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        other => {
            ui.say(format!("! unknown command /{other}: /help lists them"));
            Ok(())
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(ClientError::Remote { code, message }) if !transient_code(&code) => {
            ui.say(format!("! {message} ({code})"));
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

fn transient_code(code: &str) -> bool {
    matches!(code, "shutting_down" | "slow_consumer" | "timeout" | "busy")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_obey() {
        assert_eq!(escape("hi"), "hi");
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(escape("你好"), "你好");
    }

    #[test]
    fn renders_rooms_and_direct_messages() {
        let m = Message {
            seq: 1,
            ts: 0,
            from: "alice".into(),
            room: Some("lobby".into()),
            to: None,
            text: "hi\r\n".into(),
        };
        assert!(
            render(&m).ends_with("#lobby <alice> hi\\r\\n"),
            "{}",
            render(&m)
        );
        let m = Message {
            room: None,
            to: Some("bob".into()),
            ..m
        };
        assert!(render(&m).contains("<alice -> bob> "));
    }
}
