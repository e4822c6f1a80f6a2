//! Runs a command on a pseudo-terminal, for the tests of what `machine`
//! does only on a terminal: the download progress bar (stderr on the
//! terminal) and `machine ssh`'s interactive session (all three streams,
//! as the command's controlling terminal, so it can be typed into and
//! resized). The test watches the output as it arrives and can wait for a
//! given state of it, so it never has to guess with sleeps.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the terminal has shown so far, and whether the last writer is gone.
#[derive(Debug, Default)]
struct Screen {
    bytes: Vec<u8>,
    closed: bool,
}

/// A child process on a pseudo-terminal.
#[derive(Debug)]
pub struct Terminal {
    child: Child,
    /// The master end, for typing and resizing.
    master: File,
    screen: Arc<(Mutex<Screen>, Condvar)>,
    reader: Option<JoinHandle<()>>,
}

impl Terminal {
    /// Starts `cmd` with stderr on a new pseudo-terminal and stdout thrown
    /// away (data, not for the screen).
    pub fn spawn(mut cmd: Command) -> Self {
        let (master, slave) = open_pty(80, 24);
        cmd.stderr(Stdio::from(slave)).stdout(Stdio::null());
        Self::start(cmd, master)
    }

    /// Starts `cmd` in a new session whose controlling terminal is a new
    /// pseudo-terminal of `cols` × `rows`, with stdin, stdout and stderr
    /// all on it, as in a terminal window.
    pub fn interactive(mut cmd: Command, cols: u16, rows: u16) -> Self {
        let (master, slave) = open_pty(cols, rows);
        let out = slave.try_clone().expect("dup the terminal");
        let err = slave.try_clone().expect("dup the terminal");
        cmd.stdin(Stdio::from(slave))
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        // SAFETY: setsid and ioctl are async-signal-safe, and the closure
        // touches nothing else of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Self::start(cmd, master)
    }

    fn start(mut cmd: Command, master: OwnedFd) -> Self {
        let child = cmd.spawn().expect("start the command on a terminal");
        // The Command holds the slave end; without dropping it the master
        // never sees the end of output.
        drop(cmd);
        let master = File::from(master);
        let reading = master.try_clone().expect("dup the terminal's master");
        let screen = Arc::new((Mutex::new(Screen::default()), Condvar::new()));
        let reader = {
            let screen = screen.clone();
            let mut master = reading;
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    // Linux answers EIO once every slave descriptor is closed.
                    let n = master.read(&mut buf).unwrap_or(0);
                    let (lock, cv) = &*screen;
                    let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
                    if n == 0 {
                        s.closed = true;
                        cv.notify_all();
                        return;
                    }
                    s.bytes.extend_from_slice(&buf[..n]);
                    cv.notify_all();
                }
            })
        };
        Self {
            child,
            master,
            screen,
            reader: Some(reader),
        }
    }

    /// Types `text` into the terminal.
    pub fn type_in(&mut self, text: &str) {
        self.master
            .write_all(text.as_bytes())
            .expect("write to the terminal");
    }

    /// Changes the window size, as a terminal emulator does when its window
    /// is resized (the foreground process gets SIGWINCH).
    pub fn resize(&self, cols: u16, rows: u16) {
        let ws = winsize(cols, rows);
        // SAFETY: TIOCSWINSZ reads one winsize through the pointer.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(rc, 0, "resize: {}", std::io::Error::last_os_error());
    }

    /// The terminal's local modes (`c_lflag`: ICANON, ECHO, ...) as the
    /// command left them.
    pub fn local_modes(&self) -> libc::tcflag_t {
        // SAFETY: termios is plain data; tcgetattr fills it in.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // On Linux the master reports the pair's settings.
        // SAFETY: a valid descriptor and a valid pointer.
        let rc = unsafe { libc::tcgetattr(self.master.as_raw_fd(), &mut t) };
        assert_eq!(rc, 0, "tcgetattr: {}", std::io::Error::last_os_error());
        t.c_lflag
    }

    /// Everything shown so far, as text.
    pub fn text(&self) -> String {
        let s = self.screen.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&s.bytes).into_owned()
    }

    /// Waits until what was shown so far satisfies `pred`. Panics with the
    /// output if the output ends or `limit` passes first.
    #[track_caller]
    pub fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let shown = self.wait_until(limit, |s| {
            s.closed || pred(&String::from_utf8_lossy(&s.bytes))
        });
        assert!(
            pred(&shown),
            "the terminal never showed {what} (within {limit:?}); it showed:\n{shown:?}"
        );
        shown
    }

    /// Waits until the screen satisfies `done` or `limit` passes, and
    /// returns what it shows.
    fn wait_until(&self, limit: Duration, done: impl Fn(&Screen) -> bool) -> String {
        let deadline = Instant::now() + limit;
        let (lock, cv) = &*self.screen;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            if done(&s) || now >= deadline {
                return String::from_utf8_lossy(&s.bytes).into_owned();
            }
            s = cv
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for the command to finish (killing it after `limit`) and
    /// returns its status and everything it showed.
    #[track_caller]
    pub fn finish(&mut self, limit: Duration) -> (ExitStatus, String) {
        // The output ends when the last holder of the terminal, the command
        // or anything it left running, closes it.
        let shown = self.wait_until(limit, |s| s.closed);
        let closed = self.screen.0.lock().map(|s| s.closed).unwrap_or(true);
        if !closed {
            let _ = self.child.kill();
        }
        let status = self.child.wait().expect("wait for the command");
        assert!(
            closed,
            "the command did not finish within {limit:?} ({status}); it showed:\n{shown:?}"
        );
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status, shown)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if self.reader.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn winsize(cols: u16, rows: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// A new pseudo-terminal pair of `cols` × `rows`: (master, slave).
fn open_pty(cols: u16, rows: u16) -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let ws = winsize(cols, rows);
    // SAFETY: openpty writes two descriptors into the pointed-to ints and
    // reads the window size (null name and termios are allowed).
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    for fd in [master, slave] {
        // Other tests in this process start commands too; they must not
        // inherit the terminal and keep it open.
        // SAFETY: F_SETFD on a descriptor this function owns.
        let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        assert_eq!(rc, 0, "fcntl: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened by openpty and are owned here.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}
