//! Bounding boxes derived from the instance map (visible pixels only), in the order and serialisation
//! of 4M's `det` modality.

use serde::{Deserialize, Serialize};

use crate::scene::{IMAGE_SIZE, MAX_OBJECTS, SceneSpec};

/// The box around one object's visible pixels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoundingBox {
    /// Shape class name ("sphere", "cube", "cylinder", "cone").
    pub label: String,
    pub instance_id: u8,
    /// Colour and size names, as the caption uses them.
    pub colour: String,
    pub size: String,
    /// Inclusive pixel bounds: [xmin, ymin, xmax, ymax] (columns and rows, 0..=223).
    pub pixel_box: [u32; 4],
    /// Box in normalised [0, 1] image coordinates, pixel edges included:
    /// [xmin / 224, ymin / 224, (xmax + 1) / 224, (ymax + 1) / 224].
    pub normalized_box: [f64; 4],
    pub visible_pixels: u32,
}

impl BoundingBox {
    /// Horizontal centre in pixels.
    pub fn centre_x(&self) -> f64 {
        (self.pixel_box[0] + self.pixel_box[2]) as f64 / 2.0
    }

    /// 4M's `dist_to_orig` key: xmin² + ymin² of the normalised box.
    pub fn distance_to_origin(&self) -> f64 {
        self.normalized_box[0].powi(2) + self.normalized_box[1].powi(2)
    }

    /// The `det` sequence's order: nearest the top-left corner first, instance id breaking ties.
    pub fn det_order(&self, other: &BoundingBox) -> std::cmp::Ordering {
        self.distance_to_origin()
            .total_cmp(&other.distance_to_origin())
            .then(self.instance_id.cmp(&other.instance_id))
    }
}

/// One box per object with at least one visible pixel, sorted like 4M (`dist_to_orig`: by
/// xmin² + ymin² of the normalised box, ascending; instance id breaks ties).
pub fn boxes_from_instances(scene: &SceneSpec, instance_map: &[u8]) -> Vec<BoundingBox> {
    let mut bounds = [[u32::MAX, u32::MAX, 0, 0]; MAX_OBJECTS + 1];
    let mut counts = [0u32; MAX_OBJECTS + 1];
    for (pixel, &instance_id) in instance_map.iter().enumerate() {
        if instance_id == 0 {
            continue;
        }
        let (column, row) = ((pixel % IMAGE_SIZE) as u32, (pixel / IMAGE_SIZE) as u32);
        let bound = &mut bounds[instance_id as usize];
        bound[0] = bound[0].min(column);
        bound[1] = bound[1].min(row);
        bound[2] = bound[2].max(column);
        bound[3] = bound[3].max(row);
        counts[instance_id as usize] += 1;
    }
    let size = IMAGE_SIZE as f64;
    let mut boxes: Vec<BoundingBox> = scene
        .objects
        .iter()
        .filter(|object| counts[object.instance_id as usize] > 0)
        .map(|object| {
            let pixel_box = bounds[object.instance_id as usize];
            BoundingBox {
                label: object.shape.name().to_string(),
                instance_id: object.instance_id,
                colour: object.colour.name().to_string(),
                size: object.size.name().to_string(),
                pixel_box,
                normalized_box: [
                    pixel_box[0] as f64 / size,
                    pixel_box[1] as f64 / size,
                    (pixel_box[2] + 1) as f64 / size,
                    (pixel_box[3] + 1) as f64 / size,
                ],
                visible_pixels: counts[object.instance_id as usize],
            }
        })
        .collect();
    boxes.sort_by(BoundingBox::det_order);
    boxes
}

/// The 4M `det` string: `v0=<xmin·999> v1=<ymin·999> v2=<xmax·999> v3=<ymax·999> <label>` per box, rounded,
/// joined by spaces, in the order given.
pub fn boxes_to_4m_string(boxes: &[BoundingBox]) -> String {
    boxes
        .iter()
        .map(|bounding_box| {
            let [xmin, ymin, xmax, ymax] = bounding_box
                .normalized_box
                .map(|value| (value * 999.0).round() as u32);
            format!(
                "v0={xmin} v1={ymin} v2={xmax} v3={ymax} {}",
                bounding_box.label
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_tight_around_a_painted_instance() {
        let scene = SceneSpec::from_seed(11);
        let mut instance_map = vec![0u8; IMAGE_SIZE * IMAGE_SIZE];
        for row in 10..20 {
            for column in 30..35 {
                instance_map[row * IMAGE_SIZE + column] = 1;
            }
        }
        let boxes = boxes_from_instances(&scene, &instance_map);
        assert_eq!(boxes.len(), 1);
        assert_eq!(boxes[0].pixel_box, [30, 10, 34, 19]);
        assert_eq!(boxes[0].visible_pixels, 50);
        assert_eq!(boxes[0].label, scene.objects[0].shape.name());
        let text = boxes_to_4m_string(&boxes);
        assert!(text.starts_with("v0=134 v1=45 v2=156 v3=89 "), "{text}");
    }
}
