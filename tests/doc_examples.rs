//! The documentation's examples, run against real servers on port 0, so that
//! what the docs show is what the server does.
//!
//! - Every block of `docs/protocol.md` fenced as ```` ```jsonl framed-example ````
//!   is a transcript, replayed in document order on one server (so a later
//!   block may log in as a user an earlier one registered). Each line is
//!   `[NAME]> HEADER [BODY]`, a frame the client sends, or
//!   `[NAME]< HEADER [BODY]`, the next frame it must receive (`< EOF`: the
//!   server closes the connection). NAME picks a connection of the block
//!   (none: the default one); a connection that sends no `hello` in the
//!   block starts with the handshake done. The rest of the line after the
//!   header is the body. In a header or a JSON body, `...` matches any
//!   value, and `$name` stands for a value that varies: its first
//!   appearance in a received frame takes the server's value, later ones
//!   must be equal, and in a sent frame it is replaced by that value.
//!   Received headers must have the same keys in the same order.
//! - Every ```` ```console ```` block of `README.md` and `docs/protocol.md`
//!   that runs `python3 examples/python_client.py` is run as written, in a
//!   shell, with the server's port added to the client's command line (as
//!   `--port N` right after the script's name, what a user of another port
//!   types) and `sockit` on `PATH`; `sockit serve` lines are the test's
//!   server (TLS unless the line says `--no-tls`, its data in
//!   `./sockit-data`). The lines after a command are its expected output,
//!   compared with decimal numbers (times) left out; a command shown
//!   without output only has to succeed. The block's folder holds
//!   `notes.txt` for the commands to upload.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sockit::proto::{Connection, Limits, ProtoError};
use sockit::tls::Stream;
use tokio::net::TcpStream;

const PROTOCOL_MD: &str = include_str!("../docs/protocol.md");
const README_MD: &str = include_str!("../README.md");

/// How long a transcript waits for a frame.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A fenced block: the line of its first content line, and its lines.
struct Block {
    first_line: usize,
    lines: Vec<String>,
}

/// The fenced blocks of `doc` whose info string is `info`.
fn blocks(doc: &str, info: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in doc.lines().enumerate() {
        match &mut current {
            None if line.trim_end() == format!("```{info}") => {
                current = Some(Block {
                    first_line: i + 2,
                    lines: Vec::new(),
                })
            }
            None => {}
            Some(_) if line.trim_end() == "```" => out.extend(current.take()),
            Some(b) => b.lines.push(line.to_string()),
        }
    }
    out
}

// ---- transcripts ------------------------------------------------------

/// Marks a placeholder inside the JSON a template becomes: `$name` turns
/// into the string "\u0000name", `...` into "\u0000".
const HOLE: char = '\0';

/// Splits `text` into its first JSON value, with placeholders turned into
/// marked strings, and the rest of the line (the body, after one space).
fn template(text: &str) -> Result<(Value, String), String> {
    let mut json = String::new();
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut chars = text.char_indices().peekable();
    let mut end = text.len();
    while let Some((i, c)) = chars.next() {
        if in_string {
            json.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                json.push(c);
            }
            '$' => {
                let mut name = String::new();
                while let Some(&(_, n)) = chars.peek() {
                    if !(n.is_ascii_alphanumeric() || n == '_') {
                        break;
                    }
                    name.push(n);
                    chars.next();
                }
                if name.is_empty() {
                    return Err(format!("a `$` without a name in {text}"));
                }
                json.push_str(&format!("\"\\u0000{name}\""));
            }
            '.' if text[i..].starts_with("...") => {
                chars.next();
                chars.next();
                json.push_str("\"\\u0000\"");
            }
            _ => {
                if matches!(c, '{' | '[') {
                    depth += 1;
                } else if matches!(c, '}' | ']') {
                    depth = depth.saturating_sub(1);
                }
                json.push(c);
                if depth == 0 && matches!(c, '}' | ']') {
                    end = i + 1;
                    break;
                }
            }
        }
    }
    let value = serde_json::from_str(&json).map_err(|e| format!("{e} in {json}"))?;
    let rest = &text[end..];
    Ok((value, rest.strip_prefix(' ').unwrap_or(rest).to_string()))
}

/// The placeholder a template value stands for: `Some("")` for `...`.
fn hole(v: &Value) -> Option<&str> {
    v.as_str().and_then(|s| s.strip_prefix(HOLE))
}

/// `template` with each `$name` replaced by its bound value.
fn fill(template: &Value, bound: &HashMap<String, Value>) -> Result<Value, String> {
    Ok(match template {
        v if hole(v).is_some() => {
            let name = hole(v).unwrap_or_default();
            bound
                .get(name)
                .cloned()
                .ok_or_else(|| format!("${name} is sent before it is received"))?
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| fill(v, bound))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), fill(v, bound)?)))
                .collect::<Result<_, String>>()?,
        ),
        v => v.clone(),
    })
}

/// Checks `actual` against `expected`, binding placeholders.
fn check(
    expected: &Value,
    actual: &Value,
    bound: &mut HashMap<String, Value>,
    at: &str,
) -> Result<(), String> {
    if let Some(name) = hole(expected) {
        if name.is_empty() {
            return Ok(());
        }
        return match bound.get(name) {
            Some(v) if v == actual => Ok(()),
            Some(v) => Err(format!("{at}: ${name} was {v}, here it is {actual}")),
            None => {
                bound.insert(name.to_string(), actual.clone());
                Ok(())
            }
        };
    }
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let (ek, ak): (Vec<&String>, Vec<&String>) = (e.keys().collect(), a.keys().collect());
            if ek != ak {
                return Err(format!("{at}: keys {ak:?}, the doc shows {ek:?}"));
            }
            for (k, ev) in e {
                check(ev, &a[k], bound, &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                check(ev, av, bound, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        _ if expected == actual => Ok(()),
        _ => Err(format!("{at}: got {actual}, the doc shows {expected}")),
    }
}

/// One line of a transcript.
enum Step {
    Send { header: Value, body: String },
    Receive { header: Value, body: String },
    Closed,
}

fn parse_step(line: &str) -> Result<Option<(String, Step)>, String> {
    let line = line.trim_end();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let at = line
        .find(['>', '<'])
        .ok_or("neither `>` nor `<` at the start")?;
    let name = &line[..at];
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("{name:?} is not a connection name"));
    }
    let rest = line[at + 1..].trim_start();
    let step = match &line[at..at + 1] {
        "<" if rest == "EOF" => Step::Closed,
        "<" => {
            let (header, body) = template(rest)?;
            Step::Receive { header, body }
        }
        _ => {
            let (header, body) = template(rest)?;
            Step::Send { header, body }
        }
    };
    Ok(Some((name.to_string(), step)))
}

type Conn = Connection<Stream>;

async fn receive(conn: &mut Conn) -> Result<Option<(Value, Vec<u8>)>, ProtoError> {
    let read = async {
        let Some(frame) = conn.read_frame().await? else {
            return Ok(None);
        };
        let body = conn.read_body_to_vec(16 << 20).await?;
        Ok(Some((Value::Object(frame.header().clone()), body)))
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .unwrap_or(Err(ProtoError::Timeout))
}

/// Runs one transcript block; the error names the line that failed.
async fn run_transcript(
    srv: &common::TestServer,
    block: &Block,
    bound: &mut HashMap<String, Value>,
) -> Result<(), String> {
    let mut steps = Vec::new();
    for (i, line) in block.lines.iter().enumerate() {
        let n = block.first_line + i;
        if let Some(step) = parse_step(line).map_err(|e| format!("line {n}: {e}"))? {
            steps.push((n, step));
        }
    }
    // A connection that says hello in the block starts before it.
    let says_hello = |name: &str| {
        steps.iter().any(|(_, (n, s))| {
            n == name && matches!(s, Step::Send { header, .. } if header["type"] == "hello")
        })
    };
    let mut conns: HashMap<String, Conn> = HashMap::new();
    for (n, (name, step)) in &steps {
        if !conns.contains_key(name) {
            let conn = if says_hello(name) {
                let tcp = TcpStream::connect(srv.framed)
                    .await
                    .map_err(|e| e.to_string())?;
                Connection::new(Stream::Plain(tcp), Limits::default())
            } else {
                common::framed_client(srv.framed).await
            };
            conns.insert(name.clone(), conn);
        }
        let conn = conns.get_mut(name).ok_or("no connection")?;
        let who = if name.is_empty() { "" } else { name.as_str() };
        match step {
            Step::Send { header, body } => {
                let header = fill(header, bound).map_err(|e| format!("line {n}: {e}"))?;
                let declared = header.get("size").and_then(Value::as_u64).unwrap_or(0);
                if declared != body.len() as u64 {
                    return Err(format!(
                        "line {n}: the body is {} bytes, the header says {declared}",
                        body.len()
                    ));
                }
                let raw = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
                let mut wire = (raw.len() as u32).to_be_bytes().to_vec();
                wire.extend_from_slice(&raw);
                wire.extend_from_slice(body.as_bytes());
                conn.queue_encoded(&wire).map_err(|e| e.to_string())?;
                conn.flush()
                    .await
                    .map_err(|e| format!("line {n}: {who}> {e}"))?;
            }
            Step::Receive { header, body } => {
                let (got, got_body) = match receive(conn).await {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return Err(format!("line {n}: {who}< the server closed")),
                    Err(e) => return Err(format!("line {n}: {who}< {e}")),
                };
                let shown = format!("line {n}: received {got}");
                check(header, &got, bound, &shown)?;
                let json_body = body.starts_with(['[', '{']);
                if json_body {
                    let (want, rest) = template(body).map_err(|e| format!("line {n}: {e}"))?;
                    if !rest.is_empty() {
                        return Err(format!("line {n}: {rest:?} after the JSON body"));
                    }
                    let got_json: Value = serde_json::from_slice(&got_body)
                        .map_err(|e| format!("{shown}: the body is not JSON: {e}"))?;
                    check(
                        &want,
                        &got_json,
                        bound,
                        &format!("{shown}, body {got_json}"),
                    )?;
                } else if body.as_bytes() != got_body {
                    return Err(format!(
                        "{shown}: the body is {:?}, the doc shows {body:?}",
                        String::from_utf8_lossy(&got_body)
                    ));
                }
            }
            Step::Closed => match receive(conn).await {
                Ok(None) | Err(ProtoError::Io(_)) => {}
                Ok(Some((got, _))) => {
                    return Err(format!("line {n}: {who}< expected the close, got {got}"))
                }
                Err(e) => return Err(format!("line {n}: {who}< expected the close: {e}")),
            },
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_framed_examples_of_protocol_md_are_what_the_server_does() {
    let examples = blocks(PROTOCOL_MD, "jsonl framed-example");
    assert!(
        examples.len() >= 5,
        "docs/protocol.md has {} framed examples",
        examples.len()
    );
    let srv = common::start(|_| {}).await;
    let mut bound = HashMap::new();
    for block in &examples {
        if let Err(e) = run_transcript(&srv, block, &mut bound).await {
            panic!("docs/protocol.md, a framed example: {e}");
        }
    }
    srv.stop().await;
}

#[test]
fn templates_split_the_header_from_the_body_and_mark_placeholders() {
    let (v, body) = template(r#"{"type":"x","t":$token,"m":...,"s":"$not {"} a b"#).unwrap();
    assert_eq!(hole(&v["t"]), Some("token"));
    assert_eq!(hole(&v["m"]), Some(""));
    assert_eq!(v["s"], "$not {");
    assert_eq!(body, "a b");
    let mut bound = HashMap::new();
    let got = serde_json::json!({"type":"x","t":"sk_1","m":5,"s":"$not {"});
    check(&v, &got, &mut bound, "").unwrap();
    assert_eq!(bound["token"], "sk_1");
    let reordered = serde_json::json!({"t":"sk_1","type":"x","m":5,"s":"$not {"});
    assert!(check(&v, &reordered, &mut bound, "").is_err(), "key order");
    let other = serde_json::json!({"type":"x","t":"sk_2","m":5,"s":"$not {"});
    assert!(
        check(&v, &other, &mut bound, "").is_err(),
        "same name, same value"
    );
    let (sent, _) = template(r#"{"type":"auth","token":$token}"#).unwrap();
    assert_eq!(fill(&sent, &bound).unwrap()["token"], "sk_1");
}

// ---- console blocks ---------------------------------------------------

const SCRIPT: &str = "python3 examples/python_client.py";

/// A console command: its line in the doc, the command, its output shown.
struct Command {
    line: usize,
    text: String,
    shown: Vec<String>,
}

/// A console block's commands.
fn commands(block: &Block) -> Vec<Command> {
    let mut out: Vec<Command> = Vec::new();
    for (i, line) in block.lines.iter().enumerate() {
        if let Some(text) = line.strip_prefix("$ ") {
            out.push(Command {
                line: block.first_line + i,
                text: text.to_string(),
                shown: Vec::new(),
            });
        } else if let Some(cmd) = out.last_mut() {
            cmd.shown.push(line.clone());
        }
    }
    out
}

/// Output with decimal numbers (round-trip times) left out.
fn without_decimals(text: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let digits = |from: usize| {
            (from..chars.len())
                .take_while(|&j| chars[j].is_ascii_digit())
                .count()
        };
        let whole = digits(i);
        if whole > 0 && chars.get(i + whole) == Some(&'.') && digits(i + whole + 1) > 0 {
            out.push('#');
            i += whole + 1 + digits(i + whole + 1);
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// Runs one console block in `dir` against a server of its own.
async fn run_console(source: &str, block: &Block, dir: &Path) -> Result<(), String> {
    let cmds = commands(block);
    let plain = cmds
        .iter()
        .any(|c| c.text.starts_with("sockit serve") && c.text.contains("--no-tls"));
    let data = dir.join("sockit-data");
    let srv = common::start(|c| {
        c.data_dir = data.clone();
        c.framed.tls = !plain;
    })
    .await;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::os::unix::fs::symlink(repo.join("examples"), dir.join("examples"))
        .map_err(|e| e.to_string())?;
    let notes = "notes for the doc test\n";
    std::fs::write(dir.join("notes.txt"), notes).map_err(|e| e.to_string())?;
    let port = srv.framed.port();
    let mut script = String::from("set -u\n");
    let mut run = Vec::new();
    for (i, cmd) in cmds.iter().enumerate() {
        if cmd.text.starts_with("sockit serve") {
            continue; // The test's server.
        }
        let line = cmd.text.replace(SCRIPT, &format!("{SCRIPT} --port {port}"));
        script.push_str(&format!(
            "{{ {line}\n}} >out.{i} 2>err.{i} || {{ echo $? >status.{i}; exit 1; }}\n"
        ));
        run.push((i, cmd));
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_sockit"));
    let path = format!(
        "{}:{}",
        bin.parent().ok_or("no bin dir")?.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("SOCKIT_TOKEN")
        .output()
        .await
        .map_err(|e| format!("sh: {e}"))?;
    let read = |name: String| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    for (i, cmd) in run {
        let at = format!("{source} line {}: $ {}", cmd.line, cmd.text);
        if let Ok(status) = std::fs::read_to_string(dir.join(format!("status.{i}"))) {
            return Err(format!(
                "{at}\nfailed with status {}: {}{}",
                status.trim(),
                read(format!("out.{i}")),
                read(format!("err.{i}"))
            ));
        }
        let got = read(format!("out.{i}"));
        if !cmd.shown.is_empty() {
            let want = cmd.shown.join("\n") + "\n";
            if without_decimals(&got) != without_decimals(&want) {
                return Err(format!("{at}\nprinted:\n{got}the doc shows:\n{want}"));
            }
        }
    }
    if !out.status.success() {
        return Err(format!(
            "{source} line {}: the block did not run: {}",
            block.first_line,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if let Ok(copy) = std::fs::read_to_string(dir.join("copy.txt")) {
        if copy != notes {
            return Err(format!("{source}: copy.txt is not notes.txt"));
        }
    }
    srv.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_python_client_command_lines_of_the_docs_run_as_written() {
    if common::missing("python3", "apt-get install python3", || {
        common::runs("python3", &["--version"])
    }) {
        return;
    }
    let mut ran = 0;
    for (source, doc) in [("README.md", README_MD), ("docs/protocol.md", PROTOCOL_MD)] {
        for block in blocks(doc, "console") {
            if !block.lines.iter().any(|l| l.contains(SCRIPT)) {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            if let Err(e) = run_console(source, &block, dir.path()).await {
                panic!("{e}");
            }
            ran += 1;
        }
    }
    assert!(ran >= 2, "{ran} console blocks run the Python client");
}
