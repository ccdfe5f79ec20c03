//! Java `client.properties` / librdkafka settings into a [`KafkaConfig`](super::config::KafkaConfig).
