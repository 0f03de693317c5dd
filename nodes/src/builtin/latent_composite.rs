//! ComfyUI's `LatentComposite` (`nodes.py`): `samples_from` pasted into
//! `samples_to` at `x, y`, optionally blended in over a feathered border.
//!
//! As ComfyUI: `x`, `y` and `feather` are pixels, floor-divided by 8 into
//! latent cells; `samples_from` is cut to what fits; with a feather of `f`
//! cells, each of its borders that is not on an edge of `samples_to` is
//! weighted `(t + 1) / f` on its `t`-th row or column from the border (the
//! weights multiply, in f32, in ComfyUI's order, with Python's slice rules where
//! a feather is wider than the pasted region); `samples_to` shows through by
//! one minus that weight. The output keeps `samples_to`'s noise mask (ComfyUI
//! copies its LATENT dict).

use std::ops::Range;

use candle_core::Tensor;

use crate::sd3::types::Latent;
use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, RunContext, Value, ValueEstimate,
};

/// ComfyUI's `MAX_RESOLUTION`: the largest `x`, `y` and `feather`.
const MAX_PIXELS: i64 = 16384;
/// Pixels per latent cell.
const CELL: i64 = 8;

pub struct LatentComposite;

impl Node for LatentComposite {
    fn schema(&self) -> NodeSchema {
        let pixels = |name: &str| {
            InputSpec::required(
                name,
                InputKind::Int {
                    default: 0,
                    min: 0,
                    max: MAX_PIXELS,
                    step: CELL,
                    control_after_generate: false,
                },
            )
        };
        NodeSchema::new("LatentComposite", "latent")
            .display_name("Latent Composite")
            .description("Pastes one latent into another at a position, with a feathered border.")
            .input(InputSpec::required(
                "samples_to",
                InputKind::link(data_type::LATENT),
            ))
            .input(InputSpec::required(
                "samples_from",
                InputKind::link(data_type::LATENT),
            ))
            .input(pixels("x"))
            .input(pixels("y"))
            .input(pixels("feather"))
            .output(OutputSpec::new(data_type::LATENT))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let to = inputs.handle::<Latent>("samples_to")?;
        let from = inputs.handle::<Latent>("samples_from")?;
        let cells = |name: &str| -> Result<usize, NodeError> {
            let pixels = inputs.int(name)?;
            if !(0..=MAX_PIXELS).contains(&pixels) {
                return Err(NodeError::invalid_input(
                    name,
                    format!("{pixels} is outside 0..={MAX_PIXELS}"),
                ));
            }
            Ok((pixels / CELL) as usize)
        };
        let placement = Placement {
            x: cells("x")?,
            y: cells("y")?,
            feather: cells("feather")?,
        };
        let samples = composite(&to.samples, &from.samples, placement)?;
        Ok(NodeOutput::values(vec![Value::handle(Latent {
            samples,
            noise_mask: to.noise_mask.clone(),
        })]))
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let bytes = inputs.bytes("samples_to");
        let working = bytes.saturating_add(inputs.bytes("samples_from"));
        Ok(Estimate::outputs(vec![ValueEstimate::bytes(bytes)]).with_working_bytes(working))
    }
}

/// Where `samples_from` goes, in latent cells.
#[derive(Debug, Clone, Copy)]
struct Placement {
    x: usize,
    y: usize,
    feather: usize,
}

fn composite(to: &Tensor, from: &Tensor, at: Placement) -> Result<Tensor, NodeError> {
    let dims = |t: &Tensor, name: &str| {
        t.dims4()
            .map_err(|e| NodeError::invalid_input(name, e.to_string()))
    };
    let (batch, channels, height, width) = dims(to, "samples_to")?;
    let (from_batch, from_channels, from_height, from_width) = dims(from, "samples_from")?;
    if from_channels != channels {
        return Err(NodeError::invalid_input(
            "samples_from",
            format!("{from_channels} channels, samples_to has {channels}"),
        ));
    }
    if from_batch != batch && from_batch != 1 {
        return Err(NodeError::invalid_input(
            "samples_from",
            format!("a batch of {from_batch} cannot be pasted into a batch of {batch}"),
        ));
    }
    // Past an edge nothing overlaps (ComfyUI fails or leaves samples_to as it is).
    if at.x >= width || at.y >= height {
        return Ok(to.clone());
    }
    let rows = from_height.min(height - at.y);
    let cols = from_width.min(width - at.x);
    let weights = feather_weights(rows, cols, at, (height, width));
    let to_values = to
        .flatten_all()
        .and_then(|t| t.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>())
        .map_err(anyhow::Error::from)?;
    let from_values = from
        .flatten_all()
        .and_then(|t| t.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>())
        .map_err(anyhow::Error::from)?;
    let mut out = to_values;
    for b in 0..batch {
        let fb = if from_batch == 1 { 0 } else { b };
        for c in 0..channels {
            let to_plane = (b * channels + c) * height * width;
            let from_plane = (fb * channels + c) * from_height * from_width;
            for r in 0..rows {
                for k in 0..cols {
                    let o = to_plane + (at.y + r) * width + at.x + k;
                    let pasted = from_values[from_plane + r * from_width + k];
                    out[o] = match &weights {
                        None => pasted,
                        Some(w) => {
                            let w = w[r * cols + k];
                            pasted * w + out[o] * (1.0 - w)
                        }
                    };
                }
            }
        }
    }
    Tensor::from_vec(out, (batch, channels, height, width), to.device())
        .map_err(|e| anyhow::Error::from(e).into())
}

/// ComfyUI's feather mask over the pasted `rows × cols`, `None` without feather.
fn feather_weights(
    rows: usize,
    cols: usize,
    at: Placement,
    (height, width): (usize, usize),
) -> Option<Vec<f32>> {
    if at.feather == 0 {
        return None;
    }
    let mut mask = vec![1f32; rows * cols];
    let (r, c) = (rows as i64, cols as i64);
    for t in 0..at.feather as i64 {
        let factor = ((1.0 / at.feather as f64) * (t + 1) as f64) as f32;
        let mut scale_rows = |range: Range<usize>| {
            for row in range {
                mask[row * cols..(row + 1) * cols]
                    .iter_mut()
                    .for_each(|m| *m *= factor);
            }
        };
        if at.y != 0 {
            scale_rows(python_slice(t, t + 1, r));
        }
        if at.y + rows < height {
            scale_rows(python_slice(r - 1 - t, r - t, r));
        }
        let mut scale_cols = |range: Range<usize>| {
            for col in range {
                mask.iter_mut()
                    .skip(col)
                    .step_by(cols)
                    .for_each(|m| *m *= factor);
            }
        };
        if at.x != 0 {
            scale_cols(python_slice(t, t + 1, c));
        }
        if at.x + cols < width {
            scale_cols(python_slice(c - 1 - t, c - t, c));
        }
    }
    Some(mask)
}

/// The indices of Python's `seq[start:end]` on a sequence of `len`
/// (negative bounds count from the end, then clamp).
fn python_slice(start: i64, end: i64, len: i64) -> Range<usize> {
    let bound = |i: i64| if i < 0 { (i + len).max(0) } else { i.min(len) };
    let (start, end) = (bound(start), bound(end));
    start as usize..end.max(start) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn plane(rows: usize, cols: usize, value: f32) -> Tensor {
        Tensor::full(value, (1, 1, rows, cols), &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<Vec<f32>> {
        t.get(0).unwrap().get(0).unwrap().to_vec2().unwrap()
    }

    #[test]
    fn pastes_what_fits_at_the_cell_of_the_pixel_position() {
        let at = Placement {
            x: 15 / 8,
            y: 16 / 8,
            feather: 0,
        };
        let out = composite(&plane(4, 4, 0.0), &plane(3, 3, 1.0), at).unwrap();
        assert_eq!(
            values(&out),
            [
                [0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 1.0, 1.0],
                [0.0, 1.0, 1.0, 1.0]
            ]
        );
        let past = Placement {
            x: 4,
            y: 0,
            feather: 0,
        };
        let out = composite(&plane(4, 4, 0.0), &plane(3, 3, 1.0), past).unwrap();
        assert_eq!(values(&out), values(&plane(4, 4, 0.0)));
    }

    #[test]
    fn feather_ramps_the_inner_borders_only() {
        // 2 cells of feather, a 4×4 paste at (1, 1) in 6×6: every border is
        // inside, weights 0.5 then 1 from each; samples_to (2) shows through.
        let at = Placement {
            x: 1,
            y: 1,
            feather: 2,
        };
        let out = composite(&plane(6, 6, 2.0), &plane(4, 4, 0.0), at).unwrap();
        let ramp = [0.5f32, 1.0, 1.0, 0.5];
        let expected: Vec<Vec<f32>> = (0..6)
            .map(|r| {
                (0..6)
                    .map(|c| match (r, c) {
                        (1..=4, 1..=4) => 2.0 * (1.0 - ramp[r - 1] * ramp[c - 1]),
                        _ => 2.0,
                    })
                    .collect()
            })
            .collect();
        assert_eq!(values(&out), expected);
        // At the top-left corner, those borders stay sharp.
        let corner = Placement {
            x: 0,
            y: 0,
            feather: 2,
        };
        let out = composite(&plane(6, 6, 2.0), &plane(4, 4, 0.0), corner).unwrap();
        assert_eq!(values(&out)[0][..5], [0.0, 0.0, 0.0, 1.0, 2.0]);
    }

    #[test]
    fn a_feather_wider_than_the_paste_follows_python_slices() {
        // Feather 5 on 2 rows (top and bottom borders inside): the bottom
        // ramp's slices [r-1-t : r-t] wrap around for t = 3 (rows [0:1]), as
        // in ComfyUI: row 0 gets 1/5 · 2/5 · 4/5, row 1 gets 1/5 · 2/5.
        let weights = feather_weights(
            2,
            1,
            Placement {
                x: 0,
                y: 1,
                feather: 5,
            },
            (4, 1),
        )
        .unwrap();
        let f = |t: f64| (t / 5.0) as f32;
        assert_eq!(weights, vec![f(1.0) * f(2.0) * f(4.0), f(1.0) * f(2.0)]);
    }

    #[test]
    fn mismatched_batches_and_channels_are_refused() {
        let at = Placement {
            x: 0,
            y: 0,
            feather: 0,
        };
        let two = Tensor::zeros((2, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let three = Tensor::zeros((3, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(composite(&two, &three, at).is_err());
        assert!(
            composite(&three, &plane(2, 2, 1.0), at).is_ok(),
            "batch 1 is broadcast"
        );
        let channels = Tensor::zeros((1, 2, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(composite(&plane(2, 2, 0.0), &channels, at).is_err());
    }
}
