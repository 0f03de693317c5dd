//! ComfyUI's schedulers on SD3's flow model against the sigmas ComfyUI's own
//! code gives (`parity/goldens/comfy_schedulers.json`, written by
//! `parity/comfy_scheduler_goldens.py`): same count, each within 2 f32 ulps of 1.

use cretok_nodes::sd3::sampling::Scheduler;
use serde_json::Value;

/// f32 results of f32 (and a few f64) operations in another order than torch's.
const TOLERANCE: f32 = 2.0 * f32::EPSILON;

#[test]
fn every_scheduler_matches_comfyui() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/parity/goldens/comfy_schedulers.json"
    );
    let goldens: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let shift = goldens["shift"].as_f64().unwrap();
    let schedules = goldens["sigmas"].as_object().unwrap();
    assert_eq!(schedules.len(), Scheduler::COMFY_NAMES.len());
    for name in Scheduler::COMFY_NAMES {
        let scheduler = Scheduler::from_comfy_name(name).unwrap();
        for (steps, want) in schedules[name].as_object().unwrap() {
            let want: Vec<f32> = serde_json::from_value(want.clone()).unwrap();
            let got = scheduler.sigmas(steps.parse().unwrap(), shift);
            let close = got.len() == want.len()
                && got
                    .iter()
                    .zip(&want)
                    .all(|(g, w)| (g - w).abs() <= TOLERANCE);
            assert!(
                close,
                "{name}, {steps} steps:\n ours   {got:?}\n comfy  {want:?}"
            );
        }
    }
}
