//! `sockit chat` as a user runs it: the real binary against a real server
//! process, including a SIGKILL of the server between a message and its
//! delivery.

mod common;

use std::io::{BufRead, BufReader};

use common::cli::serve;
use common::terminal::Terminal;

#[test]
fn a_message_acknowledged_before_a_sigkill_is_delivered_after_the_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut srv = serve(data.path(), "127.0.0.1:0");
    let alice = srv.user();
    alice.sign_up("alice");
    let bob = srv.user();
    bob.sign_up("bob");

    // Bob is offline. alice's `send` exits 0 only once the server stored it.
    alice.ok(&["chat", "send", "--to", "bob", "lunch at 12? \u{1b}[31m"]);
    // A room message, piped into the interactive client.
    let (ok, out, err) = alice.run(&["chat", "--room", "lobby"], "hello room\n/quit\n");
    assert!(ok, "{err}");
    assert!(out.contains("#lobby <alice> hello room"), "{out}");

    // kill -9, then a new server on the same data directory and port.
    let addr = srv.addr.clone();
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    let srv = serve(data.path(), &addr);

    // Bob's tail: the direct message first (escaped), then the room's
    // history once he follows the room.
    let mut tail = bob.cmd(&["chat", "tail", "--json"]).spawn().unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["from"], "alice");
    assert_eq!(first["to"], "bob");
    assert_eq!(first["text"], "lunch at 12? \u{1b}[31m");
    tail.kill().unwrap();
    tail.wait().unwrap();

    let mut tail = bob
        .cmd(&["chat", "tail", "--room", "Lobby"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    assert!(line.ends_with("#lobby <alice> hello room"), "{line}");
    // A message sent now arrives live.
    bob.ok(&["chat", "send", "--room", "lobby", "bob: back \u{7}"]);
    let line = lines.next().unwrap().unwrap();
    assert!(line.ends_with("#lobby <bob> bob: back \\u{7}"), "{line}");
    tail.kill().unwrap();
    tail.wait().unwrap();

    // Refusals are one line and exit non-zero.
    let err = bob.fails(&["chat", "send", "--room", "elsewhere", "hi"]);
    assert!(err.contains("not a member"), "{err}");
    let err = bob.fails(&["chat", "send", "--to", "nobody", "hi"]);
    assert!(err.contains("no user"), "{err}");
    drop(srv);
}

#[test]
fn tail_reconnects_by_itself_and_misses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let mut srv = serve(data.path(), "127.0.0.1:0");
    let alice = srv.user();
    alice.sign_up("alice");
    let bob = srv.user();
    bob.sign_up("bob");

    let mut tail = bob.cmd(&["chat", "tail", "--json"]).spawn().unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(tail.stderr.take().unwrap()).lines();
    alice.ok(&["chat", "send", "--to", "bob", "one"]);
    let m: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(m["text"], "one");

    // The server dies; while it is away nobody can send; it comes back on
    // the same port, a message is sent, and the tail shows it once.
    let addr = srv.addr.clone();
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    let line = stderr.next().unwrap().unwrap();
    assert!(line.contains("reconnecting"), "{line}");
    let srv = serve(data.path(), &addr);
    alice.ok(&["chat", "send", "--to", "bob", "two"]);
    let m: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(m["text"], "two");
    tail.kill().unwrap();
    tail.wait().unwrap();
    drop(srv);
}

#[test]
fn pasted_and_input_method_text_arrives_whole_and_feedback_is_always_shown() {
    if !Terminal::available() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let srv = serve(data.path(), "127.0.0.1:0");
    let ann = srv.user();
    ann.sign_up("ann");
    let term = Terminal::start(&format!(
        "env SOCKIT_CONFIG_DIR={} SOCKIT_SERVER={} {} chat --room lobby",
        ann.config.path().display(),
        srv.addr,
        common::cli::BIN
    ));
    term.shows("connected as ann");
    // The prompt says where a line goes.
    term.shows("#lobby>");
    // A paste shows whole at once (rustyline 18 showed its first character
    // until the next key press), and one ending in Enter is sent at once.
    term.paste("hello pasted world");
    term.shows("#lobby> hello pasted world");
    term.paste("\r");
    term.shows("#lobby <ann> hello pasted world");
    term.paste("日本語のテキスト\r");
    term.shows("#lobby <ann> 日本語のテキスト");
    // Feedback to every command, each time (it was sometimes erased by the
    // next prompt).
    for (line, feedback) in [
        ("/to\r", "! usage: /to USER or /to #ROOM"),
        ("/join\r", "! usage: /join ROOM"),
        ("/nosuch\r", "! unknown command /nosuch"),
        ("/msg bob\r", "! usage: /msg USER TEXT"),
        ("/to bob\r", "* talking to bob"),
    ] {
        term.paste(line);
        term.shows(feedback);
    }
    term.shows("@bob>");
    term.paste("/join #dev\r");
    term.shows("* you are in #dev");
    term.shows("#dev>");
}
