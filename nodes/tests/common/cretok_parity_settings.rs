//! The CreTok parity run's settings, shared by `tests/cretok_parity.rs` and the example
//! `cretok_parity_fixture` that writes the fixture for `nodes/parity/cretok_reference.py`.

use cretok_nodes::cretok::TrainConfig;

/// The settings of the parity run.
pub fn parity_config() -> TrainConfig {
    TrainConfig {
        pairs_per_step: 4,
        steps: 60,
        lr: 0.01,
        seed: 2410,
        theta: 0.9,
        ..TrainConfig::default()
    }
}
