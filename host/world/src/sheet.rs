//! Contact sheets of labelled image tiles: one row per scene, a title line above each row, for
//! people to look at results (the evaluation's sheet of generated outputs, for one).

use std::path::Path;

use crate::error::WorldError;
use crate::font::{CELL_WIDTH, LINE_HEIGHT, wrap};
use crate::image_io::{Canvas, PngPixels, write_png};
use crate::scene::IMAGE_SIZE;

/// One row of a sheet: a title (wrapped to the row's width) and `IMAGE_SIZE`² RGB tiles with
/// their labels.
pub struct SheetRow {
    pub title: String,
    pub tiles: Vec<(String, Vec<u8>)>,
}

const SCALE: usize = 2;
const GAP: usize = 4;

/// Draws the rows (tiles of a wrong size are refused) and writes the sheet as a PNG.
pub fn write_sheet(rows: &[SheetRow], path: &Path) -> Result<(), WorldError> {
    let columns = rows.iter().map(|r| r.tiles.len()).max().unwrap_or(0).max(1);
    let width = columns * IMAGE_SIZE + (columns + 1) * GAP;
    let text_columns = (width - 2 * GAP) / (CELL_WIDTH * SCALE);
    let line = LINE_HEIGHT * SCALE;
    let titles: Vec<Vec<String>> = rows.iter().map(|r| wrap(&r.title, text_columns)).collect();
    let row_height = |title: &[String]| title.len() * line + line + IMAGE_SIZE + 2 * GAP;
    let height = GAP + titles.iter().map(|t| row_height(t)).sum::<usize>();
    let mut canvas = Canvas::new(width, height, [255, 255, 255]);
    let mut top = GAP;
    for (row, title) in rows.iter().zip(&titles) {
        for (index, text) in title.iter().enumerate() {
            canvas.draw_text(GAP, top + index * line, text, [20, 20, 20], SCALE);
        }
        let label_top = top + title.len() * line + GAP;
        for (column, (label, rgb)) in row.tiles.iter().enumerate() {
            if rgb.len() != IMAGE_SIZE * IMAGE_SIZE * 3 {
                return Err(WorldError::PngEncoding {
                    path: path.to_owned(),
                    message: format!(
                        "tile `{label}` has {} bytes, not a {IMAGE_SIZE}x{IMAGE_SIZE} RGB image",
                        rgb.len()
                    ),
                });
            }
            let left = GAP + column * (IMAGE_SIZE + GAP);
            canvas.draw_text(left, label_top, label, [60, 60, 60], SCALE);
            canvas.draw_tile(left, label_top + line, |p| {
                [rgb[3 * p], rgb[3 * p + 1], rgb[3 * p + 2]]
            });
        }
        top += row_height(title);
    }
    write_png(path, width, height, PngPixels::Rgb8(&canvas.pixels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sheet_holds_every_tile_and_refuses_a_wrong_size() {
        let dir = tempfile::tempdir().unwrap();
        let tile = |v: u8| vec![v; IMAGE_SIZE * IMAGE_SIZE * 3];
        let rows = [
            SheetRow {
                title: "seed 1: a red ball".into(),
                tiles: vec![("rgb".into(), tile(10)), ("depth".into(), tile(200))],
            },
            SheetRow {
                title: "seed 2".into(),
                tiles: vec![("rgb".into(), tile(90))],
            },
        ];
        let path = dir.path().join("sheet.png");
        write_sheet(&rows, &path).unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let info = decoder.read_info().unwrap().info().clone();
        assert_eq!(info.width as usize, 2 * IMAGE_SIZE + 3 * GAP);
        let bad = [SheetRow {
            title: String::new(),
            tiles: vec![("small".into(), vec![0; 12])],
        }];
        let error = write_sheet(&bad, &dir.path().join("bad.png")).unwrap_err();
        assert!(error.to_string().contains("small"), "{error}");
    }
}
