//! Bytes a user uploaded, as the web port serves them: the API's downloads
//! (`/api/files/`), and share links and WebDAV when they come. They are
//! served from the origin of the app and its session cookie, so whatever a
//! file's name, type or content, a browser must never run it as script of
//! this origin. Every such response goes out through [`mark`]:
//!
//! - [`USER_CONTENT_CSP`]: `sandbox` gives a document opened anyway a unique
//!   opaque origin with scripts, forms, plugins and popups off, and
//!   `default-src 'none'` lets it load nothing but images and media. Audio
//!   and video get [`USER_MEDIA_CSP`], the same sandbox keeping this origin
//!   (scripts still off), for the browsers' own player page.
//! - A `Content-Type` under which a browser can only display or save it
//!   ([`Presentation::of`]): images, audio, video and PDF keep their type;
//!   every textual type (HTML, CSS, JavaScript, XML, JSON, source code) is
//!   sent as `text/plain`, which with `nosniff` no browser renders as a page
//!   nor runs as a script or style sheet from another page of this origin
//!   (an `<script src>` on the app or the site pointing at an upload);
//!   anything else keeps its type.
//! - `Content-Disposition: inline` only when asked (`?inline=1`) and only
//!   for those types that cannot script; SVG (a document that runs script,
//!   though harmless as an `<img>`) and every other type are attachments.
//! - `X-Content-Type-Options: nosniff` (the port sends it everywhere; it is
//!   part of this guarantee, so it is set here too).
//! - `Cross-Origin-Resource-Policy: same-origin`: another site (or an opaque
//!   origin, such as a sandboxed upload) cannot embed it; and
//!   `Cross-Origin-Opener-Policy: same-origin`: a window another site opens
//!   on it gets no handle to it.
//!
//! [`send`] serves a stored file that way, with its recorded digests.

use axum::body::Body;
use base64::Engine as _;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};

use crate::store::digest::Digests;

/// The `Content-Security-Policy` of every response whose body a user
/// uploaded. `style-src 'unsafe-inline'` is for the browsers' own viewers
/// (image, text, PDF), whose pages style themselves inline.
pub const USER_CONTENT_CSP: &str =
    "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox";
/// The policy of a user's audio or video file: [`USER_CONTENT_CSP`] with
/// `allow-same-origin`, and still no `allow-scripts`. A browser shows such a
/// file in a page of its own whose player fetches it again with CORS
/// (Chromium's `<video crossorigin>`), which a page of an opaque origin
/// cannot pass; with `nosniff` and an audio or video type, that page holds
/// nothing of the file's but the player, and no script runs in it.
pub const USER_MEDIA_CSP: &str = "default-src 'none'; img-src 'self'; media-src 'self'; \
     style-src 'unsafe-inline'; sandbox allow-same-origin";

/// `Repr-Digest` (RFC 9530): the SHA-256 of the whole file.
pub const REPR_DIGEST: HeaderName = HeaderName::from_static("repr-digest");
/// The BLAKE3 of the whole file, in hex: sockit's own hash, the one the
/// framed `get` ends with and uploads are checked against.
pub const BLAKE3_HEADER: HeaderName = HeaderName::from_static("x-sockit-blake3");

/// How a user's file is presented to a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presentation {
    /// The `Content-Type` it is sent with.
    pub content_type: HeaderValue,
    /// Whether a browser may show it in its window (`inline`): only types
    /// that cannot run script.
    pub displayable: bool,
    /// Its `Content-Security-Policy`: [`USER_CONTENT_CSP`], or
    /// [`USER_MEDIA_CSP`] for audio and video.
    pub csp: &'static str,
}

impl Presentation {
    /// The presentation of a file called `name` (its type is guessed from
    /// the name; `nosniff` keeps the browser to it).
    pub fn of(name: &str) -> Presentation {
        let mime = mime_guess::from_path(name).first_or_octet_stream();
        let (kind, subtype) = (mime.type_().as_str(), mime.subtype().as_str());
        let suffix = mime.suffix().map(|s| s.as_str());
        let essence = mime.essence_str();
        let own = |displayable| Presentation {
            content_type: HeaderValue::from_str(essence)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            displayable,
            csp: USER_CONTENT_CSP,
        };
        let is_xml = subtype == "xml" || suffix == Some("xml");
        let textual = kind == "text"
            || is_xml
            || subtype == "json"
            || suffix == Some("json")
            || matches!(
                subtype,
                "javascript" | "ecmascript" | "x-javascript" | "x-sh" | "toml" | "yaml" | "x-yaml"
            );
        match kind {
            // SVG is a document that runs script; as an `<img>` it cannot,
            // and that needs its type.
            "image" if is_xml => own(false),
            "image" => own(true),
            "audio" | "video" => Presentation {
                csp: USER_MEDIA_CSP,
                ..own(true)
            },
            _ if essence == "application/pdf" => own(true),
            _ if textual => Presentation {
                content_type: HeaderValue::from_static("text/plain; charset=utf-8"),
                ..own(true)
            },
            _ => own(false),
        }
    }
}

/// Marks a response as a user's file called `name`: the policy of its
/// presentation, `nosniff`, CORP and COOP, and `Content-Disposition`
/// (inline when `inline` is asked and the type cannot script). Its `Content-Type` is the caller's, taken from `presentation`
/// (a multipart range response names it in each part).
pub fn mark(headers: &mut HeaderMap, presentation: &Presentation, name: &str, inline: bool) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(presentation.csp),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    let disposition = if inline && presentation.displayable {
        "inline"
    } else {
        "attachment"
    };
    if let Some(v) = content_disposition(disposition, name) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
}

/// `DISPOSITION; filename="ascii"; filename*=UTF-8''percent-encoded`: the
/// plain name for old clients, the exact one for the rest (RFC 6266).
fn content_disposition(disposition: &str, name: &str) -> Option<HeaderValue> {
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    HeaderValue::from_str(&format!(
        "{disposition}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .ok()
}

/// Serves a user's stored file called `name` as the static site serves
/// files (validators, `304`/`412`, `HEAD`, ranges, `416`), marked as user
/// content, with the file's digests when they are known: `Repr-Digest` and
/// [`BLAKE3_HEADER`] describe the whole file, on a `206` too.
pub fn send(
    method: &Method,
    request: &HeaderMap,
    file: std::fs::File,
    meta: &std::fs::Metadata,
    name: &str,
    inline: bool,
    digests: Option<&Digests>,
) -> Response<Body> {
    let presentation = Presentation::of(name);
    let mut r = super::site::send_file(
        method,
        request,
        file,
        meta,
        presentation.content_type.clone(),
    );
    let describes_the_file = matches!(
        r.status(),
        StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
    );
    if let (Some(d), true) = (digests, describes_the_file) {
        let h = r.headers_mut();
        if let Some(sha) = &d.sha256 {
            let b64 = base64::engine::general_purpose::STANDARD.encode(sha);
            if let Ok(v) = HeaderValue::from_str(&format!("sha-256=:{b64}:")) {
                h.insert(REPR_DIGEST, v);
            }
        }
        if let Ok(v) = HeaderValue::from_str(d.blake3.to_hex().as_str()) {
            h.insert(BLAKE3_HEADER, v);
        }
    }
    mark(r.headers_mut(), &presentation, name, inline);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(name: &str) -> (String, bool) {
        let p = Presentation::of(name);
        (p.content_type.to_str().unwrap().to_string(), p.displayable)
    }

    #[test]
    fn only_types_that_cannot_script_keep_their_type_and_may_be_inline() {
        for (name, ty) in [
            ("a.png", "image/png"),
            ("a.JPG", "image/jpeg"),
            ("a.gif", "image/gif"),
            ("a.webp", "image/webp"),
            ("a.mp3", "audio/mpeg"),
            ("a.wav", "audio/wav"),
            ("a.mp4", "video/mp4"),
            ("a.webm", "video/webm"),
            ("a.pdf", "application/pdf"),
        ] {
            assert_eq!(shown(name), (ty.to_string(), true), "{name}");
        }
        let text = ("text/plain; charset=utf-8".to_string(), true);
        for name in [
            "a.txt", "a.html", "a.HTM", "a.xhtml", "a.xml", "a.js", "a.mjs", "a.css", "a.json",
            "a.csv", "a.md", "a.rss", "a.sh",
        ] {
            assert_eq!(shown(name), text, "{name}");
        }
        assert_eq!(shown("a.svg"), ("image/svg+xml".to_string(), false));
        assert_eq!(shown("a.zip"), ("application/zip".to_string(), false));
        for name in ["a", "a.unknown-ext", "a.bin", "a.exe"] {
            let (ty, displayable) = shown(name);
            assert!(!displayable, "{name}: {ty}");
            assert!(!ty.starts_with("text/"), "{name}: {ty}");
        }
    }

    #[test]
    fn marked_responses_are_sandboxed_and_inline_only_when_harmless() {
        let mark_of = |name: &str, inline: bool| {
            let mut h = HeaderMap::new();
            mark(&mut h, &Presentation::of(name), name, inline);
            h
        };
        let h = mark_of("photo.png", true);
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], USER_CONTENT_CSP);
        assert!(USER_CONTENT_CSP.ends_with("; sandbox"));
        for media in ["song.mp3", "clip.webm"] {
            assert_eq!(
                mark_of(media, true)[header::CONTENT_SECURITY_POLICY],
                USER_MEDIA_CSP
            );
        }
        assert!(USER_MEDIA_CSP.ends_with("; sandbox allow-same-origin"));
        for other in ["page.html", "logo.svg", "doc.pdf", "tool.exe"] {
            assert_eq!(
                mark_of(other, true)[header::CONTENT_SECURITY_POLICY],
                USER_CONTENT_CSP
            );
        }
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h["cross-origin-resource-policy"], "same-origin");
        assert_eq!(h["cross-origin-opener-policy"], "same-origin");
        let disposition =
            |h: &HeaderMap| h[header::CONTENT_DISPOSITION].to_str().unwrap().to_string();
        assert!(disposition(&h).starts_with("inline;"));
        assert!(disposition(&mark_of("photo.png", false)).starts_with("attachment;"));
        assert!(disposition(&mark_of("page.html", true)).starts_with("inline;"));
        assert!(disposition(&mark_of("logo.svg", true)).starts_with("attachment;"));
        assert!(disposition(&mark_of("tool.exe", true)).starts_with("attachment;"));
        assert_eq!(
            disposition(&mark_of("r\u{e9}sum\u{e9} \"1\".pdf", false)),
            "attachment; filename=\"r_sum_ _1_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22%2Epdf"
        );
    }
}
