//! Training as a picture: the full-set train and held-out losses (top) and the share of training
//! pair-orders at or above θ (bottom) over steps, drawn with plotters into RGB pixels. Plotters
//! draws text only with system fonts, so the labels use the built-in bitmap font.

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::report::EvalReport;
use crate::bitmap_font;

pub const PLOT_WIDTH: usize = 512;
pub const PLOT_HEIGHT: usize = 384;
/// The curves' colours (the legend names them).
pub const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
pub const HELD_OUT_COLOR: RGBColor = RGBColor(255, 127, 14);
pub const SHARE_COLOR: RGBColor = RGBColor(44, 160, 44);
const TEXT_COLOR: RGBColor = RGBColor(40, 40, 40);
/// Room at the top of each panel for its legend line.
const LEGEND_HEIGHT: u32 = 14;
/// Room on the left for the value labels.
const LABEL_WIDTH: u32 = 46;

/// Every full-set evaluation of a run, in step order.
#[derive(Debug, Clone, Default)]
pub struct LossHistory {
    evals: Vec<EvalReport>,
}

impl LossHistory {
    /// Adds an evaluation (one per step: a repeated step replaces the earlier one).
    pub fn record(&mut self, report: &EvalReport) {
        if self
            .evals
            .last()
            .is_some_and(|last| last.step == report.step)
        {
            self.evals.pop();
        }
        self.evals.push(report.clone());
    }

    pub fn is_empty(&self) -> bool {
        self.evals.is_empty()
    }

    /// The plot as 8-bit RGB, [`PLOT_WIDTH`] × [`PLOT_HEIGHT`].
    pub fn render(&self) -> Result<Vec<u8>> {
        let mut rgb = vec![255u8; PLOT_WIDTH * PLOT_HEIGHT * 3];
        self.draw_curves(&mut rgb)
            .map_err(|e| anyhow!("drawing the loss plot: {e}"))?;
        self.draw_labels(&mut rgb);
        Ok(rgb)
    }

    /// The plot as a PNG file's bytes.
    pub fn png(&self) -> Result<Vec<u8>> {
        let rgb = self.render()?;
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, PLOT_WIDTH as u32, PLOT_HEIGHT as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&rgb)?;
        writer.finish()?;
        Ok(bytes)
    }

    fn last_step(&self) -> u64 {
        self.evals.last().map_or(1, |e| e.step.max(1))
    }

    /// The loss axis: every train and held-out value, padded.
    fn loss_range(&self) -> (f64, f64) {
        let values = self
            .evals
            .iter()
            .flat_map(|e| [Some(e.train_loss), e.test_loss])
            .flatten();
        let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if lo > hi {
            return (0.0, 1.0);
        }
        let pad = ((hi - lo) * 0.1).max(1e-3);
        (lo - pad, hi + pad)
    }

    fn panels(&self) -> (u32, u32) {
        let top = PLOT_HEIGHT as u32 * 2 / 3;
        (top, PLOT_HEIGHT as u32 - top)
    }

    fn draw_curves(&self, rgb: &mut [u8]) -> Result<(), Box<dyn std::error::Error + '_>> {
        let size = (PLOT_WIDTH as u32, PLOT_HEIGHT as u32);
        let root = BitMapBackend::with_buffer(rgb, size).into_drawing_area();
        root.fill(&WHITE)?;
        let (top_height, _) = self.panels();
        let (top, bottom) = root.split_vertically(top_height);
        let steps = self.last_step();
        let (lo, hi) = self.loss_range();
        let mut losses = ChartBuilder::on(&top)
            .margin_top(LEGEND_HEIGHT)
            .margin_left(LABEL_WIDTH)
            .margin_right(8)
            .margin_bottom(4)
            .build_cartesian_2d(0..steps, lo..hi)?;
        losses.configure_mesh().light_line_style(WHITE).draw()?;
        let train = self.evals.iter().map(|e| (e.step, e.train_loss));
        losses.draw_series(LineSeries::new(train, TRAIN_COLOR.stroke_width(2)))?;
        let held_out = self
            .evals
            .iter()
            .filter_map(|e| Some((e.step, e.test_loss?)));
        losses.draw_series(LineSeries::new(held_out, HELD_OUT_COLOR.stroke_width(2)))?;

        let mut share = ChartBuilder::on(&bottom)
            .margin_top(LEGEND_HEIGHT)
            .margin_left(LABEL_WIDTH)
            .margin_right(8)
            .margin_bottom(8)
            .build_cartesian_2d(0..steps, 0.0..1.0)?;
        share.configure_mesh().light_line_style(WHITE).draw()?;
        let above = self.evals.iter().map(|e| (e.step, e.share_above));
        share.draw_series(LineSeries::new(above, SHARE_COLOR.stroke_width(2)))?;
        root.present()?;
        Ok(())
    }

    /// Legends and axis values in the bitmap font.
    fn draw_labels(&self, rgb: &mut [u8]) {
        let (top_height, _) = self.panels();
        let (lo, hi) = self.loss_range();
        let mut text = |s: &str, x: usize, y: usize, color: RGBColor| {
            bitmap_font::draw(s, 1, PLOT_WIDTH.saturating_sub(x), |dx, dy| {
                let (px, py) = (x + dx, y + dy);
                if px < PLOT_WIDTH && py < PLOT_HEIGHT {
                    let at = (py * PLOT_WIDTH + px) * 3;
                    rgb[at..at + 3].copy_from_slice(&[color.0, color.1, color.2]);
                }
            });
        };
        let step = |s: &str| s.len() * bitmap_font::ADVANCE;
        let mut x = LABEL_WIDTH as usize;
        for (label, color) in [
            ("TRAIN LOSS", TRAIN_COLOR),
            ("HELD-OUT LOSS", HELD_OUT_COLOR),
        ] {
            text(label, x, 3, color);
            x += step(label) + 12;
        }
        text(&format!("STEP {}", self.last_step()), x, 3, TEXT_COLOR);
        text(&format!("{hi:.3}"), 2, LEGEND_HEIGHT as usize, TEXT_COLOR);
        let bottom_of_top = top_height as usize - 4 - bitmap_font::GLYPH_HEIGHT;
        text(&format!("{lo:.3}"), 2, bottom_of_top, TEXT_COLOR);
        let share_top = top_height as usize;
        text(
            "SHARE OF PAIRS AT OR ABOVE THETA",
            LABEL_WIDTH as usize,
            share_top + 3,
            SHARE_COLOR,
        );
        text("1", 2, share_top + LEGEND_HEIGHT as usize, TEXT_COLOR);
        let share_bottom = PLOT_HEIGHT - 8 - bitmap_font::GLYPH_HEIGHT;
        text("0", 2, share_bottom, TEXT_COLOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(step: u64, train: f64, test: f64, share: f64) -> EvalReport {
        EvalReport {
            step,
            train_loss: train,
            test_loss: Some(test),
            share_above: share,
        }
    }

    fn count(rgb: &[u8], color: RGBColor) -> usize {
        rgb.chunks(3)
            .filter(|p| p == &[color.0, color.1, color.2])
            .count()
    }

    #[test]
    fn draws_both_loss_curves_and_the_share() {
        let mut history = LossHistory::default();
        for step in 0..=10u64 {
            let t = step as f64 / 10.0;
            history.record(&eval(step * 10, 0.9 - 0.3 * t, 0.95 - 0.25 * t, t));
        }
        history.record(&eval(100, 0.6, 0.7, 1.0));
        let rgb = history.render().unwrap();
        assert_eq!(rgb.len(), PLOT_WIDTH * PLOT_HEIGHT * 3);
        for color in [TRAIN_COLOR, HELD_OUT_COLOR, SHARE_COLOR] {
            assert!(
                count(&rgb, color) > 300,
                "{color:?}: {}",
                count(&rgb, color)
            );
        }
        let png = history.png().unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}
