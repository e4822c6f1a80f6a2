//! `machine ssh`: a remote command or login shell attached to our own
//! stdin, stdout and stderr. With a terminal on both ends it gets a PTY,
//! the local terminal goes to raw mode (restored when done, also on
//! errors) and window size changes follow; without one the bytes pass
//! through untouched, so `echo hi | machine ssh dev cat` works.

use std::io::IsTerminal;

use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, client};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::error::SshError;
use super::session::{Session, signal_status};

/// What a local pipeline reports when its reader went away (128 + SIGPIPE).
const BROKEN_PIPE_STATUS: u32 = 141;

impl Session {
    /// Runs `command`, or a login shell if `None`, attached to this
    /// process's stdin, stdout and stderr, and returns its exit status
    /// (128 + the signal's number if a signal killed it).
    ///
    /// A PTY is requested when stdin and stdout are terminals (a PTY would
    /// mix stderr into stdout and turn `\n` into `\r\n` in redirected
    /// output). Its type comes from `$TERM`, its size from the local
    /// terminal, and resizes are forwarded.
    pub async fn interactive(&self, command: Option<&str>) -> Result<u32, SshError> {
        let shown = command.unwrap_or("a login shell");
        let use_pty =
            cfg!(unix) && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.channel_error(shown, e))?;
        let mut raw_mode = None;
        if use_pty {
            let (cols, rows) = term::window_size().unwrap_or((80, 24));
            let term_name = std::env::var("TERM")
                .ok()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "xterm".to_owned());
            channel
                .request_pty(false, &term_name, cols, rows, 0, 0, &term::pty_modes())
                .await
                .map_err(|e| self.channel_error(shown, e))?;
            raw_mode = Some(
                term::RawMode::enable().map_err(|source| SshError::Terminal {
                    machine: self.target.machine.clone(),
                    what: "putting the local terminal in raw mode",
                    source,
                })?,
            );
        }
        match command {
            Some(c) => channel.exec(true, c).await,
            None => channel.request_shell(true).await,
        }
        .map_err(|e| self.channel_error(shown, e))?;
        let (mut read, write) = channel.split();
        let (stdin_pump, input) = self.read_stdin()?;
        let result = self.attach(shown, &mut read, &write, input, use_pty).await;
        // The input receiver is gone with `attach`; stopping the pump now
        // cannot block on a full queue. Then the terminal is restored,
        // whatever the result.
        drop(stdin_pump);
        drop(raw_mode);
        result
    }

    /// Runs the SSH subsystem `name` (`sftp`) attached to stdin and stdout,
    /// byte for byte, and returns its exit status. `on_ready` runs once the
    /// server has started it, before any byte is relayed.
    pub async fn subsystem(&self, name: &str, on_ready: impl FnOnce()) -> Result<u32, SshError> {
        let shown = format!("the {name} subsystem");
        let mut channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.channel_error(&shown, e))?;
        channel
            .request_subsystem(true, name)
            .await
            .map_err(|e| self.channel_error(&shown, e))?;
        // The server answers before the subsystem says anything: nothing
        // but the reply can arrive first.
        loop {
            match channel.wait().await {
                Some(ChannelMsg::Success) => break,
                Some(ChannelMsg::Failure) | Some(ChannelMsg::Close) | None => {
                    return Err(SshError::SubsystemRefused {
                        machine: self.target.machine.clone(),
                        host: self.target.host.clone(),
                        port: self.target.port,
                        user: self.target.user.clone(),
                        subsystem: name.to_owned(),
                    });
                }
                Some(_) => {}
            }
        }
        on_ready();
        let (mut read, write) = channel.split();
        let (stdin_pump, input) = self.read_stdin()?;
        let result = self.attach(&shown, &mut read, &write, input, false).await;
        drop(stdin_pump);
        result
    }

    fn read_stdin(&self) -> Result<(stdin::Pump, stdin::Receiver), SshError> {
        stdin::start().map_err(|source| SshError::Terminal {
            machine: self.target.machine.clone(),
            what: "reading stdin",
            source,
        })
    }

    /// Moves bytes between the channel and our standard streams until the
    /// server closes the channel.
    async fn attach(
        &self,
        shown: &str,
        read: &mut ChannelReadHalf,
        write: &ChannelWriteHalf<client::Msg>,
        mut input: stdin::Receiver,
        use_pty: bool,
    ) -> Result<u32, SshError> {
        let mut tx = write.make_writer();
        let forward = async move {
            while let Some(chunk) = input.recv().await {
                tx.write_all(&chunk?).await?;
            }
            // stdin ended: EOF for the remote command.
            tx.shutdown().await
        };
        tokio::pin!(forward);
        let mut resizes = term::Resizes::new(use_pty);
        let mut stdout = tokio::io::stdout();
        let mut stderr = tokio::io::stderr();
        let mut status = None;
        let mut started = false;
        let mut forwarded = false;
        let mut broken_pipe = false;
        loop {
            tokio::select! {
                r = &mut forward, if !forwarded => {
                    forwarded = true;
                    if let Err(e) = r {
                        tracing::debug!("forwarding stdin to {} stopped: {e}", self.target.machine);
                    }
                }
                () = resizes.next() => {
                    if let Some((cols, rows)) = term::window_size() {
                        let _ = write.window_change(cols, rows, 0, 0).await;
                    }
                }
                msg = read.wait() => match msg {
                    None | Some(ChannelMsg::Close) => break,
                    Some(ChannelMsg::Data { data }) if !broken_pipe => {
                        if let Err(e) = write_all(&mut stdout, &data).await {
                            if e.kind() != std::io::ErrorKind::BrokenPipe {
                                return Err(SshError::Terminal {
                                    machine: self.target.machine.clone(),
                                    what: "writing to stdout",
                                    source: e,
                                });
                            }
                            // Our reader left (`machine ssh dev cmd | head`):
                            // stop the remote side as a local pipe would.
                            broken_pipe = true;
                            let _ = write.close().await;
                        }
                    }
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                        // Nowhere to report a failing stderr; keep going.
                        let _ = write_all(&mut stderr, &data).await;
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        status = Some(signal_status(&signal_name));
                    }
                    Some(ChannelMsg::Success) => started = true,
                    Some(ChannelMsg::Failure) if !started => {
                        let _ = write.close().await;
                        return Err(SshError::ExecRefused {
                            machine: self.target.machine.clone(),
                            host: self.target.host.clone(),
                            port: self.target.port,
                            user: self.target.user.clone(),
                            command: shown.to_owned(),
                        });
                    }
                    Some(_) => {}
                },
            }
        }
        match status {
            Some(s) => Ok(s),
            None if broken_pipe => Ok(BROKEN_PIPE_STATUS),
            None => Err(SshError::NoExitStatus {
                machine: self.target.machine.clone(),
                command: shown.to_owned(),
            }),
        }
    }
}

async fn write_all(out: &mut (impl AsyncWrite + Unpin), data: &[u8]) -> std::io::Result<()> {
    out.write_all(data).await?;
    // Interactive output must show up now, not when a buffer fills.
    out.flush().await
}

/// Reading stdin so that it can stop: tokio's stdin reads on a blocking
/// thread that cannot be cancelled, so after the remote command ends a
/// pending read would hold the process until the user presses a key (or
/// forever, when stdin is a pipe nobody closes). On Unix a thread polls
/// stdin together with a pipe that, when written, tells it to stop.
#[cfg(unix)]
mod stdin {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::thread::JoinHandle;

    use tokio::sync::mpsc;

    /// Chunks of stdin, or the error that ended reading; closed at EOF.
    pub(super) type Receiver = mpsc::Receiver<io::Result<Vec<u8>>>;

    /// The reading thread; dropping this stops and joins it.
    #[derive(Debug)]
    pub(super) struct Pump {
        stop: Option<OwnedFd>,
        thread: Option<JoinHandle<()>>,
    }

    pub(super) fn start() -> io::Result<(Pump, Receiver)> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe(2) succeeded, so both are open descriptors that
        // nothing else owns.
        let (stop_rx, stop_tx) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&stop_rx, &stop_tx] {
            // Not inherited by processes spawned meanwhile. SAFETY: a
            // valid descriptor; F_SETFD takes an int argument.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        let (tx, rx) = mpsc::channel(8);
        let thread = std::thread::Builder::new()
            .name("ssh-stdin".to_owned())
            .spawn(move || pump(&stop_rx, &tx))?;
        Ok((
            Pump {
                stop: Some(stop_tx),
                thread: Some(thread),
            },
            rx,
        ))
    }

    fn pump(stop: &OwnedFd, tx: &mpsc::Sender<io::Result<Vec<u8>>>) {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: libc::STDIN_FILENO,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: stop.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: `fds` is a valid array of two pollfd for the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                let _ = tx.blocking_send(Err(e));
                return;
            }
            if fds[1].revents != 0 {
                return;
            }
            // A closed stdin (POLLNVAL) counts as an empty one.
            if fds[0].revents & libc::POLLNVAL != 0 {
                return;
            }
            if fds[0].revents == 0 {
                continue;
            }
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            let r = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
            if r == 0 {
                return; // EOF
            }
            if r < 0 {
                let e = io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) {
                    continue;
                }
                let _ = tx.blocking_send(Err(e));
                return;
            }
            let len = usize::try_from(r).unwrap_or(0);
            if tx.blocking_send(Ok(buf[..len].to_vec())).is_err() {
                return; // nobody listens any more
            }
        }
    }

    impl Drop for Pump {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                // SAFETY: writes one byte from a valid buffer to an open
                // descriptor; a failure only means the thread already ended.
                unsafe { libc::write(stop.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
            }
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Elsewhere a detached thread reads stdin; it cannot be stopped, but it
/// does not keep the process alive either.
#[cfg(not(unix))]
mod stdin {
    use std::io::{self, Read};

    use tokio::sync::mpsc;

    pub(super) type Receiver = mpsc::Receiver<io::Result<Vec<u8>>>;

    #[derive(Debug)]
    pub(super) struct Pump;

    pub(super) fn start() -> io::Result<(Pump, Receiver)> {
        let (tx, rx) = mpsc::channel(8);
        std::thread::Builder::new()
            .name("ssh-stdin".to_owned())
            .spawn(move || {
                let mut buf = vec![0u8; 32 * 1024];
                let mut stdin = io::stdin();
                loop {
                    match stdin.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            if tx.blocking_send(Ok(buf[..n].to_vec())).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return;
                        }
                    }
                }
            })?;
        Ok((Pump, rx))
    }
}

/// The local terminal: its size, its raw mode, its resize signal.
#[cfg(unix)]
mod term {
    use russh::Pty;

    /// The terminal's size in columns and rows, from whichever standard
    /// stream is a terminal.
    pub(super) fn window_size() -> Option<(u32, u32)> {
        for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO, libc::STDERR_FILENO] {
            // SAFETY: winsize is plain data; all zeroes is a valid value.
            let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
            // SAFETY: TIOCGWINSZ writes one winsize through the pointer.
            if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
                return Some((u32::from(ws.ws_col), u32::from(ws.ws_row)));
            }
        }
        None
    }

    fn get_termios() -> std::io::Result<libc::termios> {
        // SAFETY: termios is plain data; tcgetattr fills it in.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a termios for the call.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(t)
    }

    /// The local special characters (interrupt, erase, ...), so the remote
    /// terminal treats the keys the user is used to the same way.
    pub(super) fn pty_modes() -> Vec<(Pty, u32)> {
        let Ok(t) = get_termios() else {
            return Vec::new();
        };
        [
            (Pty::VINTR, libc::VINTR),
            (Pty::VQUIT, libc::VQUIT),
            (Pty::VERASE, libc::VERASE),
            (Pty::VKILL, libc::VKILL),
            (Pty::VEOF, libc::VEOF),
            (Pty::VSUSP, libc::VSUSP),
            (Pty::VWERASE, libc::VWERASE),
            (Pty::VREPRINT, libc::VREPRINT),
            (Pty::VLNEXT, libc::VLNEXT),
        ]
        .into_iter()
        .map(|(pty, index)| (pty, u32::from(t.c_cc[index])))
        .collect()
    }

    /// The terminal in raw mode: every key goes to the remote side as is
    /// (Ctrl-C included). Dropping it restores the previous settings.
    pub(super) struct RawMode {
        original: libc::termios,
    }

    impl std::fmt::Debug for RawMode {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("RawMode")
        }
    }

    impl RawMode {
        pub(super) fn enable() -> std::io::Result<RawMode> {
            let original = get_termios()?;
            let mut raw = original;
            // SAFETY: a valid pointer to a termios, changed in place.
            unsafe { libc::cfmakeraw(&mut raw) };
            // SAFETY: a valid pointer to a termios for the call.
            if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSADRAIN, &raw) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(RawMode { original })
        }
    }

    impl Drop for RawMode {
        fn drop(&mut self) {
            // SAFETY: a valid pointer to the settings read at enable().
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSADRAIN, &self.original) };
        }
    }

    /// SIGWINCH, when there is a PTY to resize.
    pub(super) struct Resizes(Option<tokio::signal::unix::Signal>);

    impl Resizes {
        pub(super) fn new(wanted: bool) -> Resizes {
            let signal = wanted
                .then(|| {
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                        .ok()
                })
                .flatten();
            Resizes(signal)
        }

        /// The next resize; never, without a PTY.
        pub(super) async fn next(&mut self) {
            match &mut self.0 {
                Some(signal) => {
                    if signal.recv().await.is_none() {
                        self.0 = None;
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        }
    }
}

/// Without Unix terminals there is no PTY (stdin and stdout are treated as
/// plain streams).
#[cfg(not(unix))]
mod term {
    use russh::Pty;

    pub(super) fn window_size() -> Option<(u32, u32)> {
        None
    }

    pub(super) fn pty_modes() -> Vec<(Pty, u32)> {
        Vec::new()
    }

    #[derive(Debug)]
    pub(super) struct RawMode;

    impl RawMode {
        pub(super) fn enable() -> std::io::Result<RawMode> {
            Ok(RawMode)
        }
    }

    pub(super) struct Resizes;

    impl Resizes {
        pub(super) fn new(_wanted: bool) -> Resizes {
            Resizes
        }

        pub(super) async fn next(&mut self) {
            std::future::pending().await
        }
    }
}
