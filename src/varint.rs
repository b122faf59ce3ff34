//! Protocol Buffers' base-128 varints: the gRPC health messages and the state store's packed
//! recent results both write them.

/// Appends `v`, seven bits a byte, low bits first.
pub fn put(out: &mut impl bytes::BufMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// The varint at the start of `bytes` and what follows it; `None` if it is cut short or longer
/// than ten bytes.
pub fn read(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn varints_round_trip_and_garbage_is_none() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            super::put(&mut out, v);
            assert_eq!(super::read(&out), Some((v, &[][..])));
        }
        assert_eq!(super::read(&[0x80]), None);
        assert_eq!(super::read(&[0xff; 11]), None);
    }
}
