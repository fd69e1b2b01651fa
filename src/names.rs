//! Stable names for files and folders derived from text: container trial folders, host process
//! tokens, virtualenv folders, image lock files and record files. The main functions are
//! [`folder_key`] and [`record_key`].
//!
//! The hash is its own, apart from sharding (`plan::shard_of`), so that retuning sharding never
//! renames anything on disk. Changing [`stable_hash`] or the keys built on it renames every
//! cached virtualenv, lock file and record file: runs would rebuild caches and reports would
//! no longer find earlier records under their old names.

/// The 64-bit FNV-1a hash of `text`. Fixed forever: see the module docs.
pub fn stable_hash(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The key of a folder or file named after `text`, printed as 16 hex digits. Never zero; the
/// `% u64::MAX + 1` keeps the values names had when they were taken from sharding.
pub fn folder_key(text: &str) -> u64 {
    stable_hash(text) % u64::MAX + 1
}

/// The shorter key of a record file named after a trial, printed as 8 hex digits. Never zero;
/// the `% u32::MAX + 1` keeps the record names of earlier runs.
pub fn record_key(trial: &str) -> u32 {
    u32::try_from(stable_hash(trial) % u64::from(u32::MAX) + 1)
        .expect("a value at most u32::MAX fits in u32")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    // Values computed with the sharding hash these names were taken from before
    // (`shard_of(text, u64::MAX)` and `shard_of(text, u32::MAX)`): a change here renames caches
    // and records.
    #[rstest]
    #[case("", 0xcbf2_9ce4_8422_2326, 0x5014_c00b)]
    #[case("a", 0xaf63_dc4c_8601_ec8d, 0x3565_c8da)]
    #[case("base::cpu::cmd::ok", 0x399d_6b88_4697_0549, 0x8034_70d1)]
    #[case("runtime-matrix/jupyter-base:1", 0x73f3_bedb_5533_bc89, 0xc927_7b64)]
    fn names_keep_the_values_they_always_had(
        #[case] text: &str,
        #[case] folder: u64,
        #[case] record: u32,
    ) {
        assert_eq!(folder_key(text), folder);
        assert_eq!(record_key(text), record);
    }

    #[test]
    fn the_hash_is_fnv_1a() {
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
