//! Deterministic names for the Runs a RunConfiguration's triggers start.
//!
//! A triggered Run is named from its RunConfiguration and the trigger key
//! ([`super::Trigger::key`]), so a redelivered completion or a retried reconcile creates the
//! same name again and gets `AlreadyExists` instead of a duplicate Run.
//!
//! **The format is a compatibility contract and must never change** (a change would let every
//! in-flight trigger create a second Run after an upgrade):
//!
//! `<prefix>-<h>` where
//! - `h` = the first 10 lowercase hex digits of SHA-1(`<rc namespace>/<rc name>` ‖ `0x00` ‖ `key`);
//! - `prefix` = the RunConfiguration's name (the part after the last `/`), lowercased, every
//!   character outside `[a-z0-9-]` (including `.`) replaced by `-`, cut to 52 characters, with
//!   leading and trailing `-` trimmed; when that leaves nothing the name is `h` alone.
//!
//! The result is at most 63 characters of `[a-z0-9-]`, starting and ending alphanumeric: a valid
//! DNS-1123 label (hence subdomain) and a valid label value, since Run names end up in labels.

use sha1::{Digest, Sha1};

/// Hex digits of the hash suffix.
pub const HASH_LENGTH: usize = 10;
/// The longest name produced (a label value's limit).
pub const MAX_NAME_LENGTH: usize = 63;
const MAX_PREFIX_LENGTH: usize = MAX_NAME_LENGTH - HASH_LENGTH - 1;

/// The name of the Run that `trigger_key` starts for the RunConfiguration `rc_name`, which must
/// be qualified (`namespace/name`, as `NamespacedName` renders it). See the module docs.
pub fn run_name(rc_name: &str, trigger_key: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(rc_name.as_bytes());
    hasher.update([0u8]);
    hasher.update(trigger_key.as_bytes());
    let digest = hex::encode(hasher.finalize());
    let hash = digest.get(..HASH_LENGTH).unwrap_or(&digest);

    let name = rc_name.rsplit('/').next().unwrap_or(rc_name);
    let sanitised: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' })
        .take(MAX_PREFIX_LENGTH)
        .collect();
    let prefix = sanitised.trim_matches('-');
    if prefix.is_empty() { hash.to_owned() } else { format!("{prefix}-{hash}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed forever: computed independently (Python `hashlib.sha1`).
    #[test]
    fn names_are_stable() {
        let vectors = [
            ("ml/training", "rc-run-123", "training-7515ffe3bc"),
            ("ml/training", "runspec-abc-g1", "training-ef7f1d1ffc"),
            ("base/examples", "rc-run-123", "examples-78eac7cdcd"),
            ("training", "k", "training-aeb43486aa"),
        ];
        for (rc, key, expected) in vectors {
            assert_eq!(run_name(rc, key), expected, "{rc} {key}");
        }
        let long = format!("ml/{}", "a".repeat(80));
        assert_eq!(run_name(&long, "rc-1"), format!("{}-1f523ea62f", "a".repeat(52)));
    }

    #[test]
    fn names_differ_by_namespace_and_key() {
        assert_ne!(run_name("a/x", "k"), run_name("b/x", "k"));
        assert_ne!(run_name("a/x", "k1"), run_name("a/x", "k2"));
        // The separator keeps `a/x` + `y…` apart from `a/xy` + `…`.
        assert_ne!(run_name("a/x", "yk"), run_name("a/xy", "k"));
    }

    #[test]
    fn names_are_valid_dns_labels_and_label_values() {
        let valid = |name: &str| {
            !name.is_empty()
                && name.len() <= MAX_NAME_LENGTH
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && name.starts_with(|c: char| c.is_ascii_alphanumeric())
                && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        };
        let inputs = [
            "ml/training".to_owned(),
            format!("ml/{}", "x".repeat(253)),
            format!("ml/{}-{}", "x".repeat(51), "y".repeat(10)),
            "ml/my.dotted.rc".to_owned(),
            "ml/Upper_Case".to_owned(),
            "ml/---".to_owned(),
            "ml/".to_owned(),
            String::new(),
        ];
        for rc in &inputs {
            let name = run_name(rc, "key");
            assert!(valid(&name), "{rc:?} gave {name:?}");
        }
        assert_eq!(run_name("ml/my.dotted.rc", "k").rsplit_once('-').map(|(p, _)| p), Some("my-dotted-rc"));
        // A cut that lands on a dash does not leave a trailing dash.
        let cut = run_name(&format!("ml/{}-{}", "x".repeat(51), "y".repeat(10)), "k");
        assert!(cut.starts_with(&format!("{}-", "x".repeat(51))) && !cut.contains("--"), "{cut}");
        assert_eq!(run_name("ml/---", "k").len(), HASH_LENGTH);
    }
}
