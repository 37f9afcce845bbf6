//! `contribution` takes a 64-bit path when nothing can overflow: it must give
//! exactly what the 128-bit formula gives, for every input.

use posture_core::engine::contribution;
use proptest::prelude::*;

fn wide(points: i64, pass: i64, fail: i64) -> i64 {
    let n = pass + fail;
    if n <= 0 {
        return 0;
    }
    ((2 * points as i128 * pass as i128 + n as i128) / (2 * n as i128)) as i64
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn realistic_inputs(points in 0i64..1_000_000_000, pass in 0i64..10_000_000, fail in 0i64..10_000_000) {
        prop_assert_eq!(contribution(points, pass, fail), wide(points, pass, fail));
    }

    #[test]
    fn inputs_that_overflow_64_bits(points in any::<i64>(), pass in 0i64..(i64::MAX / 4), fail in 0i64..(i64::MAX / 4)) {
        prop_assert_eq!(contribution(points, pass, fail), wide(points, pass, fail));
    }
}

#[test]
fn edges() {
    for (p, a, b) in [
        (0, 0, 0),
        (10_000_000, 1, 0),
        (10_000_000, 0, 1),
        (10_000_000, 1, 2),
        (7, 1, 1),
        (i64::MAX / 2, 1, 0),
        (i64::MAX, 3, 4),
        (-5_000_000, 3, 4),
    ] {
        assert_eq!(contribution(p, a, b), wide(p, a, b), "contribution({p}, {a}, {b})");
    }
    // Rounded half up: 10 points, 1 of 3 passing = 3.333333 points.
    assert_eq!(contribution(10_000_000, 1, 2), 3_333_333);
    assert_eq!(contribution(10_000_000, 2, 1), 6_666_667);
}
