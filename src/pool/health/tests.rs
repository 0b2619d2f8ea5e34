//! Unit tests of the health checks' pure parts.

use super::*;

#[test]
fn serving_is_field_one_equal_to_one() {
    assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 0x01]), Ok(1));
    assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 0x02]), Ok(2));
}

#[test]
fn an_empty_answer_is_unknown() {
    assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Ok(0));
}

#[test]
fn unknown_fields_are_skipped() {
    // field 2 (length-delimited "ab"), then field 1 = 1
    let body = [0, 0, 0, 0, 6, 0x12, 0x02, b'a', b'b', 0x08, 0x01];
    assert_eq!(serving_status(&body), Ok(1));
}

#[test]
fn malformed_answers_are_errors_not_panics() {
    for body in [
        &[][..],
        &[0, 0, 0][..],
        &[1, 0, 0, 0, 2, 0x08, 0x01][..],
        &[0, 0, 0, 0, 3, 0x08, 0x01][..],
        &[0, 0, 0, 0, 2, 0x08, 0x81][..],
        &[0, 0, 0, 0, 2, 0x12, 0x05][..],
        &[0, 0, 0, 0, 1, 0x0b][..],
        &[0, 0, 0, 0, 1, 0x09][..],
    ] {
        assert!(serving_status(body).is_err(), "{body:?}");
    }
}

#[test]
fn grpc_status_must_be_zero() {
    assert!(check_grpc_status(Some(b"0")).is_ok());
    assert!(check_grpc_status(Some(b"12")).is_err());
    assert!(check_grpc_status(None).is_err());
}
