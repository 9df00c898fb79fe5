//! The ray caster: one primary ray per pixel centre gives RGB (shaded, with shadows), metric depth,
//! camera-frame normals, semantic classes and instance ids, all aligned pixel for pixel.

use crate::geometry::{Primitive, RAY_EPSILON};
use crate::math::Vec3;
use crate::scene::{IMAGE_SIZE, MAX_OBJECTS, SceneSpec, SemanticClass, WALL_DISTANCE};

/// Number of pixels in each image modality.
pub const PIXEL_COUNT: usize = IMAGE_SIZE * IMAGE_SIZE;

/// The dense, pixel-aligned outputs of the ray caster (row-major, row 0 at the top).
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedImages {
    /// Shaded colour, 3 bytes (R, G, B) per pixel.
    pub rgb: Vec<u8>,
    /// Metric z-depth in metres: distance from the camera plane along the viewing direction.
    pub depth_metres: Vec<f32>,
    /// Unit surface normals in the camera frame (x right, y up, z towards the viewer), 3 floats per pixel.
    pub normals: Vec<f32>,
    /// Semantic class id per pixel (see [`SemanticClass`]).
    pub semseg: Vec<u8>,
    /// Instance id per pixel: 0 for floor and wall, otherwise the object's `instance_id`.
    pub instance: Vec<u8>,
    /// For each instance id (index 0 unused), the number of pixels where it is the visible surface.
    pub visible_pixels: [u32; MAX_OBJECTS + 1],
    /// For each instance id, the number of pixels whose ray hits it at all (visible or hidden behind another).
    pub amodal_pixels: [u32; MAX_OBJECTS + 1],
}

/// Strength and sharpness of the highlight on objects (floor and wall are matte).
const SPECULAR_STRENGTH: f64 = 0.35;
const SPECULAR_EXPONENT: i32 = 40;

/// Renders every dense modality of a scene except edges (which are computed from the RGB image).
pub fn render(scene: &SceneSpec) -> RenderedImages {
    let camera = &scene.camera;
    let primitives: Vec<Primitive> = scene
        .objects
        .iter()
        .map(|object| Primitive::new(object, camera))
        .collect();
    let origin = camera.frame.origin;
    let forward = camera.frame.forward;
    let to_light = scene.lighting.to_light;
    let ambient = scene.lighting.ambient;

    let mut images = RenderedImages {
        rgb: vec![0; PIXEL_COUNT * 3],
        depth_metres: vec![0.0; PIXEL_COUNT],
        normals: vec![0.0; PIXEL_COUNT * 3],
        semseg: vec![0; PIXEL_COUNT],
        instance: vec![0; PIXEL_COUNT],
        visible_pixels: [0; MAX_OBJECTS + 1],
        amodal_pixels: [0; MAX_OBJECTS + 1],
    };
    // Objects whose screen rectangle covers the current row, rebuilt once per row, so that the
    // per-pixel loop only looks at objects that can possibly be hit there.
    let mut row_candidates: Vec<usize> = Vec::with_capacity(primitives.len());

    for row in 0..IMAGE_SIZE {
        row_candidates.clear();
        row_candidates.extend((0..primitives.len()).filter(|&index| {
            (primitives[index].screen_rect.min_row..=primitives[index].screen_rect.max_row)
                .contains(&row)
        }));
        for column in 0..IMAGE_SIZE {
            let direction = camera.ray_direction(column, row);
            let (mut nearest, mut normal, mut class) = background_hit(origin, direction);
            let mut object_index = None;
            for &index in &row_candidates {
                let primitive = &primitives[index];
                if !primitive.screen_rect.contains(column, row) {
                    continue;
                }
                // Every object is tested up to infinity (not just up to the nearest hit) so that the
                // amodal pixel counts used for the occlusion score see hidden parts too.
                if let Some((distance, surface_normal)) =
                    primitive.intersect(origin, direction, f64::INFINITY)
                {
                    images.amodal_pixels[index + 1] += 1;
                    if distance < nearest {
                        nearest = distance;
                        normal = surface_normal;
                        class = scene.objects[index].shape.class();
                        object_index = Some(index);
                    }
                }
            }

            let pixel = row * IMAGE_SIZE + column;
            let point = origin + direction * nearest;
            let base_colour = match object_index {
                Some(index) => scene.objects[index].colour.rgb(),
                None if class == SemanticClass::Floor => scene.floor_rgb,
                None => scene.wall_rgb,
            };
            let facing_light = normal.dot(to_light);
            let lit =
                facing_light > 0.0 && !in_shadow(&primitives, point + normal * 1e-6, to_light);
            let diffuse = if lit { facing_light } else { 0.0 };
            let specular = if lit && object_index.is_some() {
                let halfway = (to_light - direction).normalized();
                SPECULAR_STRENGTH * normal.dot(halfway).max(0.0).powi(SPECULAR_EXPONENT)
            } else {
                0.0
            };
            let light = ambient + (1.0 - ambient) * diffuse;
            for (output, &base) in images.rgb[pixel * 3..pixel * 3 + 3]
                .iter_mut()
                .zip(&base_colour)
            {
                // Adding 0.5 and truncating rounds non-negative values without a libm call.
                *output = ((base as f64 * light + 255.0 * specular).clamp(0.0, 255.0) + 0.5) as u8;
            }

            images.depth_metres[pixel] = (nearest * direction.dot(forward)) as f32;
            let camera_normal = camera.to_camera_frame(normal);
            images.normals[pixel * 3] = camera_normal.x as f32;
            images.normals[pixel * 3 + 1] = camera_normal.y as f32;
            images.normals[pixel * 3 + 2] = camera_normal.z as f32;
            images.semseg[pixel] = class.id();
            if let Some(index) = object_index {
                let instance_id = scene.objects[index].instance_id;
                images.instance[pixel] = instance_id;
                images.visible_pixels[instance_id as usize] += 1;
            }
        }
    }
    images
}

/// Nearest hit on the floor (y = 0) or the back wall (z = -WALL_DISTANCE): distance, normal, class.
/// The camera's limited azimuth guarantees every ray meets one of the two.
fn background_hit(origin: Vec3, direction: Vec3) -> (f64, Vec3, SemanticClass) {
    let floor_distance = if direction.y < 0.0 {
        -origin.y / direction.y
    } else {
        f64::INFINITY
    };
    let wall_distance = if direction.z < 0.0 {
        (-WALL_DISTANCE - origin.z) / direction.z
    } else {
        f64::INFINITY
    };
    if floor_distance <= wall_distance {
        (
            floor_distance,
            Vec3::new(0.0, 1.0, 0.0),
            SemanticClass::Floor,
        )
    } else {
        (wall_distance, Vec3::new(0.0, 0.0, 1.0), SemanticClass::Wall)
    }
}

/// Whether any object blocks the light; stops at the first blocker. Floor and wall never can: the
/// light is above the floor and on the camera's side of the wall.
fn in_shadow(primitives: &[Primitive], point: Vec3, to_light: Vec3) -> bool {
    primitives.iter().any(|primitive| {
        primitive.may_hit(point, to_light)
            && primitive
                .intersect(point, to_light, f64::INFINITY)
                .is_some_and(|(d, _)| d > RAY_EPSILON)
    })
}

/// Encodes camera-frame unit normals as 8-bit RGB: `round((n + 1) / 2 * 255)` per component.
pub fn encode_normals(normals: &[f32]) -> Vec<u8> {
    normals
        .iter()
        .map(|&component| (((component + 1.0) * 127.5).clamp(0.0, 255.0) + 0.5) as u8)
        .collect()
}

/// Depth in millimetres, saturating at 65535 (65.535 m; scenes stay well inside that).
pub fn depth_to_millimetres(depth_metres: &[f32]) -> Vec<u16> {
    depth_metres
        .iter()
        .map(|&depth| ((depth * 1000.0).clamp(0.0, 65535.0) + 0.5) as u16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pixel_hits_floor_wall_or_object_at_positive_depth() {
        for seed in 0..5 {
            let images = render(&SceneSpec::from_seed(seed));
            assert!(
                images
                    .depth_metres
                    .iter()
                    .all(|&depth| depth > 0.5 && depth < 60.0),
                "seed {seed}"
            );
            assert!(
                images
                    .semseg
                    .iter()
                    .all(|&id| SemanticClass::from_id(id).is_some())
            );
            assert!(images.semseg.contains(&SemanticClass::Floor.id()));
        }
    }

    #[test]
    fn visible_pixels_never_exceed_amodal_pixels() {
        for seed in 0..10 {
            let images = render(&SceneSpec::from_seed(seed));
            for id in 1..=MAX_OBJECTS {
                assert!(images.visible_pixels[id] <= images.amodal_pixels[id]);
            }
        }
    }

    #[test]
    fn normal_encoding_maps_the_unit_range_to_bytes() {
        assert_eq!(encode_normals(&[-1.0, 0.0, 1.0]), vec![0, 128, 255]);
    }
}
