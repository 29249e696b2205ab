//! Backing stores: block operations on files, block devices and RAM.

/// Placeholder until the backing-store work lands.
pub trait BlockBackend: Send + Sync {}
