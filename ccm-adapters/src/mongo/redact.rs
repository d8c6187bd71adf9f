//! Keeping passwords out of messages: the hosts of a connection string for error texts, and
//! scrubbing of any password text a driver message might echo.

/// What is known about a connection string without connecting.
#[derive(Debug, Clone, Default)]
pub(crate) struct UriFacts {
    /// `host:port` entries as written (comma-separated list of the authority).
    pub(crate) hosts: Vec<String>,
    /// Password texts to scrub: as written and percent-decoded.
    pub(crate) secrets: Vec<String>,
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads hosts and password from `mongodb://user:pass@h1:1,h2:2/db?opts` (or `mongodb+srv://`)
/// without a full parse, so it works on strings the driver rejects too.
pub(crate) fn uri_facts(uri: &str) -> UriFacts {
    let rest = match uri.find("://") {
        Some(i) => &uri[i + 3..],
        None => uri,
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let (userinfo, hostlist) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let mut secrets = Vec::new();
    if let Some(ui) = userinfo {
        if let Some(i) = ui.find(':') {
            let pw = &ui[i + 1..];
            if !pw.is_empty() {
                secrets.push(pw.to_string());
                let decoded = percent_decode(pw);
                if decoded != pw {
                    secrets.push(decoded);
                }
            }
        }
    }
    let hosts = hostlist
        .split(',')
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    UriFacts { hosts, secrets }
}

/// `text` with every secret replaced by `***`.
pub(crate) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if !s.is_empty() {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_password_are_found() {
        let f = uri_facts("mongodb://ccm:s3cr%40t@db1:27017,db2:27018/specs?authSource=admin");
        assert_eq!(f.hosts, ["db1:27017", "db2:27018"]);
        assert_eq!(f.secrets, ["s3cr%40t", "s3cr@t"]);
        assert_eq!(
            scrub("auth failed for ccm:s3cr@t and s3cr%40t", &f.secrets),
            "auth failed for ccm:*** and ***"
        );
    }

    #[test]
    fn no_userinfo_means_no_secret() {
        let f = uri_facts("mongodb://127.0.0.1:27117/?directConnection=true");
        assert_eq!(f.hosts, ["127.0.0.1:27117"]);
        assert!(f.secrets.is_empty());
        let g = uri_facts("mongodb://user@h");
        assert_eq!(g.hosts, ["h"]);
        assert!(g.secrets.is_empty());
    }
}
