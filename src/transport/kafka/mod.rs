//! Kafka transport (placeholder).

/// Kafka client settings.
#[derive(Debug, Clone, Default)]
pub struct KafkaConfig {}

/// The Kafka transport.
#[derive(Debug)]
pub struct KafkaTransport {}
