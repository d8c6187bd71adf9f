//! Keeping credentials out of logs, errors and `Debug`: the one redaction of URLs and URIs.
//!
//! [`redact_url`] hides the password of the userinfo (`scheme://user:***@host`) and the value
//! of every sensitive query or fragment parameter (a name containing `token`, `password`,
//! `passwd`, `pwd`, `secret`, `key`, `sig` or `credential`, in any case). The userinfo's `@`
//! is one followed by a host list: the last such `@` with no `?` or `#` before it (so a
//! password holding `/`, `:` or `@` is hidden whole, and an `@` in a query value is not taken
//! for it), else the first such `@` (a password holding `?` or `#`). A raw password holding
//! `?` or `#` together with `/`, `@`, `=` or `&` is ambiguous; percent-encode such passwords.
//! [`redact_text`] applies it to every URL inside a free text (an HTTP client's error).

/// Query / fragment parameter names (lowercase fragments) whose values are hidden.
pub const SENSITIVE_PARAMS: &[&str] = &[
    "token",
    "password",
    "passwd",
    "pwd",
    "secret",
    "key",
    "sig",
    "credential",
];

/// What replaces a hidden value.
pub const MASK: &str = "***";

/// Whether a query parameter named `name` carries a secret.
///
/// ```
/// use ccm_core::redact::is_sensitive_param;
/// assert!(is_sensitive_param("X-Amz-Signature"));
/// assert!(is_sensitive_param("access_TOKEN"));
/// assert!(!is_sensitive_param("authSource"));
/// ```
pub fn is_sensitive_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SENSITIVE_PARAMS.iter().any(|s| n.contains(s))
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':' | ',' | '%')
}

/// Where the userinfo of `rest` (the text after `scheme://`) ends. Candidates are the `@`s
/// followed by a non-empty host list (up to `/`, `?`, `#` or the end) and preceded by a user
/// name holding no `/`, `?` or `#`; the last candidate with no `?`/`#` before it wins, else
/// the first candidate when no `/` precedes its `?`/`#`.
fn userinfo_end(rest: &str) -> Option<usize> {
    let candidates: Vec<usize> = rest
        .match_indices('@')
        .map(|(i, _)| i)
        .filter(|&at| {
            let after = &rest[at + 1..];
            let host_end = after.find(['/', '?', '#']).unwrap_or(after.len());
            let host = &after[..host_end];
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or(userinfo);
            !host.is_empty() && host.chars().all(is_host_char) && !user.contains(['/', '?', '#'])
        })
        .collect();
    // A userinfo with `?`/`#` in it is taken only when no `/` comes before them: otherwise
    // the `@` is in a query or fragment of `host/path?…`.
    // the `@` is in a query or fragment of `host/path?…`; nor with `=` or `&` after them
    // (then it is a query value of `host:port?name=…@…`).
    let fallback = candidates.first().copied().filter(|&at| {
        let ui = &rest[..at];
        let q = ui.find(['?', '#']).unwrap_or(ui.len());
        !ui[..q].contains('/') && !ui[q..].contains(['=', '&'])
    });
    candidates
        .iter()
        .rev()
        .find(|&&at| !rest[..at].contains(['?', '#']))
        .copied()
        .or(fallback)
}

/// The password of `uri`'s userinfo as written, if it has one (for scrubbing driver
/// messages that might echo it).
///
/// ```
/// use ccm_core::redact::password_of;
/// assert_eq!(password_of("mongodb://admin:Pa/ss@h:27017/db"), Some("Pa/ss"));
/// assert_eq!(password_of("mongodb://admin@h"), None);
/// ```
pub fn password_of(uri: &str) -> Option<&str> {
    let start = uri.find("://")?;
    if !is_scheme(&uri[..start]) {
        return None;
    }
    let rest = &uri[start + 3..];
    let end = userinfo_end(rest)?;
    let (_, pw) = rest[..end].split_once(':')?;
    (!pw.is_empty()).then_some(pw)
}

/// The host list of `uri` (after any userinfo, up to the path, query or fragment).
///
/// ```
/// assert_eq!(ccm_core::redact::hosts_of("mongodb://u:p/w@db1:1,db2:2/x"), "db1:1,db2:2");
/// ```
pub fn hosts_of(uri: &str) -> &str {
    let rest = match uri.find("://") {
        Some(i) => &uri[i + 3..],
        None => uri,
    };
    let after = match userinfo_end(rest) {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    &after[..after.find(['/', '?', '#']).unwrap_or(after.len())]
}

fn redact_params(params: &str, out: &mut String) {
    for (i, pair) in params.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if is_sensitive_param(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(MASK);
            }
            _ => out.push_str(pair),
        }
    }
}

/// `uri` with the userinfo password and sensitive query / fragment values replaced by `***`;
/// text that is not a `scheme://` URI is returned unchanged.
///
/// ```
/// use ccm_core::redact::redact_url;
/// assert_eq!(redact_url("mongodb://admin:Pa/ss@db:27017/x"), "mongodb://admin:***@db:27017/x");
/// assert_eq!(redact_url("https://h/hook?Token=abc&x=1"), "https://h/hook?Token=***&x=1");
/// assert_eq!(redact_url("http://h:8080/"), "http://h:8080/");
/// ```
pub fn redact_url(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else {
        return uri.to_string();
    };
    if !is_scheme(&uri[..scheme_end]) {
        return uri.to_string();
    }
    let rest = &uri[scheme_end + 3..];
    let mut out = String::with_capacity(uri.len());
    out.push_str(&uri[..scheme_end + 3]);
    let after = match userinfo_end(rest) {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    // Host and path as they are; then the query and the fragment parameter by parameter.
    let (head, fragment) = match after.split_once('#') {
        Some((h, f)) => (h, Some(f)),
        None => (after, None),
    };
    match head.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            redact_params(query, &mut out);
        }
        None => out.push_str(head),
    }
    if let Some(f) = fragment {
        out.push('#');
        redact_params(f, &mut out);
    }
    out
}

/// `text` with every `scheme://…` URL in it passed through [`redact_url`] (a URL ends at
/// whitespace, a quote, `<`, `>`, `)` or the end).
///
/// ```
/// let e = "error sending request for url (http://u:hunter2@h/x?sig=abc): refused";
/// assert_eq!(
///     ccm_core::redact::redact_text(e),
///     "error sending request for url (http://u:***@h/x?sig=***): refused"
/// );
/// ```
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let scheme_start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |p| p + 1);
        let end = rest[i + 3..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')'))
            .map_or(rest.len(), |p| i + 3 + p);
        out.push_str(&rest[..scheme_start]);
        out.push_str(&redact_url(&rest[scheme_start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_cases() {
        assert_eq!(redact_url("mongodb://h:1/db"), "mongodb://h:1/db");
        assert_eq!(redact_url("mongodb://u:p@h:1/db"), "mongodb://u:***@h:1/db");
        assert_eq!(redact_url("mongodb://u@h/"), "mongodb://u@h/");
        assert_eq!(redact_url("http://u:p@w@h/x?y=@"), "http://u:***@h/x?y=@");
        assert_eq!(redact_url("not a uri"), "not a uri");
        assert_eq!(
            redact_url("mongodb://admin:Pa/ss@host"),
            "mongodb://admin:***@host"
        );
        assert_eq!(
            redact_url("mongodb://admin:a?b#c@h1:1,h2:2/db?authSource=admin"),
            "mongodb://admin:***@h1:1,h2:2/db?authSource=admin"
        );
        assert_eq!(
            redact_url("https://sink/x?api_KEY=1&n=2#access_token=t"),
            "https://sink/x?api_KEY=***&n=2#access_token=***"
        );
        assert_eq!(
            redact_url("http://host/path?email=a:b@c.com"),
            "http://host/path?email=a:b@c.com"
        );
    }

    fn secret() -> impl Strategy<Value = String> {
        // Marked so it cannot occur by chance in the rest of the URL. Raw `/`, `:`, `@`, `?`
        // and `#` — all but `?`/`#` together with `/`, `@` or `=` (the ambiguous forms).
        prop_oneof![
            "[A-Za-z0-9/@:%+=._~!$*-]{0,16}",
            "[A-Za-z0-9:?#%+._~!$*-]{0,16}",
        ]
        .prop_map(|s| format!("ZQ{s}QZ"))
    }

    fn query_secret() -> impl Strategy<Value = String> {
        // A raw `&` or `#` ends a query value by definition; anything else may be in it.
        "[A-Za-z0-9/@:?%+=._~!$*-]{0,16}".prop_map(|s| format!("ZQ{s}QZ"))
    }

    fn param_name() -> impl Strategy<Value = String> {
        (
            "[a-z_]{0,4}",
            prop::sample::select(SENSITIVE_PARAMS.to_vec()),
            "[a-z_]{0,4}",
            any::<bool>(),
        )
            .prop_map(|(a, s, b, upper)| {
                let n = format!("{a}{s}{b}");
                if upper {
                    n.to_uppercase()
                } else {
                    n
                }
            })
    }

    proptest! {
        #[test]
        fn no_generated_secret_survives(
            scheme in prop::sample::select(vec!["http", "https", "mongodb", "mongodb+srv", "etcd"]),
            user in "[a-z][a-z0-9]{0,7}",
            password in secret(),
            hosts in prop::collection::vec("[a-z][a-z0-9.-]{0,10}(:[0-9]{1,5})?", 1..3),
            path in "(/[a-z0-9]{0,6}){0,2}",
            name in param_name(),
            value in query_secret(),
            in_fragment in any::<bool>(),
            prefix in "[a-z ]{0,10}",
        ) {
            let hosts = hosts.join(",");
            let (q, f) = if in_fragment {
                (String::new(), format!("#{name}={value}"))
            } else {
                (format!("?a=1&{name}={value}"), String::new())
            };
            let uri = format!("{scheme}://{user}:{password}@{hosts}{path}{q}{f}");
            let r = redact_url(&uri);
            prop_assert!(!r.contains(&password), "{uri} -> {r}");
            prop_assert!(!r.contains(&value), "{uri} -> {r}");
            prop_assert!(r.contains(&hosts), "hosts kept: {uri} -> {r}");
            prop_assert_eq!(password_of(&uri), Some(password.as_str()));
            prop_assert_eq!(hosts_of(&uri), hosts.as_str());
            let text = format!("{prefix}({uri}) failed");
            let rt = redact_text(&text);
            prop_assert!(!rt.contains(&password) && !rt.contains(&value), "{text} -> {rt}");
        }

        #[test]
        fn text_without_credentials_is_unchanged(
            scheme in prop::sample::select(vec!["http", "https", "mongodb"]),
            host in "[a-z][a-z0-9.-]{0,10}(:[0-9]{1,5})?",
            path in "(/[a-z0-9]{0,6}){0,2}",
            name in prop::sample::select(vec!["authSource", "replicaSet", "x", "email", "n"]),
            value in "[a-z0-9.@]{0,8}",
        ) {
            let uri = format!("{scheme}://{host}{path}?{name}={value}");
            prop_assert_eq!(redact_url(&uri), uri);
        }
    }
}
