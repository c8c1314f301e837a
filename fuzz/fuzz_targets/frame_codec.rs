//! The framed protocol's decoder (`sockit::proto::codec`) on arbitrary bytes.
//!
//! Input: byte 0 picks the header limit (so small limits are reached),
//! byte 1 seeds the places where the stream is cut, the rest is the wire.
//! Checked: decoding never panics; the buffer never grows past what was fed
//! plus one header at the limit; body chunks are never empty nor over
//! `MAX_CHUNK`, and add up to the header's `size`; cutting the stream
//! anywhere gives the same frames as one read; every decoded header
//! re-encodes to bytes that decode to the same frame.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sockit::proto::codec::{Item, Limits, LEN_PREFIX, MAX_CHUNK};
use sockit::proto::{Frame, FrameCodec};
use tokio_util::codec::{Decoder, Encoder};

/// Largest body `size` accepted here: bodies are fed, not streamed, so a
/// small limit keeps the over-limit branch reachable.
const MAX_BODY: u64 = 1 << 20;

/// What one decoder run produced: headers with their bodies, and how it
/// ended (`None`: clean end; `Some`: the error, as text).
#[derive(Debug, PartialEq)]
struct Run {
    frames: Vec<(Frame, Vec<u8>)>,
    end: Option<String>,
}

fn decode(limits: Limits, wire: &[u8], mut step: impl FnMut() -> usize) -> Run {
    let mut codec = FrameCodec::new(limits);
    let mut buf = BytesMut::new();
    let mut frames: Vec<(Frame, Vec<u8>)> = Vec::new();
    let mut fed = 0;
    let bound = |fed: usize| 2 * (fed + LEN_PREFIX + limits.max_header);
    while fed < wire.len() {
        let end = (fed + step().max(1)).min(wire.len());
        buf.extend_from_slice(&wire[fed..end]);
        fed = end;
        loop {
            let item = codec.decode(&mut buf);
            assert!(
                buf.capacity() <= bound(fed),
                "buffer capacity {} after {fed} bytes with a {}-byte header limit",
                buf.capacity(),
                limits.max_header
            );
            match item {
                Ok(Some(item)) => take(&mut frames, item, &codec),
                Ok(None) => break,
                Err(e) => {
                    return Run {
                        frames,
                        end: Some(e.to_string()),
                    }
                }
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(item)) => take(&mut frames, item, &codec),
            Ok(None) => {
                assert!(buf.is_empty() && codec.read_body_left() == 0);
                return Run { frames, end: None };
            }
            Err(e) => {
                return Run {
                    frames,
                    end: Some(e.to_string()),
                }
            }
        }
    }
}

fn take(frames: &mut Vec<(Frame, Vec<u8>)>, item: Item, codec: &FrameCodec) {
    match item {
        Item::Header(f) => {
            if let Some((last, body)) = frames.last() {
                assert_eq!(
                    body.len() as u64,
                    last.body_len(),
                    "header before the body ended"
                );
            }
            assert_eq!(codec.read_body_left(), f.body_len());
            assert!(f.body_len() <= MAX_BODY);
            frames.push((f, Vec::new()));
        }
        Item::Body(b) => {
            assert!(
                !b.is_empty() && b.len() <= MAX_CHUNK,
                "chunk of {} bytes",
                b.len()
            );
            let (f, body) = frames.last_mut().expect("a body chunk before any header");
            body.extend_from_slice(&b);
            assert!(body.len() as u64 <= f.body_len(), "more body than declared");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [limit, seed, wire @ ..] = data else {
        return;
    };
    let limits = Limits {
        max_header: 8 + usize::from(*limit) * 16,
        max_body: MAX_BODY,
        ..Limits::default()
    };
    let whole = decode(limits, wire, || wire.len());
    // Cut sizes from a small generator: 1 byte up to 64, varying.
    let mut state = u32::from(*seed) | 1;
    let split = decode(limits, wire, || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 64) as usize + 1
    });
    assert_eq!(whole, split, "a cut stream decoded differently");
    let ones = decode(limits, wire, || 1);
    assert_eq!(whole, ones, "a byte-at-a-time stream decoded differently");

    // Encode → decode round trip of every frame read whole (the last one
    // may have been cut short by the end of the input).
    for (frame, body) in &whole.frames {
        if body.len() as u64 != frame.body_len() {
            assert!(whole.end.is_some(), "a short body ended cleanly");
            continue;
        }
        let mut codec = FrameCodec::default();
        let mut out = BytesMut::new();
        if codec.encode(frame, &mut out).is_err() {
            // Only a header re-encoded past the protocol's limit may fail.
            continue;
        }
        codec
            .encode(&body[..], &mut out)
            .expect("the declared body fits");
        assert_eq!(codec.write_body_left(), 0);
        let again = decode(Limits::default(), &out, || out.len());
        assert_eq!(again.end, None, "re-encoded frame did not decode");
        // serde_json keeps floats exact through a trip (`float_roundtrip`,
        // turned on after this target found `1795000000000000000002109509520`
        // coming back one unit in the last place off).
        assert_eq!(
            again.frames,
            vec![(frame.clone(), body.clone())],
            "re-encoded frame decoded differently"
        );
    }
});
