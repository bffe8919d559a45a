//! kith hosting: sites published to a pool and served by every member's node.
//!
//! - [`site`]: a site version's format (files cut into sealed chunks, and an index) and
//!   publishing a folder.
//! - [`gateway`]: the HTTP gateway every node runs: `Host: NAME.local` and `/s/NAME/`, the way
//!   nginx serves static files, with an edge cache.
//! - [`http`]: the pure request parsing it uses; [`access`]: credentials for members-only
//!   sites; [`name`]: site names (DNS labels).
//! - [`browser`]: browsers as light peers over WebRTC (on the data-channel helpers of
//!   `kith_node::net::rtc`).

#![deny(missing_docs)]
#![cfg_attr(not(test), forbid(unsafe_code))]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod access;
pub mod browser;
pub mod gateway;
pub mod http;
pub mod mime;
pub mod name;
pub mod site;

pub use name::check_name;
