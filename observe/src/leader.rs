//! The leader hint: the `chimera-leader` gRPC metadata a standby controller
//! puts on its refusal, and the one way agents and the CLI read it.

/// The metadata key that names the leading controller's URL.
pub const LEADER_METADATA: &str = "chimera-leader";

/// Names `leader_url` on a refusal. Returns false (and leaves `status` as it
/// was) when the URL cannot be a metadata value.
pub fn set_leader(status: &mut tonic::Status, leader_url: &str) -> bool {
    match leader_url.parse() {
        Ok(v) => {
            status.metadata_mut().insert(LEADER_METADATA, v);
            true
        }
        Err(_) => false,
    }
}

/// The leader a refusal names, if any (and if it is printable text).
pub fn leader(status: &tonic::Status) -> Option<&str> {
    status
        .metadata()
        .get(LEADER_METADATA)
        .and_then(|v| v.to_str().ok())
        .filter(|l| !l.is_empty())
}

/// The leader named by the first `tonic::Status` in an error's chain (an
/// error with context added around the refusal).
pub fn leader_in_chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a str> {
    let mut e: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cur) = e {
        if let Some(s) = cur.downcast_ref::<tonic::Status>() {
            return leader(s);
        }
        e = cur.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped(tonic::Status);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("open the session")
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_refusal_names_the_leader_in_its_metadata() {
        let mut s = tonic::Status::unavailable("not the leader");
        assert_eq!(leader(&s), None);
        assert!(set_leader(&mut s, "http://10.0.0.5:50051"));
        assert_eq!(leader(&s), Some("http://10.0.0.5:50051"));
        let w = Wrapped(s);
        assert_eq!(leader_in_chain(&w), Some("http://10.0.0.5:50051"));
        let mut bad = tonic::Status::unavailable("not the leader");
        assert!(!set_leader(&mut bad, "http://a\nb"));
        assert_eq!(leader(&bad), None);
        let plain = std::io::Error::other("connection refused");
        assert_eq!(leader_in_chain(&plain), None);
    }
}
