//! PLAIN (RFC 4616): one message, `authzid NUL authcid NUL passwd`, with an
//! empty authorization id as Kafka's clients send it.

/// The PLAIN message for `username` and `password`. `Err` when either
/// holds a NUL (the message could not be parsed back).
pub(crate) fn message(username: &str, password: &str) -> Result<Vec<u8>, String> {
    if username.contains('\0') || password.contains('\0') {
        return Err("the user name or password contains a NUL character".into());
    }
    let mut m = Vec::with_capacity(2 + username.len() + password.len());
    m.push(0);
    m.extend_from_slice(username.as_bytes());
    m.push(0);
    m.extend_from_slice(password.as_bytes());
    Ok(m)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc4616_message() {
        assert_eq!(
            super::message("tim", "tanstaaftanstaaf").unwrap(),
            b"\0tim\0tanstaaftanstaaf"
        );
        assert!(super::message("a\0b", "p").is_err());
    }
}
