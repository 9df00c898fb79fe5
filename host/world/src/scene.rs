//! Scene sampling: everything about a scene (objects, camera, light, colours) is drawn from its u64 seed.

use serde::Serialize;

use crate::math::Vec3;
use crate::rng::SceneRng;

/// Width and height in pixels of every image modality (the 4M `@224` resolution).
pub const IMAGE_SIZE: usize = 224;

/// Most objects a scene holds; instance ids run from 1 to this.
pub const MAX_OBJECTS: usize = 6;

/// The back wall is the plane z = -WALL_DISTANCE, facing the camera.
pub const WALL_DISTANCE: f64 = 5.0;

/// Half the vertical (and horizontal) field of view of the square camera, in degrees.
pub const HALF_FIELD_OF_VIEW_DEGREES: f64 = 20.0;

/// Semantic class of a pixel. The discriminant is the class id written to the semseg map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum SemanticClass {
    Floor = 0,
    Wall = 1,
    Sphere = 2,
    Cube = 3,
    Cylinder = 4,
    Cone = 5,
}

impl SemanticClass {
    /// Every class in id order.
    pub const ALL: [SemanticClass; 6] = [
        SemanticClass::Floor,
        SemanticClass::Wall,
        SemanticClass::Sphere,
        SemanticClass::Cube,
        SemanticClass::Cylinder,
        SemanticClass::Cone,
    ];

    pub fn id(self) -> u8 {
        self as u8
    }

    pub fn from_id(id: u8) -> Option<Self> {
        Self::ALL.get(id as usize).copied()
    }

    /// The label used in boxes and captions.
    pub fn name(self) -> &'static str {
        match self {
            SemanticClass::Floor => "floor",
            SemanticClass::Wall => "wall",
            SemanticClass::Sphere => "sphere",
            SemanticClass::Cube => "cube",
            SemanticClass::Cylinder => "cylinder",
            SemanticClass::Cone => "cone",
        }
    }

    /// Whether the class is one of the shapes (a "thing" with an instance id) rather than floor or wall.
    pub fn is_object(self) -> bool {
        !matches!(self, SemanticClass::Floor | SemanticClass::Wall)
    }
}

/// The kinds of object a scene can contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShapeKind {
    Sphere,
    Cube,
    Cylinder,
    Cone,
}

impl ShapeKind {
    pub const ALL: [ShapeKind; 4] = [
        ShapeKind::Sphere,
        ShapeKind::Cube,
        ShapeKind::Cylinder,
        ShapeKind::Cone,
    ];

    pub fn class(self) -> SemanticClass {
        match self {
            ShapeKind::Sphere => SemanticClass::Sphere,
            ShapeKind::Cube => SemanticClass::Cube,
            ShapeKind::Cylinder => SemanticClass::Cylinder,
            ShapeKind::Cone => SemanticClass::Cone,
        }
    }

    pub fn name(self) -> &'static str {
        self.class().name()
    }
}

/// The named object colours (the CLEVR palette), with their unshaded sRGB values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NamedColour {
    Red,
    Blue,
    Green,
    Yellow,
    Purple,
    Cyan,
    Brown,
    Gray,
}

impl NamedColour {
    pub const ALL: [NamedColour; 8] = [
        NamedColour::Red,
        NamedColour::Blue,
        NamedColour::Green,
        NamedColour::Yellow,
        NamedColour::Purple,
        NamedColour::Cyan,
        NamedColour::Brown,
        NamedColour::Gray,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NamedColour::Red => "red",
            NamedColour::Blue => "blue",
            NamedColour::Green => "green",
            NamedColour::Yellow => "yellow",
            NamedColour::Purple => "purple",
            NamedColour::Cyan => "cyan",
            NamedColour::Brown => "brown",
            NamedColour::Gray => "gray",
        }
    }

    pub fn rgb(self) -> [u8; 3] {
        match self {
            NamedColour::Red => [200, 40, 40],
            NamedColour::Blue => [45, 80, 220],
            NamedColour::Green => [40, 150, 50],
            NamedColour::Yellow => [240, 215, 50],
            NamedColour::Purple => [140, 50, 200],
            NamedColour::Cyan => [45, 205, 205],
            NamedColour::Brown => [140, 85, 35],
            NamedColour::Gray => [100, 100, 100],
        }
    }
}

/// The two object sizes; captions call them "small" and "large".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeClass {
    Small,
    Large,
}

impl SizeClass {
    pub fn name(self) -> &'static str {
        match self {
            SizeClass::Small => "small",
            SizeClass::Large => "large",
        }
    }

    /// Characteristic length in metres (sphere radius; other shapes are scaled from it).
    pub fn scale(self) -> f64 {
        match self {
            SizeClass::Small => 0.45,
            SizeClass::Large => 0.8,
        }
    }
}

/// One object standing on the floor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SceneObject {
    /// 1-based id written to the instance map.
    pub instance_id: u8,
    pub shape: ShapeKind,
    pub colour: NamedColour,
    pub size: SizeClass,
    /// Centre of the footprint on the floor (world x and z; the floor is y = 0).
    pub position: [f64; 2],
    /// Rotation about the vertical axis in radians (only visible on cubes).
    pub rotation_y: f64,
}

impl SceneObject {
    /// Radius of the circle on the floor that contains the object; used to keep objects apart.
    pub fn footprint_radius(&self) -> f64 {
        let scale = self.size.scale();
        match self.shape {
            ShapeKind::Sphere => scale,
            ShapeKind::Cube => cube_half_edge(scale) * std::f64::consts::SQRT_2,
            ShapeKind::Cylinder => cylinder_radius(scale),
            ShapeKind::Cone => scale,
        }
    }

    /// Height of the top of the object above the floor.
    pub fn height(&self) -> f64 {
        let scale = self.size.scale();
        match self.shape {
            ShapeKind::Sphere => 2.0 * scale,
            ShapeKind::Cube => 2.0 * cube_half_edge(scale),
            ShapeKind::Cylinder => cylinder_height(scale),
            ShapeKind::Cone => cone_height(scale),
        }
    }

    pub fn base_centre(&self) -> Vec3 {
        Vec3::new(self.position[0], 0.0, self.position[1])
    }
}

/// Cube half edge for a size scale: a little smaller than the sphere radius so volumes look alike.
pub(crate) fn cube_half_edge(scale: f64) -> f64 {
    scale * 0.85
}

pub(crate) fn cylinder_radius(scale: f64) -> f64 {
    scale * 0.85
}

pub(crate) fn cylinder_height(scale: f64) -> f64 {
    scale * 1.8
}

pub(crate) fn cone_height(scale: f64) -> f64 {
    scale * 2.2
}

/// A pinhole camera looking at the scene from slightly above.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Camera {
    pub position: Vec3Json,
    /// Elevation above the floor plane in degrees.
    pub elevation_degrees: f64,
    /// Rotation about the vertical axis in degrees (0 looks straight at the wall).
    pub azimuth_degrees: f64,
    pub distance: f64,
    /// Focal length in pixels (square pixels, principal point at the image centre).
    pub focal_length_px: f64,
    #[serde(skip)]
    pub(crate) frame: CameraFrame,
}

/// World-space basis of the camera: `forward` is the viewing direction, `right` and `up` span the image.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub(crate) struct CameraFrame {
    pub origin: Vec3,
    pub forward: Vec3,
    pub right: Vec3,
    pub up: Vec3,
}

/// A vector as it appears in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Vec3Json(pub [f64; 3]);

impl Camera {
    fn looking_at(
        target: Vec3,
        distance: f64,
        elevation_degrees: f64,
        azimuth_degrees: f64,
    ) -> Self {
        let elevation = elevation_degrees.to_radians();
        let azimuth = azimuth_degrees.to_radians();
        let offset = Vec3::new(
            azimuth.sin() * elevation.cos(),
            elevation.sin(),
            azimuth.cos() * elevation.cos(),
        ) * distance;
        let origin = target + offset;
        let forward = (target - origin).normalized();
        let right = forward.cross(Vec3::new(0.0, 1.0, 0.0)).normalized();
        let up = right.cross(forward);
        let focal_length_px =
            (IMAGE_SIZE as f64 / 2.0) / HALF_FIELD_OF_VIEW_DEGREES.to_radians().tan();
        Self {
            position: Vec3Json([origin.x, origin.y, origin.z]),
            elevation_degrees,
            azimuth_degrees,
            distance,
            focal_length_px,
            frame: CameraFrame {
                origin,
                forward,
                right,
                up,
            },
        }
    }

    /// Direction (unit length) of the ray through the centre of pixel (column, row).
    pub(crate) fn ray_direction(&self, column: usize, row: usize) -> Vec3 {
        let centre = IMAGE_SIZE as f64 / 2.0;
        let x = (column as f64 + 0.5 - centre) / self.focal_length_px;
        let y = (centre - (row as f64 + 0.5)) / self.focal_length_px;
        (self.frame.forward + self.frame.right * x + self.frame.up * y).normalized()
    }

    /// Pixel coordinates (continuous, column then row) where a world point projects, if it is in front.
    pub(crate) fn project(&self, point: Vec3) -> Option<(f64, f64)> {
        let relative = point - self.frame.origin;
        let depth = relative.dot(self.frame.forward);
        if depth <= 1e-6 {
            return None;
        }
        let centre = IMAGE_SIZE as f64 / 2.0;
        let column = centre + self.focal_length_px * relative.dot(self.frame.right) / depth;
        let row = centre - self.focal_length_px * relative.dot(self.frame.up) / depth;
        Some((column, row))
    }

    /// A world-space direction expressed in the camera frame: x right, y up, z towards the viewer.
    pub(crate) fn to_camera_frame(&self, direction: Vec3) -> Vec3 {
        Vec3::new(
            direction.dot(self.frame.right),
            direction.dot(self.frame.up),
            -direction.dot(self.frame.forward),
        )
    }
}

/// One directional light (with shadows) plus ambient light.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lighting {
    /// Unit vector pointing from the scene towards the light.
    pub direction_to_light: Vec3Json,
    /// Fraction of full brightness that reaches surfaces facing away from the light or in shadow.
    pub ambient: f64,
    #[serde(skip)]
    pub(crate) to_light: Vec3,
}

/// Everything that determines a scene; produced by [`SceneSpec::from_seed`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SceneSpec {
    pub seed: u64,
    pub objects: Vec<SceneObject>,
    pub camera: Camera,
    pub lighting: Lighting,
    pub floor_rgb: [u8; 3],
    pub wall_rgb: [u8; 3],
}

/// Half extent of the floor area in which objects are placed (x in [-X, X], z in [-Z, Z]).
const PLACEMENT_HALF_WIDTH: f64 = 3.0;
const PLACEMENT_HALF_DEPTH: f64 = 2.6;
/// Free floor kept between the footprints of two objects.
const PLACEMENT_GAP: f64 = 0.15;
const PLACEMENT_ATTEMPTS: usize = 200;

impl SceneSpec {
    /// Draws a scene from a seed. Every seed is valid and gives the same scene on every run.
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = SceneRng::new(seed);
        let wanted_objects = 1 + rng.below(MAX_OBJECTS);
        let mut objects: Vec<SceneObject> = Vec::with_capacity(wanted_objects);
        for _ in 0..wanted_objects {
            let shape = ShapeKind::ALL[rng.below(ShapeKind::ALL.len())];
            // Colour and shape together name an object uniquely, so captions never become ambiguous.
            let mut colour = NamedColour::ALL[rng.below(NamedColour::ALL.len())];
            while objects
                .iter()
                .any(|other| other.shape == shape && other.colour == colour)
            {
                colour = NamedColour::ALL[rng.below(NamedColour::ALL.len())];
            }
            let size = if rng.chance(0.5) {
                SizeClass::Large
            } else {
                SizeClass::Small
            };
            let rotation_y = rng.range(0.0, std::f64::consts::FRAC_PI_2);
            let mut candidate = SceneObject {
                instance_id: 0,
                shape,
                colour,
                size,
                position: [0.0, 0.0],
                rotation_y,
            };
            let radius = candidate.footprint_radius();
            let placed = (0..PLACEMENT_ATTEMPTS).any(|_| {
                candidate.position = [
                    rng.range(-PLACEMENT_HALF_WIDTH, PLACEMENT_HALF_WIDTH),
                    rng.range(-PLACEMENT_HALF_DEPTH, PLACEMENT_HALF_DEPTH),
                ];
                objects.iter().all(|other| {
                    let dx = other.position[0] - candidate.position[0];
                    let dz = other.position[1] - candidate.position[1];
                    (dx * dx + dz * dz).sqrt() >= radius + other.footprint_radius() + PLACEMENT_GAP
                })
            });
            if placed {
                candidate.instance_id = objects.len() as u8 + 1;
                objects.push(candidate);
            }
        }

        let camera = Camera::looking_at(
            Vec3::new(0.0, 0.5, 0.0),
            rng.range(10.5, 12.5),
            rng.range(20.0, 35.0),
            rng.range(-25.0, 25.0),
        );

        let light_elevation = rng.range(35.0_f64, 65.0).to_radians();
        // The light comes from one side of the camera, so shadows fall sideways where the camera
        // sees them; staying under 90° keeps it on the camera's side of the wall, which the shadow
        // test relies on (neither floor nor wall can then block the light).
        let light_side = if rng.chance(0.5) { 1.0 } else { -1.0 };
        let light_azimuth = (light_side * rng.range(30.0_f64, 75.0)).to_radians();
        let to_light = Vec3::new(
            light_azimuth.sin() * light_elevation.cos(),
            light_elevation.sin(),
            light_azimuth.cos() * light_elevation.cos(),
        );
        let lighting = Lighting {
            direction_to_light: Vec3Json([to_light.x, to_light.y, to_light.z]),
            ambient: rng.range(0.3, 0.42),
            to_light,
        };

        let floor_level = rng.range(150.0, 185.0);
        let floor_rgb = [
            floor_level as u8,
            (floor_level * 0.97) as u8,
            (floor_level * 0.9) as u8,
        ];
        let wall_level = rng.range(190.0, 220.0);
        let wall_rgb = [
            (wall_level * 0.92) as u8,
            (wall_level * 0.96) as u8,
            wall_level as u8,
        ];

        Self {
            seed,
            objects,
            camera,
            lighting,
            floor_rgb,
            wall_rgb,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_never_intersect_and_are_uniquely_named() {
        for seed in 0..300 {
            let scene = SceneSpec::from_seed(seed);
            assert!(!scene.objects.is_empty() && scene.objects.len() <= MAX_OBJECTS);
            for (index, first) in scene.objects.iter().enumerate() {
                assert_eq!(first.instance_id as usize, index + 1);
                for second in &scene.objects[index + 1..] {
                    let dx = first.position[0] - second.position[0];
                    let dz = first.position[1] - second.position[1];
                    let distance = (dx * dx + dz * dz).sqrt();
                    assert!(
                        distance >= first.footprint_radius() + second.footprint_radius(),
                        "seed {seed}"
                    );
                    assert!(
                        !(first.shape == second.shape && first.colour == second.colour),
                        "seed {seed}"
                    );
                }
            }
        }
    }

    #[test]
    fn camera_projects_its_own_rays_back_to_the_pixel() {
        let scene = SceneSpec::from_seed(3);
        let camera = &scene.camera;
        let direction = camera.ray_direction(40, 170);
        let point = camera.frame.origin + direction * 7.0;
        let (column, row) = camera.project(point).unwrap();
        assert!((column - 40.5).abs() < 1e-9 && (row - 170.5).abs() < 1e-9);
    }

    #[test]
    fn class_ids_round_trip() {
        for class in SemanticClass::ALL {
            assert_eq!(SemanticClass::from_id(class.id()), Some(class));
        }
        assert_eq!(SemanticClass::from_id(6), None);
    }
}
