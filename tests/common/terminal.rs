//! A terminal for the tests of interactive commands: a tmux server on a
//! private socket running one command, read back through `capture-pane`
//! as a person would see it. `.ci/run` installs tmux; elsewhere the tests
//! that need it say so and pass ([`Terminal::available`]).

/// A terminal of its own (a tmux server on a private socket) running one
/// command, read back through `capture-pane` as a person would see it.
pub struct Terminal {
    socket: String,
}

impl Terminal {
    /// Whether tmux is here (outside CI a missing one skips the test).
    pub fn available() -> bool {
        !super::missing("tmux", "apt-get install tmux", || {
            super::runs("tmux", &["-V"])
        })
    }

    pub fn start(command: &str) -> Terminal {
        let socket = format!("sockit-test-{}-{}", std::process::id(), rand_suffix());
        let ok = std::process::Command::new("tmux")
            .args(["-L", &socket, "new-session", "-d", "-x", "120", "-y", "40"])
            .arg(command)
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux did not start");
        Terminal { socket }
    }

    pub fn tmux(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` as one write, as a paste or an input method delivers it.
    pub fn paste(&self, text: &str) {
        self.tmux(&["send-keys", "-l", text]);
    }

    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    /// Waits until the screen shows `want`; the screen is the event.
    pub fn shows(&self, want: &str) -> String {
        let mut screen = String::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            screen = self.screen();
            if screen.contains(want) {
                return screen;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("the screen never showed {want:?}:\n{screen}");
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}
