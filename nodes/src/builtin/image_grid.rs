use candle_core::{DType, Device, Tensor};

use crate::sd3::types::Image;
use crate::{
    data_type, filled_vec, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError,
    NodeOutput, NodeSchema, OutputSpec, RunContext, Value, ValueEstimate,
};
use cretok_model::bitmap_font::{self, GLYPH_HEIGHT};

/// The grid's size per byte of its images: room for padding and captions up to
/// the size of the images themselves (the canvas is allocated fallibly beyond).
const GRID_BYTES_PER_IMAGE_BYTE: u64 = 4;

/// Lays a batch of images out as one image, left to right then top to
/// bottom, on a white background, each with an optional caption below it.
pub struct ImageGrid;

/// Where the cells go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    count: usize,
    columns: usize,
    rows: usize,
    cell_width: usize,
    cell_height: usize,
    padding: usize,
    /// Height of the caption strip under each image (0 without captions).
    caption_height: usize,
    /// Font pixel size.
    scale: usize,
}

impl Layout {
    fn new(
        count: usize,
        (height, width): (usize, usize),
        columns: usize,
        padding: usize,
        captions: bool,
    ) -> Self {
        let columns = columns.clamp(1, count.max(1));
        // Captions stay readable on large images: about 40 characters per cell.
        let scale = (width / 256).max(1);
        Layout {
            count,
            columns,
            rows: count.div_ceil(columns),
            cell_width: width,
            cell_height: height,
            padding,
            caption_height: if captions {
                (GLYPH_HEIGHT + 4) * scale
            } else {
                0
            },
            scale,
        }
    }

    fn width(&self) -> usize {
        self.columns * (self.cell_width + self.padding) + self.padding
    }

    fn height(&self) -> usize {
        self.rows * (self.cell_height + self.caption_height + self.padding) + self.padding
    }

    /// Top-left corner of cell `i`.
    fn origin(&self, i: usize) -> (usize, usize) {
        let (row, column) = (i / self.columns, i % self.columns);
        (
            self.padding + column * (self.cell_width + self.padding),
            self.padding + row * (self.cell_height + self.caption_height + self.padding),
        )
    }
}

/// An RGB canvas, row-major, values in 0..=1.
struct Canvas {
    width: usize,
    pixels: Vec<f32>,
}

impl Canvas {
    fn white(width: usize, height: usize) -> Result<Self, NodeError> {
        let len = width.saturating_mul(height).saturating_mul(3);
        Ok(Canvas {
            width,
            pixels: filled_vec(len, 1.0, "the grid")?,
        })
    }

    /// Copies an `h`×`w` RGB image with its top left at `(x, y)`.
    fn paste(&mut self, image: &[f32], w: usize, (x, y): (usize, usize)) {
        for (row, line) in image.chunks_exact(w * 3).enumerate() {
            let start = ((y + row) * self.width + x) * 3;
            self.pixels[start..start + w * 3].copy_from_slice(line);
        }
    }

    fn ink(&mut self, x: usize, y: usize) {
        let i = (y * self.width + x) * 3;
        self.pixels[i..i + 3].fill(0.0);
    }
}

/// One caption per line; fewer lines than images leave the rest blank.
fn caption_lines(captions: &str, count: usize) -> Result<Vec<&str>, NodeError> {
    if captions.trim().is_empty() {
        return Ok(Vec::new());
    }
    let lines: Vec<&str> = captions.trim_end().lines().map(str::trim).collect();
    if lines.len() > count {
        return Err(NodeError::invalid_input(
            "captions",
            format!(
                "{} lines for {count} images (one caption per line)",
                lines.len()
            ),
        ));
    }
    Ok(lines)
}

fn compose(
    images: &Tensor,
    columns: usize,
    padding: usize,
    captions: &[&str],
) -> Result<Tensor, NodeError> {
    let (count, height, width, channels) = images
        .dims4()
        .map_err(|e| NodeError::invalid_input("images", e.to_string()))?;
    if channels != 3 || count == 0 {
        return Err(NodeError::invalid_input(
            "images",
            format!("{count} images of {channels} channels; expected at least one RGB image"),
        ));
    }
    let layout = Layout::new(
        count,
        (height, width),
        columns,
        padding,
        !captions.is_empty(),
    );
    let pixels: Vec<f32> = images
        .to_dtype(DType::F32)
        .and_then(|x| x.flatten_all())
        .and_then(|x| x.to_vec1())
        .map_err(anyhow::Error::from)?;
    let mut canvas = Canvas::white(layout.width(), layout.height())?;
    let image_len = height * width * 3;
    for (i, image) in pixels.chunks_exact(image_len).enumerate() {
        let (x, y) = layout.origin(i);
        canvas.paste(image, width, (x, y));
        if let Some(caption) = captions.get(i) {
            let top = y + height + 2 * layout.scale;
            bitmap_font::draw(caption, layout.scale, width, |dx, dy| {
                canvas.ink(x + dx, top + dy)
            });
        }
    }
    Tensor::from_vec(
        canvas.pixels,
        (1, layout.height(), layout.width(), 3),
        &Device::Cpu,
    )
    .map_err(|e| NodeError::Failed(e.into()))
}

impl Node for ImageGrid {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageGrid", "image")
            .display_name("Image Grid")
            .description(
                "Lays a batch of images out side by side in one image, with a caption under each.",
            )
            .input(InputSpec::required(
                "images",
                InputKind::link(data_type::IMAGE),
            ))
            .input(
                InputSpec::required("columns", InputKind::int(4, 1, 64))
                    .with_tooltip("Images per row (fewer when the batch is smaller)."),
            )
            .input(
                InputSpec::required("padding", InputKind::int(4, 0, 256))
                    .with_tooltip("White space around and between the images, in pixels."),
            )
            .input(
                InputSpec::optional("captions", InputKind::text(""))
                    .with_tooltip("One caption per line, in batch order (drawn in capitals)."),
            )
            .output(OutputSpec::new(data_type::IMAGE))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let images = inputs.handle::<Image>("images")?;
        let columns = inputs.int("columns")?.max(1) as usize;
        let padding = inputs.int("padding")?.max(0) as usize;
        let captions = inputs.optional("captions", Inputs::string, "")?;
        let count = images.pixels.dim(0).map_err(anyhow::Error::from)?;
        let lines = caption_lines(captions, count)?;
        let pixels = compose(&images.pixels, columns, padding, &lines)?;
        Ok(NodeOutput::values(vec![Value::handle(Image { pixels })]))
    }

    /// The grid, plus the flat copy of the images it is composed from.
    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let images = inputs.bytes("images");
        let grid = images.saturating_mul(GRID_BYTES_PER_IMAGE_BYTE);
        Ok(Estimate::outputs(vec![ValueEstimate::bytes(grid)]).with_working_bytes(images))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `count` solid images, image `i` filled with `i / 10`.
    fn batch(count: usize, height: usize, width: usize) -> Tensor {
        let data: Vec<f32> = (0..count)
            .flat_map(|i| std::iter::repeat_n(i as f32 / 10.0, height * width * 3))
            .collect();
        Tensor::from_vec(data, (count, height, width, 3), &Device::Cpu).unwrap()
    }

    fn pixel(grid: &Tensor, x: usize, y: usize) -> Vec<f32> {
        grid.get(0)
            .unwrap()
            .get(y)
            .unwrap()
            .get(x)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn places_images_in_rows_with_padding() {
        let grid = compose(&batch(5, 6, 8), 2, 3, &[]).unwrap();
        // 2 columns, 3 rows: 2 * (8 + 3) + 3 wide, 3 * (6 + 3) + 3 high.
        assert_eq!(grid.dims(), [1, 30, 25, 3]);
        assert_eq!(pixel(&grid, 3, 3), [0.0; 3]);
        assert_eq!(pixel(&grid, 14, 3), [0.1; 3]);
        assert_eq!(pixel(&grid, 3 + 7, 12 + 5), [0.2; 3]);
        assert_eq!(pixel(&grid, 3, 21), [0.4; 3]);
        // Padding and the empty sixth cell are white.
        assert_eq!(pixel(&grid, 0, 0), [1.0; 3]);
        assert_eq!(pixel(&grid, 11, 3), [1.0; 3]);
        assert_eq!(pixel(&grid, 14, 21), [1.0; 3]);
    }

    #[test]
    fn more_columns_than_images_gives_one_row() {
        let grid = compose(&batch(2, 4, 4), 8, 0, &[]).unwrap();
        assert_eq!(grid.dims(), [1, 4, 8, 3]);
    }

    #[test]
    fn captions_are_drawn_below_their_image_only() {
        let grid = compose(&batch(2, 4, 40), 2, 2, &["T", ""]).unwrap();
        let strip = GLYPH_HEIGHT + 4;
        assert_eq!(grid.dims(), [1, 2 + 4 + strip + 2, 2 + 2 * 42, 3]);
        let caption_top = 2 + 4 + 2;
        let ink = |x0: usize| {
            (caption_top..caption_top + GLYPH_HEIGHT)
                .flat_map(|y| (x0..x0 + 40).map(move |x| (x, y)))
                .filter(|&(x, y)| pixel(&grid, x, y) == [0.0; 3])
                .count()
        };
        // 'T' has 5 + 6 ink pixels; the second caption is empty.
        assert_eq!(ink(2), 11);
        assert_eq!(ink(44), 0);
        assert_eq!(
            pixel(&grid, 2 + 2, caption_top),
            [0.0; 3],
            "the bar of the T"
        );
    }

    #[test]
    fn caption_lines_must_not_outnumber_images() {
        assert_eq!(caption_lines("a\nb\n", 3).unwrap(), ["a", "b"]);
        assert!(caption_lines("  \n", 3).unwrap().is_empty());
        let err = caption_lines("a\nb\nc", 2).unwrap_err().to_string();
        assert!(
            err.contains("captions") && err.contains("3 lines for 2 images"),
            "{err}"
        );
    }

    #[test]
    fn refuses_non_rgb() {
        let gray = Tensor::zeros((1, 4, 4, 1), DType::F32, &Device::Cpu).unwrap();
        let err = compose(&gray, 1, 0, &[]).unwrap_err().to_string();
        assert!(err.contains("images"), "{err}");
    }
}
