//! A minimal HTTP/1.1 client over `std::net::TcpStream`, so the protocol tests see the
//! bytes the server sends: status line, headers, chunked watch streams.

#![allow(dead_code, reason = "each test file uses a different part of this module")]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use kube_testserver::TestApiServer;
use serde_json::{Value, json};

/// A response: status code, headers (names lower-cased) and decoded body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

pub fn get(server: &TestApiServer, path: &str) -> Reply {
    request(server, "GET", path, None, "")
}

/// Sends one request and reads the whole response.
pub fn request(
    server: &TestApiServer,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> Reply {
    let mut conn = Conn::open(server, method, path, content_type, body);
    let mut bytes = Vec::new();
    while let Some(data) = conn.next_data(Duration::from_secs(10)).expect("the whole response within 10 s") {
        bytes.extend(data);
    }
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!("{method} {path}: body is not JSON ({e}): {}", String::from_utf8_lossy(&bytes))
        })
    };
    Reply { status: conn.status, headers: conn.headers, body }
}

/// One connection with a response being read, its body decoded as it arrives.
struct Conn {
    stream: TcpStream,
    raw: Vec<u8>,
    status: u16,
    headers: Vec<(String, String)>,
    chunked: bool,
    /// Body bytes still expected when the body has a Content-Length.
    remaining: usize,
    ended: bool,
}

impl Conn {
    fn open(
        server: &TestApiServer,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Self {
        let addr = server.url().trim_start_matches("http://").to_owned();
        let mut stream = TcpStream::connect(&addr).expect("connecting to the test server");
        let content_type = content_type.map(|ct| format!("Content-Type: {ct}\r\n")).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n{content_type}\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.as_bytes())).expect("sending");
        let mut conn = Self {
            stream,
            raw: Vec::new(),
            status: 0,
            headers: Vec::new(),
            chunked: false,
            remaining: 0,
            ended: false,
        };
        conn.read_head();
        conn
    }

    fn read_head(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let end = loop {
            if let Some(end) = find(&self.raw, b"\r\n\r\n") {
                break end;
            }
            assert!(
                self.fill(deadline - Instant::now()).expect("reading the response head"),
                "connection closed before the response head"
            );
        };
        let head = String::from_utf8(self.raw.drain(..end + 4).collect()).expect("an ASCII response head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        self.status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status code");
        self.headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let header = |name: &str| self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        self.chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        self.remaining = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    }

    /// Reads more bytes; `Ok(false)` at end of stream, `Err` when `wait` passes first.
    fn fill(&mut self, wait: Duration) -> Result<bool, ()> {
        self.stream
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .expect("setting a read timeout");
        let mut buf = [0_u8; 8192];
        match self.stream.read(&mut buf) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(()),
            Err(e) => panic!("reading from the test server: {e}"),
        }
    }

    /// The next piece of body: `Ok(None)` at its end, `Err` if nothing came within `wait`.
    fn next_data(&mut self, wait: Duration) -> Result<Option<Vec<u8>>, ()> {
        let deadline = Instant::now() + wait;
        loop {
            if self.ended {
                return Ok(None);
            }
            if let Some(data) = self.take_decoded() {
                return Ok(Some(data));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(());
            }
            if !self.fill(left)? {
                self.ended = true;
            }
        }
    }

    fn take_decoded(&mut self) -> Option<Vec<u8>> {
        if !self.chunked {
            if self.remaining == 0 {
                self.ended = true;
                return None;
            }
            let n = self.remaining.min(self.raw.len());
            if n == 0 {
                return None;
            }
            self.remaining -= n;
            return Some(self.raw.drain(..n).collect());
        }
        let line_end = find(&self.raw, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size_text:?}"));
        if size == 0 {
            self.ended = true;
            return None;
        }
        if self.raw.len() < line_end + 2 + size + 2 {
            return None;
        }
        let data = self.raw[line_end + 2..line_end + 2 + size].to_vec();
        self.raw.drain(..line_end + 2 + size + 2);
        Some(data)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What a watch stream gave next.
#[derive(Debug)]
pub enum Next {
    Event(Value),
    /// The server ended the stream.
    End,
    /// Nothing arrived in the time allowed.
    Quiet,
}

/// An open watch, read one JSON line at a time.
pub struct Watch {
    conn: Conn,
    lines: Vec<u8>,
    pub status: u16,
}

impl Watch {
    pub fn open(server: &TestApiServer, path: &str) -> Self {
        let conn = Conn::open(server, "GET", path, None, "");
        let status = conn.status;
        assert_eq!(status, 200, "watch {path}");
        Self { conn, lines: Vec::new(), status }
    }

    pub fn next(&mut self, wait: Duration) -> Next {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(end) = self.lines.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.lines.drain(..=end).collect();
                return Next::Event(serde_json::from_slice(&line).expect("a watch line is one JSON object"));
            }
            match self.conn.next_data(deadline.saturating_duration_since(Instant::now())) {
                Ok(Some(data)) => self.lines.extend(data),
                Ok(None) => return Next::End,
                Err(()) => return Next::Quiet,
            }
        }
    }

    /// The next event, which must come within 5 s.
    pub fn event(&mut self) -> Value {
        match self.next(Duration::from_secs(5)) {
            Next::Event(e) => e,
            other => panic!("expected a watch event within 5 s, got {other:?}"),
        }
    }

    /// The next event that is not a BOOKMARK.
    pub fn change(&mut self) -> Value {
        loop {
            let event = self.event();
            if event["type"] != "BOOKMARK" {
                return event;
            }
        }
    }
}

/// `(type, name, resourceVersion)` of a watch event, for compact assertions.
pub fn summary(event: &Value) -> (String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        s(&event["type"]),
        s(&event["object"]["metadata"]["name"]),
        s(&event["object"]["metadata"]["resourceVersion"]),
    )
}

pub fn pod(namespace: &str, name: &str, node: &str, labels: &Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": namespace, "labels": labels },
        "spec": { "nodeName": node, "containers": [{ "name": "main", "image": "busybox" }] },
    })
}

pub fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a numeric resourceVersion")
}

pub fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("a list has items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}
