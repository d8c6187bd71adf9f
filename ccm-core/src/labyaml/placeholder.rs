//! `${PORT_<NAME>}` placeholders: finding them in text and naming them after ports.

use super::LabYamlError;
use std::ops::Range;

/// Opening text of every port placeholder.
pub const PLACEHOLDER_PREFIX: &str = "${PORT_";

/// One placeholder found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// Byte range of the whole `${PORT_<NAME>}` in the searched text.
    pub range: Range<usize>,
    /// `<NAME>` as written.
    pub name: String,
}

/// The canonical `<NAME>` of a port name: upper case, every character other than `A-Z`/`0-9`
/// becomes `_`. Placeholders match ports by this key, so `${PORT_R1_SSH}` names port `r1_ssh`
/// and `${PORT_IOSV_0_SSH}` names port `iosv-0_ssh`.
///
/// ```
/// use ccm_core::labyaml::placeholder_key;
/// assert_eq!(placeholder_key("iosv-0_ssh"), "IOSV_0_SSH");
/// ```
pub fn placeholder_key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The placeholder text that stands for a port name.
///
/// ```
/// use ccm_core::labyaml::placeholder_for;
/// assert_eq!(placeholder_for("router1_ssh"), "${PORT_ROUTER1_SSH}");
/// ```
pub fn placeholder_for(port_name: &str) -> String {
    format!("{PLACEHOLDER_PREFIX}{}}}", placeholder_key(port_name))
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// All placeholders in `text`. An opening `${PORT_` not followed by a name of `A-Za-z0-9_` and
/// a closing `}` is an error; `line_of` maps a byte offset of `text` to a 1-based line for it.
pub fn find_placeholders(
    text: &str,
    line_of: impl Fn(usize) -> usize,
) -> Result<Vec<Placeholder>, LabYamlError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = text.get(from..).and_then(|t| t.find(PLACEHOLDER_PREFIX)) {
        let start = from + pos;
        let name_start = start + PLACEHOLDER_PREFIX.len();
        let mut end = name_start;
        while end < bytes.len() && is_name_char(bytes[end]) {
            end += 1;
        }
        if end == name_start || bytes.get(end) != Some(&b'}') {
            let shown: String = text[start..].chars().take(24).collect();
            return Err(LabYamlError::MalformedPlaceholder {
                text: shown,
                line: line_of(start),
            });
        }
        out.push(Placeholder {
            range: start..end + 1,
            name: text[name_start..end].to_string(),
        });
        from = end + 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_several_and_ignores_other_variables() {
        let p = find_placeholders("a ${PORT_X}:${PORT_y_2} ${HOME} $PORT_Z", |_| 1).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "X");
        assert_eq!(p[0].range, 2..11);
        assert_eq!(p[1].name, "y_2");
    }

    #[test]
    fn malformed_is_an_error_with_line() {
        let e = find_placeholders("ok\n${PORT_A-B}", |b| if b > 2 { 2 } else { 1 }).unwrap_err();
        assert_eq!(
            e,
            LabYamlError::MalformedPlaceholder {
                text: "${PORT_A-B}".into(),
                line: 2
            }
        );
        assert!(find_placeholders("${PORT_}", |_| 1).is_err());
        assert!(find_placeholders("${PORT_ABC", |_| 1).is_err());
    }

    #[test]
    fn key_normalises() {
        assert_eq!(placeholder_key("R1_ssh"), "R1_SSH");
        assert_eq!(placeholder_key("my node.1_vnc"), "MY_NODE_1_VNC");
    }
}
