//! Analytic ray intersections with the four shapes, plus the bounding volumes that let most rays skip them.

use crate::math::Vec3;
use crate::scene::{
    Camera, IMAGE_SIZE, SceneObject, ShapeKind, cone_height, cube_half_edge, cylinder_height,
    cylinder_radius,
};

/// Hits closer than this (in metres) are ignored, so a ray leaving a surface does not hit it again.
pub(crate) const RAY_EPSILON: f64 = 1e-7;

/// An object prepared for ray casting: dimensions, rotation and bounding volumes precomputed.
#[derive(Clone, Debug)]
pub(crate) struct Primitive {
    shape: ShapeKind,
    /// Centre of the footprint on the floor.
    base: Vec3,
    /// Sphere radius, cube half edge, cylinder radius or cone base radius.
    radius: f64,
    height: f64,
    cos_rotation: f64,
    sin_rotation: f64,
    bound_centre: Vec3,
    bound_radius_squared: f64,
    /// Pixel rectangle (inclusive column range, inclusive row range) outside of which no primary ray can hit.
    pub screen_rect: ScreenRect,
}

/// An inclusive rectangle of pixels; empty when `min > max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScreenRect {
    pub min_column: usize,
    pub max_column: usize,
    pub min_row: usize,
    pub max_row: usize,
}

impl ScreenRect {
    const EMPTY: ScreenRect = ScreenRect {
        min_column: 1,
        max_column: 0,
        min_row: 1,
        max_row: 0,
    };

    pub fn contains(&self, column: usize, row: usize) -> bool {
        column >= self.min_column
            && column <= self.max_column
            && row >= self.min_row
            && row <= self.max_row
    }
}

impl Primitive {
    pub fn new(object: &SceneObject, camera: &Camera) -> Self {
        let scale = object.size.scale();
        let (radius, height) = match object.shape {
            ShapeKind::Sphere => (scale, 2.0 * scale),
            ShapeKind::Cube => (cube_half_edge(scale), 2.0 * cube_half_edge(scale)),
            ShapeKind::Cylinder => (cylinder_radius(scale), cylinder_height(scale)),
            ShapeKind::Cone => (scale, cone_height(scale)),
        };
        let base = object.base_centre();
        let footprint = object.footprint_radius();
        let bound_centre = base + Vec3::new(0.0, height / 2.0, 0.0);
        let bound_radius_squared = footprint * footprint + height * height / 4.0;
        let mut primitive = Self {
            shape: object.shape,
            base,
            radius,
            height,
            cos_rotation: object.rotation_y.cos(),
            sin_rotation: object.rotation_y.sin(),
            bound_centre,
            bound_radius_squared,
            screen_rect: ScreenRect::EMPTY,
        };
        primitive.screen_rect = primitive.project_bounds(camera, footprint);
        primitive
    }

    /// Projects the corners of the object's axis-aligned bounding box to find the pixels it can cover.
    fn project_bounds(&self, camera: &Camera, footprint: f64) -> ScreenRect {
        let mut min = (f64::INFINITY, f64::INFINITY);
        let mut max = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for corner in 0..8 {
            let point = self.base
                + Vec3::new(
                    if corner & 1 == 0 {
                        -footprint
                    } else {
                        footprint
                    },
                    if corner & 2 == 0 { 0.0 } else { self.height },
                    if corner & 4 == 0 {
                        -footprint
                    } else {
                        footprint
                    },
                );
            // The camera is always well outside every object, so every corner lies in front of it;
            // if that ever failed, falling back to the whole image keeps the render correct.
            let Some((column, row)) = camera.project(point) else {
                return ScreenRect {
                    min_column: 0,
                    max_column: IMAGE_SIZE - 1,
                    min_row: 0,
                    max_row: IMAGE_SIZE - 1,
                };
            };
            min = (min.0.min(column), min.1.min(row));
            max = (max.0.max(column), max.1.max(row));
        }
        let last = (IMAGE_SIZE - 1) as f64;
        if max.0 < 0.0 || max.1 < 0.0 || min.0 > last + 1.0 || min.1 > last + 1.0 {
            return ScreenRect::EMPTY;
        }
        // A pixel is covered when its centre ray hits; one pixel of slack absorbs rounding.
        let clamp = |value: f64| value.clamp(0.0, last) as usize;
        ScreenRect {
            min_column: clamp(min.0.floor() - 1.0),
            max_column: clamp(max.0.ceil() + 1.0),
            min_row: clamp(min.1.floor() - 1.0),
            max_row: clamp(max.1.ceil() + 1.0),
        }
    }

    /// Cheap rejection: false when the ray certainly misses the bounding sphere.
    #[inline]
    pub fn may_hit(&self, origin: Vec3, direction: Vec3) -> bool {
        let offset = origin - self.bound_centre;
        let along = offset.dot(direction);
        let distance_squared = offset.dot(offset) - self.bound_radius_squared;
        if distance_squared > 0.0 && along > 0.0 {
            return false;
        }
        along * along - distance_squared >= 0.0
    }

    /// Nearest hit with distance in (RAY_EPSILON, max_distance): the distance and the outward unit normal.
    pub fn intersect(
        &self,
        origin: Vec3,
        direction: Vec3,
        max_distance: f64,
    ) -> Option<(f64, Vec3)> {
        if !self.may_hit(origin, direction) {
            return None;
        }
        // Work in a frame with the footprint centre at the origin and, for cubes, the rotation undone.
        let relative = origin - self.base;
        let local_origin = self.to_local(relative);
        let local_direction = self.to_local(direction);
        let hit = match self.shape {
            ShapeKind::Sphere => self.intersect_sphere(local_origin, local_direction, max_distance),
            ShapeKind::Cube => self.intersect_cube(local_origin, local_direction, max_distance),
            ShapeKind::Cylinder => {
                self.intersect_cylinder(local_origin, local_direction, max_distance)
            }
            ShapeKind::Cone => self.intersect_cone(local_origin, local_direction, max_distance),
        };
        hit.map(|(distance, local_normal)| (distance, self.to_world(local_normal)))
    }

    fn to_local(&self, vector: Vec3) -> Vec3 {
        Vec3::new(
            self.cos_rotation * vector.x - self.sin_rotation * vector.z,
            vector.y,
            self.sin_rotation * vector.x + self.cos_rotation * vector.z,
        )
    }

    fn to_world(&self, vector: Vec3) -> Vec3 {
        Vec3::new(
            self.cos_rotation * vector.x + self.sin_rotation * vector.z,
            vector.y,
            -self.sin_rotation * vector.x + self.cos_rotation * vector.z,
        )
    }

    fn intersect_sphere(
        &self,
        origin: Vec3,
        direction: Vec3,
        max_distance: f64,
    ) -> Option<(f64, Vec3)> {
        let centre = Vec3::new(0.0, self.radius, 0.0);
        let offset = origin - centre;
        let along = offset.dot(direction);
        let discriminant = along * along - (offset.dot(offset) - self.radius * self.radius);
        if discriminant < 0.0 {
            return None;
        }
        let root = discriminant.sqrt();
        [-along - root, -along + root]
            .into_iter()
            .find(|&distance| distance > RAY_EPSILON && distance < max_distance)
            .map(|distance| {
                (
                    distance,
                    (origin + direction * distance - centre) * (1.0 / self.radius),
                )
            })
    }

    fn intersect_cube(
        &self,
        origin: Vec3,
        direction: Vec3,
        max_distance: f64,
    ) -> Option<(f64, Vec3)> {
        let half = self.radius;
        let lower = [-half, 0.0, -half];
        let upper = [half, 2.0 * half, half];
        let origin = [origin.x, origin.y, origin.z];
        let direction = [direction.x, direction.y, direction.z];
        let mut entry = f64::NEG_INFINITY;
        let mut exit = f64::INFINITY;
        let mut entry_axis = 0;
        let mut exit_axis = 0;
        for axis in 0..3 {
            if direction[axis].abs() < 1e-15 {
                if origin[axis] < lower[axis] || origin[axis] > upper[axis] {
                    return None;
                }
                continue;
            }
            let inverse = 1.0 / direction[axis];
            let mut near = (lower[axis] - origin[axis]) * inverse;
            let mut far = (upper[axis] - origin[axis]) * inverse;
            if near > far {
                std::mem::swap(&mut near, &mut far);
            }
            if near > entry {
                entry = near;
                entry_axis = axis;
            }
            if far < exit {
                exit = far;
                exit_axis = axis;
            }
        }
        if entry > exit {
            return None;
        }
        let (distance, axis, sign) = if entry > RAY_EPSILON {
            (entry, entry_axis, -direction[entry_axis].signum())
        } else {
            (exit, exit_axis, direction[exit_axis].signum())
        };
        if distance <= RAY_EPSILON || distance >= max_distance {
            return None;
        }
        let mut normal = [0.0; 3];
        normal[axis] = sign;
        Some((distance, Vec3::new(normal[0], normal[1], normal[2])))
    }

    /// Closest of the candidate hits of a capped quadric; `side` gives the side surface's roots.
    fn closest_capped(
        &self,
        origin: Vec3,
        direction: Vec3,
        max_distance: f64,
        side_roots: [Option<f64>; 2],
        side_normal: impl Fn(Vec3) -> Vec3,
        caps: &[(f64, f64, Vec3)],
    ) -> Option<(f64, Vec3)> {
        let mut best: Option<(f64, Vec3)> = None;
        let mut consider = |distance: f64, normal: Vec3| {
            if distance > RAY_EPSILON
                && distance < max_distance
                && best.is_none_or(|(closest, _)| distance < closest)
            {
                best = Some((distance, normal));
            }
        };
        for distance in side_roots.into_iter().flatten() {
            let point = origin + direction * distance;
            if point.y >= 0.0 && point.y <= self.height {
                consider(distance, side_normal(point));
            }
        }
        if direction.y.abs() > 1e-15 {
            for &(cap_height, cap_radius, normal) in caps {
                let distance = (cap_height - origin.y) / direction.y;
                let point = origin + direction * distance;
                if point.x * point.x + point.z * point.z <= cap_radius * cap_radius {
                    consider(distance, normal);
                }
            }
        }
        best
    }

    fn intersect_cylinder(
        &self,
        origin: Vec3,
        direction: Vec3,
        max_distance: f64,
    ) -> Option<(f64, Vec3)> {
        let quadratic = direction.x * direction.x + direction.z * direction.z;
        let half_linear = origin.x * direction.x + origin.z * direction.z;
        let constant = origin.x * origin.x + origin.z * origin.z - self.radius * self.radius;
        let side_roots = solve_quadratic(quadratic, half_linear, constant);
        let radius = self.radius;
        self.closest_capped(
            origin,
            direction,
            max_distance,
            side_roots,
            |point| Vec3::new(point.x / radius, 0.0, point.z / radius),
            &[
                (self.height, self.radius, Vec3::new(0.0, 1.0, 0.0)),
                (0.0, self.radius, Vec3::new(0.0, -1.0, 0.0)),
            ],
        )
    }

    fn intersect_cone(
        &self,
        origin: Vec3,
        direction: Vec3,
        max_distance: f64,
    ) -> Option<(f64, Vec3)> {
        // Side: x² + z² = k² (h - y)², with k the base radius over the height.
        let slope_squared = (self.radius / self.height).powi(2);
        let above_origin = self.height - origin.y;
        let quadratic = direction.x * direction.x + direction.z * direction.z
            - slope_squared * direction.y * direction.y;
        let half_linear = origin.x * direction.x
            + origin.z * direction.z
            + slope_squared * above_origin * direction.y;
        let constant =
            origin.x * origin.x + origin.z * origin.z - slope_squared * above_origin * above_origin;
        let side_roots = solve_quadratic(quadratic, half_linear, constant);
        let height = self.height;
        self.closest_capped(
            origin,
            direction,
            max_distance,
            side_roots,
            |point| Vec3::new(point.x, slope_squared * (height - point.y), point.z).normalized(),
            &[(0.0, self.radius, Vec3::new(0.0, -1.0, 0.0))],
        )
    }
}

/// Roots of a t² + 2 b t + c = 0 (b is half the linear coefficient), smaller first.
fn solve_quadratic(quadratic: f64, half_linear: f64, constant: f64) -> [Option<f64>; 2] {
    if quadratic.abs() < 1e-14 {
        if half_linear.abs() < 1e-14 {
            return [None, None];
        }
        return [Some(-constant / (2.0 * half_linear)), None];
    }
    let discriminant = half_linear * half_linear - quadratic * constant;
    if discriminant < 0.0 {
        return [None, None];
    }
    let root = discriminant.sqrt();
    let first = (-half_linear - root) / quadratic;
    let second = (-half_linear + root) / quadratic;
    if first <= second {
        [Some(first), Some(second)]
    } else {
        [Some(second), Some(first)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::{NamedColour, SceneSpec, SizeClass};

    fn primitive(shape: ShapeKind, rotation_y: f64) -> Primitive {
        let object = SceneObject {
            instance_id: 1,
            shape,
            colour: NamedColour::Red,
            size: SizeClass::Large,
            position: [0.0, 0.0],
            rotation_y,
        };
        Primitive::new(&object, &SceneSpec::from_seed(0).camera)
    }

    #[test]
    fn vertical_ray_hits_the_top_of_every_shape_at_its_height() {
        for shape in ShapeKind::ALL {
            let shape_primitive = primitive(shape, 0.3);
            let origin = Vec3::new(0.0, 10.0, 0.0);
            let (distance, normal) = shape_primitive
                .intersect(origin, Vec3::new(0.0, -1.0, 0.0), 100.0)
                .unwrap();
            assert!(
                (10.0 - distance - shape_primitive.height).abs() < 1e-9,
                "{shape:?}"
            );
            assert!((normal.y - 1.0).abs() < 1e-9, "{shape:?} normal {normal:?}");
        }
    }

    #[test]
    fn horizontal_ray_hits_the_side_with_a_horizontal_normal() {
        for shape in ShapeKind::ALL {
            let shape_primitive = primitive(shape, 0.0);
            let origin = Vec3::new(-10.0, 0.2, 0.0);
            let (distance, normal) = shape_primitive
                .intersect(origin, Vec3::new(1.0, 0.0, 0.0), 100.0)
                .unwrap();
            let hit_x = -10.0 + distance;
            assert!(hit_x < 0.0 && hit_x > -1.0, "{shape:?} hit at {hit_x}");
            assert!(normal.x < -0.3, "{shape:?} normal {normal:?}");
            assert!((normal.length() - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn rays_that_pass_beside_miss() {
        for shape in ShapeKind::ALL {
            let shape_primitive = primitive(shape, 0.7);
            let origin = Vec3::new(-10.0, 0.5, 3.0);
            assert!(
                shape_primitive
                    .intersect(origin, Vec3::new(1.0, 0.0, 0.0), 100.0)
                    .is_none(),
                "{shape:?}"
            );
            let above = Vec3::new(-10.0, 5.0, 0.0);
            assert!(
                shape_primitive
                    .intersect(above, Vec3::new(1.0, 0.0, 0.0), 100.0)
                    .is_none(),
                "{shape:?}"
            );
        }
    }

    #[test]
    fn rotated_cube_is_wider_along_its_diagonal() {
        let straight = primitive(ShapeKind::Cube, 0.0);
        let diagonal = primitive(ShapeKind::Cube, std::f64::consts::FRAC_PI_4);
        let origin = Vec3::new(-10.0, 0.2, 0.0);
        let straight_hit = straight
            .intersect(origin, Vec3::new(1.0, 0.0, 0.0), 100.0)
            .unwrap()
            .0;
        let diagonal_hit = diagonal
            .intersect(origin, Vec3::new(1.0, 0.0, 0.0), 100.0)
            .unwrap()
            .0;
        assert!((10.0 - straight_hit - straight.radius).abs() < 1e-9);
        assert!((10.0 - diagonal_hit - diagonal.radius * std::f64::consts::SQRT_2).abs() < 1e-9);
    }
}
