//! testnet: drives real `kith` processes.

#![deny(missing_docs)]
