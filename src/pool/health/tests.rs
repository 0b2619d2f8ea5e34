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

#[test]
fn each_backend_starts_its_check_at_a_point_of_its_own_spread_over_the_window() {
    let window = Duration::from_secs(8);
    let phases: Vec<Duration> = (0..1000u16)
        .map(|i| {
            phase_of(
                SocketAddr::from(([10, 0, (i / 256) as u8, i as u8], 8080)),
                window,
            )
        })
        .collect();
    assert!(phases.iter().all(|p| *p < window));
    // The same point every round.
    let first = SocketAddr::from(([10, 0, 0, 0], 8080));
    assert_eq!(phase_of(first, window), phases[0]);
    // Spread: each eighth of the window holds about an eighth of them.
    for eighth in 0..8u32 {
        let (from, to) = (window * eighth / 8, window * (eighth + 1) / 8);
        let n = phases.iter().filter(|p| **p >= from && **p < to).count();
        assert!((75..=175).contains(&n), "{n} checks in eighth {eighth}");
    }
    assert_eq!(phase_of(first, Duration::ZERO), Duration::ZERO);
}
