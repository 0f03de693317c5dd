//! The text chunks of a PNG (`tEXt`, `zTXt`, `iTXt`), where SaveImage keeps
//! the prompt and the editor workflow.

use anyhow::Context;

/// The PNG signature, to tell images from JSON files.
pub const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

pub fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(&SIGNATURE)
}

/// Every text chunk as `(keyword, text)`, in file order within each kind.
pub fn text_chunks(bytes: &[u8]) -> anyhow::Result<Vec<(String, String)>> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_ignore_text_chunk(false);
    let mut reader = decoder.read_info().context("reading the PNG")?;
    // Text after the image data is only seen once the frames are read.
    let mut pixels = vec![0; reader.output_buffer_size().unwrap_or(0)];
    reader.next_frame(&mut pixels).context("reading the PNG")?;
    reader.finish().context("reading the PNG")?;
    let info = reader.info();
    let mut chunks: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    for chunk in &info.compressed_latin1_text {
        let text = chunk.get_text().context("a zTXt chunk")?;
        chunks.push((chunk.keyword.clone(), text));
    }
    for chunk in &info.utf8_text {
        let text = chunk.get_text().context("an iTXt chunk")?;
        chunks.push((chunk.keyword.clone(), text));
    }
    Ok(chunks)
}

/// The text of the first chunk named `keyword`.
pub fn text(chunks: &[(String, String)], keyword: &str) -> Option<String> {
    chunks
        .iter()
        .find(|(k, _)| k == keyword)
        .map(|(_, t)| t.clone())
}
