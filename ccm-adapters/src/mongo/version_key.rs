//! A string key whose byte order is semver precedence, so MongoDB can sort versions and pick
//! "latest" itself (`sort({version_key: -1}).limit(1)`).
//!
//! Layout: `MAJOR.MINOR.PATCH` each as 20 zero-padded digits, then `~` for a release or `-` and
//! the encoded pre-release identifiers (so a pre-release sorts before its release), then, when
//! there is build metadata, a space and the encoded build identifiers. An identifier is encoded
//! as `0` + its significant-digit count (3 digits) + its digits without leading zeros + its full
//! length (3 digits) when numeric, or `1` + its text when alphanumeric (numeric < alphanumeric);
//! identifiers are joined with `!`. Every separator sorts below any identifier character, so a
//! shorter identifier list that is a prefix of a longer one sorts first, as semver requires.
//! Build metadata orders exactly as `semver::Version`'s `Ord` does (it breaks ties only).

use std::fmt::Write as _;

/// Separator between identifiers (below `-`, digits and letters).
const IDENT_SEP: char = '!';
/// Separator between the pre-release part and build metadata (below [`IDENT_SEP`]).
const BUILD_SEP: char = ' ';

fn push_identifiers(out: &mut String, text: &str) {
    for (i, ident) in text.split('.').enumerate() {
        if i > 0 {
            out.push(IDENT_SEP);
        }
        if !ident.is_empty() && ident.bytes().all(|b| b.is_ascii_digit()) {
            let significant = ident.trim_start_matches('0');
            // Writing to a String cannot fail.
            let _ = write!(
                out,
                "0{:03}{}{:03}",
                significant.len(),
                significant,
                ident.len()
            );
        } else {
            out.push('1');
            out.push_str(ident);
        }
    }
}

/// The sortable key of a version: `a.cmp(b) == version_key(a).cmp(&version_key(b))`.
///
/// ```
/// use ccm_adapters::mongo::version_key;
/// let v = |s| semver::Version::parse(s).unwrap();
/// assert!(version_key(&v("1.9.0")) < version_key(&v("1.10.0")));
/// assert!(version_key(&v("1.0.0-rc.1")) < version_key(&v("1.0.0")));
/// ```
pub fn version_key(v: &semver::Version) -> String {
    let mut out = String::with_capacity(72);
    let _ = write!(out, "{:020}.{:020}.{:020}", v.major, v.minor, v.patch);
    if v.pre.is_empty() {
        out.push('~');
    } else {
        out.push('-');
        push_identifiers(&mut out, v.pre.as_str());
    }
    if !v.build.is_empty() {
        out.push(BUILD_SEP);
        push_identifiers(&mut out, v.build.as_str());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    #[test]
    fn semver_spec_precedence_example_is_kept() {
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.0+build.1",
            "1.9.0",
            "1.10.0",
            "18446744073709551615.0.0",
        ];
        for w in ordered.windows(2) {
            assert!(
                version_key(&v(w[0])) < version_key(&v(w[1])),
                "{} must sort before {}",
                w[0],
                w[1]
            );
        }
    }

    fn ident() -> impl Strategy<Value = String> {
        prop_oneof![
            "(0|[1-9][0-9]{0,3})",
            "[0-9A-Za-z-]{1,4}",
            Just("-".to_string()),
            Just("a-".to_string()),
        ]
    }

    fn build_ident() -> impl Strategy<Value = String> {
        prop_oneof!["[0-9]{1,4}", "[0-9A-Za-z-]{1,4}"]
    }

    fn version() -> impl Strategy<Value = semver::Version> {
        (
            0u64..12,
            prop_oneof![0u64..12, Just(u64::MAX)],
            0u64..120,
            prop::collection::vec(ident(), 0..4),
            prop::collection::vec(build_ident(), 0..3),
        )
            .prop_filter_map("valid semver", |(ma, mi, pa, pre, build)| {
                let mut s = format!("{ma}.{mi}.{pa}");
                if !pre.is_empty() {
                    s.push('-');
                    s.push_str(&pre.join("."));
                }
                if !build.is_empty() {
                    s.push('+');
                    s.push_str(&build.join("."));
                }
                semver::Version::parse(&s).ok()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn key_order_is_semver_order(a in version(), b in version()) {
            prop_assert_eq!(
                version_key(&a).cmp(&version_key(&b)),
                a.cmp(&b),
                "{} vs {}: keys {:?} / {:?}", a, b, version_key(&a), version_key(&b)
            );
        }
    }
}
