//! Chat requests (`sockit::chat`) in both their forms: the same JSON text as
//! a WebSocket request and as a framed-port header, the rest of the input
//! as the framed `send`'s body.
//!
//! Input: the JSON text, then after a NUL byte the body.
//! Checked: nothing panics; the two transports accept and refuse the same
//! objects (the framed port also needs a string `type`) with the same `id`
//! and the same `history` page; a page is 1 to `MAX_HISTORY_PAGE`; a
//! message text is accepted exactly when it is non-empty UTF-8; a valid
//! room name stays valid when case-folded; and a message built from the
//! request's fields encodes, in both forms, to what decodes back to it.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sockit::chat::server::{encode_message as framed_message, history_page, text};
use sockit::chat::ws::{encode_message as ws_message, parse_request};
use sockit::chat::{room_key, valid_room, Message, MAX_HISTORY_PAGE, MAX_ROOM_NAME};
use sockit::proto::codec::DEFAULT_MAX_BODY;
use sockit::proto::{Frame, FrameCodec, Item};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let (json, body) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };

    // The framed `send` body.
    match text(body.to_vec()) {
        Ok(t) => assert!(!t.is_empty() && t.as_bytes() == body),
        Err(_) => assert!(body.is_empty() || std::str::from_utf8(body).is_err()),
    }

    let ws = std::str::from_utf8(json).ok().map(parse_request);
    let framed = Frame::parse(json, DEFAULT_MAX_BODY);
    if let Ok(frame) = &framed {
        let Some(Ok((obj, id))) = &ws else {
            panic!("the framed port took {frame:?}; the socket refused it: {ws:?}");
        };
        assert_eq!(frame.header(), obj);
        assert_eq!(frame.id(), id.as_ref());
    }
    let Some(Ok((obj, id))) = ws else {
        return;
    };
    assert!(matches!(
        id,
        None | Some(Value::Number(_) | Value::String(_))
    ));
    assert_eq!(obj.get("id"), id.as_ref());
    let typed = obj.get("type").is_some_and(Value::is_string);
    let sized = obj
        .get("size")
        .is_none_or(|s| s.as_u64().is_some_and(|n| n <= DEFAULT_MAX_BODY));
    assert_eq!(framed.is_ok(), typed && sized, "{obj:?}: {framed:?}");

    if let Ok((_, limit)) = history_page(&obj) {
        assert!((1..=MAX_HISTORY_PAGE).contains(&limit));
    }
    let str_field = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    if let Some(room) = str_field("room") {
        if valid_room(&room) {
            assert!(room.len() <= MAX_ROOM_NAME);
            let key = room_key(&room);
            assert!(valid_room(&key) && room_key(&key) == key);
        }
    }

    // Encoders: a message with these fields reads back as itself.
    let m = Message {
        seq: obj.get("seq").and_then(Value::as_i64).unwrap_or(1),
        ts: obj.get("ts").and_then(Value::as_i64).unwrap_or(0),
        from: str_field("from").unwrap_or_default(),
        room: str_field("room"),
        to: str_field("to"),
        text: str_field("text").unwrap_or_default(),
    };
    let w: Value = serde_json::from_str(&ws_message(&m)).expect("the socket's message is JSON");
    assert_eq!(w["type"], "message");
    let back: Message = serde_json::from_value(w).expect("the socket's message reads back");
    assert_eq!(back, m);

    let wire = framed_message(&m);
    let mut buf = BytesMut::from(&wire[..]);
    let mut codec = FrameCodec::default();
    let Ok(Some(Item::Header(h))) = codec.decode(&mut buf) else {
        // Only a header past the protocol's limit may fail to encode.
        assert!(wire.is_empty(), "the framed message does not decode");
        return;
    };
    assert_eq!(h.kind(), "message");
    assert_eq!(h.str("from"), Some(m.from.as_str()));
    assert_eq!(h.str("room"), m.room.as_deref());
    assert_eq!(h.str("to"), m.to.as_deref());
    assert_eq!(h.body_len(), m.text.len() as u64);
    let mut got = Vec::new();
    while let Ok(Some(Item::Body(b))) = codec.decode(&mut buf) {
        got.extend_from_slice(&b);
    }
    assert_eq!(got, m.text.as_bytes());
});
