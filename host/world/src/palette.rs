//! The colour palette: the dominant colours of the RGB image (1 to 7), each an exact colour that
//! occurs in the image, in 4M's `color_palette` order and serialisation.

use serde::{Deserialize, Serialize};

/// Most colours a palette holds (4M's limit).
pub const MAX_PALETTE_COLOURS: usize = 7;
/// Clusters covering less than this fraction of the image are not dominant and are dropped.
pub const MIN_COLOUR_FRACTION: f64 = 0.005;

const BITS_PER_CHANNEL: u32 = 5;
const BIN_COUNT: usize = 1 << (3 * BITS_PER_CHANNEL);
const KMEANS_ITERATIONS: usize = 10;

/// One dominant colour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaletteColour {
    pub rgb: [u8; 3],
    /// Fraction of the image's pixels in this colour's cluster.
    pub fraction: f64,
}

/// Dominant colours, most frequent first. Pixels are binned to 5 bits per channel, the occupied bins
/// are clustered with weighted k-means (k = 7, deterministic farthest-point start), small clusters
/// are dropped, and each cluster is represented by an actual pixel colour from the bin nearest its
/// centre — so every palette colour occurs in the image.
pub fn dominant_colours(rgb: &[u8]) -> Vec<PaletteColour> {
    let pixel_count = rgb.len() / 3;
    let mut counts = vec![0u32; BIN_COUNT];
    let mut sums = vec![[0u32; 3]; BIN_COUNT];
    let mut example = vec![[0u8; 3]; BIN_COUNT];
    for pixel in rgb.chunks_exact(3) {
        let bin = bin_of(pixel);
        if counts[bin] == 0 {
            example[bin] = [pixel[0], pixel[1], pixel[2]];
        }
        counts[bin] += 1;
        for channel in 0..3 {
            sums[bin][channel] += pixel[channel] as u32;
        }
    }
    // Occupied bins: mean colour and weight.
    let bins: Vec<(usize, [f64; 3], f64)> = (0..BIN_COUNT)
        .filter(|&bin| counts[bin] > 0)
        .map(|bin| {
            let count = counts[bin] as f64;
            (bin, sums[bin].map(|sum| sum as f64 / count), count)
        })
        .collect();
    if bins.is_empty() {
        return Vec::new();
    }

    let centres = initial_centres(&bins, pixel_count);
    let (centres, assignment) = weighted_kmeans(&bins, centres);

    let mut palette: Vec<PaletteColour> = Vec::new();
    for (cluster, centre) in centres.iter().enumerate() {
        let members = bins
            .iter()
            .zip(&assignment)
            .filter(|(_, assigned)| **assigned == cluster);
        let mut weight = 0.0;
        let mut nearest: Option<(f64, usize)> = None;
        for ((bin, mean, count), _) in members {
            weight += count;
            let distance = squared_distance(mean, centre);
            if nearest.is_none_or(|(best, _)| distance < best) {
                nearest = Some((distance, *bin));
            }
        }
        let fraction = weight / pixel_count as f64;
        if let Some((_, bin)) = nearest
            && fraction >= MIN_COLOUR_FRACTION
        {
            palette.push(PaletteColour {
                rgb: example[bin],
                fraction,
            });
        }
    }
    palette.sort_by(|a, b| b.fraction.total_cmp(&a.fraction).then(a.rgb.cmp(&b.rgb)));
    palette
}

/// The 4M `color_palette` string: `v1=<k>` then `v0=<R> v0=<G> v0=<B>` per colour.
pub fn palette_to_4m_string(palette: &[PaletteColour]) -> String {
    let mut parts = vec![format!("v1={}", palette.len())];
    for colour in palette {
        parts.extend(colour.rgb.iter().map(|channel| format!("v0={channel}")));
    }
    parts.join(" ")
}

fn bin_of(pixel: &[u8]) -> usize {
    let shift = 8 - BITS_PER_CHANNEL;
    ((pixel[0] as usize >> shift) << (2 * BITS_PER_CHANNEL))
        | ((pixel[1] as usize >> shift) << BITS_PER_CHANNEL)
        | (pixel[2] as usize >> shift)
}

fn squared_distance(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    (0..3)
        .map(|channel| (a[channel] - b[channel]).powi(2))
        .sum()
}

/// Deterministic k-means++-style start: the heaviest bin, then repeatedly the bin with the largest
/// weight × squared distance to its nearest chosen centre, so that large distinct regions (a wall)
/// win over rare extreme colours (a highlight); bins with very few pixels are never chosen.
fn initial_centres(bins: &[(usize, [f64; 3], f64)], pixel_count: usize) -> Vec<[f64; 3]> {
    let min_weight = (pixel_count as f64 * 0.001).max(1.0);
    let heaviest = bins
        .iter()
        .max_by(|a, b| a.2.total_cmp(&b.2).then(b.0.cmp(&a.0)))
        .map(|bin| bin.1);
    let mut centres: Vec<[f64; 3]> = heaviest.into_iter().collect();
    while centres.len() < MAX_PALETTE_COLOURS {
        let farthest = bins
            .iter()
            .filter(|bin| bin.2 >= min_weight)
            .map(|bin| {
                let distance = centres
                    .iter()
                    .map(|centre| squared_distance(&bin.1, centre))
                    .fold(f64::INFINITY, f64::min);
                (distance * bin.2, bin)
            })
            .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.0.cmp(&a.1.0)));
        match farthest {
            Some((distance, bin)) if distance > 0.0 => centres.push(bin.1),
            _ => break,
        }
    }
    centres
}

fn weighted_kmeans(
    bins: &[(usize, [f64; 3], f64)],
    mut centres: Vec<[f64; 3]>,
) -> (Vec<[f64; 3]>, Vec<usize>) {
    let mut assignment = vec![0usize; bins.len()];
    for _ in 0..KMEANS_ITERATIONS {
        for (index, bin) in bins.iter().enumerate() {
            assignment[index] = (0..centres.len())
                .min_by(|&a, &b| {
                    squared_distance(&bin.1, &centres[a])
                        .total_cmp(&squared_distance(&bin.1, &centres[b]))
                })
                .unwrap_or(0);
        }
        let mut totals = vec![([0.0f64; 3], 0.0f64); centres.len()];
        for (bin, &cluster) in bins.iter().zip(&assignment) {
            for channel in 0..3 {
                totals[cluster].0[channel] += bin.1[channel] * bin.2;
            }
            totals[cluster].1 += bin.2;
        }
        for (centre, (sum, weight)) in centres.iter_mut().zip(&totals) {
            if *weight > 0.0 {
                *centre = sum.map(|value| value / weight);
            }
        }
    }
    (centres, assignment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_colour_image_gives_its_two_colours_by_area() {
        let mut rgb = Vec::new();
        for pixel in 0..1000 {
            rgb.extend_from_slice(if pixel < 700 {
                &[200, 10, 10]
            } else {
                &[10, 10, 200]
            });
        }
        let palette = dominant_colours(&rgb);
        assert_eq!(palette.len(), 2);
        assert_eq!(palette[0].rgb, [200, 10, 10]);
        assert!((palette[0].fraction - 0.7).abs() < 1e-9);
        assert_eq!(palette[1].rgb, [10, 10, 200]);
        assert_eq!(
            palette_to_4m_string(&palette),
            "v1=2 v0=200 v0=10 v0=10 v0=10 v0=10 v0=200"
        );
    }

    #[test]
    fn single_colour_image_gives_one_colour() {
        let rgb = vec![77u8; 300];
        let palette = dominant_colours(&rgb);
        assert_eq!(
            palette,
            vec![PaletteColour {
                rgb: [77, 77, 77],
                fraction: 1.0
            }]
        );
    }
}
