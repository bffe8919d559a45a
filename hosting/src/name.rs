//! Site names: one DNS label, so `NAME.local` resolves over mDNS.

/// Longest site name (a DNS label).
pub const MAX_NAME: usize = 63;

/// Names that devices and services on a home LAN answer for over mDNS: a site must not take
/// them (a neighbour's printer or router would be shadowed).
const RESERVED: &[&str] = &[
    "printer",
    "router",
    "gateway",
    "nas",
    "homeassistant",
    "home-assistant",
    "localhost",
    "kith",
    "raspberrypi",
    "fritz",
    "fritzbox",
    "modem",
    "wpad",
    "airport",
    "chromecast",
    "sonos",
];

/// Checks a site name: 1 to 63 of `a-z`, `0-9` and `-`, not starting or ending with `-`
/// (lower case: names are looked up case-insensitively, as DNS does), and not a reserved name.
pub fn check_name(name: &str) -> Result<(), NameError> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME {
        Some("it is longer than 63 characters")
    } else if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        Some("only a-z, 0-9 and - are allowed")
    } else if name.starts_with('-') || name.ends_with('-') {
        Some("it may not start or end with -")
    } else if RESERVED.contains(&name) {
        Some("it is the name of a common device or service on home networks")
    } else {
        None
    };
    match why {
        Some(why) => Err(NameError { name: name.to_string(), why }),
        None => Ok(()),
    }
}

/// A site name that is not one DNS label, or is reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` is not a valid site name: {why} (a site name is one DNS label, such as bakery)")]
pub struct NameError {
    /// The name given.
    pub name: String,
    /// What is wrong with it.
    pub why: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for ok in ["bakery", "a", "my-site-2", &"x".repeat(63)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Bakery", "a.b", "a_b", "é", "a b", &"x".repeat(64), "../x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for reserved in ["printer", "router", "nas", "gateway", "homeassistant"] {
            let e = check_name(reserved).unwrap_err();
            assert!(e.why.contains("common device or service"), "{e}");
        }
    }
}
