//! Unit tests of what a client stream recognises in a response.

use super::*;

#[test]
fn interim_responses_are_recognised() {
    assert!(is_interim_response(b"HTTP/1.1 100 Continue\r\n"));
    assert!(!is_interim_response(b"HTTP/1.1 200 OK\r\n"));
    assert!(!is_interim_response(b"hello"));
}
