//! The CLI's side of the API: HTTP/1.1 over the Unix socket, a connection per call or one
//! kept open for several.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode, body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use super::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the agent at {path}: {source} (is `enforcer agent` running? pass --socket to use another path)"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the agent: {0}")]
    Http(String),
    /// The agent answered with an error status.
    #[error("{message}")]
    Api { status: u16, message: String },
}

impl ClientError {
    /// The documented exit code: 1 failure, 2 invalid input, 3 not found, 4 not allowed.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Connect { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => 4,
            Self::Api { status: 400 | 405 | 413, .. } => 2,
            Self::Api { status: 404, .. } => 3,
            Self::Api { status: 403, .. } => 4,
            _ => 1,
        }
    }
}

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Self { socket: socket.to_owned() }
    }

    /// Opens one connection for several requests (HTTP/1.1 keep-alive).
    pub async fn connect(&self) -> Result<Connection, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect { path: self.socket.clone(), source })?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(connection);
        Ok(Connection { sender })
    }

    /// Sends one request on a connection of its own and returns the response with its
    /// body still streaming.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        self.connect().await?.send(method, path, body).await
    }

    /// Sends one request on a connection of its own and decodes the JSON answer.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<T, ClientError> {
        self.connect().await?.call(method, path, body).await
    }

    /// Sends `body` as JSON on a connection of its own and decodes the JSON answer.
    pub async fn call_json<T: DeserializeOwned, B: serde::Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.connect().await?.call_json(method, path, body).await
    }
}

/// An open connection to the agent's API.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Sends one request and returns the response with its body still streaming.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        self.send_as(method, path, body, "application/yaml").await
    }

    /// Sends one request and decodes the JSON answer.
    pub async fn call<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<T, ClientError> {
        decode(self.send(method, path, body).await?).await
    }

    /// Sends `body` as JSON and decodes the JSON answer.
    pub async fn call_json<T: DeserializeOwned, B: serde::Serialize + ?Sized>(
        &mut self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let text = serde_json::to_string(body)
            .map_err(|e| ClientError::Http(format!("encoding the request: {e}")))?;
        decode(self.send_as(method, path, Some(text), "application/json").await?).await
    }

    /// Sends one request whose body is of media type `content_type`.
    async fn send_as(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
        content_type: &'static str,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        self.sender.ready().await.map_err(|e| ClientError::Http(e.to_string()))?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "enforcer")
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let response =
            self.sender.send_request(request).await.map_err(|e| ClientError::Http(e.to_string()))?;
        if response.status() != StatusCode::OK {
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            let message = serde_json::from_slice::<ApiError>(&bytes)
                .map_or_else(|_| String::from_utf8_lossy(&bytes).into_owned(), |e| e.error);
            return Err(ClientError::Api { status, message });
        }
        Ok(response)
    }
}

/// The JSON answer of a response.
async fn decode<T: DeserializeOwned>(response: hyper::Response<Incoming>) -> Result<T, ClientError> {
    let bytes =
        response.into_body().collect().await.map_err(|e| ClientError::Http(e.to_string()))?.to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Http(format!("unexpected answer: {e}")))
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
