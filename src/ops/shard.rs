//! Sharding: with `shard: {index, count}` several instances split the mailboxes, each
//! polling those whose name hashes to its index, each with its own `state_dir`.

use sha2::{Digest as _, Sha256};

/// This instance's place among `count` instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Whether this instance polls the mailbox called `name`.
    pub fn owns(&self, name: &str) -> bool {
        owner(name, self.count) == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard index that owns `name` among `count` shards: the first 8 bytes of the
/// name's SHA-256 as a big-endian number, modulo `count`. A fixed function of the name
/// alone, so every instance, version and platform agrees on it (unlike Rust's
/// `DefaultHasher`, which may change between releases).
pub fn owner(name: &str, count: u32) -> u32 {
    assert!(count > 0, "shard count is validated to be at least 1");
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(count)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_a_fixed_function_of_the_name() {
        // Pinned: changing the hash would move every mailbox of every sharded
        // deployment to another instance, whose state lacks its history.
        let pinned: Vec<u32> = ["support", "sales", "billing", "info", "noreply"]
            .iter()
            .map(|name| owner(name, 4))
            .collect();
        assert_eq!(pinned, PINNED);
        assert!((0..100).all(|n| owner(&format!("m{n}"), 1) == 0));
    }

    const PINNED: [u32; 5] = [1, 1, 3, 3, 1];

    #[test]
    fn every_mailbox_has_exactly_one_owner_and_the_split_is_roughly_even() {
        let count = 3;
        let mut per_shard = [0; 3];
        for n in 0..300 {
            let name = format!("mailbox-{n}");
            let owners: Vec<u32> = (0..count)
                .filter(|&index| Shard { index, count }.owns(&name))
                .collect();
            assert_eq!(owners.len(), 1, "{name}: {owners:?}");
            per_shard[owners[0] as usize] += 1;
        }
        assert!(per_shard.iter().all(|&n| n > 60), "{per_shard:?}");
    }
}
