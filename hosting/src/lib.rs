//! kith hosting: sites published to a pool and served by every member.
//!
//! This crate will hold site publishing and versions, name resolution (`NAME.local` over mDNS),
//! the HTTP gateway (actix-web) and its edge cache. Nothing lives here yet; see the hosting issue.

#![deny(missing_docs)]
