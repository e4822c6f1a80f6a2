//! A small client for the QEMU Machine Protocol (QMP) on the VM's unix
//! socket: the greeting, capability negotiation, then one command at a
//! time. Asynchronous events QEMU interleaves with replies are skipped.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// A QMP failure.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot reach QMP at {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP at {path}: {message}")]
    Protocol { path: String, message: String },
    #[error("QMP command `{command}` failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

/// How long one exchange may take: QEMU answers QMP from its main loop,
/// which stays responsive even under TCG.
const EXCHANGE: Duration = Duration::from_secs(10);

/// An open QMP session.
#[derive(Debug)]
pub struct Qmp {
    path: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Qmp {
    /// Connects and negotiates capabilities.
    pub async fn connect(socket: &Path) -> Result<Qmp, QmpError> {
        let path = socket.display().to_string();
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.clone(),
                source,
            })?;
        let (read, writer) = stream.into_split();
        let mut qmp = Qmp {
            path,
            reader: BufReader::new(read),
            writer,
        };
        let greeting = qmp.next_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(qmp.protocol(format!("unexpected greeting {greeting}")));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    fn protocol(&self, message: impl Into<String>) -> QmpError {
        QmpError::Protocol {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    async fn next_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = tokio::time::timeout(EXCHANGE, self.reader.read_line(&mut line))
            .await
            .map_err(|_| self.protocol("no answer within 10 s"))?
            .map_err(|e| self.protocol(e.to_string()))?;
        if n == 0 {
            return Err(self.protocol("QEMU closed the connection"));
        }
        serde_json::from_str(&line).map_err(|e| self.protocol(format!("bad JSON {line:?}: {e}")))
    }

    /// Runs a command and returns its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if let Some(args) = arguments {
            request["arguments"] = args;
        }
        let mut text = request.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .await
            .map_err(|e| self.protocol(format!("sending `{command}`: {e}")))?;
        loop {
            let message = self.next_message().await?;
            if message.get("event").is_some() {
                continue;
            }
            if let Some(ret) = message.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = message.get("error") {
                return Err(QmpError::Command {
                    command: command.to_owned(),
                    class: err["class"].as_str().unwrap_or("?").to_owned(),
                    desc: err["desc"].as_str().unwrap_or("?").to_owned(),
                });
            }
            return Err(self.protocol(format!("unexpected message {message}")));
        }
    }

    /// The VM's run state (`running`, `paused`, `shutdown`,
    /// `internal-error`, `guest-panicked`, …).
    pub async fn status(&mut self) -> Result<String, QmpError> {
        let ret = self.execute("query-status", None).await?;
        Ok(ret["status"].as_str().unwrap_or("unknown").to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A QMP peer speaking the protocol's framing: greeting, then one
    /// answer per command, with an event in between to be skipped.
    async fn fake_qemu(listener: UnixListener) {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write
            .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
            .await
            .unwrap();
        while let Some(line) = lines.next_line().await.unwrap() {
            let req: Value = serde_json::from_str(&line).unwrap();
            let reply = match req["execute"].as_str().unwrap() {
                "qmp_capabilities" => json!({"return": {}}),
                "query-status" => {
                    write
                        .write_all(b"{\"event\": \"RESUME\", \"timestamp\": {}}\n")
                        .await
                        .unwrap();
                    json!({"return": {"status": "running", "running": true}})
                }
                other => {
                    json!({"error": {"class": "CommandNotFound", "desc": format!("The command {other} has not been found")}})
                }
            };
            write
                .write_all(format!("{reply}\n").as_bytes())
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn negotiates_skips_events_and_reports_errors() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        tokio::spawn(fake_qemu(listener));
        let mut qmp = Qmp::connect(&sock).await.unwrap();
        assert_eq!(qmp.status().await.unwrap(), "running");
        let err = qmp.execute("no-such", None).await.unwrap_err();
        assert!(err.to_string().contains("CommandNotFound"), "{err}");
    }

    #[tokio::test]
    async fn missing_socket_names_it() {
        let err = Qmp::connect(Path::new("/nonexistent/qmp.sock"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/qmp.sock"), "{err}");
    }
}
