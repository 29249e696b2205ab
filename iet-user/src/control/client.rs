//! A blocking control-socket client (ietadm, tests).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::protocol::{Envelope, PROTOCOL_VERSION, Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach ietd at {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad answer from ietd: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("ietd closed the control connection")]
    Closed,
}

pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let sock = UnixStream::connect(path).map_err(|e| ClientError::Connect {
            path: path.display().to_string(),
            source: e,
        })?;
        sock.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client {
            reader: BufReader::new(sock.try_clone()?),
            writer: sock,
        })
    }

    pub fn call(&mut self, request: Request) -> Result<Response, ClientError> {
        let env = Envelope {
            version: PROTOCOL_VERSION,
            request,
        };
        let mut line = serde_json::to_string(&env)?;
        line.push('\n');
        self.raw(&line)
    }

    /// Sends one raw line (tests use it for malformed requests).
    pub fn raw(&mut self, line: &str) -> Result<Response, ClientError> {
        self.writer.write_all(line.as_bytes())?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            return Err(ClientError::Closed);
        }
        Ok(serde_json::from_str(&answer)?)
    }
}
