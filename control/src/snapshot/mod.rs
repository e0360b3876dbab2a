//! From a validated config to a signed, versioned snapshot.

mod compile;
mod signer;

pub use compile::{compile, required_capabilities};
pub use signer::{KEY_FILE, PUBLIC_KEY_FILE, SignerError, SnapshotSigner, key_id};
