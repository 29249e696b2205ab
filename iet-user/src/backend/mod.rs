//! Backing stores: block operations on files, block devices and RAM.

/// Placeholder until the backing-store work lands.
pub trait BlockBackend: Send + Sync {}

#[derive(Debug, thiserror::Error)]
#[error("backing stores are not implemented yet")]
pub struct BackendError;

struct Unimplemented;

impl BlockBackend for Unimplemented {}

pub fn open_backend(_spec: &str) -> Result<std::sync::Arc<dyn BlockBackend>, BackendError> {
    Ok(std::sync::Arc::new(Unimplemented))
}
