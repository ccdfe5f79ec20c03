//! `KafkaConfig::from_properties` / `from_properties_file` as a user meets
//! them: a real file, the README's ready-made examples, and the build
//! without the `tls` feature.

use kafka_retry::{Error, KafkaConfig};

#[test]
fn smoke_a_client_properties_file() {
    let dir = std::env::temp_dir().join(format!("kafka-retry-props-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("client.properties");
    std::fs::write(
        &file,
        "# Kafka\nbootstrap.servers=k1:9092,k2:9092\nclient.id = billing\n\
         request.timeout.ms: 15000\n! a comment\nacks=all\n",
    )
    .unwrap();
    let config = KafkaConfig::from_properties_file(&file).unwrap();
    assert_eq!(config.bootstrap_servers(), ["k1:9092", "k2:9092"]);
    config.validate().unwrap();

    std::fs::write(&file, "bootstrap.servers=k1:9092\nssl.ca.locaton=/ca.pem\n").unwrap();
    let err = KafkaConfig::from_properties_file(&file).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("unknown key `ssl.ca.locaton`: did you mean `ssl.ca.location`?")
            && text.contains("line 2 of"),
        "{text}"
    );
    assert!(matches!(err, Error::Config { .. }));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every ```properties block of the README parses.
#[test]
fn the_readme_examples_parse() {
    let readme = include_str!("../README.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        let fence = line.trim_start();
        if let Some(info) = fence.strip_prefix("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None if info.trim() == "properties" => current = Some(String::new()),
                None => {}
            }
            continue;
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    assert!(
        blocks.len() >= 6,
        "expected the README's examples, found {}",
        blocks.len()
    );
    let dir = std::env::temp_dir().join(format!("kafka-retry-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, block) in blocks.iter().enumerate() {
        let file = dir.join(format!("example-{i}.properties"));
        std::fs::write(&file, block).unwrap();
        let config = KafkaConfig::from_properties_file(&file)
            .unwrap_or_else(|e| panic!("README properties block {i}: {e}\n{block}"));
        assert!(!config.bootstrap_servers().is_empty(), "block {i}");
        // Secrets never show in Debug.
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("<API secret>") && !shown.contains("<password"),
            "{shown}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(not(feature = "tls"))]
#[test]
fn without_the_tls_feature_ssl_is_a_config_error_naming_it() {
    let config = KafkaConfig::from_properties([
        ("bootstrap.servers", "k1:9093"),
        ("security.protocol", "SSL"),
    ])
    .unwrap();
    let err = config.validate().unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("`tls` cargo feature"), "{err}");
    let err = kafka_retry::KafkaTransport::connect(config).unwrap_err();
    assert!(err.to_string().contains("`tls` cargo feature"), "{err}");
}
