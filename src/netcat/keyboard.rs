//! Typing at a terminal (`connect` and `listen` with stdin a terminal):
//! lines read after a prompt on stderr, the peer's bytes to stdout
//! untouched.
//!
//! A line editor that prints replies above the line being typed (as
//! `sockit chat` does) was tried and taken out again: when the peer ends
//! the conversation, the program exits while the editor holds the terminal
//! in raw mode with output still queued in it, so the shell got a raw
//! terminal and the last reply could land after the exit. Doing it right
//! means ending the editor's read from outside, which rustyline offers no
//! way to do; left for issue 20.

use std::io::{self, BufRead, Write};

use super::{CopyError, PROMPT};

/// Where typed lines come from.
pub(super) struct Keyboard;

/// Where the peer's bytes go while someone types: stdout.
#[derive(Clone)]
pub(super) struct Screen;

/// The keyboard and screen of an interactive conversation.
pub(super) fn open() -> (Keyboard, Screen) {
    (Keyboard, Screen)
}

impl Keyboard {
    /// Reads a line at a time after a prompt, handing each (with its
    /// newline) to `send`, until Ctrl-D; returns the bytes handed over. The
    /// shell's prompt then starts on a line of its own.
    pub(super) fn lines(
        self,
        mut send: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<u64, CopyError> {
        let mut total = 0u64;
        let stdin = io::stdin();
        let mut line = Vec::new();
        loop {
            eprint!("{PROMPT}");
            line.clear();
            match stdin.lock().read_until(b'\n', &mut line) {
                Ok(0) => {
                    eprintln!();
                    return Ok(total);
                }
                Ok(_) => {}
                Err(e) => return Err(CopyError::Read(e)),
            }
            send(&line).map_err(|e| CopyError::Write(e, total))?;
            total += line.len() as u64;
        }
    }
}

impl Screen {
    /// Whether the peer's bytes are shown above an edited line (never,
    /// for now: see the module's note).
    pub(super) fn edits(&self) -> bool {
        false
    }
}

impl Write for Screen {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stdout().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}
