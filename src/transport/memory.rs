//! In-process memory broker (placeholder).

/// An in-process broker.
#[derive(Debug, Clone, Default)]
pub struct MemoryBroker {}
