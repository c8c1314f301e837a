//! The chat relay on the framed port: real servers on port 0, real sockets.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use sockit::accounts::{Accounts, Settings as AccountSettings};
use sockit::proto::{Connection, Frame};

type Conn = Connection<sockit::tls::Stream>;

/// Creates users and returns their session tokens.
async fn users(srv: &common::TestServer, names: &[String]) -> Vec<String> {
    let accounts = Accounts::open(srv.data.path(), AccountSettings::default()).unwrap();
    let mut tasks = Vec::new();
    for name in names {
        let (a, n) = (accounts.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            let pw = "chat test password";
            a.run({
                let n = n.clone();
                move |a| a.add_user(&n, pw)
            })
            .await
            .unwrap();
            a.login(n, pw.into(), None).await.unwrap().token
        }));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap());
    }
    tokens
}

/// A connection authenticated with `token`.
async fn authed(srv: &common::TestServer, token: &str) -> Conn {
    let mut c = common::framed_client(srv.framed).await;
    c.write_frame(&Frame::new("auth").with("token", token))
        .await
        .unwrap();
    let r = c.read_frame().await.unwrap().unwrap();
    assert_eq!(r.kind(), "authed", "{r:?}");
    c
}

/// Reads one frame and its body.
async fn read(c: &mut Conn) -> (Frame, Vec<u8>) {
    let f = c.read_frame().await.unwrap().expect("frame");
    let body = c.read_body_to_vec(64 << 20).await.unwrap();
    (f, body)
}

/// Sends a request and returns its answer, skipping events.
async fn call(c: &mut Conn, f: Frame, body: &[u8]) -> (Frame, Vec<u8>) {
    c.write_message(&f.with("id", 7).with_body_len(body.len() as u64), body)
        .await
        .unwrap();
    loop {
        let (f, b) = read(c).await;
        if f.id().is_some() {
            return (f, b);
        }
    }
}

fn code(f: &Frame) -> &str {
    assert_eq!(f.kind(), "error", "{f:?}");
    f.str("code").unwrap()
}

async fn join(c: &mut Conn, room: &str) -> Value {
    let (f, body) = call(c, Frame::new("join").with("room", room), &[]).await;
    assert_eq!(f.kind(), "joined", "{f:?}");
    serde_json::from_slice(&body).unwrap()
}

async fn subscribe(c: &mut Conn, since: Option<i64>) -> (Frame, Vec<Value>) {
    let mut f = Frame::new("subscribe");
    if let Some(s) = since {
        f = f.with("since", s);
    }
    let (f, body) = call(c, f, &[]).await;
    assert_eq!(f.kind(), "subscribed", "{f:?}");
    (f, serde_json::from_slice(&body).unwrap())
}

async fn send_room(c: &mut Conn, room: &str, text: &str) -> Frame {
    call(c, Frame::new("send").with("room", room), text.as_bytes())
        .await
        .0
}

/// The next `message` event: (header, text).
async fn next_message(c: &mut Conn) -> (Frame, String) {
    loop {
        let (f, body) = read(c).await;
        if f.kind() == "message" {
            return (f, String::from_utf8(body).unwrap());
        }
    }
}

fn no_rate_limit(c: &mut sockit::config::Config) {
    c.chat.rate = 0.0;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_in_ten_rooms_get_exactly_their_rooms_messages_in_order() {
    const CLIENTS: usize = 200;
    const ROOMS: usize = 10;
    const EACH: usize = 5;
    let srv = common::start(no_rate_limit).await;
    let names: Vec<String> = (0..CLIENTS).map(|i| format!("user{i}")).collect();
    let tokens = users(&srv, &names).await;
    let mut conns = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let mut c = authed(&srv, token).await;
        join(&mut c, &format!("room{}", i % ROOMS)).await;
        subscribe(&mut c, None).await;
        conns.push(c);
    }
    // Everyone is in and listening: now everyone talks at once.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let room = format!("room{}", i % ROOMS);
            start.wait().await;
            for n in 0..EACH {
                let f = Frame::new("send")
                    .with("room", room.as_str())
                    .with("id", n)
                    .with_body_len(0);
                let text = format!("{i}:{n}");
                c.write_message(&f.with_body_len(text.len() as u64), text.as_bytes())
                    .await
                    .unwrap();
            }
            let expected = CLIENTS / ROOMS * EACH;
            let mut got: HashMap<usize, Vec<usize>> = HashMap::new();
            let (mut count, mut acks, mut last_seq) = (0, 0, 0);
            while count < expected || acks < EACH {
                let (f, body) = read(&mut c).await;
                match f.kind() {
                    "sent" => acks += 1,
                    "message" => {
                        assert_eq!(f.str("room"), Some(room.as_str()), "{f:?}");
                        let seq = f.get("seq").unwrap().as_i64().unwrap();
                        assert!(seq > last_seq, "seq must increase");
                        last_seq = seq;
                        let text = String::from_utf8(body).unwrap();
                        let (who, n) = text.split_once(':').unwrap();
                        let (who, n): (usize, usize) = (who.parse().unwrap(), n.parse().unwrap());
                        assert_eq!(who % ROOMS, i % ROOMS, "message from another room");
                        assert_eq!(f.str("from").unwrap(), format!("user{who}"));
                        got.entry(who).or_default().push(n);
                        count += 1;
                    }
                    "member" | "presence" => {}
                    other => panic!("unexpected {other}: {f:?}"),
                }
            }
            assert_eq!(got.len(), CLIENTS / ROOMS);
            for (who, ns) in got {
                assert_eq!(ns, (0..EACH).collect::<Vec<_>>(), "order from user{who}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_to_an_offline_user_waits_for_their_login_across_a_restart() {
    let srv = common::start(|_| {}).await;
    let tokens = users(&srv, &["alice".into(), "Bob".into()]).await;
    let mut alice = authed(&srv, &tokens[0]).await;
    let (f, _) = call(
        &mut alice,
        Frame::new("send").with("to", "bob"),
        "are you there?".as_bytes(),
    )
    .await;
    assert_eq!(f.kind(), "sent", "{f:?}");
    let seq = f.get("seq").unwrap().as_i64().unwrap();
    let (f, _) = call(&mut alice, Frame::new("send").with("to", "BOB"), b"second").await;
    assert_eq!(f.kind(), "sent");
    drop(alice);
    // Restart on the same data directory.
    let data = srv.data;
    srv.shutdown.cancel();
    srv.task.await.unwrap();
    let dir = data.path().to_path_buf();
    let srv = common::start(move |c| c.data_dir = dir).await;
    let mut bob = authed(&srv, &tokens[1]).await;
    let (_, backlog) = subscribe(&mut bob, None).await;
    let texts: Vec<&str> = backlog
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["are you there?", "second"]);
    assert_eq!(backlog[0]["seq"].as_i64(), Some(seq));
    assert_eq!(backlog[0]["from"], "alice");
    assert_eq!(backlog[0]["to"], "Bob");
    // Delivered once: a second login has nothing waiting.
    let mut again = authed(&srv, &tokens[1]).await;
    let (_, backlog) = subscribe(&mut again, None).await;
    assert!(backlog.is_empty(), "{backlog:?}");
    drop(data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_of_a_user_receives_and_presence_is_pushed() {
    let srv = common::start(|_| {}).await;
    let tokens = users(&srv, &["alice".into(), "bob".into()]).await;
    let mut a1 = authed(&srv, &tokens[0]).await;
    let mut a2 = authed(&srv, &tokens[0]).await;
    join(&mut a1, "lobby").await;
    subscribe(&mut a1, None).await;
    subscribe(&mut a2, None).await;
    let mut bob = authed(&srv, &tokens[1]).await;
    let joined = join(&mut bob, "Lobby").await;
    assert_eq!(joined["members"][0]["user"], "alice");
    assert_eq!(joined["members"][0]["online"], true);
    subscribe(&mut bob, None).await;
    // Bob came online in a room alice is in: alice hears it (once, on each
    // connection), after hearing him join.
    for a in [&mut a1, &mut a2] {
        let (f, _) = read(a).await;
        assert_eq!(f.kind(), "member", "{f:?}");
        assert_eq!(
            (f.str("user"), f.get("joined")),
            (Some("bob"), Some(&Value::Bool(true)))
        );
        let (f, _) = read(a).await;
        assert_eq!(f.kind(), "presence", "{f:?}");
        assert_eq!(f.str("user"), Some("bob"));
    }
    // A direct message and a room message reach both of alice's sessions.
    let f = call(&mut bob, Frame::new("send").with("to", "alice"), b"psst")
        .await
        .0;
    assert_eq!(f.kind(), "sent");
    let f = send_room(&mut bob, "LOBBY", "hello room").await;
    assert_eq!(f.kind(), "sent");
    for a in [&mut a1, &mut a2] {
        let (f, text) = next_message(a).await;
        assert_eq!((f.str("to"), text.as_str()), (Some("alice"), "psst"));
        let (f, text) = next_message(a).await;
        assert_eq!(
            (f.str("room"), text.as_str()),
            (Some("lobby"), "hello room")
        );
        assert_eq!(f.str("from"), Some("bob"));
    }
    // Bob goes: alice hears he is offline.
    drop(bob);
    let (f, _) = read(&mut a1).await;
    assert_eq!(f.kind(), "presence", "{f:?}");
    assert_eq!(f.get("online"), Some(&Value::Bool(false)));
    // Lists.
    let (f, body) = call(&mut a1, Frame::new("who"), &[]).await;
    assert_eq!(f.kind(), "who");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        serde_json::json!(["alice"])
    );
    let (_, body) = call(&mut a1, Frame::new("rooms"), &[]).await;
    let rooms: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(rooms[0]["room"], "lobby");
    assert_eq!(rooms[0]["members"], 2);
    assert_eq!(rooms[0]["online"], 1);
    assert_eq!(rooms[0]["joined"], true);
    let (_, body) = call(&mut a1, Frame::new("history").with("room", "lobby"), &[]).await;
    let h: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(h[0]["text"], "hello room");
    let (_, body) = call(&mut a1, Frame::new("history").with("with", "bob"), &[]).await;
    let h: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(h[0]["text"], "psst");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_is_closed_and_the_others_get_everything() {
    let srv = common::start(|c| {
        c.chat.rate = 0.0;
        // Roomy enough that the reading client never lags this far on a
        // loaded machine; the stuck one is sent 24 MB, far past it.
        c.chat.queue_bytes = 2 * 1024 * 1024;
        c.chat.slow_timeout = Duration::from_secs(5);
    })
    .await;
    let tokens = users(&srv, &["talker".into(), "fast".into(), "stuck".into()]).await;
    let mut talker = authed(&srv, &tokens[0]).await;
    let mut fast = authed(&srv, &tokens[1]).await;
    let mut stuck = authed(&srv, &tokens[2]).await;
    for c in [&mut talker, &mut fast, &mut stuck] {
        join(c, "busy").await;
    }
    subscribe(&mut fast, None).await;
    subscribe(&mut stuck, None).await;
    // `stuck` never reads again. Send enough to fill its socket buffers and
    // its queue many times over, while `fast` reads everything.
    const N: usize = 3000;
    let text = "x".repeat(8000);
    let reader = tokio::spawn(async move {
        for n in 0..N {
            let (f, body) = next_message(&mut fast).await;
            assert_eq!(body.len(), 8000);
            assert_eq!(f.str("from"), Some("talker"), "message {n}");
        }
    });
    for n in 0..N {
        let f = Frame::new("send").with("room", "busy").with("id", n);
        talker
            .write_message(&f.with_body_len(text.len() as u64), text.as_bytes())
            .await
            .unwrap();
    }
    let mut acks = 0;
    while acks < N {
        let (f, _) = read(&mut talker).await;
        if f.kind() == "sent" {
            acks += 1;
        }
    }
    reader.await.unwrap();
    // The stuck connection was closed with slow_consumer (or reset): reading
    // what it was sent ends, and it holds no more than a bounded part.
    let mut got = 0usize;
    let end = loop {
        match stuck.read_frame().await {
            Ok(Some(f)) if f.kind() == "message" => {
                got += 1;
                stuck.discard_body().await.ok();
            }
            Ok(Some(f)) => break Some(f),
            Ok(None) | Err(_) => break None,
        }
    };
    if let Some(f) = end {
        assert_eq!(f.str("code"), Some("slow_consumer"), "{f:?}");
    }
    assert!(got < N, "the stuck reader was never cut off");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_too_fast_is_refused_with_rate_limited() {
    let srv = common::start(|c| {
        c.chat.rate = 1.0;
        c.chat.burst = 3;
    })
    .await;
    let tokens = users(&srv, &["chatty".into()]).await;
    let mut c = authed(&srv, &tokens[0]).await;
    join(&mut c, "r").await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        let f = send_room(&mut c, "r", "hi").await;
        codes.push(if f.kind() == "sent" {
            "sent".to_string()
        } else {
            code(&f).to_string()
        });
    }
    assert_eq!(
        codes,
        ["sent", "sent", "sent", "rate_limited", "rate_limited"]
    );
    // Refused messages are not stored.
    let (_, body) = call(&mut c, Frame::new("history").with("room", "r"), &[]).await;
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&body).unwrap().len(),
        3
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_codes_and_the_connection_goes_on() {
    let srv = common::start(|c| c.chat.max_message = 100).await;
    let tokens = users(&srv, &["alice".into()]).await;
    // Before auth.
    let mut anon = common::framed_client(srv.framed).await;
    let (f, _) = call(&mut anon, Frame::new("join").with("room", "x"), &[]).await;
    assert_eq!(code(&f), "unauthorized");

    let mut c = authed(&srv, &tokens[0]).await;
    let cases: Vec<(Frame, Vec<u8>, &str)> = vec![
        (
            Frame::new("send").with("room", "nowhere"),
            b"hi".to_vec(),
            "not_member",
        ),
        (
            Frame::new("send").with("room", "bad room"),
            b"hi".to_vec(),
            "bad_room",
        ),
        (
            Frame::new("send").with("to", "nobody"),
            b"hi".to_vec(),
            "no_such_user",
        ),
        (
            Frame::new("send").with("to", "alice"),
            vec![b'x'; 101],
            "too_large",
        ),
        (
            Frame::new("send").with("to", "alice"),
            vec![0xff, 0xfe],
            "bad_request",
        ),
        (
            Frame::new("send").with("to", "alice"),
            Vec::new(),
            "bad_request",
        ),
        (Frame::new("send"), b"hi".to_vec(), "bad_request"),
        (
            Frame::new("send").with("to", "alice").with("room", "x"),
            b"hi".to_vec(),
            "bad_request",
        ),
        (
            Frame::new("join").with("room", &*"x".repeat(65)),
            Vec::new(),
            "bad_room",
        ),
        (Frame::new("join"), Vec::new(), "bad_request"),
        (
            Frame::new("leave").with("room", "x"),
            Vec::new(),
            "not_member",
        ),
        (
            Frame::new("members").with("room", "nope"),
            Vec::new(),
            "no_such_room",
        ),
        (
            Frame::new("history").with("room", "nope"),
            Vec::new(),
            "not_member",
        ),
        (
            Frame::new("history").with("with", "ghost"),
            Vec::new(),
            "no_such_user",
        ),
        (
            Frame::new("subscribe").with("since", "yesterday"),
            Vec::new(),
            "bad_request",
        ),
    ];
    for (req, body, want) in cases {
        let (f, _) = call(&mut c, req.clone(), &body).await;
        assert_eq!(code(&f), want, "{req:?}");
    }
    // Still fine afterwards.
    join(&mut c, "x").await;
    let f = send_room(&mut c, "X", "still here").await;
    assert_eq!(f.kind(), "sent", "{f:?}");
    let (f, _) = call(&mut c, Frame::new("subscribe"), &[]).await;
    assert_eq!(f.kind(), "subscribed");
    let (f, _) = call(&mut c, Frame::new("subscribe"), &[]).await;
    assert_eq!(code(&f), "bad_request");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_keeps_its_last_messages_for_joiners_and_since_resumes() {
    let srv = common::start(|c| {
        c.chat.rate = 0.0;
        c.chat.history = 5;
    })
    .await;
    let tokens = users(&srv, &["alice".into(), "bob".into()]).await;
    let mut a = authed(&srv, &tokens[0]).await;
    join(&mut a, "log").await;
    let mut seqs = Vec::new();
    for i in 0..8 {
        let f = send_room(&mut a, "log", &format!("m{i}")).await;
        seqs.push(f.get("seq").unwrap().as_i64().unwrap());
    }
    let mut b = authed(&srv, &tokens[1]).await;
    let joined = join(&mut b, "log").await;
    let texts: Vec<&str> = joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m3", "m4", "m5", "m6", "m7"]);
    // A reconnecting client resumes after the last seq it saw.
    let (_, backlog) = subscribe(&mut b, Some(seqs[5])).await;
    let texts: Vec<&str> = backlog
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m6", "m7"]);
    srv.stop().await;
}

#[tokio::test]
async fn a_history_limit_out_of_range_is_refused() {
    let srv = common::start(no_rate_limit).await;
    let tokens = users(&srv, &["alice".into()]).await;
    let mut c = authed(&srv, &tokens[0]).await;
    join(&mut c, "lobby").await;
    for text in ["one", "two", "three"] {
        assert_eq!(send_room(&mut c, "lobby", text).await.kind(), "sent");
    }
    let history = |limit: i64| {
        Frame::new("history")
            .with("room", "lobby")
            .with("limit", limit)
    };
    for limit in [0, -1, 101] {
        let (f, _) = call(&mut c, history(limit), &[]).await;
        assert_eq!(code(&f), "bad_request", "limit {limit}");
        assert!(f.str("message").unwrap().contains("1 to 100"), "{f:?}");
    }
    for (limit, want) in [(1, 1), (100, 3)] {
        let (f, body) = call(&mut c, history(limit), &[]).await;
        assert_eq!(f.kind(), "history", "{f:?}");
        let messages: Vec<Value> = serde_json::from_slice(&body).unwrap();
        assert_eq!(messages.len(), want, "limit {limit}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn a_send_with_a_text_field_is_told_that_the_text_is_the_body() {
    let srv = common::start(no_rate_limit).await;
    let tokens = users(&srv, &["alice".into()]).await;
    let mut c = authed(&srv, &tokens[0]).await;
    join(&mut c, "lobby").await;
    // The WebSocket's form, a "text" field, is pointed at the body.
    let send = Frame::new("send").with("room", "lobby").with("text", "hi");
    let (f, _) = call(&mut c, send, &[]).await;
    assert_eq!(code(&f), "bad_request");
    assert!(f.str("message").unwrap().contains("body"), "{f:?}");
    srv.stop().await;
}

#[tokio::test]
async fn subscribed_seq_is_the_servers_last_seq_in_any_room() {
    let srv = common::start(no_rate_limit).await;
    let tokens = users(&srv, &["alice".into(), "bob".into()]).await;
    let mut a = authed(&srv, &tokens[0]).await;
    let (f, _) = subscribe(&mut a, None).await;
    assert_eq!(f.get("seq"), Some(&Value::from(0)), "no messages yet");
    join(&mut a, "private").await;
    let sent = send_room(&mut a, "private", "not for bob").await;
    // Bob is in no room with alice, yet his subscription starts after her message.
    let mut b = authed(&srv, &tokens[1]).await;
    let (f, backlog) = subscribe(&mut b, None).await;
    assert_eq!(f.get("seq"), sent.get("seq"), "{f:?}");
    assert!(backlog.is_empty());
    srv.stop().await;
}
