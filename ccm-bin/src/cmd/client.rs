//! The CLI's HTTP client of a running daemon's `/api/v1`: `CCM_URL` (default
//! `http://127.0.0.1:8080`) and `CCM_API_TOKEN` from the environment, JSON in and out, server
//! errors shown with their code and message, and tables for people.

use serde_json::Value;
use std::time::Duration;

/// Default server.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// An answer that is not 2xx.
#[derive(Debug, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ServerError {
    /// HTTP status.
    pub status: u16,
    /// The error code (`not_found`, `invalid`, …).
    pub code: String,
    /// The message.
    pub message: String,
    /// The whole error body.
    pub body: Value,
}

/// A blocking client (its own single-threaded runtime).
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Client {
    /// From `CCM_URL` and `CCM_API_TOKEN`.
    pub fn from_env() -> anyhow::Result<Client> {
        let base = std::env::var("CCM_URL")
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_URL.to_string());
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("CCM_URL: expected an http:// or https:// URL, got {base:?}");
        }
        let token = std::env::var("CCM_API_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
            rt,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    fn send(&self, r: reqwest::RequestBuilder) -> anyhow::Result<(u16, String)> {
        let base = self.base.clone();
        self.rt.block_on(async move {
            let resp = r
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("cannot reach ccm at {base} (CCM_URL): {e}"))?;
            let status = resp.status().as_u16();
            let text = resp.text().await?;
            Ok((status, text))
        })
    }

    fn json(&self, r: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let (status, text) = self.send(r)?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            return Ok(v);
        }
        let e = &v["error"];
        Err(ServerError {
            status,
            code: e["code"].as_str().unwrap_or("http_error").to_string(),
            message: e["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string()),
            body: v.clone(),
        }
        .into())
    }

    /// `GET path` (with `query` pairs), as JSON.
    pub fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.json(self.request(reqwest::Method::GET, path).query(query))
    }

    /// `GET path` as text.
    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let (status, text) = self.send(self.request(reqwest::Method::GET, path))?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Err(ServerError {
            status,
            code: v["error"]["code"].as_str().unwrap_or("http_error").into(),
            message: v["error"]["message"].as_str().unwrap_or(&text).into(),
            body: v,
        }
        .into())
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.json(self.request(reqwest::Method::POST, path).json(body))
    }
}

/// Percent-encodes one path segment.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Prints `v` as pretty JSON.
pub fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A value as table text (`-` for null).
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints rows under `headers` with aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width.get(i).copied().unwrap_or(0)))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// An admission answer in one line.
pub fn admission_line(a: &Value) -> String {
    match a["decision"].as_str() {
        Some("accepted") => {
            let p = &a["placement"];
            let wher = match p["kind"].as_str() {
                Some("worker") => format!("on worker {}", cell(&p["worker_id"])),
                Some("launch") => format!(
                    "on a new {} worker in {} launched at {}",
                    cell(&p["template"]),
                    cell(&p["region"]),
                    cell(&p["launch_at"])
                ),
                Some("beyond_horizon") => "beyond the planning horizon".into(),
                _ => p.to_string(),
            };
            format!("accepted {wher}, ready by {}", cell(&a["ready_by"]))
        }
        _ => refusal_line(a),
    }
}

/// A refusal in one line.
pub fn refusal_line(r: &Value) -> String {
    format!(
        "rejected ({}): {}{}",
        cell(&r["constraint"]),
        cell(&r["reason"]),
        match r["earliest_start"].as_str() {
            Some(t) => format!("; earliest slot that would work: {t}"),
            None => String::new(),
        }
    )
}
