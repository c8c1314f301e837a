//! Typing at a terminal (`connect` and `listen` with stdin a terminal).
//!
//! When stdout is a terminal too, lines are read with a line editor
//! (rustyline) and the peer's bytes are printed above the line being typed,
//! which stays intact; otherwise lines are read plainly after a prompt on
//! stderr and the peer's bytes go to stdout untouched (they may be a file's).

use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};

use rustyline::error::ReadlineError;
use rustyline::ExternalPrinter;

use super::{CopyError, PROMPT};

/// Where typed lines come from.
pub(super) struct Keyboard {
    editor: Option<rustyline::DefaultEditor>,
}

/// Where the peer's bytes go while someone types: above the edited line,
/// or stdout.
#[derive(Clone)]
pub(super) struct Screen {
    printer: Option<Arc<Mutex<Box<dyn ExternalPrinter + Send>>>>,
}

/// The keyboard and screen of an interactive conversation. Without a
/// terminal on both sides (or if the editor cannot start) it falls back to
/// plain lines and stdout.
pub(super) fn open() -> (Keyboard, Screen) {
    let plain = (Keyboard { editor: None }, Screen { printer: None });
    if !io::stdout().is_terminal() {
        return plain;
    }
    let Ok(mut editor) = rustyline::DefaultEditor::new() else {
        return plain;
    };
    let Ok(printer) = editor.create_external_printer() else {
        return plain;
    };
    let printer: Box<dyn ExternalPrinter + Send> = Box::new(printer);
    (
        Keyboard {
            editor: Some(editor),
        },
        Screen {
            printer: Some(Arc::new(Mutex::new(printer))),
        },
    )
}

impl Keyboard {
    /// Reads a line at a time after a prompt, handing each (with its
    /// newline) to `send`, until Ctrl-D; returns the bytes handed over. The
    /// shell's prompt then starts on a line of its own. Ctrl-C ends the
    /// program, as it does without the editor.
    pub(super) fn lines(
        self,
        mut send: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<u64, CopyError> {
        let mut total = 0u64;
        let Some(mut editor) = self.editor else {
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
        };
        loop {
            match editor.readline(PROMPT) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    let line = format!("{line}\n");
                    send(line.as_bytes()).map_err(|e| CopyError::Write(e, total))?;
                    total += line.len() as u64;
                }
                Err(ReadlineError::Eof) => return Ok(total),
                Err(ReadlineError::Interrupted) => std::process::exit(130),
                Err(e) => return Err(CopyError::Read(io::Error::other(e.to_string()))),
            }
        }
    }
}

impl Screen {
    /// Whether the peer's bytes are shown above an edited line (as text)
    /// rather than written to stdout as they are.
    pub(super) fn edits(&self) -> bool {
        self.printer.is_some()
    }
}

impl Write for Screen {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(printer) = &self.printer else {
            return io::stdout().write(buf);
        };
        let mut text = String::from_utf8_lossy(buf).into_owned();
        // Between two lines the editor writes the text as it is, and its
        // next prompt would erase a line without its newline.
        if !text.ends_with('\n') {
            text.push('\n');
        }
        printer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .print(text)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &self.printer {
            Some(_) => Ok(()),
            None => io::stdout().flush(),
        }
    }
}
