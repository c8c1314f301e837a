//! The framed protocol's tokio-util codec: a 4-byte big-endian header length,
//! a JSON object header, then `size` raw body bytes delivered in bounded chunks.
//!
//! The decoder never allocates more than the header limit for a header and never
//! buffers a body whole: body bytes are handed out as [`Item::Body`] chunks of at
//! most [`MAX_CHUNK`] bytes as soon as they arrive.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{Frame, ProtoError};

/// Default limit on the header length N (bytes of JSON).
pub const DEFAULT_MAX_HEADER: usize = 65_536;
/// Default limit on a body's declared `size` (1 TiB).
pub const DEFAULT_MAX_BODY: u64 = 1 << 40;
/// Default least progress of a body being read: this many bytes ...
pub const DEFAULT_BODY_PROGRESS_BYTES: usize = 1024;
/// ... within this long (so a body dripped a byte at a time cannot hold a
/// connection and its upload open for hours).
pub const DEFAULT_BODY_PROGRESS_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest body chunk the decoder hands out at once.
pub const MAX_CHUNK: usize = 256 * 1024;
/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// One decoded unit: a header, or a piece of the body that follows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A complete, validated header. If `frame.body_len() > 0`, exactly that many
    /// body bytes follow as [`Item::Body`] items.
    Header(Frame),
    /// A chunk of the current body (never empty, at most [`MAX_CHUNK`] bytes).
    Body(Bytes),
}

/// Limits the codec enforces on what it reads.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted header length N.
    pub max_header: usize,
    /// Largest accepted body `size`.
    pub max_body: u64,
    /// A body being read must bring at least this many bytes within each
    /// [`body_progress_timeout`](Self::body_progress_timeout), or reading it
    /// fails with [`ProtoError::BodyTooSlow`](super::ProtoError::BodyTooSlow);
    /// 0 turns the check off.
    pub body_progress_bytes: usize,
    /// See [`body_progress_bytes`](Self::body_progress_bytes).
    pub body_progress_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header: DEFAULT_MAX_HEADER,
            max_body: DEFAULT_MAX_BODY,
            body_progress_bytes: DEFAULT_BODY_PROGRESS_BYTES,
            body_progress_timeout: DEFAULT_BODY_PROGRESS_TIMEOUT,
        }
    }
}

/// Encoder and decoder for framed-protocol messages.
///
/// It tracks the body still owed in each direction, so a reader gets the body
/// bytes as [`Item::Body`] and a writer cannot start a new header before the
/// previous body is complete.
#[derive(Debug, Default)]
pub struct FrameCodec {
    limits: Limits,
    /// Body bytes of the last decoded header not yet handed out.
    read_body_left: u64,
    /// Body bytes the last encoded header promised and not yet encoded.
    write_body_left: u64,
}

impl FrameCodec {
    /// A codec with the given limits.
    pub fn new(limits: Limits) -> Self {
        FrameCodec {
            limits,
            ..Default::default()
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Body bytes of the current incoming message still to be decoded.
    pub fn read_body_left(&self) -> u64 {
        self.read_body_left
    }

    /// Body bytes the current outgoing message still owes.
    pub fn write_body_left(&self) -> u64 {
        self.write_body_left
    }

    /// Hands out up to `max` body bytes already in `src` (none if `src` is empty).
    fn take_body(&mut self, src: &mut BytesMut, max: usize) -> Option<Bytes> {
        let n = (self.read_body_left.min(max as u64) as usize).min(src.len());
        if n == 0 {
            return None;
        }
        self.read_body_left -= n as u64;
        Some(src.split_to(n).freeze())
    }
}

impl Decoder for FrameCodec {
    type Item = Item;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Item>, ProtoError> {
        if self.read_body_left > 0 {
            return Ok(self.take_body(src, MAX_CHUNK).map(Item::Body));
        }
        if src.len() < LEN_PREFIX {
            src.reserve(LEN_PREFIX - src.len());
            return Ok(None);
        }
        let n = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if n == 0 {
            return Err(ProtoError::BadHeader("header length is 0".into()));
        }
        if n > self.limits.max_header {
            // Refused before anything is reserved for it.
            return Err(ProtoError::HeaderTooLarge {
                len: n,
                max: self.limits.max_header,
            });
        }
        if src.len() < LEN_PREFIX + n {
            src.reserve(LEN_PREFIX + n - src.len());
            return Ok(None);
        }
        src.advance(LEN_PREFIX);
        let raw = src.split_to(n);
        let frame = Frame::parse(&raw, self.limits.max_body)?;
        self.read_body_left = frame.body_len();
        Ok(Some(Item::Header(frame)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Item>, ProtoError> {
        match self.decode(src)? {
            Some(item) => Ok(Some(item)),
            None if src.is_empty() && self.read_body_left == 0 => Ok(None),
            None => Err(ProtoError::Truncated),
        }
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = ProtoError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), ProtoError> {
        if self.write_body_left > 0 {
            return Err(ProtoError::BodyIncomplete(self.write_body_left));
        }
        let start = dst.len();
        dst.put_u32(0);
        serde_json::to_writer((&mut *dst).writer(), frame.header())
            .map_err(|e| ProtoError::BadHeader(e.to_string()))?;
        // Outgoing headers are held to the protocol's default limit, which
        // every peer accepts, whatever this side's own read limit is.
        let n = dst.len() - start - LEN_PREFIX;
        if n > DEFAULT_MAX_HEADER {
            dst.truncate(start);
            return Err(ProtoError::HeaderTooLarge {
                len: n,
                max: DEFAULT_MAX_HEADER,
            });
        }
        dst[start..start + LEN_PREFIX].copy_from_slice(&(n as u32).to_be_bytes());
        self.write_body_left = frame.body_len();
        Ok(())
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = ProtoError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), ProtoError> {
        self.encode(&frame, dst)
    }
}

impl Encoder<Item> for FrameCodec {
    type Error = ProtoError;

    fn encode(&mut self, item: Item, dst: &mut BytesMut) -> Result<(), ProtoError> {
        match item {
            Item::Header(frame) => self.encode(&frame, dst),
            Item::Body(chunk) => self.encode(&chunk[..], dst),
        }
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = ProtoError;

    /// Encodes a piece of the current body; refuses bytes beyond the declared size.
    fn encode(&mut self, chunk: &[u8], dst: &mut BytesMut) -> Result<(), ProtoError> {
        self.note_body_written(chunk.len())?;
        dst.extend_from_slice(chunk);
        Ok(())
    }
}

impl FrameCodec {
    /// Records `n` body bytes as written (by `encode` or directly to the stream).
    pub(crate) fn note_body_written(&mut self, n: usize) -> Result<(), ProtoError> {
        if n as u64 > self.write_body_left {
            return Err(ProtoError::BodyOverrun {
                extra: n as u64 - self.write_body_left,
            });
        }
        self.write_body_left -= n as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ErrorCode;
    use proptest::prelude::*;
    use serde_json::json;

    fn encode_all(items: &[(Frame, Vec<u8>)]) -> BytesMut {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        for (frame, body) in items {
            codec.encode(frame, &mut buf).unwrap();
            codec.encode(&body[..], &mut buf).unwrap();
        }
        buf
    }

    /// Feeds `wire` to a decoder in pieces of the given sizes and collects
    /// (header, reassembled body) pairs.
    fn decode_in_pieces(wire: &[u8], cuts: &[usize]) -> Vec<(Frame, Vec<u8>)> {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        let mut out: Vec<(Frame, Vec<u8>)> = Vec::new();
        let mut pos = 0;
        let mut cut_iter = cuts.iter().copied();
        while pos < wire.len() {
            let step = cut_iter.next().unwrap_or(wire.len()).max(1);
            let end = (pos + step).min(wire.len());
            buf.extend_from_slice(&wire[pos..end]);
            pos = end;
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                match item {
                    Item::Header(f) => out.push((f, Vec::new())),
                    Item::Body(b) => out.last_mut().unwrap().1.extend_from_slice(&b),
                }
            }
        }
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
        out
    }

    fn ping(id: u64, body: &[u8]) -> (Frame, Vec<u8>) {
        let mut f = Frame::new("ping").with("id", id);
        if !body.is_empty() {
            f = f.with_body_len(body.len() as u64);
        }
        (f, body.to_vec())
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let msgs = vec![ping(1, b"hello body"), ping(2, b""), ping(3, b"xyz")];
        let wire = encode_all(&msgs);
        for cut in 1..wire.len() {
            let got = decode_in_pieces(&wire, &[cut, wire.len()]);
            assert_eq!(got, msgs, "cut at {cut}");
        }
        // One byte at a time.
        let ones = vec![1; wire.len()];
        assert_eq!(decode_in_pieces(&wire, &ones), msgs);
    }

    #[test]
    fn many_messages_in_one_read_sticky_packets() {
        let msgs: Vec<_> = (0..500)
            .map(|i| ping(i, &vec![b'a'; (i % 7) as usize]))
            .collect();
        let wire = encode_all(&msgs);
        assert_eq!(decode_in_pieces(&wire, &[wire.len()]), msgs);
    }

    #[test]
    fn wire_format_is_length_then_json() {
        let wire = encode_all(&[(Frame::new("ping").with("id", 1), vec![])]);
        let json = br#"{"type":"ping","id":1}"#;
        assert_eq!(&wire[..4], &(json.len() as u32).to_be_bytes());
        assert_eq!(&wire[4..], json);
    }

    #[test]
    fn type_is_written_first_then_id_then_the_fields_as_added() {
        let text = |frame: &Frame, body: &[u8]| {
            let wire = encode_all(&[(frame.clone(), body.to_vec())]);
            String::from_utf8_lossy(&wire[4..]).into_owned()
        };
        let request = Frame::new("put").with("path", "a").with("id", 7);
        assert_eq!(text(&request, b""), r#"{"type":"put","id":7,"path":"a"}"#);
        let answer = Frame::error(ErrorCode::BadRequest, "m")
            .with_body_len(2)
            .reply_to(&request);
        assert_eq!(
            text(&answer, b"ab"),
            r#"{"type":"error","id":7,"code":"bad_request","message":"m","size":2}ab"#
        );
    }

    #[test]
    fn oversize_header_refused_before_allocation() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        let cap = buf.capacity();
        let err = codec.decode(&mut buf).unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::HeaderTooLarge));
        assert_eq!(buf.capacity(), cap, "nothing reserved for the huge header");
        let mut buf = BytesMut::from(&(65_537u32).to_be_bytes()[..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap_err().code(),
            Some(ErrorCode::HeaderTooLarge)
        );
    }

    #[test]
    fn header_at_exact_limit_is_accepted() {
        let pad = "x".repeat(DEFAULT_MAX_HEADER - r#"{"type":"ping","p":""}"#.len());
        let frame = Frame::new("ping").with("p", pad);
        let wire = encode_all(&[(frame.clone(), vec![])]);
        assert_eq!(wire.len(), 4 + DEFAULT_MAX_HEADER);
        assert_eq!(
            decode_in_pieces(&wire, &[wire.len()]),
            vec![(frame, vec![])]
        );
    }

    fn decode_raw(json: &[u8]) -> Result<Option<Item>, ProtoError> {
        let mut buf = BytesMut::new();
        buf.put_u32(json.len() as u32);
        buf.extend_from_slice(json);
        FrameCodec::default().decode(&mut buf)
    }

    fn code_of(json: &[u8]) -> ErrorCode {
        decode_raw(json).unwrap_err().code().unwrap()
    }

    #[test]
    fn bad_headers() {
        for bad in [
            &b"not json"[..],
            b"[1,2]",
            b"\"ping\"",
            b"{}",
            b"{\"type\":5}",
            b"{\"type\":\"ping\",\"id\":[1]}",
            b"{\"type\":\"ping\",\"id\":null}",
            b"\xff\xfe{}",
            b"{\"type\":\"ping\"} trailing",
        ] {
            assert_eq!(
                code_of(bad),
                ErrorCode::BadHeader,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut zero = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert_eq!(
            FrameCodec::default().decode(&mut zero).unwrap_err().code(),
            Some(ErrorCode::BadHeader)
        );
    }

    #[test]
    fn bad_sizes() {
        for bad in [
            &br#"{"type":"put","size":-1}"#[..],
            br#"{"type":"put","size":1.5}"#,
            br#"{"type":"put","size":1.0}"#,
            br#"{"type":"put","size":"10"}"#,
            br#"{"type":"put","size":null}"#,
            br#"{"type":"put","size":1e3}"#,
            br#"{"type":"put","size":1099511627777}"#,
            br#"{"type":"put","size":18446744073709551616}"#,
        ] {
            assert_eq!(
                code_of(bad),
                ErrorCode::BadSize,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(decode_raw(br#"{"type":"put","size":1099511627776}"#).is_ok());
    }

    #[test]
    fn zero_size_body_has_no_body_items() {
        let msgs = vec![(Frame::new("put").with_body_len(0), vec![]), ping(1, b"")];
        let wire = encode_all(&msgs);
        let got = decode_in_pieces(&wire, &[wire.len()]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.body_len(), 0);
    }

    #[test]
    fn body_larger_than_chunk_is_streamed_in_bounded_pieces() {
        let body: Vec<u8> = (0..(MAX_CHUNK * 3 + 17)).map(|i| (i % 251) as u8).collect();
        let wire = encode_all(&[ping(9, &body)]);
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&wire[..]);
        let mut got = Vec::new();
        let mut chunks = 0;
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            if let Item::Body(b) = item {
                assert!(b.len() <= MAX_CHUNK);
                got.extend_from_slice(&b);
                chunks += 1;
            }
        }
        assert_eq!(got, body);
        assert!(chunks >= 4);
    }

    #[test]
    fn truncated_input_at_eof_is_an_error() {
        let wire = encode_all(&[ping(1, b"abcdef")]);
        for cut in 1..wire.len() {
            let mut codec = FrameCodec::default();
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut result = Ok(None);
            for _ in 0..4 {
                result = codec.decode_eof(&mut buf);
                if !matches!(result, Ok(Some(_))) {
                    break;
                }
            }
            assert!(
                matches!(result, Err(ProtoError::Truncated)),
                "cut {cut}: {result:?}"
            );
        }
    }

    #[test]
    fn encoder_refuses_body_overrun_and_early_header() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        codec
            .encode(&Frame::new("put").with_body_len(3), &mut buf)
            .unwrap();
        assert!(matches!(
            codec.encode(&Frame::new("ping"), &mut buf),
            Err(ProtoError::BodyIncomplete(3))
        ));
        assert!(matches!(
            codec.encode(&b"abcd"[..], &mut buf),
            Err(ProtoError::BodyOverrun { extra: 1 })
        ));
        codec.encode(&b"abc"[..], &mut buf).unwrap();
        codec.encode(&Frame::new("ping"), &mut buf).unwrap();
    }

    #[test]
    fn id_and_type_survive() {
        let json = json!({"type":"ping","id":"req-7"});
        let Ok(Some(Item::Header(f))) = decode_raw(json.to_string().as_bytes()) else {
            panic!("not decoded")
        };
        assert_eq!(f.kind(), "ping");
        assert_eq!(f.id(), Some(&json!("req-7")));
    }

    proptest! {
        #[test]
        fn round_trip(
            msgs in proptest::collection::vec(
                ("[a-z._]{1,12}", proptest::option::of(any::<u32>()), proptest::collection::vec(any::<u8>(), 0..2000), "\\PC{0,40}"),
                1..20),
            cuts in proptest::collection::vec(1usize..700, 0..40),
        ) {
            let items: Vec<(Frame, Vec<u8>)> = msgs
                .into_iter()
                .map(|(kind, id, body, text)| {
                    let mut f = Frame::new(&kind).with("text", text);
                    if let Some(id) = id { f = f.with("id", id); }
                    if !body.is_empty() { f = f.with_body_len(body.len() as u64); }
                    (f, body)
                })
                .collect();
            let wire = encode_all(&items);
            prop_assert_eq!(decode_in_pieces(&wire, &cuts), items);
        }
    }
}
