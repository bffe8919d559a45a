//! The one clock of the pools crate (wall time, ms since the Unix epoch).

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    kith_node::keys::now_ms() as i64
}
