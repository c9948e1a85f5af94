//! What init and the fuzzer agree on: how `fuzz.seed=N fuzz.iters=N
//! fuzz.skip=a,b` from the kernel command line travels to the fuzzer in the
//! one `u64` a spawned program receives.
//!
//! # Layout of the word
//! - bits 0..32: the seed;
//! - bits 32..56: the syscall count ([`MAX_ITERS`] at most);
//! - bits 56..64: the skip mask, one bit per [`Category`].
//!
//! Host-tested; `no_std` so init can link it.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

/// The largest `fuzz.iters` the word can carry.
pub const MAX_ITERS: u64 = (1 << 24) - 1;
/// The seed when the command line names none.
pub const DEFAULT_SEED: u32 = 1;
/// The syscall count when the command line names none.
pub const DEFAULT_ITERS: u64 = 20_000;

/// A family of fuzz cases that `fuzz.skip=` can switch off, because it trips
/// over a known kernel defect (see the README's fuzzer section).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Category {
    /// Memory syscalls (`map_anon`, `unmap`, `protect`) and spawn copies whose
    /// valid length exceeds 16 MiB: the kernel walks every named page with
    /// interrupts off (issue 7 items 12-13).
    Huge = 0,
    /// Segment-selector hazards with TI=1 (LDT) selectors: judged wrong when
    /// they fault with #PF (the LDT is not null; issue 7 item 0).
    Ldt = 1,
    /// Priority: the starvation probe, and workers raising their priority
    /// above the default (issue 7 item 6).
    Prio = 2,
    /// Child scripts whose threads start more interpreter threads while
    /// another thread calls `process_exit` (issue 7 item 2).
    ExitRace = 3,
    /// Child scripts that spawn grandchildren and exit without waiting
    /// (orphaned zombies; issue 7 item 5).
    Orphans = 4,
    /// Bit-flipped spawn images.
    Flip = 5,
    /// Instruction and register hazards.
    Hazards = 6,
    /// Resource storms (threads, processes, memory until `NoMemory`).
    Storms = 7,
}

impl Category {
    /// Every category, in bit order.
    pub const ALL: [Category; 8] = [
        Category::Huge,
        Category::Ldt,
        Category::Prio,
        Category::ExitRace,
        Category::Orphans,
        Category::Flip,
        Category::Hazards,
        Category::Storms,
    ];

    /// The name used in `fuzz.skip=`.
    pub const fn name(self) -> &'static str {
        match self {
            Category::Huge => "huge",
            Category::Ldt => "ldt",
            Category::Prio => "prio",
            Category::ExitRace => "exit_race",
            Category::Orphans => "orphans",
            Category::Flip => "flip",
            Category::Hazards => "hazards",
            Category::Storms => "storms",
        }
    }

    /// The category called `name`.
    pub fn from_name(name: &str) -> Option<Category> {
        Category::ALL.iter().copied().find(|c| c.name() == name)
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A fuzz run's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The PRNG seed: the same seed makes the same calls.
    pub seed: u32,
    /// How many random syscalls to make (in all threads together).
    pub iters: u64,
    /// Skipped categories, one bit each.
    pub skip: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: DEFAULT_SEED,
            iters: DEFAULT_ITERS,
            skip: 0,
        }
    }
}

/// Why a command line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `fuzz.seed` is not a number below 2^32.
    BadSeed,
    /// `fuzz.iters` is not a number in `1..=MAX_ITERS`.
    BadIters,
    /// `fuzz.skip` names an unknown category.
    BadSkip,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ConfigError::BadSeed => "fuzz.seed must be a number below 2^32",
            ConfigError::BadIters => "fuzz.iters must be a number in 1..=16777215",
            ConfigError::BadSkip => {
                "fuzz.skip names an unknown category (huge, ldt, prio, exit_race, orphans, flip, hazards, storms)"
            }
        })
    }
}

impl Config {
    /// Reads `fuzz.seed`, `fuzz.iters` and `fuzz.skip` from a kernel command
    /// line (through `arg`, e.g. [`abi::bootinfo::cmdline_arg`]).
    pub fn from_cmdline<'a>(arg: impl Fn(&str) -> Option<&'a str>) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(s) = arg("fuzz.seed") {
            c.seed = s.parse().map_err(|_| ConfigError::BadSeed)?;
        }
        if let Some(s) = arg("fuzz.iters") {
            c.iters = s.parse().map_err(|_| ConfigError::BadIters)?;
            if c.iters == 0 || c.iters > MAX_ITERS {
                return Err(ConfigError::BadIters);
            }
        }
        if let Some(s) = arg("fuzz.skip") {
            for name in s.split(',').filter(|n| !n.is_empty()) {
                c.skip |= Category::from_name(name).ok_or(ConfigError::BadSkip)?.bit();
            }
        }
        Ok(c)
    }

    /// The word passed to the fuzzer.
    pub const fn encode(self) -> u64 {
        self.seed as u64 | (self.iters & MAX_ITERS) << 32 | (self.skip as u64) << 56
    }

    /// The inverse of [`encode`](Self::encode); a zero word (no command
    /// line) means the defaults.
    pub const fn decode(word: u64) -> Config {
        if word == 0 {
            return Config {
                seed: DEFAULT_SEED,
                iters: DEFAULT_ITERS,
                skip: 0,
            };
        }
        Config {
            seed: word as u32,
            iters: (word >> 32) & MAX_ITERS,
            skip: (word >> 56) as u8,
        }
    }

    /// Whether `c` was switched off.
    pub const fn skips(&self, c: Category) -> bool {
        self.skip & c.bit() != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(line: &'a str) -> impl Fn(&str) -> Option<&'a str> {
        move |key| {
            line.split_whitespace()
                .rev()
                .find_map(|w| w.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
        }
    }

    #[test]
    fn config_round_trips_through_the_word() {
        let c = Config::from_cmdline(lookup(
            "fuzz.seed=4000000000 fuzz.iters=1000000 fuzz.skip=huge,orphans",
        ))
        .unwrap();
        assert_eq!(c.seed, 4_000_000_000);
        assert_eq!(c.iters, 1_000_000);
        assert!(c.skips(Category::Huge) && c.skips(Category::Orphans));
        assert!(!c.skips(Category::Ldt));
        assert_eq!(Config::decode(c.encode()), c);
        for cat in Category::ALL {
            assert_eq!(Category::from_name(cat.name()), Some(cat));
        }
    }

    #[test]
    fn missing_keys_give_defaults_and_bad_values_are_refused() {
        assert_eq!(
            Config::from_cmdline(lookup("init=fuzz")),
            Ok(Config::default())
        );
        assert_eq!(Config::decode(0), Config::default());
        assert_eq!(
            Config::from_cmdline(lookup("fuzz.seed=-1")),
            Err(ConfigError::BadSeed)
        );
        assert_eq!(
            Config::from_cmdline(lookup("fuzz.iters=0")),
            Err(ConfigError::BadIters)
        );
        assert_eq!(
            Config::from_cmdline(lookup("fuzz.iters=16777216")),
            Err(ConfigError::BadIters)
        );
        assert_eq!(
            Config::from_cmdline(lookup("fuzz.skip=nope")),
            Err(ConfigError::BadSkip)
        );
    }
}
