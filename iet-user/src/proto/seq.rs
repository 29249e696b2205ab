//! Serial number arithmetic (RFC 1982, 32 bits) as RFC 7143 §4.2.2.1
//! requires for CmdSN, StatSN and DataSN comparisons.

/// `a < b` in serial number arithmetic.
pub fn lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 1 << 31
}

/// `a <= b` in serial number arithmetic.
pub fn le(a: u32, b: u32) -> bool {
    a == b || lt(a, b)
}

/// `a > b` in serial number arithmetic.
pub fn gt(a: u32, b: u32) -> bool {
    lt(b, a)
}

/// Whether `cmd_sn` is inside the window `[exp_cmd_sn, max_cmd_sn]`
/// (RFC 7143 §4.2.2.1: outside it a non-immediate command is dropped).
pub fn in_window(cmd_sn: u32, exp_cmd_sn: u32, max_cmd_sn: u32) -> bool {
    le(exp_cmd_sn, cmd_sn) && le(cmd_sn, max_cmd_sn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wraps_around() {
        assert!(lt(u32::MAX, 0));
        assert!(gt(0, u32::MAX));
        assert!(in_window(1, u32::MAX - 2, 5));
        assert!(!in_window(6, u32::MAX - 2, 5));
        assert!(!in_window(u32::MAX - 3, u32::MAX - 2, 5));
    }

    proptest! {
        #[test]
        fn lt_is_antisymmetric(a: u32, d in 1u32..(1 << 31)) {
            let b = a.wrapping_add(d);
            prop_assert!(lt(a, b));
            prop_assert!(!lt(b, a));
        }
    }
}
